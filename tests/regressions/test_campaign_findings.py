"""Bugs found by the hypothesis fault campaigns (property_tests/test_*_campaign.py), one test each.

Deterministic: the real workflows through the real Runner and journal, on the in-process fakes.
Each open bug is a strict xfail naming the cause; when it is fixed the xfail turns into a failure
(XPASS) and the marker must go (and its tolerance in property_tests/campaign_support.KNOWN with it).
"""
from __future__ import annotations

import asyncio

import pytest

from brsm.errors import BrsmError, LockHeld
from property_tests.campaign_support import (
    BACKUP_PARAMS,
    SimulatedCrash,
    World,
    leases_left,
    mem,
)

from .conftest import PROBE_EVENTS


def _pending(w: World) -> list[asyncio.Task]:
    return [t for t in asyncio.all_tasks(w.loop) if not t.done()]


# Found by the campaign, fixed: brsm/workflows/common.py probe_storage: the probe object is deleted only after a successful  read-back; when get_bytes fails (or reads different bytes) `.brsm-probe-<op>-<t>` stays in the  user's storage forever. Fix: delete the probe in a finally (best effort)."
def test_probe_object_removed_when_preflight_read_back_fails(world):
    mem(world.storage).inject_fault("get", 1, permanent=True)
    op = world.backup_runner.create(BACKUP_PARAMS)
    with pytest.raises(BrsmError):
        world.run(world.backup_runner.run(op))
    world.clear_faults()
    world.run(world.backup_runner.rollback(op))
    assert mem(world.storage).objects == {}


# Found by the campaign, fixed: brsm/workflows/backup.py copied(): a crash after a multipart upload was created (a part stored)  but before its PartUploaded event was durable makes resume start a new upload for that key; the  first one is never completed nor aborted, so a finished backup leaves an incomplete multipart  upload (bil
def test_resume_after_crash_mid_multipart_leaves_no_upload(world):
    op = world.backup_runner.create(BACKUP_PARAMS)
    # 8 appends: PreflightPassed, LOCKED x2, SNAPSHOTTED x3 (with SnapshotRequested), StepStarted
    # COPIED, FilesPlanned; the 9th (the first PartUploaded) is the crash.
    world.journal.arm(PROBE_EVENTS + 8)
    with pytest.raises(SimulatedCrash):
        world.run(world.backup_runner.run(op))
    world.process_died()
    assert mem(world.storage).uploads, "the crash should leave an upload in flight"
    world.clear_faults()
    st = world.run(world.backup_runner.resume(op))
    assert st.phase == "done"
    assert mem(world.storage).uploads == {}


# Found by the campaign, fixed: brsm/workflows/lease.py Lease.acquire: starts a new refresh task without stopping the one it  already has. On resume after a crash inside LOCKED, attach (common.reattach_lease) acquires the  lease and LOCKED re-runs locked(), which acquires the same Lease object again: the first  _refresh_loop task
def test_relocking_after_reattach_leaks_no_refresh_task(world):
    op = world.backup_runner.create(BACKUP_PARAMS)
    world.journal.arm(PROBE_EVENTS + 2)  # PreflightPassed, StepStarted LOCKED; crash on StepCompleted LOCKED
    with pytest.raises(SimulatedCrash):
        world.run(world.backup_runner.run(op))
    world.process_died()
    world.clear_faults()
    st = world.run(world.backup_runner.resume(op))
    assert st.phase == "done"
    assert _pending(world) == [], "a lease refresh task outlives the operation"


# Found by the campaign, fixed: brsm/workflows/lease.py Lease._acquire_one: after `mkdir <lease>` succeeds, a failed write of  holder.json (disk full, SSH drop) leaves an empty lease dir that acquire's cleanup does not know  about (the host is not in `taken`) and release never removes (_release_one needs a holder naming  the op).
def test_lease_dir_removed_when_holder_write_fails(world):
    world.cluster.faults.add("disk_full", world.cluster.meta_addrs[0].host, count=1)
    op = world.backup_runner.create(BACKUP_PARAMS)
    with pytest.raises(BrsmError):
        world.run(world.backup_runner.run(op))
    assert leases_left(world.cluster) == [], "a lease dir without holder.json is left on the cluster"
    world.clear_faults()
    try:
        st = world.run(world.backup_runner.resume(op))
    except LockHeld as e:
        pytest.fail(f"resume after clearing the fault: {e.message}")
    assert st.phase == "done"


