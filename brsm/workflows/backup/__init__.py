"""Backup: PLANNED → LOCKED → SNAPSHOTTED → COPIED → UPLOADED → CLEANED.

Each step is idempotent (check before act) because a crash between its intent and its completion
makes resume run it again; each has a compensation for rollback, equally safe to repeat.

One module a phase: ``locked`` (preflight, LOCKED), ``snapshot`` (SNAPSHOTTED), ``copy`` (COPIED),
``finish`` (UPLOADED, CLEANED); ``context`` holds the ports and event names; ``state`` is what the
journal folds into (``BackupState``: every fact a step shares, and the files copied).
"""
from __future__ import annotations

from brsm.engine.definitions import BACKUP
from brsm.engine.workflow import Workflow
from brsm.workflows.backup import copy, finish, locked, snapshot
from brsm.workflows.backup.context import BackupPorts
from brsm.workflows.backup.state import BackupState

__all__ = ["BackupPorts", "BackupState", "workflow"]

# step, what does it, what undoes it (CLEANED is final: nothing after it to undo)
PHASES = [
    ("LOCKED", locked.locked, locked.undo_locked),
    ("SNAPSHOTTED", snapshot.snapshotted, snapshot.undo_snapshotted),
    ("COPIED", copy.copied, copy.undo_copied),
    ("UPLOADED", finish.uploaded, finish.undo_uploaded),
    ("CLEANED", finish.cleaned, None),
]


def workflow() -> Workflow:
    return Workflow.of_phases(BACKUP, PHASES, state=BackupState, entry=locked)
