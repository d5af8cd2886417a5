"""The operation kinds and their ordered steps.

A kind is only its list of step names; what a step does lives in the workflow that gives its steps.
The terminal step of every kind is the last one in its list (CLEANED).
"""
from __future__ import annotations

from dataclasses import dataclass

PLANNED = "PLANNED"
FAILED = "FAILED"
ROLLING_BACK = "ROLLING_BACK"
ROLLED_BACK = "ROLLED_BACK"
REFUSED = "REFUSED"  # refused before any side effect: finished, needs no action


@dataclass(frozen=True)
class OperationKind:
    name: str
    steps: tuple[str, ...]

    @property
    def states(self) -> tuple[str, ...]:
        return (PLANNED, *self.steps, FAILED, ROLLING_BACK, ROLLED_BACK, REFUSED)

    @property
    def done_step(self) -> str:
        return self.steps[-1]

    def after(self, step: str) -> tuple[str, ...]:
        """Steps still to run once ``step`` has completed (``PLANNED``: all of them)."""
        if step == PLANNED:
            return self.steps
        return self.steps[self.steps.index(step) + 1 :]


BACKUP = OperationKind("backup", ("LOCKED", "SNAPSHOTTED", "COPIED", "UPLOADED", "CLEANED"))
RESTORE = OperationKind(
    "restore",
    ("CHECKED", "STAGED", "STOPPED", "SET_ASIDE", "DOWNLOADED", "META_RESTORED", "STARTED", "CLEANED"),
)

CLEANUP = OperationKind("cleanup", ("CLEANED",))
GC = OperationKind("gc", ("SCANNED", "CLEANED"))
PRUNE = OperationKind("prune", ("SCANNED", "CLEANED"))

KINDS: dict[str, OperationKind] = {k.name: k for k in (BACKUP, RESTORE, CLEANUP, GC, PRUNE)}

