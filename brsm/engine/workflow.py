"""What a workflow hands the engine: its steps, their compensations and its hooks, as plain async
callables keyed by step name.

Kept apart from the runner that drives them: a workflow module builds one of these and needs none
of the driving (journaling, interruption, rollback), and the runner needs nothing of a workflow
but this.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from brsm.engine.definitions import OperationKind
from brsm.engine.state import KindState
from brsm.engine.step_context import StepContext

StepFn = Callable[[StepContext], Awaitable[Mapping[str, Any] | None]]
UndoFn = Callable[[StepContext], Awaitable[None]]
HookFn = Callable[[StepContext], Awaitable[None]]


@dataclass
class Workflow:
    """What a workflow hands the engine: plain async callables, keyed by step name."""

    kind: OperationKind
    steps: Mapping[str, StepFn]
    undos: Mapping[str, UndoFn] = field(default_factory=dict)
    state: type[KindState] = KindState  # what the kind folds its domain events and step facts into
    preflight: HookFn | None = None
    # Called when a driver takes over (run, resume or rollback) and when it lets go, whatever the
    # outcome: reacquire and release what does not survive a process (leases, connections).
    attach: HookFn | None = None
    detach: HookFn | None = None

    @classmethod
    def of_phases(cls, kind: OperationKind, phases: Sequence[tuple[str, StepFn, UndoFn | None]], *,
                  state: type[KindState], entry: Any) -> "Workflow":
        """From a table of (step, what does it, what undoes it or None), in the kind's order, and the
        module whose ``preflight``/``attach``/``detach`` take over a driver: a workflow reads as its table."""
        names = [name for name, _, _ in phases]
        if names != list(kind.steps):
            raise ValueError(f"{kind.name}: phases {names} are not the kind's steps {list(kind.steps)}")
        return cls(kind=kind, steps={n: do for n, do, _ in phases},
                   undos={n: undo for n, _, undo in phases if undo is not None}, state=state,
                   preflight=entry.preflight, attach=entry.attach, detach=entry.detach)
