import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from journal import Journal, JournalLocked

from brsm import failpoints
from brsm.engine import events as ev
from brsm.engine.fold import PHASE_DONE, PHASE_FAILED, PHASE_ROLLED_BACK, fold
from brsm.engine.machine import replay
from brsm.engine.runner import Runner
from brsm.errors import RemoteError, UsageError
from tests.engine.toy import World, make_workflow

STEPS = ["LOCKED", "SNAPSHOTTED", "COPIED", "UPLOADED", "CLEANED"]
DRIVER = Path(__file__).with_name("crash_driver.py")


@pytest.fixture
def journal(tmp_path):
    j = Journal.open(tmp_path / "journal.db")
    yield j
    j.close()


def uninterrupted_facts(tmp_path) -> dict:
    j = Journal.open(tmp_path / "ref.db")
    world = World()
    r = Runner(j, make_workflow(world))
    op = r.create({"storage": "toy://"})
    st = asyncio.run(r.run(op))
    j.close()
    return st.facts


async def test_run_to_completion_and_fold_equals_live_state(journal):
    world = World()
    r = Runner(journal, make_workflow(world))
    op = r.create({"storage": "toy://x"}, target="toy://x")
    live = await r.run(op)
    assert live.phase == PHASE_DONE and live.state == "CLEANED"
    assert set(world.effects) == set(STEPS)
    folded = r.state(op)
    assert folded.facts == live.facts and folded.data == live.data and folded.state == live.state
    # Every step has an intent before and a completion after, in order.
    kinds = [(e.type, e.data.get("step")) for e in journal.events(op) if e.type in (ev.STEP_STARTED, ev.STEP_COMPLETED)]
    assert kinds == [(t, s) for s in STEPS for t in (ev.STEP_STARTED, ev.STEP_COMPLETED)]
    model = await replay(live.kind, journal.events(op))
    assert model.state == folded.state == "CLEANED"


async def test_failure_then_resume_reruns_only_the_failed_step(journal):
    world = World(fail_once={"COPIED"})
    r = Runner(journal, make_workflow(world))
    op = r.create({})
    with pytest.raises(RemoteError):
        await r.run(op)
    st = r.state(op)
    assert st.phase == PHASE_FAILED and st.state == "FAILED" and st.last_completed == "SNAPSHOTTED"
    assert st.failure["step"] == "COPIED" and "on purpose" in st.failure["error"]
    assert (await replay(st.kind, journal.events(op))).state == "FAILED"
    done = await r.resume(op)
    assert done.phase == PHASE_DONE
    assert world.runs == {"LOCKED": 1, "SNAPSHOTTED": 1, "COPIED": 2, "UPLOADED": 1, "CLEANED": 1}
    assert (await replay(st.kind, journal.events(op))).state == "CLEANED"


async def test_auto_rollback_undoes_started_steps_newest_first(journal):
    world = World(fail_once={"UPLOADED"})
    r = Runner(journal, make_workflow(world))
    op = r.create({})
    with pytest.raises(RemoteError):
        await r.run(op, auto_rollback=True)
    st = r.state(op)
    assert st.phase == PHASE_ROLLED_BACK and world.effects == {}
    undone = [e.data["step"] for e in journal.events(op, types=[ev.UNDO_COMPLETED])]
    assert undone == ["UPLOADED", "COPIED", "SNAPSHOTTED", "LOCKED"]
    # Idempotent: a second rollback changes nothing and appends nothing.
    n = journal.count_events(op)
    await r.rollback(op)
    assert journal.count_events(op) == n
    with pytest.raises(UsageError):
        await r.resume(op)


async def test_rollback_of_finished_operation_is_refused(journal):
    r = Runner(journal, make_workflow(World()))
    op = r.create({})
    await r.run(op)
    with pytest.raises(UsageError, match="nothing to roll back"):
        await r.rollback(op)


