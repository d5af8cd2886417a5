"""Start, resume and roll back operations from the CLI: the one place that calls asyncio.run."""
from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterator
from typing import Any

from brsm.concurrency import bounded
from brsm.console.output import Output
from brsm.engine import events as ev
from brsm.engine.fold import (PHASE_DONE, PHASE_FAILED, PHASE_REFUSED, PHASE_ROLLED_BACK, PHASE_ROLLING_BACK,
                              OperationState)
from brsm.engine.runner import PREFLIGHT, Runner, error_facts, create_operation
from brsm.errors import BrsmError, Interrupted, MetaError
from brsm.cli.journal_commands import open_journal
from brsm import wiring


def _summary(op_id: int, kind: str, st: OperationState) -> dict[str, Any]:
    return {"op_id": op_id, "kind": kind, "state": st.state, "facts": st.facts}


def _with_hint(e: BrsmError, op_id: int, st: OperationState | None) -> BrsmError:
    """A failed step's hint says what to fix; what happens next comes from the folded state (brsm.cli.hints)."""
    from brsm.cli.hints import allowed, with_next_step
    from brsm.cli.reach import with_reach_hint

    return _tagged(with_reach_hint(with_next_step(e, op_id, st), op_id, st, allowed(st)), op_id,
                   st.state if st is not None else None)


def _tagged(e: BrsmError, op_id: int, state: str | None) -> BrsmError:
    """The operation an error ended and its state, for scripts (``--json`` errors carry both)."""
    e.op_id, e.state = op_id, state
    return e


# -- signals ---------------------------------------------------------------------------------------
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _Signals:
    """SIGINT and SIGTERM while an operation is driven, handed to its runner (``Runner.interrupt``):
    the run ends the way a failure does instead of dying where it stands. One that comes before the
    runner exists (while the workflow is built) is handed over when it does."""

    def __init__(self) -> None:
        self.received: list[str] = []
        self.runner: Runner | None = None

    def __call__(self, name: str) -> None:
        self.received.append(name)
        if self.runner is not None:
            self.runner.interrupt(name)

    def attach(self, runner: Runner) -> Runner:
        self.runner = runner
        for name in self.received:
            runner.interrupt(name)
        return runner


@contextlib.contextmanager
def _catching_signals() -> Iterator[_Signals]:
    sigs = _Signals()
    loop = asyncio.get_running_loop()
    installed = []
    for sig in STOP_SIGNALS:
        try:
            loop.add_signal_handler(sig, sigs, sig.name)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread: signals stay as they are
            pass
    try:
        yield sigs
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def _first_failure(runner: Runner, op_id: int) -> dict[str, Any] | None:
    fails = [e.data for e in runner.journal.events(op_id, types=[ev.OPERATION_FAILED])
             if not e.data.get("during_rollback")]
    return fails[-1] if fails else None


