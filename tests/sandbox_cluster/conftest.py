"""A sandbox per test module, started and stopped with the real `brsm sandbox` CLI."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from brsm.sandbox.hosts import pids_mentioning

BRSM = [sys.executable, "-m", "brsm.cli.app"]

pytestmark = pytest.mark.sandbox


def brsm(*args: str, check: bool = True, timeout: float = 120.0,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    r = subprocess.run([*BRSM, *args], capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})})
    if check and r.returncode != 0:
        raise AssertionError(f"brsm {' '.join(args)} -> {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}")
    return r


def brsm_json(*args: str, check: bool = True, env: dict[str, str] | None = None) -> dict:
    r = brsm(*args, "--json", check=check, env=env)
    return json.loads(r.stdout)


class Sandbox:
    def __init__(self, root: Path, info: dict, seconds: float) -> None:
        self.root = root
        self.dir = str(root)
        self.info = info
        self.up_seconds = seconds
        self.hosts = {h["name"]: h for h in info["hosts"]}
        self.identity = info["ssh"]["identity"]
        self.known_hosts = info["ssh"]["known_hosts"]

    def ssh_argv(self, host: str, *cmd: str, known_hosts: str | None = None, connect_timeout: int = 10) -> list[str]:
        h = self.hosts[host]
        return ["ssh", "-i", self.identity, "-o", f"UserKnownHostsFile={known_hosts or self.known_hosts}",
                "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={connect_timeout}",
                "-o", "GlobalKnownHostsFile=/dev/null", "-p", str(h["ssh_port"]),
                f"{self.info['ssh']['user']}@{h['address']}", *cmd]

    def ssh(self, host: str, *cmd: str, timeout: float = 30.0, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(self.ssh_argv(host, *cmd, **kw), capture_output=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)

    def service_script(self, host: str) -> str:
        return os.path.join(self.hosts[host]["install_dir"], "scripts", "nebula.service")

    def state(self) -> dict:
        with open(os.path.join(self.dir, "sandbox.json")) as fh:
            return json.load(fh)


def start_sandbox(root: Path, *extra: str, env: dict[str, str] | None = None) -> Sandbox:
    t0 = time.monotonic()
    info = brsm_json("sandbox", "up", "--dir", str(root), *extra, env=env)
    seconds = time.monotonic() - t0
    print(f"\nsandbox up ({' '.join(extra) or 'default topology'}) in {seconds:.2f}s (CLI, incl. interpreter start)")
    return Sandbox(root, info, seconds)


def stop_sandbox(sb: Sandbox) -> None:
    brsm("sandbox", "down", "--dir", sb.dir, check=False)
    left = pids_mentioning(sb.dir)
    assert not left, f"stray processes after down: {left}"


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory) -> Sandbox:
    if not shutil.which("ssh"):
        pytest.skip("no ssh client")
    root = tmp_path_factory.mktemp("sandbox")
    sb = start_sandbox(root)
    try:
        yield sb
    finally:
        stop_sandbox(sb)
