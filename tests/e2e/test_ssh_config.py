"""Issue 17: an OpenSSH client config (~/.ssh/config) supplies what brsm is not told — User, Port,
IdentityFile, and ProxyJump through a bastion. The sandbox's metad host is the bastion: its sshd (real
OpenSSH) forwards to the storage hosts' sshds as any jump host does."""
from __future__ import annotations

import json
import socket
import subprocess
import tomllib
from pathlib import Path

import pytest

from .conftest import BRSM
from .test_backup_restore import aside_dirs, leases

pytestmark = pytest.mark.sandbox


def _accepted(host: dict) -> int:
    log = Path(host["install_dir"]).parent / "sshd" / "sshd.log"
    return log.read_text(errors="replace").count("Accepted publickey")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ssh_config(env, home: Path, jump: str) -> None:
    cfg = tomllib.loads(Path(env.config).read_text())
    ssh = cfg["ssh"]
    storage = [h["address"] for h in env.info["hosts"] if "storage" in h["roles"]]
    meta = [h["address"] for h in env.info["hosts"] if "storage" not in h["roles"]]
    (home / ".ssh").mkdir(parents=True, exist_ok=True)
    (home / ".ssh" / "config").write_text(
        f"Host {' '.join(storage)}\n  ProxyJump {jump}\n\n"
        f"Host {' '.join(storage + meta)}\n  User {ssh['user']}\n  Port {ssh['port']}\n  IdentityFile {ssh['identity']}\n")


def _run(env, home: Path, *args: str) -> subprocess.CompletedProcess:
    cfg = tomllib.loads(Path(env.config).read_text())
    e = dict(env.env, HOME=str(home))
    e.pop("BRSM_CONFIG", None)
    # no --ssh-user, --ssh-key, --ssh-port, no config file: those come from ~/.ssh/config
    return subprocess.run([*BRSM, *args, "--meta", ",".join(cfg["cluster"]["meta"]), "--known-hosts",
                           cfg["ssh"]["known_hosts"], "--json"], env=e, capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)


def test_a_backup_and_a_restore_through_a_jump_host_named_only_in_the_openssh_config(sandbox, tmp_path):
    env = sandbox
    cfg = tomllib.loads(Path(env.config).read_text())
    bastion = next(h for h in env.info["hosts"] if "storage" not in h["roles"])
    home = tmp_path / "home"
    # 1. the bastion is down: the storage hosts cannot be reached, and the error names the jump host
    _ssh_config(env, home, f"{cfg['ssh']['user']}@{bastion['address']}:{_closed_port()}")
    p = _run(env, home, "check")
    assert p.returncode == 4, p.stdout[-2000:] + p.stderr[-2000:]
    assert "jump host" in p.stdout, p.stdout[-2000:]
    # 2. through the bastion: backup and restore, exact
    _ssh_config(env, home, f"{cfg['ssh']['user']}@{bastion['address']}:{cfg['ssh']['port']}")
    assert _run(env, home, "check").returncode == 0
    before_logins = _accepted(bastion)
    backed = env.checksum()
    store = f"local://{tmp_path / 'b'}"
    p = _run(env, home, "start", "backup", "--storage", store)
    assert p.returncode == 0, p.stderr[-2000:]
    storage_hosts = [h for h in env.info["hosts"] if "storage" in h["roles"]]
    # one login of its own on the bastion (it is the metad host), one more per storage host it forwarded to
    assert _accepted(bastion) - before_logins >= 1 + len(storage_hosts)
    name = json.loads(p.stdout)["facts"]["backup_name"]
    env.load(1 << 20, seed=31)
    p = _run(env, home, "start", "restore", "--yes", "--storage", store, "--name", name)
    assert p.returncode == 0, p.stderr[-2000:]
    assert env.checksum() == backed and aside_dirs(env) == [] and leases(env) == []
