"""Start the metad/storaged/graphd stand-ins as real processes on random 127.x.y.z addresses."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from brsm.sandbox import control

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Proc:
    svc: str
    ip: str
    port: int
    http_port: int
    flagfile: Path
    pid_file: Path
    data_paths: list[Path] = field(default_factory=list)
    popen: subprocess.Popen | None = None

    @property
    def addr(self) -> str:
        return f"{self.ip}:{self.port}"

    @property
    def http(self) -> tuple[str, int]:
        return (self.ip, self.http_port)


class Cluster:
    def __init__(self, base: Path) -> None:
        self.base = base
        a, b = random.randint(20, 250), random.randint(1, 250)
        self.prefix = f"127.{a}.{b}"
        self.procs: dict[str, Proc] = {}
        self.meta_addrs = f"{self.prefix}.11:9559"

    def ip(self, last: int) -> str:
        return f"{self.prefix}.{last}"

    def add(self, name: str, svc: str, last: int, port: int, *, data_paths: int = 0,
            meta_addrs: str | None = None) -> Proc:
        host_dir = self.base / "hosts" / name
        install = host_dir / "install"
        (install / "pids").mkdir(parents=True, exist_ok=True)
        (install / "logs").mkdir(parents=True, exist_ok=True)
        ip = self.ip(last)
        proc = Proc(svc, ip, port, port + 10000, install / "etc" / f"nebula-{svc}.conf",
                    install / "pids" / f"nebula-{svc}.pid")
        lines = [f"--local_ip={ip}", f"--port={port}", f"--ws_http_port={port + 10000}",
                 f"--meta_server_addrs={meta_addrs or self.meta_addrs}", f"--pid_file={proc.pid_file}",
                 f"--log_dir={install / 'logs'}"]
        if svc == "metad":
            proc.data_paths = [host_dir / "data" / "meta"]
        elif svc == "storaged":
            proc.data_paths = [host_dir / "data" / f"storage{i}" for i in range(1, data_paths + 1)]
        if proc.data_paths:
            lines.append("--data_path=" + ",".join(str(p) for p in proc.data_paths))
        proc.flagfile.parent.mkdir(parents=True, exist_ok=True)
        proc.flagfile.write_text("# sandbox test flags\n" + "\n".join(lines) + "\n")
        self.procs[name] = proc
        return proc

    def add_agents(self) -> list[str]:
        """A nebula-agent stand-in on every host (listCluster fails for a host without one)."""
        names = []
        for name, p in sorted(self.procs.items()):
            if p.svc == "agent" or any(q.svc == "agent" and q.ip == p.ip for q in self.procs.values()):
                continue
            last = int(p.ip.rsplit(".", 1)[1])
            self.add(f"agent-{name}", "agent", last, 8888)
            names.append(f"agent-{name}")
        return names

    def start(self, name: str, wait: bool = True) -> Proc:
        p = self.procs[name]
        log = open(p.flagfile.parent.parent / "logs" / f"{p.svc}.stdout", "ab")
        p.popen = subprocess.Popen([sys.executable, "-m", f"brsm.sandbox.{p.svc}", f"--flagfile={p.flagfile}"],
                                   cwd=str(p.flagfile.parent.parent), stdout=log, stderr=subprocess.STDOUT,
                                   env={**os.environ, "PYTHONPATH": str(ROOT)})
        log.close()
        if wait:
            control.wait_running(p.http, timeout=30)
        return p

    def stop(self, name: str, timeout: float = 15.0) -> int | None:
        p = self.procs[name]
        if p.popen is None:
            return None
        if p.popen.poll() is None:
            p.popen.send_signal(signal.SIGTERM)
            try:
                p.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                p.popen.kill()
                p.popen.wait(5)
        rc = p.popen.returncode
        p.popen = None
        return rc

    def stop_all(self) -> None:
        for p in self.procs.values():  # SIGTERM everything first, then wait for each
            if p.popen is not None and p.popen.poll() is None:
                p.popen.send_signal(signal.SIGTERM)
        for name in list(self.procs):
            self.stop(name)

    def register(self, names: list[str] | None = None) -> None:
        """ADD HOSTS on the leader metad for these storaged (default: every storaged): storaged opens
        its ports only once metad accepts its heartbeat, which needs its host to be a machine."""
        names = names if names is not None else [n for n in self.procs if self.procs[n].svc == "storaged"]
        control.add_hosts(self.meta.addr, [self.procs[n].addr for n in names])

    def wait_registered(self, names: list[str], timeout: float = 20.0) -> None:
        def registered(n: str) -> bool:
            try:
                return bool(control.status(self.procs[n].http).get("registered"))
            except (OSError, control.SandboxControlError):
                return False  # a storaged not yet accepted by metad has no HTTP port open
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(registered(n) for n in names):
                return
            time.sleep(0.1)
        raise AssertionError(f"{names} did not register with metad")

    @property
    def storages(self) -> list[Proc]:
        return [p for n, p in sorted(self.procs.items()) if n.startswith("storage")]

    @property
    def meta(self) -> Proc:
        return self.procs["meta1"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    c = Cluster(tmp_path_factory.mktemp("sandbox"))
    c.add("meta1", "metad", 11, 9559)
    for i in range(1, 4):
        c.add(f"storage{i}", "storaged", 20 + i, 9779, data_paths=2)
    c.add("graph1", "graphd", 31, 9669)
    try:
        c.start("meta1")
        c.register()
        for i in range(1, 4):
            c.start(f"storage{i}", wait=False)
        c.start("graph1", wait=False)
        for name in ("storage1", "storage2", "storage3", "graph1"):
            control.wait_running(c.procs[name].http, timeout=30)
        c.wait_registered(["storage1", "storage2", "storage3", "graph1"])
        for a in c.add_agents():
            c.start(a)
        c.wait_registered([n for n in c.procs if n.startswith("agent-")])
        yield c
    finally:
        c.stop_all()