def _interrupted(e: BrsmError, op_id: int, kind: str, mode: str, runner: Runner) -> BrsmError:
    """One line for a run a signal ended: what happened, in which step, and what to do next, from the
    folded state (rolled back, kept, or rolled back in part). Exit code: 128 + the first signal."""
    if not runner.interrupts:
        return e
    first = runner.interrupts[0]
    st = runner.state(op_id)
    stopped = runner.rollback_stopped_at or (st.to_undo[0] if st.to_undo else "the rest")
    last = runner.interrupts[-1]
    if runner.interrupted_step is None:
        if mode == "rollback":
            text = (f"the rollback of operation {op_id} ({kind}) was stopped by {first} before {stopped} was "
                    f"undone: `brsm rollback {op_id}` finishes it")
        elif st.phase == PHASE_ROLLING_BACK:  # a failure, then a signal during its rollback
            f = _first_failure(runner, op_id) or {}
            text = (f"operation {op_id} ({kind}) failed during {f.get('step', '?')}: {f.get('error', e.message)}; "
                    f"{first} stopped its rollback before {stopped} was undone: `brsm rollback {op_id}` finishes it")
        else:
            return e  # the signal came too late to change anything
        return Interrupted(text, signal=first)
    step = "preflight" if runner.interrupted_step == PREFLIGHT else runner.interrupted_step
    if runner.kept_interrupted:  # Ctrl-C of a backup's upload: kept for a resume (brsm.cli.interrupts)
        from brsm.cli.interrupts import kept_message

        return Interrupted(kept_message(op_id, kind, first, step, st), signal=first)
    what = f"operation {op_id} ({kind}) interrupted by {first} during {step}"
    if st.phase == PHASE_ROLLED_BACK:
        text = f"{what}, and rolled back: everything it did is undone; start a new {kind} when ready"
    elif st.phase == PHASE_ROLLING_BACK:
        if runner.rollback_stopped_at is not None:
            again = "a second " + last if last == first else last
            text = (f"{what}; {again} stopped its rollback before {stopped} was undone: "
                    f"`brsm rollback {op_id}` finishes it")
        else:
            text = (f"{what}; the rollback that followed failed ({e.message}): fix the cause, then "
                    f"`brsm rollback {op_id}`")
    elif st.phase == PHASE_FAILED and not st.started:
        text = (f"{what}, before it touched the cluster: `brsm resume {op_id}` runs it again, "
                f"`brsm rollback {op_id}` closes it")
    elif st.phase == PHASE_FAILED and st.kind.done_step in st.started:
        text = f"{what}, in its final step: finish it with `brsm resume {op_id}`"
    else:
        kept = " (--keep-on-failure)" if mode == "run" else ""
        text = (f"{what}; kept as it was{kept}: `brsm resume {op_id}` continues it, "
                f"`brsm rollback {op_id}` undoes it")
    return Interrupted(text, signal=first)


# -- metrics --------------------------------------------------------------------------------------
metrics_flag: str | None = None  # `brsm --metrics-file PATH …` (set by brsm.cli.app for one command)


def metrics_path(params: dict[str, Any]) -> str | None:
    """Where the Prometheus textfile goes: --metrics-file, else $BRSM_METRICS_FILE, else the config's
    `[metrics] file`; None: no metrics."""
    if metrics_flag:
        return metrics_flag
    if os.environ.get("BRSM_METRICS_FILE"):
        return os.path.abspath(os.environ["BRSM_METRICS_FILE"])
    if params.get("config"):
        from brsm.config import load_config

        try:
            return load_config(params["config"]).metrics_file
        except BrsmError:
            return None
    return None


def write_metrics(j: Any, params: dict[str, Any]) -> None:
    """After every operation (success or not): the metrics of the whole journal, atomically. A file that
    cannot be written is one warning line; it never changes the command's outcome."""
    path = metrics_path(params)
    if not path:
        return
    from brsm.config import load_config
    from brsm.console.metrics import journal_figures, render, write_atomic

    names: dict[str, str] = {}

    def cluster_of(p: dict[str, Any]) -> str:
        cfg = p.get("config")
        if not cfg:
            return "-"
        if cfg not in names:
            try:
                names[cfg] = load_config(cfg).name
            except BrsmError:
                names[cfg] = os.path.basename(cfg)
        return names[cfg]

    try:
        write_atomic(path, render(journal_figures(j, cluster_of), time.time()))
    except OSError as e:
        sys.stderr.write(f"brsm: warning: could not write the metrics file {path}: {e.strerror or e}\n")


def _metrics_after(j: Any, params: Any) -> None:
    """write_metrics in a ``finally``: it must never replace the error the command is reporting."""
    try:
        write_metrics(j, params())
    except Exception as e:  # noqa: BLE001 - metrics are a by-product
        sys.stderr.write(f"brsm: warning: metrics not written: {type(e).__name__}: {e}\n")


def start_operation(kind: str, params: dict[str, Any], *, target: str, out: Output, auto_rollback: bool,
                    report: bool = True) -> OperationState:
    return asyncio.run(_start(kind, params, target=target, out=out, auto_rollback=auto_rollback, report=report))


