"""Prometheus textfile-collector metrics, written at the end of every operation.

An operator who runs backups from cron or a systemd timer alerts on "no successful backup in 26 h";
node_exporter's textfile collector reads ``*.prom`` files from a directory, so brsm writes one there
(``--metrics-file``, ``[metrics] file`` or ``BRSM_METRICS_FILE``). The figures come from the journal,
not from the run that writes them: the file always says the newest success and failure of each kind,
whichever process (a resume, a rollback, another cron run) finished last, and a file deleted by hand
is whole again after the next operation.

The file is replaced atomically (written beside it, then renamed), so the collector never reads half.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from brsm.engine import events as ev
from brsm.engine.definitions import KINDS
from brsm.engine.fold import PHASE_DONE, PHASE_FAILED, PHASE_REFUSED, PHASE_ROLLED_BACK, PHASE_ROLLING_BACK, fold

# what moved, by kind: (step whose facts hold it, bytes fact, files fact)
_VOLUME = {"backup": ("COPIED", "bytes", "files"), "restore": ("CHECKED", "bytes", "files")}


@dataclass(frozen=True)
class OpFigures:
    """One operation, as the metrics see it."""

    op_id: int
    kind: str
    cluster: str
    state: str  # the folded state name (CLEANED, FAILED, ROLLED_BACK, …)
    outcome: str  # "success", "failure" or "running"
    started: float  # unix seconds
    ended: float | None  # when it finished or last failed; None while it runs
    bytes: int | None = None
    files: int | None = None
    downtime: float | None = None  # restore: first service stopped → every storaged ONLINE again


def _ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def figures(op: Any, events: Iterable[Any], cluster: str) -> OpFigures | None:
    """An operation's figures from its journaled engine events (None for a kind brsm does not know)."""
    kind = KINDS.get(op.kind)
    if kind is None:
        return None
    evs = list(events)
    st = fold(kind, evs)
    ended = None
    if st.phase == PHASE_DONE:
        outcome = "success"
    elif st.phase in (PHASE_FAILED, PHASE_ROLLED_BACK, PHASE_ROLLING_BACK, PHASE_REFUSED):
        outcome = "failure"  # a refused backup is a backup that did not happen: alert on it too
    else:
        outcome = "running"
    if outcome != "running" and evs:
        ended = _ts(evs[-1].time)
    vol = _VOLUME.get(op.kind)
    size = files = None
    if vol is not None:
        facts: dict[str, Any] = {}
        for e in evs:
            if e.type == ev.STEP_COMPLETED and e.data.get("step") == vol[0]:
                facts = e.data.get("facts") or {}
        size, files = facts.get(vol[1]), facts.get(vol[2])
    downtime = None
    if op.kind == "restore":
        down = next((e.data for e in evs if e.type == "DowntimeEnded"), None)
        if down is not None and down.get("how") == "restored":
            downtime = float(down["seconds"])
    if op.kind == "restore" and downtime is None:  # journaled before DowntimeEnded existed
        stopped = next((_ts(e.time) for e in evs if e.type == ev.STEP_STARTED and e.data.get("step") == "STOPPED"),
                       None)
        up = next((_ts(e.time) for e in evs if e.type == ev.STEP_COMPLETED and e.data.get("step") == "STARTED"),
                  None)
        if stopped is not None and up is not None:
            downtime = max(0.0, up - stopped)
    return OpFigures(op.id, op.kind, cluster, st.state, outcome, _ts(op.created), ended,
                     int(size) if isinstance(size, int) else None, int(files) if isinstance(files, int) else None,
                     downtime)


