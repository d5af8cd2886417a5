"""Hints that lead somewhere (issue 13): what an error says to do next comes from the operation's folded
state, not from what the failing step assumed. A rolled-back operation is never told to resume; one
whose final step has begun is never told to roll back (rollback refuses it); resume and rollback never
point at each other."""
from __future__ import annotations

import pytest

from brsm import wiring
from brsm.cli import drive
from brsm.cli.hints import with_next_step
from brsm.console.output import Output
from brsm.engine.definitions import KINDS, OperationKind
from brsm.engine.fold import PHASE_FAILED, PHASE_ROLLED_BACK, PHASE_ROLLING_BACK, new_state
from brsm.engine.workflow import Workflow
from brsm.errors import OperationFailed, StorageError, UsageError

TOY = OperationKind("toy13", ("PREPARED", "WRITTEN", "CLEANED"))


@pytest.fixture(autouse=True)
def toy_kind(monkeypatch):
    """The CLI and the fold find the toy kind by name, for this module's tests only."""
    monkeypatch.setitem(KINDS, TOY.name, TOY)


def state(phase: str, started: tuple[str, ...] = ("PREPARED",)):
    st = new_state(TOY)
    st.phase, st.started = phase, list(started)
    return st


@pytest.mark.parametrize("phase, started, hint, want", [
    # a step's own "resume" hint, after the automatic rollback undid the operation
    (PHASE_ROLLED_BACK, ("PREPARED",), "run `brsm resume 7` to copy them again",
     "operation 7 was rolled back: there is nothing to resume; fix the cause and start again"),
    (PHASE_ROLLED_BACK, ("PREPARED",), "free space on the storage",
     "free space on the storage; operation 7 was rolled back: there is nothing to resume; fix the cause and start "
     "again"),
    (PHASE_FAILED, ("PREPARED",), None, "fix the cause, then `brsm resume 7` (or `brsm rollback 7`)"),
    # the final step has begun: rollback refuses, so it is not offered
    (PHASE_FAILED, ("PREPARED", "WRITTEN", "CLEANED"), "roll it back with `brsm rollback 7` and start a new backup",
     "fix the cause, then `brsm resume 7`"),
    (PHASE_FAILED, ("PREPARED", "WRITTEN", "CLEANED"), None, "fix the cause, then `brsm resume 7`"),
    (PHASE_ROLLING_BACK, ("PREPARED",), "fix the cause, then run `brsm rollback 7` again",
     "fix the cause, then run `brsm rollback 7` again"),
    # another operation's commands are that operation's business
    (PHASE_FAILED, ("PREPARED",), "if that process died, `brsm resume 3` takes its lease back",
     "if that process died, `brsm resume 3` takes its lease back; fix the cause, then `brsm resume 7` (or "
     "`brsm rollback 7`)"),
])
def test_the_next_step_fits_the_folded_state(phase, started, hint, want):
    e = with_next_step(StorageError("x", hint=hint), 7, state(phase, started))
    assert e.hint == want


def test_a_refusal_keeps_its_hint_when_the_state_allows_it():
    e = UsageError("cannot resume operation 7: its snapshot is gone", hint="roll it back with `brsm rollback 7`")
    assert with_next_step(e, 7, state(PHASE_FAILED)).hint == "roll it back with `brsm rollback 7`"


# -- through the CLI's driver, with a workflow whose step fails ------------------------------------------------
def _workflow(fail_in: str, hint: str | None):
    async def ok(ctx):
        return {}

    async def fail(ctx):
        raise OperationFailed(f"{fail_in} failed", hint=hint.format(op=ctx.op_id) if hint else None)

    async def undo(ctx):
        return None

    steps = {s: (fail if s == fail_in else ok) for s in TOY.steps}
    return Workflow(kind=TOY, steps=steps, undos={s: undo for s in TOY.steps})


@pytest.fixture
def toy_world(tmp_path, monkeypatch):
    monkeypatch.setenv("BRSM_HOME", str(tmp_path / "home"))
    chosen: dict = {}

    async def build(kind, params, *, op_id, out, journal=None):
        return wiring.Built(_workflow(chosen["fail_in"], chosen.get("hint")), None)

    monkeypatch.setattr(wiring, "build", build)
    return chosen


def test_an_automatic_rollback_replaces_the_steps_resume_hint(toy_world):
    toy_world.update(fail_in="WRITTEN", hint="run `brsm resume {op}` to copy them again")
    with pytest.raises(OperationFailed) as ei:
        drive.start_operation("toy13", {}, target="", out=Output(as_json=False), auto_rollback=True)
    assert "brsm resume" not in ei.value.hint and "was rolled back" in ei.value.hint, ei.value.hint


def test_resume_and_rollback_never_point_at_each_other(toy_world):
    toy_world.update(fail_in="CLEANED")
    with pytest.raises(OperationFailed) as ei:
        drive.start_operation("toy13", {}, target="", out=Output(as_json=False), auto_rollback=False)
    assert ei.value.hint == "fix the cause, then `brsm resume 1`"
    with pytest.raises(OperationFailed) as ei:
        drive.continue_operation(1, "resume", out=Output(as_json=False))
    assert ei.value.hint == "fix the cause, then `brsm resume 1`"
    with pytest.raises(UsageError) as ei:
        drive.continue_operation(1, "rollback", out=Output(as_json=False))
    assert "brsm rollback" not in ei.value.hint and "brsm resume 1" in ei.value.hint


def test_a_refused_operations_hint_about_another_journals_operation_is_kept():
    """Operation 1 of this journal refused because operation 1 of another journal holds the lease: the
    hint naming `brsm resume 1` (there) must not be taken for this operation and dropped."""
    from brsm.cli.hints import with_next_step
    from brsm.engine.fold import PHASE_REFUSED, new_state
    from brsm.errors import LockHeld

    st = new_state("backup")
    st.phase = PHASE_REFUSED
    hint = "wait for it to finish; if that process died, `brsm resume 1` or `brsm rollback 1`, run on ops1 with BRSM_HOME=/a (its journal), takes its lease back at once"
    e = with_next_step(LockHeld("cluster is locked by operation 1 of journal db53", hint=hint), 1, st)
    assert e.hint == hint
