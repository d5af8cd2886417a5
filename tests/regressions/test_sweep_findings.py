"""Bugs found by the crash-point sweep (tests/reliability, scripts/sweep), one test each.

Deterministic: the real backup workflow through the real Runner and journal, on the in-process
fakes of property_tests/campaign_support (sleeps do not wait).
"""
from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from collections import Counter

import pytest

from brsm.errors import BrsmError
from brsm.workflows import lease as lease_mod
from brsm.workflows.layout import MANIFEST_FILES, lease_path
from property_tests.campaign_support import BACKUP_PARAMS, SimulatedCrash, World, leases_left, mem

from .conftest import PROBE_EVENTS


def _first_part_last(w: World) -> None:
    """Parts of one upload finish out of order (as they do on S3/OSS with 4 in flight): part 1
    lands after the others."""
    store = mem(w.storage)
    send = store._mp_upload_part

    async def slow_first(full, upload_id, n, data):
        store.parts_sent_to.append(full)
        if n == 1:
            for _ in range(20):
                await asyncio.sleep(0)
        return await send(full, upload_id, n, data)

    store.parts_sent_to = []
    store._mp_upload_part = slow_first


def _parts(w: World, op: int) -> list[tuple[str, str, int]]:
    return [(e.data["key"], e.data["upload_id"], e.data["n"]) for e in w.inner.events(op, "PartUploaded")]


# Found by the sweep (backup s3 part:9 resume), fixed: brsm/workflows/backup.py copied(): on_part
# journaled ``state.parts[-1]`` (the highest-numbered part so far) instead of the part that had
# just been stored. When parts finished out of order the part that finished was never journaled
# and a higher one was journaled twice, so a resume after a crash sent already-stored parts again
# and the journal did not say which parts were stored.
def test_every_stored_part_is_journaled_once_when_parts_finish_out_of_order(world):
    _first_part_last(world)
    op = world.backup_runner.create(BACKUP_PARAMS)
    st = world.run(world.backup_runner.run(op))
    assert st.phase == "done"
    parts = _parts(world, op)
    assert parts, "the fakes' files should go up in several parts"
    twice = [p for p, k in Counter(parts).items() if k > 1]
    assert twice == [], f"parts journaled twice: {twice[:3]}"
    per_upload = Counter((key, uid) for key, uid, _ in parts)
    for (key, uid), k in per_upload.items():
        assert sorted(n for kk, u, n in parts if (kk, u) == (key, uid)) == list(range(1, k + 1)), key
    # every part of a copied file journaled (the manifest's file list, written in one go at UPLOADED, is
    # no copied file: its parts are not journaled, it is sent again whole)
    assert len([k for k in mem(world.storage).parts_sent_to if not k.endswith(MANIFEST_FILES)]) == len(parts)


def test_resume_sends_only_parts_not_journaled_when_parts_finished_out_of_order(world):
    _first_part_last(world)
    op = world.backup_runner.create(BACKUP_PARAMS)
    # PreflightPassed, LOCKED x2, SNAPSHOTTED x3, StepStarted COPIED, FilesPlanned: the next
    # appends are PartUploaded; crash after a few of them (part 1 of the first upload is still in flight)
    world.journal.arm(PROBE_EVENTS + 8 + 3)
    with pytest.raises(SimulatedCrash):
        world.run(world.backup_runner.run(op))
    world.process_died()
    before = set(_parts(world, op))
    assert before and all(n != 1 for _, _, n in before), before  # parts 2.. journaled, part 1 not yet
    sent_before = len(mem(world.storage).parts_sent_to)
    world.clear_faults()
    st = world.run(world.backup_runner.resume(op))
    assert st.phase == "done"
    after = _parts(world, op)[len(before):]
    resent = before & set(after)
    assert resent == set(), f"journaled parts sent again on resume: {sorted(resent)[:3]}"
    sent = mem(world.storage).parts_sent_to[sent_before:]
    assert len([k for k in sent if not k.endswith(MANIFEST_FILES)]) == len(after)  # the manifest's list: not copied data
    assert mem(world.storage).uploads == {}


# -- a run killed between creating the lease dir and writing its holder --------------------------
def _kill_between_mkdir_and_holder(w: World) -> int:
    """What a SIGKILL after `mkdir <lease>` and before `holder.json` leaves: the journal has LOCKED
    begun (not completed), every metad host has an empty lease dir."""
    op = w.backup_runner.create(BACKUP_PARAMS)
    w.journal.arm(PROBE_EVENTS + 2)  # PreflightPassed, StepStarted LOCKED; the crash is on StepCompleted LOCKED
    with pytest.raises(SimulatedCrash):
        w.run(w.backup_runner.run(op))
    w.process_died()
    w.clear_faults()
    for a in w.cluster.meta_addrs:
        m = w.cluster.host_of(a)
        holder = m.norm(f"{lease_path(w.cluster.install_dir)}/holder.json")
        assert holder in m.files
        del m.files[holder]
    assert leases_left(w.cluster), "the empty lease dirs should be there"
    return op


# Found by the sweep (backup local kill@1.42s resume: "cluster lease ... exists but names no holder"),
# fixed: brsm/workflows/lease.py Lease._acquire_one: a lease dir without holder.json was refused for
# ever (LockHeld, exit 3), so a run SIGKILLed between `mkdir` and writing its holder could be neither
# resumed nor rolled back, and every later run was locked out, until someone ran `brsm gc`. A dir
# that stays without a holder for ABANDONED_AFTER s is now taken over (journaled as LeaseBroken).
@pytest.mark.parametrize("recovery", ["resume", "rollback"])
def test_recovery_after_a_kill_between_lease_mkdir_and_holder(world, recovery):
    op = _kill_between_mkdir_and_holder(world)
    st = world.run(getattr(world.backup_runner, recovery)(op))
    assert st.phase == ("done" if recovery == "resume" else "rolled_back")
    assert leases_left(world.cluster) == []
    broken = [e.data for e in world.inner.events(op, "LeaseBroken")]
    assert broken and broken[0]["holder_op"] == 0 and "without holder.json" in broken[0]["holder"]


def test_next_run_takes_over_an_abandoned_empty_lease(world):
    _kill_between_mkdir_and_holder(world)
    op = world.backup_runner.create(BACKUP_PARAMS)
    st = world.run(world.backup_runner.run(op))
    assert st.phase == "done"
    assert leases_left(world.cluster) == []


def test_a_holder_written_late_is_respected_not_taken_over(world, monkeypatch):
    """The wait is what keeps a slow but live run's lease: its holder.json appears during it."""
    _kill_between_mkdir_and_holder(world)
    reads = {"n": 0}
    real_read = lease_mod.read_holder

    async def read(host, path):
        reads["n"] += 1
        if reads["n"] == 3:  # another (live) run writes its holder a moment late
            m = world.cluster.host_of(world.cluster.meta_addrs[0])
            m.files[m.norm(f"{path}/holder.json")] = json.dumps(
                {"op_id": 77, "kind": "backup", "who": "x@y", "machine": socket.gethostname(), "pid": os.getpid(),
                 "expires": time.time() + 300}).encode()
        return await real_read(host, path)

    monkeypatch.setattr(lease_mod, "read_holder", read)
    op = world.backup_runner.create(BACKUP_PARAMS)
    with pytest.raises(BrsmError, match="locked by operation 77"):
        world.run(world.backup_runner.run(op))
