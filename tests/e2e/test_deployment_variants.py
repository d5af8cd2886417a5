"""Deployments a real 3.x cluster has (issue 12): data paths reached through symlinks (checkpoints
report the resolved path, heartbeats the link: NebulaStore::createCheckpoint vs StorageDaemon.cpp)
and storaged's WALs in a --wal_path of their own (RocksEngine.cpp). Round trips on every storage."""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from brsm.sandbox import cluster
from brsm.sandbox.hosts import run_service
from tests.e2e.conftest import running_sandbox

pytestmark = pytest.mark.sandbox


@pytest.fixture(scope="module")
def sb(tmp_path_factory):
    with running_sandbox(tmp_path_factory.mktemp("variants"), tmp_path_factory.mktemp("home"),
                         symlink_data=True, wal_path=True, load=6 << 20, seed=21) as env:
        yield env


def storage_hosts(sb):
    return [h for h in sb.info["hosts"] if "storage" in h["roles"]]


def wal_files(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in root.glob("nebula/*/wal/*/*") if p.is_file()}


def test_the_variant_is_what_it_claims(sb):
    for h in storage_hosts(sb):
        for dp in h["data_paths"]:
            assert os.path.islink(dp) and os.path.realpath(dp) != dp
        wal = Path(h["install_dir"]).parent / "wal"
        assert wal_files(wal), "WALs live under --wal_path"
        assert not list(Path(h["data_paths"][0]).glob("nebula/*/wal/*/*.wal")), "and not beside the data"


@pytest.mark.parametrize("store", ["local", "s3", "oss"])
def test_round_trip(sb, tmp_path, store):
    target = {"local": ["--storage", f"local://{tmp_path / 'b'}"], "s3": sb.s3(f"variants-{os.getpid()}"),
              "oss": sb.oss(f"variants-{os.getpid()}")}[store]
    before = sb.checksum()
    wals_before = {h["name"]: wal_files(Path(h["install_dir"]).parent / "wal") for h in storage_hosts(sb)}
    b = sb.ok("start", "backup", "--config", sb.config, *target)
    name = b["facts"]["backup_name"]
    sb.load(2 << 20, seed=31)
    assert sb.checksum() != before
    sb.ok("start", "restore", "--yes", "--config", sb.config, *target, "--name", name)
    assert sb.checksum() == before
    for h in storage_hosts(sb):
        wal = Path(h["install_dir"]).parent / "wal"
        after = wal_files(wal)
        # the WALs are the backup's, back under --wal_path (the later load's segments are gone)
        assert after and after == wals_before[h["name"]]
        assert not list(Path(h["data_paths"][0]).glob("nebula/*/wal/*/*.wal")), "no WAL restored beside the data"
        assert not [p for p in wal.iterdir() if p.name.startswith("nebula_brsm_old")], "set-aside WALs removed"
        for dp in h["data_paths"]:
            assert os.path.islink(dp), "the restore renames inside the linked dir, never the link"


def _start_by_hand(h, *extra: str) -> None:
    """storaged started the way a unit file or an operator might: its flagfile plus flags on the command
    line (nebula.service passes the flagfile alone), in its install dir, detached."""
    script = Path(h.script).read_text()
    python = re.search(r'^PYTHON="(.*)"$', script, re.M)[1]
    subprocess.run(["bash", "-c", 'cd "$1" && shift && setsid "$@" </dev/null >>logs/by-hand.log 2>&1 &', "start",
                    h.install_dir, python, "-m", "brsm.sandbox.storaged", f"--flagfile={h.conf('storaged')}",
                    *extra], check=True)
    deadline = time.monotonic() + 30
    while not h.service_up("storaged"):
        assert time.monotonic() < deadline, "the storaged started by hand did not come up"
        time.sleep(0.1)


def test_a_storaged_run_with_another_wal_path_than_its_flagfile_stops_the_run(sb, tmp_path):
    """--wal_path given on storaged's command line (its WALs in another dir than the flagfile says):
    brsm reads /proc/<pid>/cmdline, finds the flag differs, and stops before anything, saying which
    flag, where it came from, and how to fix it. A restore would otherwise put the backup's WALs
    where that storaged does not read them, and its restart through nebula.service move them."""
    store = ["--storage", f"local://{tmp_path / 'b'}"]
    name = sb.ok("start", "backup", "--config", sb.config, *store)["facts"]["backup_name"]
    info = storage_hosts(sb)[0]
    h = cluster.host_by_name(cluster.load_state(str(sb.root)), info["name"])[1]
    wal = Path(h.wal_path)
    other = wal.parent / "wal_by_hand"
    run_service(h, "stop", "storaged")
    deadline = time.monotonic() + 30
    while h.service_pid("storaged") is not None:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    shutil.copytree(wal, other, symlinks=True)  # the same WALs, kept elsewhere
    try:
        _start_by_hand(h, f"--wal_path={other}")
        before = sb.checksum()
        for argv in (["start", "backup", "--config", sb.config, *store],
                     ["start", "restore", "--yes", "--config", sb.config, *store, "--name", name]):
            p = sb.brsm(*argv)
            assert p.returncode == 4, (argv[1], p.returncode, p.stderr[-1500:])
            assert f"--wal_path='{other}' from its command line, the flagfile '{wal}'" in p.stderr, p.stderr[-1500:]
            assert "nebula.service restart storaged" in p.stderr
        assert sb.checksum() == before  # nothing was stopped or moved
    finally:
        pid = h.service_pid("storaged")
        if pid is not None:  # the daemon this test started
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 30
            while h.service_pid("storaged") is not None and time.monotonic() < deadline:
                time.sleep(0.1)
        shutil.rmtree(other, ignore_errors=True)
        run_service(h, "start", "storaged")
        cluster._wait_cluster(sb.meta, [f"{x['address']}:9779" for x in storage_hosts(sb)], 60)
    sb.ok("start", "backup", "--config", sb.config, *store)  # started with its flagfile alone: found again


def test_replica_factor_three_round_trip(tmp_path_factory, tmp_path):
    """A space with replica factor 3 on 3 storage hosts (CreateSpaceProcessor.cpp puts each part on 3
    hosts; each storaged checkpoints its replicas, NebulaStore::createCheckpoint): every replica is
    backed up and restored to its host, and the replicas agree afterwards (the sandbox checksum
    compares them)."""
    from brsm.sandbox.data import load
    with running_sandbox(tmp_path_factory.mktemp("rf3"), tmp_path_factory.mktemp("home"), data_paths=1,
                         load=0) as env:
        load(env.meta, spaces=1, size_bytes=4 << 20, seed=41, replica_factor=3)
        before = env.checksum()
        for i, target in enumerate([["--storage", f"local://{tmp_path / 'b'}"], env.s3("rf3"), env.oss("rf3")]):
            b = env.ok("start", "backup", "--config", env.config, *target)
            if i == 0:
                hosts = {k.split("/")[2] for k in (p.relative_to(tmp_path / "b").as_posix()
                                                   for p in (tmp_path / "b").rglob("*.sst")) if "/data/" in k}
                assert len(hosts) == 3  # every storaged's replica went into the backup
            load(env.meta, spaces=1, size_bytes=1 << 20, seed=43 + i, replica_factor=3)
            assert env.checksum() != before
            env.ok("start", "restore", "--yes", "--config", env.config, *target, "--name", b["facts"]["backup_name"])
            assert env.checksum() == before
