"""State is computed, never stored: ``fold(events)`` is the only source of an operation's status.

Anything that wants to know where an operation stands (the runner on resume, ``brsm ops``, the
audit) folds the journal. There is no status column anywhere that could disagree with it.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from brsm.engine import events as ev
from brsm.engine.definitions import FAILED, KINDS, PLANNED, REFUSED, ROLLED_BACK, ROLLING_BACK, OperationKind
from brsm.engine.state import KindState

RUNNING = "running"
PHASE_FAILED = "failed"
PHASE_ROLLING_BACK = "rolling_back"
PHASE_ROLLED_BACK = "rolled_back"
PHASE_DONE = "done"
PHASE_REFUSED = "refused"  # refused before any side effect (OperationRefused): finished, nothing to undo


class EventLike(Protocol):
    seq: int
    type: str
    data: dict[str, Any]


@dataclass
class OperationState:
    kind: OperationKind
    phase: str = RUNNING
    completed: list[str] = field(default_factory=list)
    started: list[str] = field(default_factory=list)
    pending: str | None = None
    undone: list[str] = field(default_factory=list)
    undo_pending: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    # Every step's journaled facts merged, for display only (`brsm ops show`, --json): a later step's
    # key replaces an earlier one's. Steps read ``data``, where each fact has one typed field.
    facts: dict[str, Any] = field(default_factory=dict)
    intents: dict[str, dict[str, Any]] = field(default_factory=dict)
    failure: dict[str, Any] | None = None
    # the kind's typed state (brsm.engine.state): what domain events and step completions set
    data: KindState = field(default_factory=KindState)
    seq: int = 0
    attempts: int = 0

    @property
    def last_completed(self) -> str:
        return self.completed[-1] if self.completed else PLANNED

    @property
    def state(self) -> str:
        """The state name the transitions machine is put in."""
        if self.phase == PHASE_DONE:
            return self.kind.done_step
        if self.phase == PHASE_ROLLED_BACK:
            return ROLLED_BACK
        if self.phase == PHASE_REFUSED:
            return REFUSED
        if self.phase == PHASE_ROLLING_BACK:
            return ROLLING_BACK
        if self.phase == PHASE_FAILED:
            return FAILED
        return self.last_completed

    @property
    def remaining(self) -> tuple[str, ...]:
        return self.kind.after(self.last_completed)

    @property
    def to_undo(self) -> list[str]:
        """Steps that may have taken effect and are not yet compensated, newest first."""
        if self.phase == PHASE_REFUSED:
            return []  # the step that refused took no effect
        return [s for s in reversed(self.started) if s not in self.undone]

    @property
    def finished(self) -> bool:
        return self.phase in (PHASE_DONE, PHASE_ROLLED_BACK, PHASE_REFUSED)


def new_state(kind: OperationKind | str, data: type[KindState] = KindState) -> OperationState:
    """An operation with no event folded yet; ``data``: its kind's state class (KindState: none)."""
    return OperationState(kind=KINDS[kind] if isinstance(kind, str) else kind, data=data())


def fold(kind: OperationKind | str, events: Iterable[EventLike], data: type[KindState] = KindState) -> OperationState:
    st = new_state(kind, data)
    for e in events:
        apply(st, e)
    return st


def fold_journal(kind: OperationKind | str, journal: Any, op_id: int,
                 data: type[KindState] = KindState) -> OperationState:
    """The fold of operation ``op_id`` in ``journal``, its per-file ledgers bound to the journal: their
    events are not read (nor kept), the ledgers query them. What it holds does not grow with files."""
    st = new_state(kind, data)
    st.data.bind_ledgers(journal, op_id)
    for e in journal.events(op_id, exclude=data.ledger_types()):
        apply(st, e)
    # the skipped events count: the last seq is the operation's, as a fold of every event has it
    st.seq = max(st.seq, journal.operation(op_id).head_seq)
    return st


def apply(st: OperationState, e: EventLike) -> None:
    """Fold one more event into ``st``; the runner uses this to keep its live state equal to the fold."""
    kind = st.kind
    st.seq = e.seq
    d = e.data
    t = e.type
    if t == ev.OPERATION_CREATED:
        st.params = dict(d.get("params", {}))
    elif t == ev.STEP_STARTED:
        step = d["step"]
        st.pending = step
        st.attempts += 1
        if step not in st.started:
            st.started.append(step)
        st.intents[step] = dict(d.get("facts", {}))
    elif t == ev.STEP_COMPLETED:
        step = d["step"]
        st.pending = None
        if step not in st.completed:
            st.completed.append(step)
        st.facts.update(d.get("facts", {}))
        if step == kind.done_step:
            st.phase = PHASE_DONE
    elif t in (ev.STEP_FAILED, ev.OPERATION_FAILED):
        st.failure = dict(d)
        if t == ev.OPERATION_FAILED and st.phase != PHASE_ROLLING_BACK:
            st.phase = PHASE_FAILED
    elif t == ev.OPERATION_REFUSED:
        st.failure = dict(d)
        st.pending = None
        st.phase = PHASE_REFUSED
    elif t == ev.RESUME_STARTED:
        st.phase = RUNNING
        st.failure = None
    elif t == ev.ROLLBACK_STARTED:
        st.phase = PHASE_ROLLING_BACK
    elif t == ev.UNDO_STARTED:
        st.undo_pending = d["step"]
    elif t == ev.UNDO_COMPLETED:
        st.undo_pending = None
        if d["step"] not in st.undone:
            st.undone.append(d["step"])
    elif t == ev.ROLLED_BACK:
        st.phase = PHASE_ROLLED_BACK
    elif t == ev.OPERATION_FINISHED:
        st.phase = PHASE_DONE
    st.data.apply(t, d)
