"""Failpoints: let tests kill or break a run at an exact instant.

``BRSM_FAILPOINTS`` holds a comma-separated list of ``point=action`` pairs, e.g.
``before:SNAPSHOTTED=crash,after:COPIED=raise,file:3=crash,event:12=crash``.

Points the engine and workflows announce:
- ``start:STEP``  before the step's intent (StepStarted) is journaled
- ``before:STEP`` after the intent is durable, before the step's side effect
- ``after:STEP``  after the completion (StepCompleted) is durable
- ``undo:STEP``   after UndoStarted is durable, before the compensation runs
- ``event:N``     right after the N-th journal append of this process
- ``file:N``      after the N-th file transfer of this process finished (before it is journaled)
- ``part:N``      after the N-th multipart part this process uploaded was journaled (PartUploaded)
- ``swap:N``      after a staged restore renamed its N-th staged tree into place (DOWNLOADED)

Actions: ``crash`` ends the process at once with ``os._exit(CRASH_EXIT)`` (no cleanup, no finally,
no buffered output: what a SIGKILL would do); ``raise`` raises :class:`FailpointHit`, an ordinary
step failure. A point may carry ``@K`` to fire only on its K-th hit (``file:*=crash@5`` is not
supported; use ``file:5``).
"""
from __future__ import annotations

import os
import sys

from brsm.errors import OperationFailed

CRASH_EXIT = 86
ENV = "BRSM_FAILPOINTS"


class FailpointHit(OperationFailed):
    pass


def _parse(spec: str) -> dict[str, str]:
    points: dict[str, str] = {}
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        point, _, action = item.rpartition("=")
        if not point or action not in ("crash", "raise"):
            raise ValueError(f"bad failpoint {item!r}: expected point=crash or point=raise")
        points[point] = action
    return points


_cache: tuple[str, dict[str, str]] | None = None


def active() -> dict[str, str]:
    """Re-read the environment when it changed, so tests can set it per run in-process."""
    global _cache
    spec = os.environ.get(ENV, "")
    if _cache is None or _cache[0] != spec:
        _cache = (spec, _parse(spec))
    return _cache[1]


def hit(point: str) -> None:
    action = active().get(point)
    if action is None:
        return
    if action == "crash":
        sys.stderr.write(f"brsm: failpoint {point}: crashing\n")
        sys.stderr.flush()
        os._exit(CRASH_EXIT)
    raise FailpointHit(f"failpoint {point} raised", hint="this failure was injected by BRSM_FAILPOINTS")
