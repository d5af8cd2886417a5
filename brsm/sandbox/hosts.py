"""Sandbox hosts: one loopback address, one root dir, one sshd and the services of that host.

Layout of a host (see docs/team-contracts.md)::

    DIR/hosts/<name>/install/scripts/nebula.service   start|stop|restart|kill|status <svc>|all
    DIR/hosts/<name>/install/etc/nebula-<svc>.conf    gflags flagfile of each service on the host
    DIR/hosts/<name>/install/{pids,logs}/
    DIR/hosts/<name>/data/meta | data/storage<i>      data paths
    DIR/hosts/<name>/sshd/{sshd_config,ssh_host_ed25519_key,authorized_keys,sshd.log}

Also the process plumbing shared by the orchestration: the machine's PID 1 may not reap orphans,
so "alive" means the process exists *and* is not a zombie; daemons are spawned through a
short-lived ``sh`` so they are never children of the process that ran ``sandbox up``.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from brsm.sandbox.layout import port_open  # noqa: F401 - the orchestrator's too

SERVICE_PORTS = {  # svc -> (port, ws_http_port), as Nebula's defaults
    "metad": (9559, 19559),
    "graphd": (9669, 19669),
    "storaged": (9779, 19779),
}
SERVICE_ORDER = ("metad", "storaged", "graphd")

# ---------------------------------------------------------------------------------------------
# process plumbing
def pid_alive(pid: int | None) -> bool:
    if not pid or pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    state = stat.rsplit(b")", 1)[-1].split()[0:1]
    return bool(state) and state[0] not in (b"Z", b"X")


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def read_pid_file(path: str) -> int | None:
    try:
        with open(path) as fh:
            text = fh.read().strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None


def can_bind(host: str, port: int) -> bool:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def wait_for(pred, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if pred():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def spawn_detached(argv: Sequence[str], log_path: str, env: dict[str, str] | None = None,
                   cwd: str | None = None) -> int:
    """Start ``argv`` in its own session, stdin from /dev/null, stdout+stderr appended to
    ``log_path``, re-parented away from us. Returns its pid."""
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    script = 'log=$1; shift; setsid "$@" </dev/null >>"$log" 2>&1 & echo $!'
    out = subprocess.run(["/bin/sh", "-c", script, "sh", log_path, *argv], capture_output=True,
                         text=True, env=env, cwd=cwd, check=True, timeout=30)
    return int(out.stdout.strip())


def children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat.rsplit(b")", 1)[-1].split()
        try:
            ppid = int(fields[1])
        except (IndexError, ValueError):
            continue
        kids.setdefault(ppid, []).append(int(name))
    return kids


def descendants(pid: int) -> list[int]:
    kids = children_map()
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        for c in kids.get(p, []):
            out.append(c)
            todo.append(c)
    return out


def _ancestors() -> set[int]:
    """Our own pid and every parent up to init: the shell or script that ran `down` may well name
    the sandbox dir on its command line (scripts/demo --dir D), and must not be killed by it."""
    out, pid = set(), os.getpid()
    while pid > 1 and pid not in out:
        out.add(pid)
        try:
            with open(f"/proc/{pid}/stat") as fh:
                pid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return out


def pids_mentioning(text: str) -> list[int]:
    """Live processes whose command line contains ``text`` (never ourselves or our ancestors)."""
    mine = _ancestors()
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in mine:
            continue
        if text in cmdline(int(name)) and pid_alive(int(name)):
            out.append(int(name))
    return out


def terminate(pids: Iterable[int], timeout: float = 10.0, sig: int = signal.SIGTERM) -> list[int]:
    """Send ``sig`` to every live pid, wait up to ``timeout`` for them to go, SIGKILL the rest.
    Returns the pids that had to be killed."""
    pids = [p for p in dict.fromkeys(pids) if pid_alive(p)]
    for p in pids:
        try:
            os.kill(p, sig)
        except ProcessLookupError:
            pass
    wait_for(lambda: not any(pid_alive(p) for p in pids), timeout)
    killed = [p for p in pids if pid_alive(p)]
    for p in killed:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if killed:
        wait_for(lambda: not any(pid_alive(p) for p in killed), 3.0)
    return killed


def terminate_tree(pid: int, timeout: float = 5.0) -> None:
    """Stop ``pid`` and everything below it (an sshd and its sessions)."""
    tree = [pid, *descendants(pid)]
    terminate(tree, timeout)


def tail(path: str, lines: int = 15) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 8192))
            data = fh.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


# ---------------------------------------------------------------------------------------------
# hosts


@dataclass
class Host:
    name: str
    address: str
    roles: list[str]                      # "meta", "graph", "storage"
    root: str                             # DIR/hosts/<name>
    ssh_port: int
    data_paths: list[str] = field(default_factory=list)
    services: list[str] = field(default_factory=list)   # metad / graphd / storaged
    wal_path: str = ""                    # storaged --wal_path (3.4+), "" = WALs beside the data
    rocksdb_wal_dir: str = ""             # storaged --rocksdb_wal_dir, "" = RocksDB's WAL in its db dir
    disks: dict = field(default_factory=dict)  # data path -> the real dir it links to (symlinked variant)

    # where each host keeps its install and its sshd's files
    install_dir = property(lambda self: os.path.join(self.root, "install"))
    script = property(lambda self: os.path.join(self.install_dir, "scripts", "nebula.service"))
    sshd_dir = property(lambda self: os.path.join(self.root, "sshd"))
    sshd_config = property(lambda self: os.path.join(self.sshd_dir, "sshd_config"))
    host_key = property(lambda self: os.path.join(self.sshd_dir, "ssh_host_ed25519_key"))
    authorized_keys = property(lambda self: os.path.join(self.sshd_dir, "authorized_keys"))
    deny_file = property(lambda self: os.path.join(self.sshd_dir, "deny"))
    sshd_log = property(lambda self: os.path.join(self.sshd_dir, "sshd.log"))
    bin_dir = property(lambda self: os.path.join(self.root, "bin"))  # first on its sessions' PATH
    faults_dir = property(lambda self: os.path.join(self.root, "faults"))

    def conf(self, svc: str) -> str:
        return os.path.join(self.install_dir, "etc", f"nebula-{svc}.conf")

    def pid_file(self, svc: str) -> str:
        return os.path.join(self.install_dir, "pids", f"nebula-{svc}.pid")

    def service_addr(self, svc: str) -> tuple[str, int]:
        return self.address, SERVICE_PORTS[svc][0]

    def http_addr(self, svc: str) -> tuple[str, int]:
        return self.address, SERVICE_PORTS[svc][1]

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "Host":
        keys = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in keys})

    def service_pid(self, svc: str) -> int | None:
        pid = read_pid_file(self.pid_file(svc))
        return pid if pid and pid_alive(pid) and f"brsm.sandbox.{svc}" in cmdline(pid) else None

    def service_up(self, svc: str) -> bool:
        return self.service_pid(svc) is not None and port_open(*self.service_addr(svc))


SANDBOX_RESERVED_BYTES = 16 << 20


def plan_hosts(root: str, k: int, meta_hosts: int, storage_hosts: int, data_paths: int,
               ssh_port: int, *, symlink_data: bool = False, wal_path: bool = False,
               rocksdb_wal_dir: bool = False) -> list[Host]:
    """``symlink_data``: each storage data path is a symlink to a dir under ``<host>/disk/`` (a data
    path on another mount, reached through a link: heartbeats carry the link, checkpoints the
    resolved path). ``wal_path``: storaged keeps its WALs under ``<host>/wal`` (``--wal_path``).
    ``rocksdb_wal_dir``: RocksDB's own WAL under ``<host>/rocksdb-wal/rocksdb_wal/<sid>``."""
    hosts = []
    for i in range(1, meta_hosts + 1):
        name = f"meta{i}"
        hroot = os.path.join(root, "hosts", name)
        roles = ["meta"] + (["graph"] if i == 1 else [])
        svcs = ["metad"] + (["graphd"] if i == 1 else [])
        hosts.append(Host(name, f"127.{k}.0.{10 + i}", roles, hroot, ssh_port,
                          [os.path.join(hroot, "data", "meta")], svcs))
    for i in range(1, storage_hosts + 1):
        name = f"storage{i}"
        hroot = os.path.join(root, "hosts", name)
        dps = [os.path.join(hroot, "data", f"storage{j}") for j in range(1, data_paths + 1)]
        disks = {dp: os.path.join(hroot, "disk", f"storage{j}") for j, dp in enumerate(dps, 1)} if symlink_data else {}
        hosts.append(Host(name, f"127.{k}.0.{100 + i}", ["storage"], hroot, ssh_port, dps, ["storaged"],
                          wal_path=os.path.join(hroot, "wal") if wal_path else "", disks=disks,
                          rocksdb_wal_dir=os.path.join(hroot, "rocksdb-wal") if rocksdb_wal_dir else ""))
    return hosts


