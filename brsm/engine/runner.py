"""Drive one operation through its steps, journaling intent and completion around every effect.

The protocol, for every step: ``StepStarted`` is durable → the step's side effect → ``StepCompleted``
(with the facts later steps need) is durable → the machine moves. A crash anywhere leaves either
no intent (step not begun), an intent without completion (step re-run on resume: steps must be
idempotent), or a completion (step done). Rollback is the mirror: ``UndoStarted`` → compensation
→ ``UndoCompleted``, newest step first, for every step that has an intent.
"""
from __future__ import annotations

import asyncio
import getpass
import socket
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from brsm import __version__, failpoints
from brsm.engine import events as ev
from brsm.engine import machine
from brsm.engine.step_context import StepContext
from brsm.engine.workflow import Workflow
from brsm.engine.fold import (
    PHASE_DONE,
    PHASE_FAILED,
    PHASE_REFUSED,
    PHASE_ROLLED_BACK,
    PHASE_ROLLING_BACK,
    OperationState,
    fold_journal,
)
from brsm.errors import BrsmError, Interrupted, OperationFailed, UsageError

PREFLIGHT = "PREFLIGHT"


def create_operation(journal: Any, kind: str, params: Mapping[str, Any], *, target: str = "") -> tuple[int, dict[str, Any]]:
    """The one way an operation comes to be: its row, then OperationCreated with the params as the
    journal keeps them (secrets redacted). The journal's id goes into the params: with the op id it names
    what the operation leaves on the cluster and in storage (op_ref). Returns the op id and the params
    to build the ports from (the given ones and ``journal_id``, unredacted)."""
    jid = getattr(journal, "journal_id", None)
    full = {**params, "journal_id": jid} if jid else dict(params)
    op = journal.create_operation(kind=kind, params=full, who=who(), version=__version__, target=target)
    with journal.driver(op.id) as w:
        w.append(ev.OPERATION_CREATED, {"kind": kind, "params": journal.operation(op.id).params})
    return op.id, full


def who() -> str:
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry in some containers
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def error_facts(step: str, exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, Interrupted):
        return {"step": step, "error": exc.message, "error_type": "Interrupted", "hint": None, "signal": exc.signal}
    if isinstance(exc, BrsmError):
        return {"step": step, "error": exc.message, "error_type": type(exc).__name__, "hint": exc.hint}
    if isinstance(exc, (KeyboardInterrupt, asyncio.CancelledError)):
        return {"step": step, "error": "interrupted", "error_type": type(exc).__name__, "hint": None}
    return {"step": step, "error": f"{type(exc).__name__}: {exc}", "error_type": type(exc).__name__, "hint": None}


def is_refusal(st: OperationState, failed_at: str, exc: BaseException) -> bool:
    """Whether a failure took no effect, so the operation ends REFUSED (finished, nothing to resume or
    roll back) rather than FAILED. Only an error that says it refused (``refusal``: a preflight check,
    bad input, the cluster locked by another run) counts, and only where nothing can have been done:
    in the preflight with no step ever begun, or in the first step the operation ever began, on its
    first attempt (the step's own checks come before its effect, as the lease is the last thing a
    first step takes and gives back when refused). A preflight probe still journaled as left in the
    storage (``left_effects`` of the folded state) is an effect: that operation fails, and rollback removes it.

    >>> from brsm.engine.fold import new_state
    >>> from brsm.errors import LockHeld, RemoteError
    >>> st = new_state("backup"); st.started, st.attempts = ["LOCKED"], 1
    >>> is_refusal(st, "LOCKED", LockHeld("locked")), is_refusal(st, "LOCKED", RemoteError("ssh dropped"))
    (True, False)
    >>> st.started = ["LOCKED", "SNAPSHOTTED"]; is_refusal(st, "SNAPSHOTTED", LockHeld("locked"))
    False
    """
    if not isinstance(exc, BrsmError) or isinstance(exc, Interrupted) or not getattr(exc, "refusal", False):
        return False
    if st.data.left_effects() or st.completed or st.undone:
        return False
    if failed_at == PREFLIGHT:
        return not st.started
    return st.started == [failed_at] and st.attempts == 1