def _label(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


_HELP = {
    "brsm_last_success_timestamp_seconds": "When the newest successful operation of this kind finished (unix time).",
    "brsm_last_failure_timestamp_seconds": "When the newest failed (or rolled back) operation of this kind ended.",
    "brsm_last_duration_seconds": "How long the newest ended operation of this kind took.",
    "brsm_last_bytes": "Bytes the newest successful operation of this kind moved (backup: copied; restore: the backup's size).",
    "brsm_last_files": "Files the newest successful operation of this kind moved.",
    "brsm_last_restore_downtime_seconds": "The newest successful restore: first service stopped to every storaged ONLINE.",
    "brsm_last_operation_id": "Journal id of the newest operation of this kind.",
    "brsm_last_state": "State of the newest operation of this kind (1 for its state).",
    "brsm_operations": "Operations of this kind in the journal, by outcome.",
}


def render(figs: Iterable[OpFigures], now: float) -> str:
    """The metrics text for these operations (pure: the tests parse it with prometheus_client)."""
    by: dict[tuple[str, str], list[OpFigures]] = {}
    for f in figs:
        by.setdefault((f.kind, f.cluster), []).append(f)
    samples: dict[str, list[str]] = {name: [] for name in _HELP}
    for (kind, cluster), ops in sorted(by.items()):
        ops.sort(key=lambda f: (f.started, f.op_id))
        lab = f'kind="{_label(kind)}",cluster="{_label(cluster)}"'
        ok = [f for f in ops if f.outcome == "success"]
        bad = [f for f in ops if f.outcome == "failure"]
        ended = [f for f in ops if f.ended is not None]
        if ok:
            last = max(ok, key=lambda f: f.ended or 0)
            samples["brsm_last_success_timestamp_seconds"].append(f"{{{lab}}} {last.ended:.3f}")
            if last.bytes is not None:
                samples["brsm_last_bytes"].append(f"{{{lab}}} {last.bytes}")
            if last.files is not None:
                samples["brsm_last_files"].append(f"{{{lab}}} {last.files}")
            if kind == "restore" and last.downtime is not None:
                samples["brsm_last_restore_downtime_seconds"].append(
                    f'{{cluster="{_label(cluster)}"}} {last.downtime:.3f}')
        if bad:
            samples["brsm_last_failure_timestamp_seconds"].append(f"{{{lab}}} {max(f.ended or 0 for f in bad):.3f}")
        if ended:
            last = max(ended, key=lambda f: f.ended or 0)
            samples["brsm_last_duration_seconds"].append(f"{{{lab}}} {(last.ended or 0) - last.started:.3f}")
        newest = ops[-1]
        samples["brsm_last_operation_id"].append(f"{{{lab}}} {newest.op_id}")
        samples["brsm_last_state"].append(f'{{{lab},state="{_label(newest.state)}"}} 1')
        for outcome in ("success", "failure", "running"):
            samples["brsm_operations"].append(
                f'{{{lab},outcome="{outcome}"}} {sum(1 for f in ops if f.outcome == outcome)}')
    out = []
    for name, rows in samples.items():
        if not rows:
            continue
        out.append(f"# HELP {name} {_HELP[name]}")
        out.append(f"# TYPE {name} gauge")
        out.extend(f"{name}{r}" for r in rows)
    out.append("# HELP brsm_metrics_written_timestamp_seconds When brsm wrote this file.")
    out.append("# TYPE brsm_metrics_written_timestamp_seconds gauge")
    out.append(f"brsm_metrics_written_timestamp_seconds {now:.3f}")
    return "\n".join(out) + "\n"


def write_atomic(path: str, text: str) -> None:
    """Written beside ``path`` and renamed over it: a reader sees the old file or the new one. The
    temp file is made by ``mkstemp`` (O_CREAT|O_EXCL, a random name): a name planted beside the
    metrics file (a symlink, say) is never written through, nor chmodded."""
    d = os.path.dirname(os.path.abspath(path)) or "."
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=d)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fchmod(fh.fileno(), 0o644)
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def journal_figures(j: Any, cluster_of: Callable[[dict[str, Any]], str]) -> list[OpFigures]:
    """Every operation of the journal, with ``cluster_of(params)`` naming its cluster."""
    types = sorted(ev.ENGINE_EVENTS)
    out = []
    for op in j.operations():
        f = figures(op, j.events(op.id, types=types), cluster_of(op.params or {}))
        if f is not None:
            out.append(f)
    return out
