"""A run refused before anything took effect ends REFUSED: finished, nothing to resume or roll back,
never FAILED (waiting for an operator) nor ROLLED_BACK (as if it had done something)."""
from __future__ import annotations

import doctest

import pytest
from journal import Journal

from brsm.engine import events as ev
from brsm.engine import runner as runner_mod
from brsm.engine.definitions import REFUSED
from brsm.engine.fold import PHASE_FAILED, PHASE_REFUSED, fold
from brsm.engine.machine import replay
from brsm.engine.runner import PREFLIGHT, Runner, is_refusal
from brsm.workflows.backup.state import BackupState
from brsm.workflows.shared_state import PROBE_WRITTEN
from brsm.errors import LeaseLost, LockHeld, PreflightFailed, RemoteError
from tests.engine.toy import World, make_workflow


@pytest.fixture
def journal(tmp_path):
    j = Journal.open(tmp_path / "journal.db")
    yield j
    j.close()


def test_doctests():
    assert doctest.testmod(runner_mod).failed == 0


def _refusing(world: World, step: str, exc: Exception):
    wf = make_workflow(world)
    steps = dict(wf.steps)

    async def refuse(ctx):
        raise exc

    steps[step] = refuse
    wf.steps = steps
    return wf


async def test_a_lock_refusal_in_the_first_step_ends_refused_not_rolled_back(journal):
    world = World()
    r = Runner(journal, _refusing(world, "LOCKED", LockHeld("cluster is locked by operation 9")))
    op = r.create({})
    with pytest.raises(LockHeld):
        await r.run(op, auto_rollback=True)
    st = r.state(op)
    assert st.phase == PHASE_REFUSED and st.state == REFUSED and st.finished and st.to_undo == []
    assert st.failure["step"] == "LOCKED" and "locked" in st.failure["error"]
    types = [e.type for e in journal.events(op)]
    assert ev.OPERATION_REFUSED in types and ev.ROLLBACK_STARTED not in types and ev.OPERATION_FAILED not in types
    assert (await replay(st.kind, journal.events(op))).state == REFUSED
    # resume and rollback: nothing to do, nothing appended
    n = journal.count_events(op)
    assert (await r.resume(op)).phase == PHASE_REFUSED
    assert (await r.rollback(op)).phase == PHASE_REFUSED
    assert journal.count_events(op) == n and world.effects == {}


async def test_a_preflight_refusal_ends_refused(journal):
    world = World()
    wf = make_workflow(world)

    async def preflight(ctx):
        raise PreflightFailed("ssh: host key mismatch")

    wf.preflight = preflight
    r = Runner(journal, wf)
    op = r.create({})
    with pytest.raises(PreflightFailed):
        await r.run(op, auto_rollback=True)
    assert r.state(op).state == REFUSED


async def test_a_failure_after_an_effect_is_never_a_refusal(journal):
    """A lock error in a later step, or a non-refusal error in the first: FAILED, rolled back as before."""
    world = World()
    r = Runner(journal, _refusing(world, "SNAPSHOTTED", LockHeld("x")))
    op = r.create({})
    with pytest.raises(LockHeld):
        await r.run(op)
    assert r.state(op).phase == PHASE_FAILED
    r2 = Runner(journal, _refusing(World(), "LOCKED", RemoteError("ssh dropped")))
    op2 = r2.create({})
    with pytest.raises(RemoteError):
        await r2.run(op2)
    assert r2.state(op2).phase == PHASE_FAILED


def test_is_refusal_decisions():
    from brsm.engine.fold import new_state

    st = new_state("backup", BackupState)
    assert is_refusal(st, PREFLIGHT, PreflightFailed("x"))
    assert not is_refusal(st, PREFLIGHT, LeaseLost("lost"))  # a run that had the lease
    st.data.apply(PROBE_WRITTEN, {"key": ".brsm-probe-x"})  # a probe left in the storage: an effect
    assert not is_refusal(st, PREFLIGHT, PreflightFailed("x"))
    st = new_state("backup")
    st.started, st.attempts = ["LOCKED"], 2  # a second attempt: the first may have done something
    assert not is_refusal(st, "LOCKED", LockHeld("x"))


def test_an_old_journal_failed_before_any_step_still_folds_failed():
    """Journals written before REFUSED existed keep their meaning: OperationFailed stays FAILED."""
    class E:
        def __init__(self, seq, type_, data):
            self.seq, self.type, self.data = seq, type_, data

    st = fold("backup", [E(1, ev.OPERATION_CREATED, {"params": {}}),
                         E(2, ev.OPERATION_FAILED, {"step": "PREFLIGHT", "error": "x"})])
    assert st.phase == PHASE_FAILED and not st.finished


async def test_a_refused_run_counts_as_a_failure_in_the_metrics(journal):
    """A cron backup refused (locked, SSH down) is a backup that did not happen: monitoring must see it."""
    from brsm.console.metrics import journal_figures

    r = Runner(journal, _refusing(World(), "LOCKED", LockHeld("locked")))
    op = r.create({})
    with pytest.raises(LockHeld):
        await r.run(op)
    (fig,) = journal_figures(journal, lambda p: "-")
    assert fig.state == REFUSED and fig.outcome == "failure" and fig.ended is not None
