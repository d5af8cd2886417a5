"""What to do next about an operation, derived from its folded state, never from what a step assumed.

A step's hint is written before the engine decides what happens to the operation: "run `brsm resume
43` to copy them again" is wrong once the automatic rollback has undone 43, and "roll it back" is wrong
once its final step has begun (rollback refuses then). So the CLI keeps the parts of a hint that name
only commands the state allows, and adds the next step the state allows:

    state FAILED, final step not begun  ->  "fix the cause, then `brsm resume 7` (or `brsm rollback 7`)"
    state FAILED, final step begun      ->  "fix the cause, then `brsm resume 7`"
    ROLLING_BACK (a rollback failed)    ->  "fix the cause, then `brsm rollback 7` again"
    ROLLED_BACK                         ->  "operation 7 was rolled back: there is nothing to resume; fix the
                                             cause and start again"
    REFUSED (nothing took effect)       ->  the error's own hint only: nothing to resume or roll back
"""
from __future__ import annotations

import re

from brsm.engine.fold import PHASE_DONE, PHASE_REFUSED, PHASE_ROLLED_BACK, PHASE_ROLLING_BACK, OperationState
from brsm.errors import BrsmError, OperationFailed

_COMMAND = re.compile(r"brsm (resume|rollback) (\d+)")


def allowed(st: OperationState | None) -> frozenset[str]:
    """The commands that can move this operation on: resume, rollback, both or neither."""
    if st is None:
        return frozenset({"resume", "rollback"})
    if st.phase in (PHASE_DONE, PHASE_ROLLED_BACK, PHASE_REFUSED):
        return frozenset()
    if st.phase == PHASE_ROLLING_BACK:
        return frozenset({"rollback"})
    if st.kind.done_step in st.started:  # the runner refuses to roll back a begun final step
        return frozenset({"resume"})
    return frozenset({"resume", "rollback"})


def next_step(op_id: int, st: OperationState | None) -> str | None:
    if st is not None and st.phase == PHASE_ROLLED_BACK:
        return f"operation {op_id} was rolled back: there is nothing to resume; fix the cause and start again"
    if st is not None and st.phase in (PHASE_DONE, PHASE_REFUSED):
        return None
    can = allowed(st)
    if can == {"rollback"}:
        return f"fix the cause, then `brsm rollback {op_id}` again"
    if can == {"resume"}:
        return f"fix the cause, then `brsm resume {op_id}`"
    return f"fix the cause, then `brsm resume {op_id}` (or `brsm rollback {op_id}`)"


def _fits(clause: str, op_id: int, can: frozenset[str]) -> bool:
    """False when the clause points this operation at a command its state does not allow."""
    return all(int(n) != op_id or cmd in can for cmd, n in _COMMAND.findall(clause))


def with_next_step(e: BrsmError, op_id: int, st: OperationState | None) -> BrsmError:
    """``e`` with a hint that fits the operation's state (see the module's docstring)."""
    if st is not None and st.phase == PHASE_REFUSED:
        # Refused before it did anything: its hint speaks of the fix or of another run (the lock holder's
        # `brsm resume 1` is operation 1 of *its* journal, whatever this one's id), never of this operation.
        return e
    can = allowed(st)
    clauses = [c for c in (e.hint or "").split("; ") if c.strip()]
    kept = [c for c in clauses if _fits(c, op_id, can)]
    names_op = any(int(n) == op_id for c in kept for _, n in _COMMAND.findall(c))
    if isinstance(e, OperationFailed) or len(kept) != len(clauses):
        nxt = next_step(op_id, st)
        if nxt and not names_op and nxt not in kept:
            kept.append(nxt)
    e.hint = "; ".join(kept) or None
    return e
