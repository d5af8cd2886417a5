"""What a step sees of its operation: the params and typed state, the ports, per-process runtime
things, and the one way to journal (record), which folds each event into the live state as it is
appended so the state a step reads is always the journal's."""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from brsm import failpoints
from brsm.engine.fold import OperationState, apply
from brsm.engine.state import Event, KindState
from brsm.errors import BrsmError

S = TypeVar("S", bound=KindState)


@dataclass
class _Event:
    seq: int
    type: str
    data: dict[str, Any]


def op_ref(journal_id: str | None, op_id: int) -> str:
    """The identity of an operation beyond its journal: what brsm puts on a cluster or in storage (lease
    holder, ``nebula_brsm_old_<ref>``, staging dirs, probe keys) and judges ownership by.

    >>> op_ref("3f9a0c12be47", 38)
    '3f9a0c12be47-38'
    >>> op_ref(None, 38)  # an operation created by a brsm without journal ids
    '38'
    """
    return f"{journal_id}-{op_id}" if journal_id else str(op_id)


@dataclass
class Runtime:
    """Per-process things a step or hook needs again, never facts (those belong in the journal): they
    die with the process, and a resume builds them anew."""

    limits: Any = None  # brsm.workflows.transfer.Limits, set by the preflight
    lease: Any = None  # brsm.workflows.lease.Lease held for the cluster (its refresh task)
    manifest: dict[str, Any] | None = None  # the backup's manifest, read once (restore)
    last_down_check: tuple[float, set[str]] | None = None  # restore: when the services were last seen down
    release_lease: bool = False  # a run kept for a resume lets the cluster go (Runner.keep_interrupted)


class StepContext(Generic[S]):
    """What a step sees: the operation's params and typed state, the ports, and a way to journal."""

    def __init__(self, *, op_id: int, mode: str, state: OperationState, ports: Any, writer: Any,
                 abort: Callable[[BrsmError], None] | None = None) -> None:
        self.op_id = op_id
        self.mode = mode  # "run", "resume" or "rollback"
        self.state = state
        self.ports = ports
        self._writer = writer
        # Stop the drive with this failure (Runner.abort): for what a step cannot see for itself, such
        # as the cluster lease lost while it copies. None outside a runner's drive.
        self.abort = abort
        self.runtime = Runtime()
        # What this process spent in journal appends (wall time of the driver's append calls, each
        # one durable transaction): reported in OperationFinished, so `brsm audit` shows the share.
        self.journal_seconds = 0.0
        self.journal_appends = 0
        self.journal_events = 0

    @property
    def params(self) -> dict[str, Any]:
        return self.state.params

    @property
    def ref(self) -> str:
        """``<journal id>-<op id>`` (the bare op id for an operation an older brsm created)."""
        return op_ref(self.params.get("journal_id"), self.op_id)

    @property
    def data(self) -> S:
        """The kind's typed state (BackupState, RestoreState, ...), kept equal to the journal's fold."""
        return self.state.data  # type: ignore[return-value]

    def record(self, event: Event | str, data: Mapping[str, Any] | None = None, *, durable: bool = True) -> None:
        """Append a domain event (an Event, or a type and its payload), durable at return, and fold it
        into the live state. ``durable=False`` for progress hints whose loss only costs repeated work:
        no fsync, still safe against a kill."""
        type_, data = _typed(event, data)
        t0 = time.perf_counter()
        e = self._writer.append(type_, dict(data), durable=durable)
        self._timed(t0, 1)
        apply(self.state, _Event(e.seq, type_, dict(data)))
        failpoints.hit(f"event:{_count_event()}")

    def record_batch(self, events: list[Event | tuple[str, Mapping[str, Any]]]) -> None:
        if not events:
            return
        items = [_typed(e, None) if isinstance(e, Event) else e for e in events]
        t0 = time.perf_counter()
        first = self._writer.extend([(t, dict(d)) for t, d in items])
        self._timed(t0, len(items))
        for seq, (t, d) in enumerate(items, start=first):
            apply(self.state, _Event(seq, t, dict(d)))
        failpoints.hit(f"event:{_count_event()}")

    def journal_anchor(self) -> dict[str, Any] | None:
        """The journal's anchor now (``journal.anchor``: every operation's head seq and chain hash), for
        a step to keep in storage, where `brsm journal verify --against` later finds it. Workflows never
        touch the journal; this is their one way to anchor it. None when the journal takes no anchors."""
        take = getattr(getattr(self._writer, "journal", None), "anchor", None)
        return take().to_dict() if callable(take) else None

    def _timed(self, t0: float, events: int) -> None:
        """Account one append transaction that started at ``t0`` (for journal_stats)."""
        self.journal_seconds += time.perf_counter() - t0
        self.journal_appends += 1
        self.journal_events += events

    def journal_stats(self) -> dict[str, Any]:
        """This process's journal appends so far: seconds in the append calls, transactions, events."""
        return {"journal_seconds": round(self.journal_seconds, 6), "journal_appends": self.journal_appends,
                "journal_events": self.journal_events}


def _typed(event: Event | str, data: Mapping[str, Any] | None) -> tuple[str, Mapping[str, Any]]:
    if isinstance(event, Event):
        return event.TYPE, event.to_data()
    return event, data if data is not None else {}


_events_appended = 0


def _count_event() -> int:
    global _events_appended
    _events_appended += 1
    return _events_appended
