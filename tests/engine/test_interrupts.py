"""Runner.interrupt (what the CLI calls on SIGINT/SIGTERM): the run ends the way a failure does.

The toy workflow's steps and undos can be made to hang on an event, so an interruption lands inside
a step or a compensation exactly; the journal then must say which signal ended the run, and the
world must be rolled back, kept, or rolled back in part as documented (docs/exit-codes.md).
"""
import asyncio
from dataclasses import replace

import pytest
from journal import Journal

from brsm.engine import events as ev
from brsm.engine.fold import PHASE_DONE, PHASE_FAILED, PHASE_ROLLED_BACK, PHASE_ROLLING_BACK
from brsm.engine.runner import Runner
from brsm.errors import Interrupted, RemoteError
from tests.engine.toy import World, make_workflow


@pytest.fixture
def journal(tmp_path):
    j = Journal.open(tmp_path / "journal.db")
    yield j
    j.close()


def hanging(wf, *, step: str | None = None, undo: str | None = None):
    """The toy workflow with ``step`` (or ``undo``) waiting until cancelled; ``entered`` is set on entry."""
    entered = asyncio.Event()

    async def wait_forever(ctx):
        entered.set()
        await asyncio.Event().wait()

    def hang_then(fn):
        async def run(ctx):
            entered.set()
            await asyncio.Event().wait()
            return await fn(ctx)  # never reached
        return run

    steps, undos = dict(wf.steps), dict(wf.undos)
    if step:
        steps[step] = hang_then(steps[step])
    if undo:
        undos[undo] = wait_forever
    return replace(wf, steps=steps, undos=undos), entered


async def drive_and_interrupt(runner, coro, entered, *signals, gap=0.0):
    task = asyncio.ensure_future(coro)
    await asyncio.wait_for(entered.wait(), 5)
    for i, sig in enumerate(signals):
        runner.interrupt(sig)
        if gap and i + 1 < len(signals):
            await asyncio.sleep(gap)
    with pytest.raises(Interrupted) as ei:
        await asyncio.wait_for(task, 5)
    return ei.value


def failures(journal, op):
    return [e.data for e in journal.events(op, types=[ev.OPERATION_FAILED])]


async def test_signal_in_a_step_is_journaled_then_rolled_back(journal):
    world = World()
    wf, entered = hanging(make_workflow(world), step="COPIED")
    r = Runner(journal, wf)
    op = r.create({})
    err = await drive_and_interrupt(r, r.run(op, auto_rollback=True), entered, "SIGTERM")
    assert err.signal == "SIGTERM" and err.exit_code == 143
    st = r.state(op)
    assert st.phase == PHASE_ROLLED_BACK and world.effects == {}
    assert failures(journal, op) == [{"step": "COPIED", "error": "interrupted by SIGTERM", "error_type": "Interrupted",
                                      "hint": None, "signal": "SIGTERM"}]
    undone = [e.data["step"] for e in journal.events(op, types=[ev.UNDO_COMPLETED])]
    assert undone == ["COPIED", "SNAPSHOTTED", "LOCKED"]
    assert r.interrupted_step == "COPIED" and r.rollback_stopped_at is None


async def test_signal_with_keep_on_failure_leaves_it_resumable(journal):
    world = World()
    wf, entered = hanging(make_workflow(world), step="UPLOADED")
    r = Runner(journal, wf)
    op = r.create({})
    err = await drive_and_interrupt(r, r.run(op, auto_rollback=False), entered, "SIGINT")
    assert err.exit_code == 130
    st = r.state(op)
    assert st.phase == PHASE_FAILED and st.last_completed == "COPIED" and st.failure["signal"] == "SIGINT"
    assert set(world.effects) == {"LOCKED", "SNAPSHOTTED", "COPIED"}
    # a new runner (a new process) resumes it to the end
    done = await Runner(journal, make_workflow(world)).resume(op)
    assert done.phase == PHASE_DONE and set(world.effects) == set(make_workflow(world).steps)


async def test_second_signal_stops_the_rollback_which_a_later_rollback_finishes(journal):
    world = World()
    wf, entered = hanging(make_workflow(world), undo="SNAPSHOTTED")
    wf, entered_step = hanging(wf, step="UPLOADED")
    r = Runner(journal, wf)
    op = r.create({})
    task = asyncio.ensure_future(r.run(op, auto_rollback=True))
    await asyncio.wait_for(entered_step.wait(), 5)
    r.interrupt("SIGTERM")
    await asyncio.wait_for(entered.wait(), 5)  # the rollback is inside undo SNAPSHOTTED
    r.interrupt("SIGINT")
    with pytest.raises(Interrupted) as ei:
        await asyncio.wait_for(task, 5)
    assert ei.value.signal == "SIGINT"
    st = r.state(op)
    assert st.phase == PHASE_ROLLING_BACK and st.to_undo == ["SNAPSHOTTED", "LOCKED"]
    assert [f.get("signal") for f in failures(journal, op)] == ["SIGTERM", "SIGINT"]
    assert failures(journal, op)[1] == {"step": "SNAPSHOTTED", "error": "rollback stopped by SIGINT",
                                        "error_type": "Interrupted", "hint": None, "signal": "SIGINT",
                                        "during_rollback": True}
    assert r.interrupted_step == "UPLOADED" and r.rollback_stopped_at == "SNAPSHOTTED"
    assert set(world.effects) == {"LOCKED", "SNAPSHOTTED"}
    st = await Runner(journal, make_workflow(world)).rollback(op)
    assert st.phase == PHASE_ROLLED_BACK and world.effects == {}


