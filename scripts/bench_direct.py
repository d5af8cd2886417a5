"""The direct data path's measurements (issue 16), for scripts/bench (--direct-hosts 3,6,12).

Per storage-host count: a sandbox loaded with --direct-size, backed up to its S3 endpoint through
brsm and on the direct path (OSS too at the first count), and at the first count restored both ways.
Every figure comes from outside brsm, never from its own counters:
- bytes across brsm's sockets: ``ss -tinp`` polled every POLL s, bytes_sent + bytes_received of every
  TCP connection of the brsm process (SSH to the hosts, the store's API, metad), the highest value seen
  per connection. A connection's bytes after its last poll are missed (a lower bound; the long-lived
  SSH and HTTP connections carry nearly all of it);
- bytes the hosts' sshds move: the same, for every connection whose local end is a host's sshd port;
- brsm's CPU seconds: its rusage (os.wait4), exact;
- the hosts' CPU (sshds, sftp-servers, helpers): what each host's sshd listener reaped from its
  children (cutime + cstime), read once every session of the run has ended;
- the store's CPU: utime + stime of the S3/OSS server processes;
- the machine's CPU: /proc/stat, everything (the Nebula daemons too).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

MiB = 1 << 20
GiB = 1 << 30
POLL = 0.1
_CONN = re.compile(r"^\S+\s+\d+\s+\d+\s+(\S+)\s+(\S+)(.*)$")
_SENT = re.compile(r"\bbytes_sent:(\d+)")
_RECV = re.compile(r"\bbytes_received:(\d+)")
_PID = re.compile(r"pid=(\d+),")


def parse_ss(text: str) -> list[tuple[str, str, set[int], int, int]]:
    """``ss -tinpH``'s sockets: (local, peer, pids, bytes_sent, bytes_received). Each socket is one line
    followed by an indented info line."""
    out = []
    cur = None
    for line in text.splitlines():
        if line[:1].isspace() and cur is not None:
            sent = _SENT.search(line)
            recv = _RECV.search(line)
            out.append((cur[0], cur[1], cur[2], int(sent.group(1)) if sent else 0, int(recv.group(1)) if recv else 0))
            cur = None
            continue
        m = _CONN.match(line)
        if m:
            cur = (m.group(1), m.group(2), {int(p) for p in _PID.findall(m.group(3))})
    return out


class SocketWatch:
    """Bytes of brsm's connections and of the hosts' sshd connections, from ``ss`` (see module doc)."""

    def __init__(self, sshd_addrs: set[str]) -> None:
        self.sshd_addrs = sshd_addrs
        self.pid: int | None = None
        self.brsm: dict[tuple[str, str], list[int]] = {}
        self.sshd: dict[tuple[str, str], list[int]] = {}
        self.polls = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def start(self, pid: int) -> None:
        self.pid = pid
        self._t.start()

    def _take(self, table: dict, key: tuple[str, str], sent: int, recv: int) -> None:
        best = table.setdefault(key, [0, 0])
        best[0], best[1] = max(best[0], sent), max(best[1], recv)

    def poll(self) -> None:
        text = subprocess.run(["ss", "-tinpH"], capture_output=True, text=True).stdout
        self.polls += 1
        for local, peer, pids, sent, recv in parse_ss(text):
            if self.pid in pids:
                self._take(self.brsm, (local, peer), sent, recv)
            if local in self.sshd_addrs:
                self._take(self.sshd, (local, peer), sent, recv)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll()
            self._stop.wait(POLL)

    def stop(self) -> None:
        self._stop.set()
        self._t.join()

    @staticmethod
    def total(table: dict) -> tuple[int, int, int]:
        return (sum(v[0] for v in table.values()), sum(v[1] for v in table.values()), len(table))


def proc_cpu(pid: int, children: bool = False) -> float:
    """utime + stime of ``pid`` (with ``children``: only what it reaped, cutime + cstime), seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    # after the ")": state is fields[0], so utime (14) is fields[11], cutime (16) fields[13]
    return (int(fields[13]) + int(fields[14])) / ticks if children else (int(fields[11]) + int(fields[12])) / ticks


