"""Nebula's ``scripts/nebula.service`` on a fake machine, as that script behaves (vesoft-inc/nebula
``scripts/nebula.service`` and ``scripts/utils.sh``): the fake hosts' ``service`` and ``check_daemons``."""
from __future__ import annotations

import posixpath

from brsm.fakes.cluster import FakeCluster
from brsm.fakes.machine import Machine
from brsm.ports import RunResult

SERVICE_ACTIONS = ("start", "stop", "restart", "kill", "status")
SERVICE_NAMES = ("metad", "storaged", "graphd", "all")


def nebula_service(c: FakeCluster, m: Machine, install_dir: str, action: str, target: str) -> RunResult:
    """Nebula's scripts/nebula.service as it behaves: ``status`` always exits 0 and only its text
    tells; ``start`` of a running daemon is an error (exit 1, and ``all`` stops there); ``start``
    and ``stop`` return before the daemon listens or exits; ``restart`` = stop, wait, start."""
    script = posixpath.join(install_dir, "scripts", "nebula.service")
    if m.norm(script) not in m.files:
        return RunResult(127, "", f"bash: {script}: No such file or directory\n")
    if action not in SERVICE_ACTIONS or target not in SERVICE_NAMES:
        return RunResult(1, "Usage: nebula.service [-v] [-c /path/to/config] "
                            "<start|stop|restart|status|kill> <metad|graphd|storaged|all>\n", "")
    svcs = [s for s in ("metad", "graphd", "storaged") if s in m.services] if target == "all" else [target]
    out: list[str] = []

    def done(rc: int = 0, err: str = "") -> RunResult:
        return RunResult(rc, "".join(o + "\n" for o in out), err)

    for s in svcs:
        if s not in m.services:
            return done(1, f"[ERROR] {m.install_dir}/etc/nebula-{s}.conf not found\n")
        if action == "status":
            running, listening = c.observe(m.name, s)
            if running:
                if s == "storaged" and not listening:
                    out.append("[WARN] nebula-storaged after v3.0.0 will not start service until it is added to cluster.")
                    out.append("[WARN] See Manage Storage hosts:ADD HOSTS in https://docs.nebula-graph.io/")
                out.append(f"[INFO] nebula-{s}(fake): Running as {m.pids[s]}, Listening on {m.services[s]}")
            else:
                out.append(f"[INFO] nebula-{s}(fake): Exited")
            continue
        if action in ("stop", "restart"):
            out.append(f"[INFO] Stopping nebula-{s}...")
            c.stop_service(m.name, s)
            out.append("[INFO] Done")
        if action == "kill":
            out.append(f"[INFO] Force killing nebula-{s}...")
            c.stop_service(m.name, s, kill=True)
            out.append("[INFO] Done")
        if action == "restart":
            c.stop_service(m.name, s, kill=True)  # it waits up to 5 s for the exit: long enough here
        if action in ("start", "restart"):
            pid = c.start_service(m.name, s)
            if pid is not None:
                return done(1, f"[ERROR] nebula-{s} already running: {pid}\n")
            out.append(f"[INFO] Starting nebula-{s}...")
            out.append("[INFO] Done")
    return done()
