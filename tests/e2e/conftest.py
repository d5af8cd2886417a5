"""One sandbox cluster per e2e module; brsm is driven as a user would, through its CLI in a subprocess."""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from brsm.sandbox import cluster
from brsm.sandbox.data import checksum as sandbox_checksum
from brsm.sandbox.data import load as sandbox_load

BRSM = [sys.executable, "-m", "brsm.cli.app"]


class Env:
    def __init__(self, root: Path, info: dict, home: Path) -> None:
        self.root = root
        self.info = info
        self.config = str(root / "cluster.toml")
        self.meta = info["meta"]
        self.env = dict(os.environ, BRSM_HOME=str(home),
                        AWS_ACCESS_KEY_ID=info["s3"]["access_key_id"],
                        AWS_SECRET_ACCESS_KEY=info["s3"]["secret_access_key"],
                        AWS_DEFAULT_REGION=info["s3"].get("region", "us-east-1"),
                        OSS_ACCESS_KEY_ID=info["oss"]["access_key_id"],
                        OSS_ACCESS_KEY_SECRET=info["oss"]["access_key_secret"])
        self.env.pop("BRSM_FAILPOINTS", None)

    def brsm(self, *args: str, failpoints: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
        env = dict(self.env)
        if failpoints:
            env["BRSM_FAILPOINTS"] = failpoints
        return subprocess.run([*BRSM, *args], env=env, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)

    def ok(self, *args: str, **kw) -> dict:
        p = self.brsm(*args, "--json", **kw)
        assert p.returncode == 0, f"brsm {' '.join(args)} -> {p.returncode}\n{p.stdout}\n{p.stderr[-3000:]}"
        return json.loads(p.stdout)

    def checksum(self) -> dict:
        return sandbox_checksum(self.meta)

    def load(self, size: int, seed: int) -> None:
        sandbox_load(self.meta, spaces=2, size_bytes=size, seed=seed)

    def s3(self, prefix: str) -> list[str]:
        return ["--storage", f"s3://{self.info['s3']['bucket']}/{prefix}"]

    def oss(self, prefix: str) -> list[str]:
        return ["--storage", f"oss://{self.info['oss']['bucket']}/{prefix}"]


@contextlib.contextmanager
def running_sandbox(root: Path, home: Path, *, data_paths: int = 2, load: int = 12 << 20, seed: int = 1,
                    meta_hosts: int = 1, agents: bool = True, **variants):
    """A loaded sandbox (1 metad, 3 storage hosts) under ``root``, always brought down. ``variants``:
    ``symlink_data``, ``wal_path`` (see brsm.sandbox.hosts.plan_hosts)."""
    state, _ = cluster.up(str(root), meta_hosts=meta_hosts, storage_hosts=3, data_paths=data_paths, agents=agents,
                          **variants)
    try:
        env = Env(root, cluster.summary(state), home)
        if load:
            env.load(load, seed=seed)
        yield env
    finally:
        cluster.down(str(root), purge=False)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    with running_sandbox(tmp_path_factory.mktemp("sandbox"), tmp_path_factory.mktemp("home")) as env:
        yield env


@contextlib.contextmanager
def tmpfs(d: Path, size_mb: int):
    """A tmpfs of ``size_mb`` MiB mounted on ``d``, unmounted at the end. Mounting needs root or
    CAP_SYS_ADMIN, which the test machines and CI have; without it the test fails, never skips."""
    d.mkdir(parents=True, exist_ok=True)
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}M,mode=0755", "tmpfs", str(d)],
                       capture_output=True, text=True)
    if p.returncode != 0:
        pytest.fail(f"cannot mount a {size_mb} MiB tmpfs (needs root or CAP_SYS_ADMIN): {p.stderr.strip()}")
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], capture_output=True, check=False)