def helper_pids() -> set[int]:
    out = set()
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes()
            except OSError:
                continue
            if b"\0-c\0" in cmd[:300] and b"dies with its SSH channel" in cmd:
                out.add(int(d.name))
    return out


def measured(bench: Any, sb: dict[str, Any], argv: list[str], label: str) -> dict[str, Any]:
    """Run one brsm command on ``sb`` with every outside measurement around it. ``bench`` is
    scripts/bench.py's Bench: its work dir, its log, its interpreter and machine-CPU figure."""
    machine_cpu_seconds = bench.machine_cpu_seconds
    state = json.loads((Path(sb["dir"]) / "sandbox.json").read_text())
    sshd_pids = [h["sshd"]["pid"] for h in state["hosts"] if h.get("sshd", {}).get("pid")]
    store_pids = [s["pid"] for s in state["stores"].values() if s.get("pid")]
    watch = SocketWatch({f"{h['address']}:{h['ssh_port']}" for h in state["hosts"]})
    hosts0 = sum(proc_cpu(p, children=True) + proc_cpu(p) for p in sshd_pids)
    store0 = sum(proc_cpu(p) for p in store_pids)
    mach0 = machine_cpu_seconds()
    helpers: set[int] = set()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        os.sync()
        t0 = time.perf_counter()
        p = subprocess.Popen([bench.python, "-m", "brsm.cli.app", *argv], env=sb["env"], cwd=str(bench.work),
                             stdout=out, stderr=err, text=True)
        watch.start(p.pid)
        done = threading.Event()

        def seen() -> None:
            while not done.is_set():
                helpers.update(helper_pids())
                done.wait(0.5)
        spotter = threading.Thread(target=seen, daemon=True)
        spotter.start()
        try:
            _pid, status, ru = os.wait4(p.pid, 0)
        except BaseException:
            p.kill()
            p.wait()
            raise
        finally:
            done.set()
        p.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        watch.stop()
        spotter.join()
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if p.returncode != 0:
        raise RuntimeError(f"{label} failed (exit {p.returncode}): {stderr[-1500:]}")
    time.sleep(1.0)  # every session's sshd child reaped by its listener
    doc = json.JSONDecoder().raw_decode(stdout.strip())[0]  # progress lines may follow the document
    facts = doc.get("facts", doc)
    moved = int(facts.get("total_bytes") or facts.get("bytes") or 0)
    b_sent, b_recv, b_conns = SocketWatch.total(watch.brsm)
    s_sent, s_recv, s_conns = SocketWatch.total(watch.sshd)
    gib = moved / GiB if moved else float("nan")
    rec = {
        "label": label, "seconds": round(wall, 2), "bytes": moved, "mib_s": round(moved / MiB / wall, 1),
        "data_path": facts.get("data_path"), "files": facts.get("total_files"),
        "brsm_socket_bytes": b_sent + b_recv, "brsm_connections": b_conns,
        "brsm_socket_pct": round(100.0 * (b_sent + b_recv) / moved, 2) if moved else None,
        "sshd_socket_bytes": s_sent + s_recv, "sshd_connections": s_conns,
        "sshd_socket_pct": round(100.0 * (s_sent + s_recv) / moved, 2) if moved else None,
        "brsm_cpu_s": round(ru.ru_utime + ru.ru_stime, 2),
        "brsm_cpu_s_per_gib": round((ru.ru_utime + ru.ru_stime) / gib, 2),
        "hosts_cpu_s": round(sum(proc_cpu(p, children=True) + proc_cpu(p) for p in sshd_pids) - hosts0, 2),
        "store_cpu_s": round(sum(proc_cpu(p) for p in store_pids) - store0, 2),
        "machine_cpu_s": round(machine_cpu_seconds() - mach0, 2),
        "helpers_seen": len(helpers), "ss_polls": watch.polls, "op_id": doc.get("op_id"),
        "backup_name": facts.get("backup_name") or facts.get("name"),
    }
    bench.log(f"{label}: {wall:.1f}s {rec['mib_s']} MiB/s, brsm sockets {rec['brsm_socket_pct']}% of moved, sshd "
        f"{rec['sshd_socket_pct']}%, brsm CPU {rec['brsm_cpu_s_per_gib']} s/GiB, hosts {rec['hosts_cpu_s']} s, "
        f"store {rec['store_cpu_s']} s, helpers seen {rec['helpers_seen']}")
    return rec


