"""Fixtures for adapter tests: a real OpenSSH sshd on a random loopback address, stopped at the end."""
from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from brsm.adapters.ssh import SshTarget

SSHD = "/usr/sbin/sshd"


def free_port(ip: str) -> int:
    with socket.socket() as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


def random_ip() -> str:
    return f"127.{random.randint(20, 250)}.{random.randint(1, 250)}.{random.randint(2, 250)}"


def keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)],
                   check=True, capture_output=True)
    return Path(str(path) + ".pub").read_text().strip()


def wait_port(ip: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((ip, port), 0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {ip}:{port}")


@dataclass
class Sshd:
    ip: str
    port: int
    dir: Path
    client_key: Path
    known_hosts: Path
    other_known_hosts: Path
    popen: subprocess.Popen

    def target(self, **kw) -> SshTarget:
        base = dict(name=self.ip, host=self.ip, port=self.port, user=_user(), identity=str(self.client_key),
                    known_hosts=str(self.known_hosts), install_dir=str(self.dir / "install"))
        base.update(kw)
        return SshTarget(**base)

    def kill_sessions(self) -> int:
        """SIGKILL every per-connection sshd child: drops all SSH connections, keeps the listener."""
        out = subprocess.run(["pgrep", "-P", str(self.popen.pid)], capture_output=True, text=True).stdout.split()
        for pid in out:
            try:
                os.kill(int(pid), 9)
            except ProcessLookupError:
                pass
        return len(out)


def _user() -> str:
    import pwd
    return pwd.getpwuid(os.geteuid()).pw_name


@pytest.fixture(scope="session")
def sshd(tmp_path_factory) -> Sshd:
    if not os.access(SSHD, os.X_OK):
        pytest.skip("OpenSSH sshd not installed")
    os.makedirs("/run/sshd", exist_ok=True)
    d = tmp_path_factory.mktemp("sshd")
    ip = random_ip()
    port = free_port(ip)
    host_pub = keygen(d / "host_key")
    other_pub = keygen(d / "other_host_key")
    client_pub = keygen(d / "id_ed25519")
    (d / "authorized_keys").write_text(client_pub + "\n")
    kt, kb = host_pub.split()[:2]
    (d / "known_hosts").write_text(f"[{ip}]:{port} {kt} {kb}\n")
    ot, ob = other_pub.split()[:2]
    (d / "other_known_hosts").write_text(f"[{ip}]:{port} {ot} {ob}\n")
    cfg = d / "sshd_config"
    cfg.write_text("\n".join([
        f"ListenAddress {ip}:{port}", f"HostKey {d / 'host_key'}", "PidFile none",
        f"AuthorizedKeysFile {d / 'authorized_keys'}", "PubkeyAuthentication yes", "PasswordAuthentication no",
        "KbdInteractiveAuthentication no", "PermitRootLogin prohibit-password", "StrictModes no", "UsePAM no",
        "UseDNS no", "PrintMotd no", "MaxStartups 100:30:200", "LogLevel ERROR",
        "Subsystem sftp internal-sftp", ""]))
    log = open(d / "sshd.log", "ab")
    popen = subprocess.Popen([SSHD, "-D", "-e", "-f", str(cfg)], stdout=log, stderr=subprocess.STDOUT)
    log.close()
    try:
        wait_port(ip, port)
        yield Sshd(ip, port, d, d / "id_ed25519", d / "known_hosts", d / "other_known_hosts", popen)
    finally:
        Sshd(ip, port, d, d, d, d, popen).kill_sessions()
        popen.terminate()
        try:
            popen.wait(10)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait(5)


@pytest.fixture
def remote_dir(sshd, tmp_path_factory) -> Path:
    """A fresh directory the SSH user can use (same machine: the test reads it directly too)."""
    d = tmp_path_factory.mktemp("remote")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def meta_cluster(tmp_path_factory):
    """metad (leader) + follower metad + two storaged (two data paths each), helper-3's stand-ins,
    on random 127.x addresses; two spaces loaded. Stopped at the end of the module."""
    from brsm.sandbox import control, data
    from tests.sandbox_services.conftest import Cluster

    c = Cluster(tmp_path_factory.mktemp("metasb"))
    c.add("meta1", "metad", 11, 9559)
    for i in (1, 2):
        c.add(f"storage{i}", "storaged", 20 + i, 9779, data_paths=2)
    m2 = c.add("meta2", "metad", 12, 9559, meta_addrs=f"{c.meta.addr},{c.ip(12)}:9559")
    with m2.flagfile.open("a") as fh:  # a follower of meta1 without Raft: meta1 knows nothing of it
        fh.write("--sandbox_meta_raft=false\n")
    try:
        c.start("meta1")
        c.register()
        for n in ("storage1", "storage2", "meta2"):
            c.start(n, wait=False)
        for n in ("storage1", "storage2", "meta2"):
            control.wait_running(c.procs[n].http, timeout=30)
        c.wait_registered(["storage1", "storage2"])
        for a in c.add_agents():
            c.start(a)
        c.wait_registered([n for n in c.procs if n.startswith("agent-")])
        data.load(c.meta.addr, spaces=2, size_bytes=2 << 20, seed=7)
        yield c
    finally:
        c.stop_all()