async def test_raise_failpoint_after_step(journal, monkeypatch):
    monkeypatch.setenv(failpoints.ENV, "after:SNAPSHOTTED=raise")
    world = World()
    r = Runner(journal, make_workflow(world))
    op = r.create({})
    with pytest.raises(failpoints.FailpointHit):
        await r.run(op)
    st = r.state(op)
    assert st.last_completed == "SNAPSHOTTED" and st.phase == PHASE_FAILED
    monkeypatch.delenv(failpoints.ENV)
    await r.resume(op)
    assert world.runs["SNAPSHOTTED"] == 1


async def test_second_driver_is_refused(journal):
    r = Runner(journal, make_workflow(World()))
    op = r.create({})
    with journal.driver(op):
        with pytest.raises(JournalLocked):
            await r.run(op)


@pytest.mark.parametrize("point", [f"{w}:{s}" for s in STEPS for w in ("start", "before", "after")] + ["event:3", "event:9"])
def test_crash_anywhere_then_resume_or_rollback(tmp_path, point):
    """SIGKILL-equivalent crash (os._exit) at each boundary; then resume and, separately, rollback."""
    reference = uninterrupted_facts(tmp_path)
    for recovery in ("resume", "rollback"):
        d = tmp_path / recovery
        d.mkdir()
        jpath, wpath = d / "journal.db", d / "world.json"
        env = dict(os.environ, BRSM_FAILPOINTS=f"{point}=crash")
        p = subprocess.run([sys.executable, str(DRIVER), str(jpath), str(wpath), "run"],
                           capture_output=True, text=True, env=env, timeout=60)
        assert p.returncode == failpoints.CRASH_EXIT, p.stderr
        op = int(p.stdout.split()[0])
        env.pop("BRSM_FAILPOINTS")
        p = subprocess.run([sys.executable, str(DRIVER), str(jpath), str(wpath), recovery, str(op)],
                           capture_output=True, text=True, env=env, timeout=60)
        finished_before_crash = point == "after:CLEANED"
        if recovery == "rollback" and finished_before_crash:
            assert p.returncode != 0 and "nothing to roll back" in p.stderr
        elif recovery == "rollback" and point == "before:CLEANED":
            # the final step began: rollback is refused, and resume is the way out
            assert p.returncode != 0 and "final step" in p.stderr
            p = subprocess.run([sys.executable, str(DRIVER), str(jpath), str(wpath), "resume", str(op)],
                               capture_output=True, text=True, env=env, timeout=60)
            assert p.returncode == 0, p.stderr
            finished_before_crash = True
        else:
            assert p.returncode == 0, p.stderr
        j = Journal.open(jpath)
        try:
            assert j.verify(op).ok
            st = fold("backup", j.events(op), make_workflow(World()).state)
            world = World(path=wpath).load()
            if recovery == "resume":
                assert st.phase == PHASE_DONE
                assert st.facts == reference
                assert set(world.effects) == set(STEPS)
            elif finished_before_crash:
                assert st.phase == PHASE_DONE and set(world.effects) == set(STEPS)
            else:
                assert st.phase == PHASE_ROLLED_BACK
                assert world.effects == {}
        finally:
            j.close()


async def test_operation_finished_reports_the_journal_time_of_this_drive(journal):
    """The runner times its own journal appends (single and batched) and puts the totals in
    OperationFinished: transactions, events and seconds, counted exactly."""
    import time as _time
    from dataclasses import replace

    world = World()
    wf = make_workflow(world)
    plain_copied = wf.steps["COPIED"]

    async def copied(ctx):
        facts = await plain_copied(ctx)
        ctx.record_batch([("ToyFile", {"n": i}) for i in range(300)])
        ctx.record_batch([])  # nothing to write: no transaction
        return facts

    r = Runner(journal, replace(wf, steps={**wf.steps, "COPIED": copied}))
    op = r.create({})
    t0 = _time.perf_counter()
    await r.run(op)
    wall = _time.perf_counter() - t0
    evs = list(journal.events(op))
    assert evs[-1].type == ev.OPERATION_FINISHED
    stats = evs[-1].data
    drive = evs[1:-1]  # what this drive appended before OperationFinished (OperationCreated came from create)
    assert stats["journal_events"] == len(drive)
    assert stats["journal_appends"] == len(drive) - 299  # the 300 ToyFile events were one transaction
    assert 0 < stats["journal_seconds"] < wall