async def _start(kind: str, params: dict[str, Any], *, target: str, out: Output, auto_rollback: bool,
                 report: bool = True) -> OperationState:
    j = open_journal()
    try:
        from brsm.cli.unfinished import warn_unfinished

        warn_unfinished(params.get("config"), journal=j)  # before anything else can fail
        with _catching_signals() as sigs:
            op_id, params = create_operation(j, kind, params, target=target)
            op = j.operation(op_id)
            try:
                built = await wiring.build(kind, params, op_id=op.id, out=out, journal=j)
            except BaseException as e:
                # Nothing was done yet (the ports are being opened): a refusal ends the operation REFUSED.
                refused = isinstance(e, BrsmError) and not isinstance(e, Interrupted)
                with j.driver(op.id) as w:
                    w.append(ev.OPERATION_REFUSED if refused else ev.OPERATION_FAILED, error_facts("PREFLIGHT", e))
                if refused:
                    raise _tagged(e, op.id, "REFUSED")
                raise
            out.line(f"operation {op.id}: {kind} started (journal: brsm audit {op.id})")
            runner = sigs.attach(Runner(j, built.workflow, built.ports))
            from brsm.cli.interrupts import policy

            runner.keep_interrupted = policy(kind)
            st = None
            try:
                st = await runner.run(op.id, auto_rollback=auto_rollback)
            except BrsmError as e:
                await _lease_when_metad_is_down(e, params, runner.state(op.id), out)
                raise _with_hint(_interrupted(e, op.id, kind, "run", runner), op.id, runner.state(op.id)) from e
            finally:
                await built.aclose()
        if report:
            _report(out, op.id, kind, st)
        return st
    finally:
        try:
            _metrics_after(j, lambda: params)
        finally:
            j.close()


def continue_operation(op_id: int, mode: str, *, out: Output, accept_new_host_keys: bool = False) -> None:
    asyncio.run(_continue(op_id, mode, out=out, accept_new_host_keys=accept_new_host_keys))


async def _continue(op_id: int, mode: str, *, out: Output, accept_new_host_keys: bool = False) -> None:
    j = open_journal()
    try:
        op = j.operation(op_id)
        # Resume and rollback act on the journaled facts (names, paths, hosts): never on edited ones.
        from brsm.cli.views import chain_error

        err = chain_error(op_id, j.verify(op_id))
        if err is not None:
            err.message = f"refusing to {mode} operation {op_id}: {err.message}"
            err.hint = (f"the journal was edited outside brsm; keep a copy for investigation, see `brsm audit "
                        f"{op_id}`, and clean up what the operation left by hand (`brsm gc` lists it)")
            raise err
        created = next(iter(j.events(op_id, types=[ev.OPERATION_CREATED])), None)
        params = dict(created.data.get("params", {})) if created else dict(op.params)
        # asked for by this invocation, never inherited from the one that started the operation
        params["accept_new_host_keys"] = accept_new_host_keys
        from brsm.engine.definitions import KINDS
        from brsm.engine.fold import fold
        from brsm.engine.workflow import Workflow

        st0 = fold(KINDS[op.kind], j.events(op_id, types=sorted(ev.ENGINE_EVENTS))) if op.kind in KINDS else None
        if st0 is not None and (st0.phase == PHASE_REFUSED or (mode == "resume" and st0.phase == PHASE_DONE)):
            # Finished: no cluster, no storage, no lease is touched (operation N of this journal is not the
            # operation N another journal's lock message names)
            last = list(j.events(op_id, types=sorted(ev.ENGINE_EVENTS)))[-1]
            out.result({**_summary(op_id, op.kind, st0), "nothing_to_do": True},
                       text=nothing_to_do(op_id, op.kind, st0, last.time, mode))
            return
        from brsm.cli.unfinished import warn_unfinished

        warn_unfinished(params.get("config"), exclude=op_id, journal=j)
        from brsm.workflows.common import PROBE_REMOVED, PROBE_WRITTEN, unremoved_probes
        probes = unremoved_probes(j.events(op_id, types=[PROBE_WRITTEN, PROBE_REMOVED]))
        with _catching_signals() as sigs:
            if mode == "rollback" and st0 is not None and not st0.started and not st0.finished and not probes:
                # Nothing ever took effect (it failed before its first step, e.g. a bad config): closing it
                # needs no cluster and no storage, so a config that is gone or broken cannot block it. A
                # preflight probe left in the storage (an object, a direct-path probe upload: journaled,
                # never removed) did take effect: the full rollback removes it.
                st = await sigs.attach(Runner(j, Workflow(kind=st0.kind, steps={}))).rollback(op_id)
                _report(out, op_id, op.kind, st)
                return
            built = await wiring.build(op.kind, params, op_id=op_id, out=out, journal=j)
            runner = sigs.attach(Runner(j, built.workflow, built.ports))
            try:
                if mode == "rollback":
                    st = await runner.rollback(op_id)
                else:
                    st = await runner.resume(op_id)
            except BrsmError as e:
                raise _with_hint(_interrupted(e, op_id, op.kind, mode, runner), op_id, runner.state(op_id)) from e
            finally:
                await built.aclose()
        _report(out, op_id, op.kind, st)
    finally:
        try:
            _metrics_after(j, lambda: dict(j.operation(op_id).params or {}))
        finally:
            j.close()