# Found by the campaign, fixed: brsm/workflows/restore.py + engine: rollback is accepted after CLEANED has started. cleaned()  removes the set-aside originals one data path at a time; if it fails part-way (a host down),  `brsm rollback` runs undo_downloaded/undo_set_aside, which restore the originals only where the  set-aside dir
def test_rollback_refused_after_cleanup_began(world, monkeypatch):
    from property_tests.campaign_support import nebula_trees, space_data

    c = world.cluster
    name = world.make_backup()
    c.write("basketball")
    c.write("football")
    pre = nebula_trees(c)
    op = world.restore_runner.create({"name": name, "verify": "quick"})
    monkeypatch.setenv("BRSM_FAILPOINTS", "before:CLEANED=raise")
    with pytest.raises(BrsmError):
        world.run(world.restore_runner.run(op))
    monkeypatch.delenv("BRSM_FAILPOINTS")
    # CLEANED removes 127.0.0.101's set-aside dirs, then cannot reach 127.0.0.102.
    c.faults.add("host_down", "127.0.0.102", count=1)
    with pytest.raises(BrsmError):
        world.run(world.restore_runner.resume(op))
    world.clear_faults()
    try:
        st = world.run(world.restore_runner.rollback(op))
    except BrsmError:
        # Refusing is right: the originals of some data paths are gone. Resume must then finish.
        st = world.run(world.restore_runner.resume(op))
        assert st.phase == "done"
        return
    assert st.phase == "rolled_back"
    assert nebula_trees(c) == pre, "ROLLED_BACK, yet some data paths hold the restored data"


# Found by the campaign, fixed: brsm/workflows/lease.py Lease._release_one / _read: _read maps every RemoteError (an SSH drop, a  host down) to 'no holder', and _release_one then skips the removal and returns as if released.  CLEANED (or rollback's undo of LOCKED/CHECKED) completes and the operation ends DONE/ROLLED_BACK  with its
def test_lease_released_even_if_holder_read_drops(world):
    op = world.backup_runner.create(BACKUP_PARAMS)
    host = world.cluster.meta_addrs[0].host
    # CLEANED begins: the next SSH read on the first metad drops at byte 0 (the holder.json read).
    world.backup_box["at_step"]["CLEANED"] = [lambda: world.cluster.faults.add("disconnect", host, count=1,
                                                                               after_bytes=0)]
    try:
        st = world.run(world.backup_runner.run(op))
    except BrsmError:
        world.clear_faults()
        st = world.run(world.backup_runner.resume(op))
    assert st.phase == "done"
    assert leases_left(world.cluster) == [], "the operation is DONE but its lease is still on the cluster"


# Found by the campaign, fixed: brsm/workflows/lease.py Lease._acquire_one: the 'is it ours?' check runs only on the first read  of holder.json. When that read fails (an SSH drop: _read returns None) and the re-read after  0.2 s finds the operation's own holder, the code falls through to is_stale() and raises LockHeld  'cluster is
def test_reacquire_own_lease_after_a_dropped_read(world):
    op = world.backup_runner.create(BACKUP_PARAMS)
    mem(world.storage).inject_fault("put", -1, permanent=True)
    with pytest.raises(BrsmError):
        world.run(world.backup_runner.run(op))  # fails in COPIED, holding its lease
    world.clear_faults()
    world.cluster.faults.add("disconnect", world.cluster.meta_addrs[0].host, count=1, after_bytes=0)
    try:
        st = world.run(world.backup_runner.resume(op))
    except LockHeld as e:
        pytest.fail(f"resume refused by its own lease: {e.message}")
    assert st.phase == "done"


