"""Bugs found by the crash-point sweep (tests/reliability, scripts/sweep), one test each.

Deterministic: the real backup workflow through the real Runner and journal, on the in-process
fakes of property_tests/campaign_support.
"""
from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from property_tests.campaign_support import BACKUP_PARAMS, SimulatedCrash, World, fast_sleeps, mem


@pytest.fixture
def world():
    with fast_sleeps():
        w = World()
        yield w
        w.close()


def _first_part_last(w: World) -> None:
    """Parts of one upload finish out of order (as they do on S3/OSS with 4 in flight): part 1
    lands after the others."""
    store = mem(w.storage)
    send = store._mp_upload_part

    async def slow_first(full, upload_id, n, data):
        if n == 1:
            for _ in range(20):
                await asyncio.sleep(0)
        return await send(full, upload_id, n, data)

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
    assert mem(world.storage).requests["upload_part"] == len(parts)


def test_resume_sends_only_parts_not_journaled_when_parts_finished_out_of_order(world):
    _first_part_last(world)
    op = world.backup_runner.create(BACKUP_PARAMS)
    # PreflightPassed, LOCKED x2, SNAPSHOTTED x3, StepStarted COPIED, FilesPlanned: the next
    # appends are PartUploaded; crash after a few of them (part 1 of the first upload is still in flight)
    world.journal.arm(8 + 3)
    with pytest.raises(SimulatedCrash):
        world.run(world.backup_runner.run(op))
    world.process_died()
    before = set(_parts(world, op))
    assert before and all(n != 1 for _, _, n in before), before  # parts 2.. journaled, part 1 not yet
    sent_before = mem(world.storage).requests["upload_part"]
    world.clear_faults()
    st = world.run(world.backup_runner.resume(op))
    assert st.phase == "done"
    after = _parts(world, op)[len(before):]
    resent = before & set(after)
    assert resent == set(), f"journaled parts sent again on resume: {sorted(resent)[:3]}"
    assert mem(world.storage).requests["upload_part"] - sent_before == len(after)
    assert mem(world.storage).uploads == {}
