"""A storaged, on start, removes every part of its data path that meta no longer assigns to it
(src/kvstore/NebulaStore.cpp, loadPartFromDataPath → RocksEngine::removePart, Nebula v3.8.0)."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import rocksdict
from nebula3.common import ttypes as common
from nebula3.meta import ttypes as meta

from brsm.sandbox import cluster, control, layout
from brsm.sandbox.data import load as sandbox_load
from brsm.sandbox.hosts import Host, run_service
from brsm.sandbox.part_cleanup import unassigned
from brsm.sandbox.storaged import commit_key

pytestmark = pytest.mark.sandbox
EC = common.ErrorCode


def test_unassigned_is_what_is_local_and_not_assigned():
    assert unassigned([1, 2, 3], [2]) == [1, 3] and unassigned([], [1]) == [] and unassigned([5], [5]) == []


def test_a_storaged_removes_on_start_the_parts_meta_moved_away(tmp_path):
    """restoreMeta's host pairs rewrite the parts of every space (RestoreProcessor::replaceHostInPartition):
    the storaged of a host whose parts moved away finds, on its next start, parts meta no longer assigns to it and
    removes them (their system keys; RocksEngine::removePart)."""
    state, _ = cluster.up(str(tmp_path), meta_hosts=1, storage_hosts=2, agents=False)
    try:
        leader = state["meta"][0]
        sandbox_load(leader, spaces=1, size_bytes=1 << 16, value_size=1024, partition_num=4, seed=2)  # every part written
        s1 = next(h for h in state["hosts"] if h["name"] == "storage1")
        s2 = next(h for h in state["hosts"] if h["name"] == "storage2")
        a1, a2 = f"{s1['address']}:9779", f"{s2['address']}:9779"
        with control.MetaClient(leader, timeout=30) as c:
            sid = c.getSpace(meta.GetSpaceReq(space_name=b"space1")).item.space_id
            alloc = c.getPartsAlloc(meta.GetPartsAllocReq(space_id=sid)).parts
            mine = sorted(p for p, hs in alloc.items() if control.fmt_addr(hs[0]) == a1)
            assert mine
            bm = control.check(c.createBackup(meta.CreateBackupReq(spaces=[b"space1"])), "createBackup").meta
        h1 = Host.from_json(s1)
        run_service(h1, "stop", "storaged")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and run_service(h1, "status", "storaged").stdout.count("Running"):
            time.sleep(0.2)
        files = []
        for f in bm.meta_files:
            dst = tmp_path / os.path.basename(f.decode())
            dst.write_bytes(Path(f.decode()).read_bytes())
            files.append(str(dst).encode())
        # the two hosts swapped (both stay registered machines): every part storage1 had is now storage2's
        pairs = [meta.HostPair(from_host=control.host_addr(a1), to_host=control.host_addr(a2)),
                 meta.HostPair(from_host=control.host_addr(a2), to_host=control.host_addr(a1))]
        with control.MetaClient(leader, timeout=30) as c:
            assert c.restoreMeta(meta.RestoreMetaReq(files=files, hosts=pairs)).code == EC.SUCCEEDED
        run_service(h1, "start", "storaged")
        log = Path(s1["root"], "install", "logs", "nebula-storaged.log")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and log.read_text().count("will remove it!") < len(mine):
            time.sleep(0.2)
        text = log.read_text()
        for pid in mine:
            assert f"Part {pid} of space {sid} is not in balancing and does not exist in meta any more" in text
        dp = s1["data_paths"][0]
        db = rocksdict.Rdict(layout.space_data_dir(dp, sid), rocksdict.Options(raw_mode=True),
                             access_type=rocksdict.AccessType.read_only())
        try:
            assert all(db.get(commit_key(pid)) is None for pid in mine)
        finally:
            db.close()
    finally:
        cluster.down(str(tmp_path))