# Found by the campaign (session 2), fixed: brsm/workflows/common.py probe_storage swallowed a failed
# delete of the preflight probe, so a storage that refused it (once) kept `.brsm-probe-<op>-<t>` forever.
# Now the probe is journaled before it is written and after it is gone; a refused delete fails the
# preflight naming the object, and rollback or CLEANED removes it.
@pytest.mark.parametrize("finish", ["rollback", "resume"])
def test_a_probe_the_storage_refused_to_delete_is_removed_by_rollback_or_resume(world, finish):
    mem(world.storage).inject_fault("delete", 1, permanent=True)
    op = world.backup_runner.create(BACKUP_PARAMS)
    with pytest.raises(BrsmError) as ei:
        world.run(world.backup_runner.run(op))
    assert "refused to delete" in str(ei.value) and ".brsm-probe-" in str(ei.value)
    assert [k for k in mem(world.storage).objects if ".brsm-probe-" in k]  # left, but journaled
    world.clear_faults()
    st = world.run(world.backup_runner.rollback(op) if finish == "rollback" else world.backup_runner.resume(op))
    assert st.phase == ("rolled_back" if finish == "rollback" else "done")
    assert [k for k in mem(world.storage).objects if ".brsm-probe-" in k] == []


# Found by the direct-path campaign (session 8), fixed: brsm/workflows/direct.py probe_host: the
# preflight's probe upload (a multipart upload of a few bytes under `.brsm-direct-probe-`) was aborted
# once; a store that refused that abort left it open in the user's bucket for good, unrecorded. Fix: the
# probe upload is journaled (ProbeWritten, upload) before it is opened and ProbeRemoved once aborted;
# CLEANED and the rollback abort what is still journaled.
@pytest.mark.parametrize("finish", ["resume", "rollback"])
def test_a_direct_probe_upload_the_store_would_not_abort_is_aborted_later(world, finish):
    mem(world.storage).inject_fault("abort_upload", 1)
    op = world.backup_runner.create({**BACKUP_PARAMS, "data_path": "direct"})
    if finish == "rollback":
        world.journal.arm(PROBE_EVENTS + 12)  # well after the preflight: a crash, then a rollback
        with pytest.raises(SimulatedCrash):
            world.run(world.backup_runner.run(op))
        world.process_died()
        world.journal.arm(None)
        st = world.run(world.backup_runner.rollback(op))
        assert st.phase == "rolled_back"
    else:
        st = world.run(world.backup_runner.run(op))
        assert st.phase == "done" and st.facts["data_path"] == "direct"
    assert mem(world.storage).uploads == {}


def test_a_direct_restores_probe_upload_the_store_would_not_abort_is_aborted_by_cleaned(world):
    name = world.make_backup()
    mem(world.storage).inject_fault("abort_upload", 1)
    op = world.restore_runner.create({"name": name, "verify": "quick", "data_path": "direct"})
    st = world.run(world.restore_runner.run(op))
    assert st.phase == "done" and st.facts["data_path"] == "direct"
    assert mem(world.storage).uploads == {}


def _meta_checkpoints(w: World, name: str) -> list[str]:
    """The metads (host:dir) that still hold ``name``'s meta checkpoint."""
    import posixpath

    out = []
    for a in w.cluster.meta_addrs:
        d = posixpath.join(w.cluster.meta_paths[a], "nebula", "0", "checkpoints", name)
        if w.cluster.host_of(a).is_dir(d) or w.cluster.host_of(a).under(d):
            out.append(f"{a.host}:{d}")
    return out