def store_args(sb: dict[str, Any], kind: str, prefix: str) -> list[str]:
    st = sb[kind]
    flag = "--s3-endpoint" if kind == "s3" else "--oss-endpoint"
    return ["--storage", f"{kind}://{st['bucket']}/{prefix}", flag, st["endpoint"]]


def run_direct(bench: Any, counts: list[int], size: int) -> list[dict[str, Any]]:
    """The whole direct-path section; rows also go to bench.results["direct"]."""
    rows: list[dict[str, Any]] = bench.results.setdefault("direct", [])
    for i, n in enumerate(counts):
        sb = bench.up(f"direct-{n}", n)
        try:
            bench.load(sb, size)
            cfg = str(Path(sb["dir"]) / "cluster.toml")
            for kind in (("s3", "oss") if i == 0 else ("s3",)):
                loc = store_args(sb, kind, f"bench-direct-{n}")
                names = {}
                for mode in ("via-brsm", "direct"):
                    rec = measured(bench, sb, ["start", "backup", "--config", cfg, *loc, "--json", "--data-path", mode],
                                   f"backup {n} hosts -> {kind.upper()} ({mode})")
                    if rec["data_path"] != mode:
                        raise RuntimeError(f"asked for {mode}, brsm chose {rec['data_path']}")
                    rows.append(dict(rec, hosts=n, store=kind, op="backup", mode=mode))
                    names[mode] = rec["backup_name"]
                if i == 0 and kind == "s3":
                    for mode in ("via-brsm", "direct"):
                        bench.load(sb, 16 * MiB)  # the cluster moved on: the restore changes it back
                        rec = measured(bench, sb, ["start", "restore", "--yes", "--config", cfg, *loc, "--name", names[mode],
                                                   "--json", "--data-path", mode],
                                       f"restore {n} hosts <- {kind.upper()} ({mode})")
                        rows.append(dict(rec, hosts=n, store=kind, op="restore", mode=mode))
                for name in names.values():  # free the store (moto keeps objects in memory)
                    bench.brsm("cleanup", "--yes", name, *loc, "--config", cfg, env=sb["env"])
        finally:
            bench.down(Path(sb["dir"]))
    return rows


def report_lines(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    lines = ["", "direct data path (issue 16): bytes across brsm's sockets and the hosts' sshds as a share of the "
             "bytes moved, from ss; CPU seconds from rusage and /proc", "",
             "| op | hosts | store | path | GiB | s | MiB/s | brsm sockets | sshd sockets | brsm CPU s/GiB | "
             "hosts CPU s | store CPU s | machine CPU s | helpers |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['op']} | {r['hosts']} | {r['store']} | {r['mode']} | {r['bytes'] / GiB:.2f} | "
                     f"{r['seconds']} | {r['mib_s']} | {r['brsm_socket_pct']} % | {r['sshd_socket_pct']} % | "
                     f"{r['brsm_cpu_s_per_gib']} | {r['hosts_cpu_s']} | {r['store_cpu_s']} | {r['machine_cpu_s']} | "
                     f"{r['helpers_seen']} |")
    return lines