def nothing_to_do(op_id: int, kind: str, st: OperationState, when: str, mode: str) -> str:
    """What `brsm resume`/`rollback` of a finished operation says (never "finished" again, as if it ran).

    >>> from brsm.engine.fold import new_state
    >>> st = new_state("backup"); st.phase = PHASE_REFUSED; st.failure = {"error": "cluster is locked"}
    >>> nothing_to_do(3, "backup", st, "2026-12-07T05:00:00Z", "resume")
    'operation 3 (backup) was refused at 2026-12-07T05:00:00Z before it did anything (cluster is locked): nothing to resume'
    """
    verb = "roll back" if mode == "rollback" else mode
    if st.phase == PHASE_REFUSED:
        why = f" ({(st.failure or {}).get('error')})" if (st.failure or {}).get("error") else ""
        return f"operation {op_id} ({kind}) was refused at {when} before it did anything{why}: nothing to {verb}"
    name = st.facts.get("backup_name")
    return (f"operation {op_id} ({kind}) finished at {when}" + (f" ({name})" if name else "")
            + f": nothing to {verb}")


def _metad_unreachable(e: BaseException) -> bool:
    seen = 0
    while e is not None and seen < 8:
        if isinstance(e, MetaError) and e.code is None:  # no answer at all (a code is metad answering)
            return True
        e, seen = e.__cause__, seen + 1
    return False


async def _lease_when_metad_is_down(e: BrsmError, params: dict[str, Any], st: OperationState, out: Output) -> None:
    """A run refused because metad does not answer: what the cluster lease says (a restore of any journal
    that stopped the cluster and died still names itself there), on stderr, before the error."""
    if st.phase != PHASE_REFUSED or not _metad_unreachable(e):
        return
    try:
        lines = await bounded(wiring.lease_report(params, out=out), 60)
    except Exception:  # noqa: BLE001 - the refusal itself is what the command reports
        return
    for line in lines:
        sys.stderr.write(f"brsm: {line}\n")
    sys.stderr.flush()


def _report(out: Output, op_id: int, kind: str, st: OperationState) -> None:
    name = st.facts.get("backup_name")
    text = {
        PHASE_DONE: f"operation {op_id}: {kind} finished ({st.state})" + (f": {name}" if name else "")
        + (f"; the cluster was down {st.facts['downtime_seconds']:.1f} s"
           if isinstance(st.facts.get("downtime_seconds"), (int, float)) else ""),
        PHASE_ROLLED_BACK: f"operation {op_id}: {kind} rolled back",
    }.get(st.phase, f"operation {op_id}: {kind} is {st.state}")
    out.result(_summary(op_id, kind, st), text=text)
