"""Restore: PLANNED → CHECKED → STAGED → STOPPED → SET_ASIDE → DOWNLOADED → META_RESTORED → STARTED → CLEANED.

The rule that shapes every step: nothing of the cluster's original data is deleted before the
restored cluster has started and answered. Existing data is renamed aside (same filesystem, no
copy, no extra space), and only CLEANED removes it. Rollback renames it back.

And the cluster is down only as long as it must be: the files stage beside the live data while it
serves (STAGED), so the downtime is stop + renames + start, the same for 100 MB and 1 TB. With
``--offline`` (or when staging does not fit) STAGED is empty and DOWNLOADED downloads in place.

One module a phase: ``checked`` (preflight, CHECKED), ``stage`` (STAGED, DOWNLOADED), ``swap``
(STOPPED, SET_ASIDE), ``finish`` (META_RESTORED, STARTED, CLEANED); ``placement`` decides where
everything goes (pure), ``source`` reads and trusts the backup, ``control`` stops, starts and checks
services, ``proof`` shows that what starts is the backup.
"""
from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from brsm.engine.definitions import RESTORE
from brsm.engine.step_context import StepContext
from brsm.engine.workflow import Workflow
from brsm.workflows.restore import checked, finish, stage, swap
from brsm.workflows.restore.context import RestorePorts, down_error
from brsm.workflows.restore.source import has_checksums, unverified_refusal
from brsm.workflows.restore.state import RestoreContext, RestoreState

__all__ = ["RestorePorts", "RestoreState", "workflow", "has_checksums", "unverified_refusal"]


def _down_hint(step: Callable[[StepContext], Awaitable[Any]]) -> Callable[[StepContext], Awaitable[Any]]:
    """A step that runs while the cluster may be down: its failure names `brsm rollback N`
    (context.down_error)."""
    @functools.wraps(step)
    async def run(ctx: RestoreContext) -> Any:
        try:
            return await step(ctx)
        except BaseException as e:
            out = down_error(ctx, e)
            if out is e:
                raise
            raise out from e
    return run


# step, what does it, what undoes it (CLEANED is final: nothing after it to undo)
PHASES = [
    ("CHECKED", checked.checked, checked.undo_checked),
    ("STAGED", stage.staged_step, stage.undo_staged),
    ("STOPPED", _down_hint(swap.stopped), swap.undo_stopped),
    ("SET_ASIDE", _down_hint(swap.set_aside), swap.undo_set_aside),
    ("DOWNLOADED", _down_hint(stage.downloaded), stage.undo_downloaded),
    ("META_RESTORED", _down_hint(finish.meta_restored), finish.undo_meta_restored),
    ("STARTED", _down_hint(finish.started), finish.undo_started),
    ("CLEANED", finish.cleaned, None),
]


def workflow() -> Workflow:
    return Workflow.of_phases(RESTORE, PHASES, state=RestoreState, entry=checked)
