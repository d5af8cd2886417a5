"""A restore that cannot succeed stops at CHECKED, before anything is stopped or moved: a full data
path (the sandbox lives on a small tmpfs of its own, really filled) and a storage host that is down."""
from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest

from brsm.sandbox import cluster

from .conftest import running_sandbox, tmpfs
from .test_backup_restore import aside_dirs, leases

pytestmark = pytest.mark.sandbox

TMPFS_MB = 160


@pytest.fixture(scope="module")
def small_disk(tmp_path_factory):
    with tmpfs(tmp_path_factory.mktemp("tmpfs"), TMPFS_MB) as d:
        yield d


@pytest.fixture(scope="module")
def sandbox_on_small_disk(small_disk, tmp_path_factory):
    with running_sandbox(small_disk / "sandbox", tmp_path_factory.mktemp("home"), data_paths=1, seed=7) as env:
        yield env


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def test_a_full_data_path_stops_the_restore_at_checked(sandbox_on_small_disk, small_disk, tmp_path):
    env = sandbox_on_small_disk
    store = tmp_path / "backups"  # on the real disk, not the tmpfs
    name = env.ok("start", "backup", "--config", env.config, "--storage", f"local://{store}")["facts"]["backup_name"]
    before = env.checksum()
    # leave less free space on the data paths' file system than the restore brings in
    filler = small_disk / f"filler-{uuid.uuid4().hex}"
    with open(filler, "wb") as f:
        f.truncate(0)
        chunk = b"\0" * (1 << 20)
        while free_bytes(small_disk) > (1 << 20):
            try:
                f.write(chunk)
                f.flush()
            except OSError:
                break
    try:
        p = env.brsm("start", "restore", "--yes", "--config", env.config, "--storage", f"local://{store}", "--name", name)
        assert p.returncode == 4, p.stderr[-1500:]
        first = next(ln for ln in p.stderr.splitlines() if ln.startswith("brsm: error: "))  # after any notes
        assert "free" in first.lower() and ("127." in first or "storage" in first), first
        assert "hint:" in p.stderr
        # nothing stopped, nothing moved, nothing left
        assert env.checksum() == before
        assert aside_dirs(env) == [] and leases(env) == []
        # issue 17: `brsm check` names each full data path (and changes nothing)
        p = env.brsm("check", "--config", env.config, "--json")
        assert p.returncode == 4, p.stderr[-1500:]
        full = [c for c in json.loads(p.stdout)["checks"] if c["check"].startswith("data path") and not c["ok"]]
        assert full and all("MiB free" in c["detail"] for c in full), full
        assert env.checksum() == before and leases(env) == []
    finally:
        filler.unlink()
    # with the space back, the same restore goes through
    env.ok("start", "restore", "--yes", "--config", env.config, "--storage", f"local://{store}", "--name", name)
    assert env.checksum() == before


def test_a_storage_host_down_stops_the_restore_at_checked(sandbox_on_small_disk, tmp_path):
    env = sandbox_on_small_disk
    store = tmp_path / "backups"
    name = env.ok("start", "backup", "--config", env.config, "--storage", f"local://{store}")["facts"]["backup_name"]
    before = env.checksum()
    cluster.host_down(str(env.root), "storage2")
    try:
        p = env.brsm("start", "restore", "--yes", "--config", env.config, "--storage", f"local://{store}", "--name", name)
        assert p.returncode == 4, p.stderr[-1500:]
        assert "127." in next(ln for ln in p.stderr.splitlines() if ln.startswith("brsm: error: ")), p.stderr[-800:]
    finally:
        cluster.host_up(str(env.root), "storage2")
    assert env.checksum() == before
    assert aside_dirs(env) == [] and leases(env) == []
    assert env.ok("ops")[0]["state"] == "REFUSED"