def service_template() -> str:
    return (Path(__file__).with_name("nebula.service")).read_text()


def write_host_files(host: Host, meta_addrs: list[str], python: str, *, nebula_version: str | None = None) -> None:
    """Directories, nebula.service and the flagfiles of every service of ``host``; ``nebula_version``
    (e.g. "3.2.0") is the release its daemons play (``--sandbox_nebula_version``; default 3.8.0)."""
    for d in ("scripts", "etc", "pids", "logs"):
        os.makedirs(os.path.join(host.install_dir, d), exist_ok=True)
    os.makedirs(host.sshd_dir, exist_ok=True)
    for dp in host.data_paths:
        real = host.disks.get(dp)
        if real:
            os.makedirs(real, exist_ok=True)
            os.makedirs(os.path.dirname(dp), exist_ok=True)
            if not os.path.islink(dp):
                os.symlink(real, dp)
        else:
            os.makedirs(dp, exist_ok=True)
    for d in (host.wal_path, host.rocksdb_wal_dir):
        if d:
            os.makedirs(d, exist_ok=True)
    text = service_template().replace("@PYTHON@", python)
    with open(host.script, "w") as fh:
        fh.write(text)
    os.chmod(host.script, 0o755)
    for svc in host.services:
        port, http_port = SERVICE_PORTS[svc]
        lines = [f"# nebula-{svc}.conf of sandbox host {host.name} (gflags flagfile)",
                 "########## basics ##########",
                 f"--pid_file={host.pid_file(svc)}",
                 f"--log_dir={os.path.join(host.install_dir, 'logs')}",
                 "########## networking ##########",
                 f"--meta_server_addrs={','.join(meta_addrs)}",
                 f"--local_ip={host.address}",
                 f"--port={port}",
                 f"--ws_http_port={http_port}"]
        if nebula_version:
            lines.append(f"--sandbox_nebula_version={nebula_version}")
        if svc == "metad":
            lines += ["########## storage ##########", f"--data_path={host.data_paths[0]}"]
        elif svc == "storaged":
            lines += ["########## storage ##########", f"--data_path={','.join(host.data_paths)}"]
            if host.wal_path:
                lines.append(f"--wal_path={host.wal_path}")
            if host.rocksdb_wal_dir:
                lines.append(f"--rocksdb_wal_dir={host.rocksdb_wal_dir}")
            # a sandbox's disks are small (a test may put them on a tmpfs of 160 MiB): its operator lowered
            # the reserve below which storaged refuses writes (DiskManager.cpp, default 1 GiB)
            lines.append(f"--minimum_reserved_bytes={SANDBOX_RESERVED_BYTES}")
        with open(host.conf(svc), "w") as fh:
            fh.write("\n".join(lines) + "\n")


def set_flag(host: Host, svc: str, key: str, value: str | None) -> None:
    """Set (or, with None, remove) ``--key`` in ``svc``'s flagfile on ``host``, as an operator edits
    nebula-<svc>.conf: it takes effect when the daemon next starts (gflags are read at start)."""
    path = host.conf(svc)
    with open(path) as fh:
        lines = [ln for ln in fh.read().splitlines() if not ln.strip().startswith(f"--{key}=")]
    if value is not None:
        lines.append(f"--{key}={value}")
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")


def run_service(host: Host, action: str, svc: str = "all", timeout: float = 60.0,
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run the host's nebula.service locally (what an operator would run on that machine)."""
    return subprocess.run([host.script, action, svc], capture_output=True, text=True, timeout=timeout,
                          env=env, stdin=subprocess.DEVNULL)