async def test_signal_during_brsm_rollback_stops_it_resumably(journal):
    world = World(fail_once={"COPIED"})
    r = Runner(journal, make_workflow(world))
    op = r.create({})
    with pytest.raises(RemoteError):
        await r.run(op)
    wf, entered = hanging(make_workflow(world), undo="SNAPSHOTTED")
    r2 = Runner(journal, wf)
    err = await drive_and_interrupt(r2, r2.rollback(op), entered, "SIGTERM")
    assert err.message == "rollback stopped by SIGTERM" and r2.interrupted_step is None
    assert r.state(op).phase == PHASE_ROLLING_BACK
    assert (await Runner(journal, make_workflow(world)).rollback(op)).phase == PHASE_ROLLED_BACK
    assert world.effects == {}


async def test_signal_before_the_drive_starts_stops_it_before_its_first_step(journal):
    world = World()
    r = Runner(journal, make_workflow(world))
    op = r.create({})
    r.interrupt("SIGTERM")  # e.g. while the CLI was still building the workflow
    with pytest.raises(Interrupted):
        await r.run(op, auto_rollback=True)
    st = r.state(op)
    assert st.phase == PHASE_FAILED and st.started == [] and world.effects == {}
    assert failures(journal, op)[0]["signal"] == "SIGTERM"


async def test_no_automatic_rollback_once_the_final_step_began(journal):
    """The final step discards what rollback needs; a signal (or failure) there leaves it to resume."""
    world = World()
    wf, entered = hanging(make_workflow(world), step="CLEANED")
    r = Runner(journal, wf)
    op = r.create({})
    await drive_and_interrupt(r, r.run(op, auto_rollback=True), entered, "SIGTERM")
    st = r.state(op)
    assert st.phase == PHASE_FAILED and "CLEANED" in st.started
    assert not list(journal.events(op, types=[ev.ROLLBACK_STARTED]))
    assert (await Runner(journal, make_workflow(world)).resume(op)).phase == PHASE_DONE


async def test_a_handled_interruption_leaves_timeouts_working(journal):
    """The runner takes its cancellation back (Task.uncancel): a timeout inside the rollback that
    follows still fires as a timeout, not as a second cancellation."""
    world = World()
    wf, entered = hanging(make_workflow(world), step="COPIED")
    seen = []

    async def undo_with_timeout(ctx):
        try:
            async with asyncio.timeout(0.05):
                await asyncio.sleep(1)
        except TimeoutError:
            seen.append("timeout")

    wf = replace(wf, undos={**wf.undos, "SNAPSHOTTED": undo_with_timeout})
    r = Runner(journal, wf)
    op = r.create({})
    await drive_and_interrupt(r, r.run(op, auto_rollback=True), entered, "SIGTERM")
    assert seen == ["timeout"] and r.state(op).phase == PHASE_ROLLED_BACK


def losing_the_cancel(wf, step: str):
    """The toy workflow with ``step`` losing its cancellation as a library can (3.11's wait_for):
    cancelled while it waits, it finishes normally. ``entered`` is set on entry."""
    entered = asyncio.Event()
    steps = dict(wf.steps)
    inner = steps[step]

    async def run(ctx):
        entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            pass  # lost: the step goes on and returns as if never told to stop
        return await inner(ctx)

    steps[step] = run
    return replace(wf, steps=steps), entered


async def test_a_cancel_lost_inside_a_step_stops_the_run_before_the_next_one(journal):
    """Before: the drive went on through every later step and finished, the SIGTERM forgotten."""
    world = World()
    wf, entered = losing_the_cancel(make_workflow(world), "COPIED")
    r = Runner(journal, wf)
    op = r.create({})
    err = await drive_and_interrupt(r, r.run(op, auto_rollback=True), entered, "SIGTERM")
    assert err.signal == "SIGTERM"
    st = r.state(op)
    assert st.phase == PHASE_ROLLED_BACK and world.effects == {}
    started = [e.data["step"] for e in journal.events(op, types=[ev.STEP_STARTED])]
    assert "UPLOADED" not in started  # nothing after the step that lost it
    assert [(f["step"], f["signal"]) for f in failures(journal, op)] == [("COPIED", "SIGTERM")]
    assert r.interrupted_step == "COPIED"
    assert asyncio.current_task().cancelling() == 0


async def test_a_cancel_lost_inside_a_compensation_stops_the_rollback_before_the_next(journal):
    world = World()
    base = make_workflow(world)
    entered = asyncio.Event()
    undos = dict(base.undos)
    inner = undos["COPIED"]

    async def undo_losing(ctx):
        entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            pass
        return await inner(ctx)

    undos["COPIED"] = undo_losing
    wf = replace(base, undos=undos, steps={**base.steps, "UPLOADED": _raises})  # fails, then rolls back
    r = Runner(journal, wf)
    op = r.create({})
    task = asyncio.ensure_future(r.run(op, auto_rollback=True))
    await asyncio.wait_for(entered.wait(), 5)
    r.interrupt("SIGINT")  # lost inside the undo of COPIED
    with pytest.raises(Interrupted):
        await asyncio.wait_for(task, 5)
    st = r.state(op)
    assert st.phase == PHASE_ROLLING_BACK and r.rollback_stopped_at == "SNAPSHOTTED"
    undone = [e.data["step"] for e in journal.events(op, types=[ev.UNDO_COMPLETED])]
    assert undone == ["UPLOADED", "COPIED"]  # SNAPSHOTTED's undo never started


async def _raises(ctx):
    raise RemoteError("the host went away", host="h1")