class Runner:
    """Creates, runs, resumes and rolls back operations of one workflow against one journal."""

    def __init__(self, journal: Any, workflow: Workflow, ports: Any = None) -> None:
        self.journal = journal
        self.workflow = workflow
        self.ports = ports
        # Interruption (see interrupt()): what asked, where it landed, and what the drive is doing.
        self.interrupts: list[str] = []
        self.interrupted_step: str | None = None  # the step the first interruption stopped
        self.rollback_stopped_at: str | None = None  # the compensation a later one stopped
        self._task: asyncio.Task | None = None
        self._stage = "idle"  # "steps", "rollback" (both interruptible), "closing" or "idle"
        self._cancelled_stage: str | None = None
        self._cancel_pending = False
        self._seen = 0  # interruptions an earlier drive of this runner already answered
        self._abort: BrsmError | None = None  # what abort() asked the drive to fail with
        # keep_interrupted(signal, step, state) -> True: a run that signal stopped in that step is kept for
        # a resume instead of rolled back (the CLI's rule, brsm.cli.interrupts); the drive then sets
        # ctx.runtime.release_lease so the workflow's detach lets the cluster go. kept_interrupted says
        # it happened.
        self.keep_interrupted: Callable[[str, str, OperationState], bool] | None = None
        self.kept_interrupted = False
        self._attached = False  # the workflow's attach ran in this drive: its detach runs at the end

    # -- creating -------------------------------------------------------------------------------
    def create(self, params: Mapping[str, Any], *, target: str = "") -> int:
        return create_operation(self.journal, self.workflow.kind.name, params, target=target)[0]

    def state(self, op_id: int) -> OperationState:
        return fold_journal(self.workflow.kind, self.journal, op_id, self.workflow.state)

    # -- interruption -------------------------------------------------------------------------
    def interrupt(self, reason: str) -> None:
        """Stop the drive the way a failure would; ``reason`` names the cause (a signal: "SIGTERM").

        Called on the event loop (the CLI's ``loop.add_signal_handler``). While steps run, the first
        call cancels the current step (asyncio cancellation, so every ``finally`` runs); the runner
        journals ``OperationFailed`` naming ``reason`` (``signal``) and rolls back when the drive
        was asked to (``auto_rollback``), as after any failure. A call while a rollback runs (the one
        after the first interruption, or ``brsm rollback``) stops the rollback: the compensation under
        way is cancelled and journaled (``OperationFailed{during_rollback}``); it is idempotent and
        its ``UndoStarted`` is durable, so ``brsm rollback`` runs it again. A call before the drive
        starts is kept: the drive stops before its first step. One while it closes (detach) is only
        recorded: closing is short and releases what the run holds.
        """
        self.interrupts.append(reason)
        self._cancel()

    def _cancel(self) -> None:
        task = self._task
        if task is None or task.done() or self._stage not in ("steps", "rollback"):
            return  # kept: _check_interrupt stops a drive about to start
        if self._cancelled_stage == self._stage:
            return  # this stage is already being stopped
        self._cancelled_stage = self._stage
        self._cancel_pending = True
        task.cancel()

    def abort(self, exc: BrsmError) -> None:
        """Stop the drive with ``exc`` as its failure, the way ``interrupt`` does for a signal: the
        step (or compensation) under way is cancelled and ``exc`` is journaled and raised. For what a
        step cannot see for itself, such as the cluster lease lost while the step copies."""
        if self._abort is None:
            self._abort = exc
        self._cancel()

    def _interruption(self, exc: BaseException, *, rollback: bool = False) -> BaseException:
        """The exception to journal and raise: an interruption we caused becomes ``Interrupted``."""
        if not self._cancel_pending:
            return exc
        self._cancel_pending = False
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()  # the cancellation was ours and is handled: later timeouts must work
        if self._abort is not None:
            err: BaseException = self._abort
            err.__cause__ = exc
            return err
        reason = self.interrupts[-1]
        text = f"rollback stopped by {reason}" if rollback else f"interrupted by {reason}"
        err = Interrupted(text, signal=reason)
        err.__cause__ = exc
        return err

    def _check_interrupt(self) -> None:
        """An interruption that came while nothing could be cancelled stops the drive here."""
        if self._abort is not None and self._cancelled_stage is None:
            self._cancelled_stage = self._stage
            raise self._abort
        if len(self.interrupts) > self._seen and self._cancelled_stage is None:
            self._cancelled_stage = self._stage
            reason = self.interrupts[-1]
            raise Interrupted(f"interrupted by {reason}", signal=reason)

    def _check_lost_cancel(self) -> None:
        """A cancel this drive sent that never arrived stops it here, before the next step or
        compensation, as if it had. A library can lose one: Python 3.11's ``asyncio.wait_for``
        returns the result when the cancel lands as the awaited thing ends, so the step went on
        and the drive with it, the signal forgotten."""
        if self._cancel_pending:
            raise asyncio.CancelledError()

    # -- driving --------------------------------------------------------------------------------
    async def run(self, op_id: int, *, auto_rollback: bool = False) -> OperationState:
        """Run (or resume) to the end. On failure, roll back when asked, then re-raise."""
        return await self._drive(op_id, "run", auto_rollback=auto_rollback)

    async def resume(self, op_id: int, *, auto_rollback: bool = False) -> OperationState:
        return await self._drive(op_id, "resume", auto_rollback=auto_rollback)

    async def rollback(self, op_id: int) -> OperationState:
        return await self._drive(op_id, "rollback", auto_rollback=False)

    async def _drive(self, op_id: int, mode: str, *, auto_rollback: bool) -> OperationState:
        self.journal.operation(op_id)  # UnknownOperation early, before taking the lock
        self._task = asyncio.current_task()
        try:
            return await self._drive_locked(op_id, mode, auto_rollback=auto_rollback)
        finally:
            self._task = None
            self._stage = "idle"
            self._cancelled_stage = None
            self._cancel_pending = False
            self._seen = len(self.interrupts)
            self._abort = None

    async def _drive_locked(self, op_id: int, mode: str, *, auto_rollback: bool) -> OperationState:
        with self.journal.driver(op_id) as writer:
            st = fold_journal(self.workflow.kind, self.journal, op_id, self.workflow.state)
            ctx: StepContext = StepContext(op_id=op_id, mode=mode, state=st, ports=self.ports, writer=writer,
                                           abort=self.abort)
            model = machine.build(self.workflow.kind, st.state)
            self._attached = False
            try:
                if mode == "rollback":
                    return await self._drive_rollback(op_id, st, ctx, model)
                return await self._drive_steps(op_id, mode, st, ctx, model, auto_rollback=auto_rollback)
            finally:
                self._stage = "closing"
                if self._attached and self.workflow.detach:
                    await self.workflow.detach(ctx)

    async def _attach(self, ctx: StepContext) -> None:
        if self.workflow.attach:
            await self.workflow.attach(ctx)
            self._attached = True

    async def _drive_rollback(self, op_id: int, st: OperationState, ctx: StepContext,
                              model: machine.OperationModel) -> OperationState:
        """`brsm rollback`: undo what the operation did, unless it finished or began its final step."""
        if st.phase in (PHASE_ROLLED_BACK, PHASE_REFUSED):
            return st
        if st.phase == PHASE_DONE:
            raise UsageError(
                f"operation {op_id} finished; there is nothing to roll back",
                hint="to delete a finished backup use `brsm cleanup NAME`",
            )
        if self.workflow.kind.done_step in st.started and st.phase != PHASE_ROLLING_BACK:
            # The final step discards what rollback would need (a restore's originals).
            raise UsageError(
                f"operation {op_id} has begun its final step ({self.workflow.kind.done_step}): "
                "there is nothing to roll back safely",
                hint=f"finish it with `brsm resume {op_id}`",
            )
        try:
            self._stage = "rollback"
            self._check_interrupt()
            await self._attach(ctx)
        except BaseException as caught:  # before the first compensation: journal why it stopped
            exc = self._interruption(caught, rollback=True)
            if not isinstance(exc, Interrupted):
                raise
            self.rollback_stopped_at = st.to_undo[0] if st.to_undo else None
            self._append(ctx, ev.OPERATION_FAILED, {**error_facts("rollback", exc),
                                                    "during_rollback": True})
            if exc is not caught:
                raise exc from caught
            raise
        await self._rollback(ctx, model)
        return st

    async def _drive_steps(self, op_id: int, mode: str, st: OperationState, ctx: StepContext,
                           model: machine.OperationModel, *, auto_rollback: bool) -> OperationState:
        """`brsm run`/`resume`: the remaining steps in order, each journaled before the machine moves."""
        if st.phase in (PHASE_DONE, PHASE_REFUSED):
            return st
        if st.phase in (PHASE_ROLLED_BACK, PHASE_ROLLING_BACK):
            raise UsageError(
                f"operation {op_id} was rolled back" + ("" if st.phase == PHASE_ROLLED_BACK else " only in part"),
                hint="start a new operation" if st.phase == PHASE_ROLLED_BACK
                else f"finish it with `brsm rollback {op_id}`",
            )
        current = PREFLIGHT
        self._stage = "steps"
        try:
            self._check_interrupt()
            if st.phase == PHASE_FAILED:
                self._append(ctx, ev.RESUME_STARTED, {"from": st.last_completed, "mode": mode})
                await model.trigger(f"resume_to_{st.last_completed}")
            elif mode == "resume" and st.seq > 1:
                self._append(ctx, ev.RESUME_STARTED, {"from": st.last_completed, "mode": mode})
            await self._attach(ctx)
            if self.workflow.preflight and not st.completed:
                await self._step(ctx, PREFLIGHT, self.workflow.preflight, journal_intent=False)
            for step in st.remaining:
                self._check_lost_cancel()  # named after the step it was lost in
                current = step
                self._check_interrupt()
                await self._step(ctx, step, self.workflow.steps[step])
                await model.trigger(f"complete_{step}")
                failpoints.hit(f"after:{step}")
            self._append(ctx, ev.OPERATION_FINISHED, ctx.journal_stats())
            return st
        except BaseException as caught:
            exc = await self._steps_stopped(op_id, st, ctx, model, current, caught, auto_rollback=auto_rollback)
            if exc is not caught:
                raise exc from caught
            raise

    async def _steps_stopped(self, op_id: int, st: OperationState, ctx: StepContext, model: machine.OperationModel,
                             failed_at: str, caught: BaseException, *, auto_rollback: bool) -> BaseException:
        """Journal why the steps stopped at ``failed_at`` (refused, or failed) and roll back when
        asked to; the exception to raise."""
        exc = self._interruption(caught)
        if isinstance(exc, Interrupted):
            self.interrupted_step = failed_at
        if is_refusal(st, failed_at, exc):
            self._append(ctx, ev.OPERATION_REFUSED, error_facts(failed_at, exc))
            await model.trigger("refuse")
            return exc
        self._append(ctx, ev.OPERATION_FAILED, error_facts(failed_at, exc))
        if model.state not in ("FAILED",):
            await model.trigger("fail")
        keep = (auto_rollback and isinstance(exc, Interrupted) and self.keep_interrupted is not None
                and self.keep_interrupted(exc.signal or "", failed_at, st))
        if keep:
            self.kept_interrupted = True
            ctx.runtime.release_lease = True
        # Not once the final step began: it discards what rollback needs (a restore's
        # originals, a backup's finished state); `brsm resume` finishes it instead.
        if (auto_rollback and not keep and isinstance(exc, Exception) and st.started
                and not getattr(exc, "keeps_operation", False)
                and self.workflow.kind.done_step not in st.started):
            try:
                await self._rollback(ctx, model)
            except Interrupted:
                raise  # stopped by a further interruption: journaled, `brsm rollback` finishes it
            except Exception as rb_exc:  # noqa: BLE001 - report both, keep the first
                raise OperationFailed(
                    f"{error_facts(failed_at, exc)['error']}; and the automatic rollback failed: "
                    f"{error_facts('rollback', rb_exc)['error']}",
                    hint=f"fix the cause, then run `brsm rollback {op_id}` again",
                ) from exc
        return exc

    async def _step(self, ctx: StepContext, step: str, fn: Callable[[StepContext], Awaitable[Any]],
                    *, journal_intent: bool = True) -> None:
        failpoints.hit(f"start:{step}")
        if journal_intent:
            self._append(ctx, ev.STEP_STARTED, {"step": step})
        failpoints.hit(f"before:{step}")
        facts = await fn(ctx)
        if journal_intent:
            self._append(ctx, ev.STEP_COMPLETED, {"step": step, "facts": dict(facts or {})})
        else:
            self._append(ctx, ev.PREFLIGHT_PASSED, dict(facts or {}))

    async def _rollback(self, ctx: StepContext, model: machine.OperationModel) -> None:
        st = ctx.state
        self._stage = "rollback"
        step = st.to_undo[0] if st.to_undo else "rollback"
        try:
            if st.phase != PHASE_ROLLING_BACK:
                self._append(ctx, ev.ROLLBACK_STARTED, {"undo": st.to_undo})
                await model.trigger("start_rollback")
            for step in list(st.to_undo):
                self._check_lost_cancel()
                self._append(ctx, ev.UNDO_STARTED, {"step": step})
                failpoints.hit(f"undo:{step}")
                undo = self.workflow.undos.get(step)
                if undo is not None:
                    await undo(ctx)
                self._append(ctx, ev.UNDO_COMPLETED, {"step": step})
            self._append(ctx, ev.ROLLED_BACK, {})
            await model.trigger("finish_rollback")
        except BaseException as caught:
            exc = self._interruption(caught, rollback=True)
            if isinstance(exc, Interrupted):
                self.rollback_stopped_at = step
            facts = error_facts(step, exc)
            facts["during_rollback"] = True
            self._append(ctx, ev.OPERATION_FAILED, facts)
            if exc is not caught:
                raise exc from caught
            raise

    def _append(self, ctx: StepContext, type_: str, data: dict[str, Any]) -> None:
        ctx.record(type_, data)
