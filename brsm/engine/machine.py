"""The transitions machine, bound to the journal.

The machine never decides anything on its own and keeps no status of its own: it is built at the
folded state (``initial=``) and fired only after the event that justifies the move is durable.
Its job is to refuse moves that make no sense (completing COPIED before SNAPSHOTTED, resuming a
rolled-back run), so a bug in a workflow shows up as a MachineError instead of a bad journal.
Callbacks do no I/O, following transitions' callback-order rules (an exception in ``after``
would leave the new state in place).
"""
from __future__ import annotations

from collections.abc import Iterable

from transitions import MachineError
from transitions.extensions.asyncio import AsyncMachine

from brsm.engine import events as ev
from brsm.engine.definitions import FAILED, PLANNED, REFUSED, ROLLED_BACK, ROLLING_BACK, OperationKind
from brsm.engine.fold import EventLike


class OperationModel:
    """What transitions attaches ``state`` and the trigger methods to."""

    state: str


def _transitions(kind: OperationKind) -> list[dict]:
    steps = kind.steps
    active = [PLANNED, *steps[:-1]]
    out: list[dict] = []
    prev = PLANNED
    for step in steps:
        out.append({"trigger": f"complete_{step}", "source": prev, "dest": step})
        prev = step
    out.append({"trigger": "fail", "source": active, "dest": FAILED})
    out.append({"trigger": "refuse", "source": active, "dest": REFUSED})
    for step in active:
        out.append({"trigger": f"resume_to_{step}", "source": FAILED, "dest": step})
    out.append({"trigger": "start_rollback", "source": [*active, FAILED, ROLLING_BACK], "dest": ROLLING_BACK})
    out.append({"trigger": "finish_rollback", "source": ROLLING_BACK, "dest": ROLLED_BACK})
    return out


def build(kind: OperationKind, initial: str = PLANNED) -> OperationModel:
    model = OperationModel()
    AsyncMachine(
        model=model,
        states=list(kind.states),
        transitions=_transitions(kind),
        initial=initial,
        auto_transitions=False,
        send_event=True,
        queued=False,
    )
    return model


def trigger_for(event: EventLike, completed: list[str]) -> str | None:
    """Which trigger an event fires; ``completed`` is kept up to date by the caller for resumes."""
    d = event.data
    if event.type == ev.STEP_COMPLETED:
        return f"complete_{d['step']}"
    if event.type == ev.OPERATION_FAILED and not d.get("during_rollback"):
        return "fail"
    if event.type == ev.RESUME_STARTED:
        return f"resume_to_{completed[-1] if completed else PLANNED}"
    if event.type == ev.ROLLBACK_STARTED:
        return "start_rollback"
    if event.type == ev.ROLLED_BACK:
        return "finish_rollback"
    if event.type == ev.OPERATION_REFUSED:
        return "refuse"
    return None


async def replay(kind: OperationKind, events: Iterable[EventLike]) -> OperationModel:
    """Drive a fresh machine through every event; raises MachineError on an impossible history."""
    model = build(kind)
    completed: list[str] = []
    for e in events:
        trig = trigger_for(e, completed)
        if e.type == ev.STEP_COMPLETED and e.data["step"] not in completed:
            completed.append(e.data["step"])
        if trig is None:
            continue
        if trig == "fail" and model.state in (FAILED, ROLLING_BACK, ROLLED_BACK):
            continue
        if trig.startswith("resume_to_") and model.state != FAILED:
            continue  # a resume after a crash (not a recorded failure) moves nothing
        if trig == "start_rollback" and model.state == ROLLING_BACK:
            continue
        await model.trigger(trig)
    return model


__all__ = ["MachineError", "OperationModel", "build", "replay", "trigger_for"]
