"""Sandbox hosts laid out by the sandbox's own code (install dir, flagfiles, nebula.service), without
sshd or stores: the conformance tests run each host's nebula.service and talk to its daemons
directly, and compare what they do with what Nebula's source does."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from brsm.sandbox import cluster
from brsm.sandbox.hosts import Host, pids_mentioning, plan_hosts, read_pid_file, terminate, write_host_files

pytestmark = pytest.mark.sandbox


class Mini:
    """meta1 (metad + graphd) and storage1..N (storaged) on a free 127.k.0.0/24."""

    def __init__(self, root: Path, storages: int = 2) -> None:
        self.root = str(root)
        self.k = cluster.choose_k(self.root, 1, storages, 2222)
        self.hosts = {h.name: h for h in plan_hosts(self.root, self.k, 1, storages, 1, 2222)}
        self.meta_addrs = [f"{self.hosts['meta1'].address}:9559"]
        for h in self.hosts.values():
            write_host_files(h, self.meta_addrs, sys.executable)

    def svc(self, host: str, action: str, target: str, *, cwd: str = "/", timeout: float = 60) -> subprocess.CompletedProcess:
        """Run that host's nebula.service as an operator would, from ``cwd``."""
        return subprocess.run([self.hosts[host].script, action, target], capture_output=True, text=True,
                              timeout=timeout, cwd=cwd, stdin=subprocess.DEVNULL)

    def pid(self, host: str, svc: str) -> int | None:
        return read_pid_file(self.hosts[host].pid_file(svc))

    @property
    def storages(self) -> list[Host]:
        return [h for n, h in sorted(self.hosts.items()) if n.startswith("storage")]

    def wait(self, pred, timeout: float = 30.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while not pred():
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} not reached within {timeout}s")
            time.sleep(0.05)

    def kill_all(self) -> None:
        for name, h in self.hosts.items():
            self.svc(name, "kill", "all")
        terminate(pids_mentioning(self.root + os.sep), 5.0)

    def close(self) -> None:
        try:
            self.kill_all()
        finally:
            cluster.release_claim(self.k, self.root)


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    m = Mini(tmp_path_factory.mktemp("conformance"))
    try:
        yield m
    finally:
        m.close()