def _backup_whose_drop_moves_the_leader_and_meta_dir_fails(w: World, fails: int):
    """The campaign's case: the meta leader moves on dropSnapshot (CLEANED), so metad drops only the
    new leader's (absent) copy, then getMetaDirInfo answers E_RPC_FAILURE ``fails`` times while brsm
    removes the former leader's (the first metad it checks)."""
    w.cluster.faults.add("leader_change", "dropSnapshot", 1)
    w.backup_box["at_step"]["CLEANED"] = [lambda: w.cluster.faults.add("meta_code", "getMetaDirInfo", count=fails,
                                                                       code=-2)]
    op = w.backup_runner.create(BACKUP_PARAMS)
    st = w.run(w.backup_runner.run(op))
    assert st.phase == "done" and w.cluster.leader == w.cluster.meta_addrs[1]
    return op, st.facts["backup_name"]


# Found by the campaign, fixed: brsm/workflows/common.py remove_meta_checkpoints: a metad it could not check after dropSnapshot
# (getMetaDirInfo answered an error, its host dropped for a moment) was only noted under `left` and never
# tried again, and gc removed meta checkpoints only of snapshots still listed: a former meta leader kept
# `<meta data>/nebula/0/checkpoints/BACKUP_…` for good after a backup reported done. Fix: each metad is
# retried (retries.META_CHECKPOINT), and `brsm gc` lists and removes what is still left (meta_checkpoint).
def test_a_meta_checkpoint_a_brief_metad_error_hid_is_removed_by_cleaned(world):
    from property_tests.campaign_support import all_files

    original = all_files(world.cluster)
    op, name = _backup_whose_drop_moves_the_leader_and_meta_dir_fails(world, fails=2)
    assert _meta_checkpoints(world, name) == []
    assert world.meta_checkpoints_left(op) == []
    assert all_files(world.cluster) == original


def test_a_meta_checkpoint_cleaned_could_not_reach_is_removed_by_gc(world):
    from brsm.retries import META_CHECKPOINT
    from property_tests.campaign_support import all_files

    original = all_files(world.cluster)
    op, name = _backup_whose_drop_moves_the_leader_and_meta_dir_fails(world, fails=META_CHECKPOINT.attempts)
    stray = _meta_checkpoints(world, name)
    assert len(stray) == 1 and world.meta_checkpoints_left(op) != []  # out of reach for every try: left
    world.clear_faults()
    dry = world.gc(confirm=False)
    assert [(o["kind"], f"{o['host']}:{o['path']}") for o in dry.facts["orphans"]] == [("meta_checkpoint", stray[0])]
    assert _meta_checkpoints(world, name) == stray  # a dry run removes nothing
    done = world.gc(confirm=True)
    assert done.phase == "done" and done.facts["removed"] == 1
    assert _meta_checkpoints(world, name) == []
    assert all_files(world.cluster) == original
    assert world.gc(confirm=False).facts["orphans"] == []


# Found by the incremental backup campaign (session 14), fixed: brsm/adapters/storage/base.py put(): a
# multipart put whose caller keeps no UploadState (the manifest's file list, grown past the multipart
# threshold once lines carry identities) and whose part failed was tried again by RetryStorage as a new
# upload; the first one was never completed nor aborted, and UPLOADED had aborted the backup's open
# uploads before it wrote the manifest: a finished backup left an upload in the bucket, for good.
def test_a_put_nobody_can_resume_leaves_no_upload_when_a_part_fails(world):
    from brsm.workflows.manifest import FileListBytes

    ms = mem(world.storage)
    files = [{"key": f"B/data/h/{i:06d}.sst", "size": 1, "sha256": "a" * 64, "host": "h", "path": "/p" * 40}
             for i in range(400)]
    src = FileListBytes(lambda: iter(files))
    size = sum(len(c) for c in asyncio.run(_all(src)))
    assert size > ms.multipart_threshold, "the list must go in parts"
    ms.inject_fault("upload_part", 1, skip=1)  # the second part of the first attempt fails
    got = world.run(world.storage.put("B/brsm-manifest-files.jsonl", src, size))
    assert got.size == size
    assert ms.uploads == {}, "the failed attempt's upload was left open"


async def _all(src) -> list[bytes]:
    return [c async for c in src.open()]
