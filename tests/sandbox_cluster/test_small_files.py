"""`brsm sandbox load --files N --partitions P`: the storageds hold N small SST/WAL files as their real
data, in Nebula's layout, so metad's createBackup checkpoint holds them; brsm backs them up and
restores them (checksum equal). Small: 2 storage hosts x 2 data paths, 400 files."""
from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

import pytest
from nebula3.meta import ttypes as meta

from brsm.sandbox import control
from brsm.sandbox.data import split_files

from .conftest import BRSM, brsm_json, start_sandbox, stop_sandbox

pytestmark = pytest.mark.sandbox

FILES = 400
PARTS = 6


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    sb = start_sandbox(tmp_path_factory.mktemp("small-files"), "--storage-hosts", "2", "--data-paths", "2")
    try:
        yield sb
    finally:
        stop_sandbox(sb)


def test_split_files_keeps_the_count_and_gives_each_part_several_wal_segments():
    for n in (0, 1, 2, 3, 17, 5000):
        ssts, wals = split_files(n)
        assert ssts + wals == n
        assert ssts >= 1 or n == 0
        if n >= 3:
            assert wals >= 2
    assert split_files(5000) == (4500, 500)


def test_load_files_puts_them_in_the_checkpoint_and_brsm_round_trips_them(small, tmp_path):
    rep = brsm_json("sandbox", "load", "--dir", small.dir, "--files", str(FILES), "--partitions", str(PARTS))
    assert rep["files"]["sst"] + rep["files"]["wal"] == FILES
    assert rep["files"]["wal"] >= 2 * 2 * PARTS  # several segments for every part of both spaces

    with control.MetaClient(small.info["meta"], timeout=60) as c:
        spaces = {s.name.decode(): s.id.get_space_id()
                  for s in control.check(c.listSpaces(meta.ListSpacesReq()), "listSpaces").spaces}
        assert sorted(spaces) == ["space1", "space2"]
        for sid in spaces.values():
            parts = control.check(c.getPartsAlloc(meta.GetPartsAllocReq(space_id=sid)), "getPartsAlloc").parts
            assert sorted(parts) == list(range(1, PARTS + 1))
        http = control.storage_http_addrs(c)
        # the ingested files are the data storaged serves: one vertex per SST file
        keys = sum(control.http_call(addr, "POST", "/checksum", {"space_id": sid})["keys"]
                   for addr in http.values() for sid in spaces.values())
        assert keys == rep["files"]["sst"]
        bm = control.check(c.createBackup(meta.CreateBackupReq()), "createBackup").meta
        name = bm.backup_name.decode()
        try:
            ckpts = set(glob.glob(os.path.join(small.dir, "hosts", "storage*", "data", "storage*", "nebula", "*",
                                               "checkpoints", name)))
            assert len(ckpts) == 2 * 2 * 2  # hosts x data paths x spaces
            # CheckpointInfo.data_path names the checkpoint dir, resolved (NebulaStore::createCheckpoint)
            named = {cp.data_path.decode() for sb in bm.space_backups.values() for hb in sb.host_backups
                     for cp in hb.checkpoints}
            assert named and named <= {os.path.realpath(c) for c in ckpts}  # what the BackupMeta names is there
            ssts = wals = 0
            wal_dirs = {}
            for ck in ckpts:
                assert ck.endswith(f"/checkpoints/{name}") and "/nebula/" in ck
                ssts += sum(f.endswith(".sst") for f in os.listdir(os.path.join(ck, "data")))
                for pid in os.listdir(os.path.join(ck, "wal")):
                    segs = [f for f in os.listdir(os.path.join(ck, "wal", pid)) if f.endswith(".wal")]
                    wal_dirs[(ck, pid)] = len(segs)
                    wals += len(segs)
            assert ssts >= rep["files"]["sst"] and wals == rep["files"]["wal"]
            assert len(wal_dirs) == 2 * PARTS and min(wal_dirs.values()) >= 2  # one dir per part, several segments
        finally:
            c.dropSnapshot(meta.DropSnapshotReq(names=[name.encode()]))

    before = brsm_json("sandbox", "checksum", "--dir", small.dir)["spaces"]
    env = dict(os.environ, BRSM_HOME=str(tmp_path / "home"))
    env.pop("BRSM_FAILPOINTS", None)

    def run(*args: str) -> dict:
        p = subprocess.run([*BRSM, *args, "--json"], env=env, capture_output=True, text=True, timeout=300,
                           stdin=subprocess.DEVNULL)
        assert p.returncode == 0, f"brsm {' '.join(args)} -> {p.returncode}\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}"
        return json.JSONDecoder().raw_decode(p.stdout.strip())[0]

    cfg = os.path.join(small.dir, "cluster.toml")
    store = f"local://{tmp_path / 'store'}"
    b = run("start", "backup", "--config", cfg, "--storage", store)
    assert b["facts"]["total_files"] >= FILES
    run("start", "restore", "--yes", "--config", cfg, "--storage", store, "--name", b["facts"]["backup_name"])
    assert brsm_json("sandbox", "checksum", "--dir", small.dir)["spaces"] == before
