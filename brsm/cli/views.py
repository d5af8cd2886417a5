"""Read-only views of the journal for `brsm ops` and `brsm audit`."""
from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Any

from journal.redact import redact, scrub_text, suspect

from brsm.console.output import Output, visible
from brsm.engine import events as ev
from brsm.engine.definitions import KINDS
from brsm.engine.fold import fold
from brsm.errors import UsageError, VerificationFailed

_STATE_EVENTS = sorted(ev.ENGINE_EVENTS)
# The per-file events (100,000 in a big run) hold keys, paths and hashes, never text from outside:
# `audit` re-scrubs the others only (what an older brsm journaled unredacted is shown redacted).
_BULK = frozenset({"FileCopied", "PartUploaded", "FileRestored"})


def operations_rows(j: Any, *, kind: str | None, limit: int) -> list[dict[str, Any]]:
    if kind is not None and kind not in KINDS:
        raise UsageError(f"no operation kind {kind!r}; the kinds are {', '.join(sorted(KINDS))}",
                         hint=f"e.g. brsm ops --kind {'backup' if 'backup' in kind else sorted(KINDS)[0]}")
    rows = []
    for op in j.operations(kind=kind, limit=limit):
        okind = KINDS.get(op.kind)
        # Only engine events decide the state: skip the (possibly 100k) file events.
        evs = list(j.events(op.id, types=_STATE_EVENTS))
        facts: dict[str, Any] = {}
        try:
            folded = fold(okind, evs) if okind else None
            state, facts = (folded.state, folded.facts) if folded else ("?", {})
        except Exception:  # noqa: BLE001 - events edited into nonsense: the chain check names them
            state = "?"
        finished = None
        if evs and evs[-1].type in (ev.OPERATION_FINISHED, ev.ROLLED_BACK, ev.OPERATION_REFUSED):
            finished = evs[-1].time
        rows.append({
            "id": op.id, "kind": op.kind, "state": state, "started": op.created, "finished": finished,
            # scrubbed again: a journal written by an older brsm may hold a credential here
            "target": scrub_text(op.target), "who": op.who, "version": op.version,
            "name": backup_name(facts, op.params),
        })
    return rows


def backup_name(facts: Any, params: Any) -> str | None:
    """The backup an operation made (a backup's folded facts) or used (restore, cleanup: its params)."""
    for d, key in ((facts, "backup_name"), (params, "name")):
        v = d.get(key) if isinstance(d, dict) else None
        if isinstance(v, str) and v:
            return v
    return None


def short_time(t: str | None, *, since: str | None = None) -> str:
    """A journal time for a table: ``2026-12-07 05:14:45`` (to the second, UTC), or only
    ``05:20:01`` when ``since`` is the same day.

    >>> short_time("2026-12-07T05:20:01.123456Z", since="2026-12-07T05:14:45.000001Z")
    '05:20:01'
    """
    if not t:
        return ""
    whole = t[:19].replace("T", " ")
    if since and since[:10] == t[:10]:
        return whole[11:]
    return whole


# `brsm ops` re-walks the hash chains of the operations it lists when they hold at most this many
# events in all (about half a second); beyond that it says so and leaves it to `brsm journal verify`.
OPS_CHAIN_CHECK_MAX_EVENTS = 250_000


def check_chains(j: Any, op_ids: list[int]) -> tuple[VerificationFailed | None, bool]:
    """(the error for the first broken chain or None, whether the chains were checked at all)."""
    if sum(j.count_events(i) for i in op_ids) > OPS_CHAIN_CHECK_MAX_EVENTS:
        return None, False
    broken = [(i, r) for i in op_ids if not (r := j.verify(i)).ok]
    if not broken:
        return None, True
    op_id, report = broken[0]
    err = chain_error(op_id, report)
    assert err is not None
    if len(broken) > 1:
        err.message += f" (and {len(broken) - 1} more tampered operation(s): " + \
            ", ".join(str(i) for i, _ in broken[1:]) + ")"
    return err, True


def _facts_text(data: Any) -> str:
    if not isinstance(data, dict):  # only an edited row holds anything else
        return json.dumps(data, default=str)[:200]
    parts = []
    for k, v in data.items():
        if isinstance(v, (dict, list)):
            v = json.dumps(v, sort_keys=True, separators=(",", ":"), default=str)
            if len(v) > 200:
                v = v[:197] + "..."
        parts.append(f"{k}={v}")
    return " ".join(parts)


def _ts(t: str) -> float:
    return datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp()


def summarize(j: Any, op_id: int) -> dict[str, Any]:
    """What an operator asks first: how long each step took, what moved per host, what failed."""
    steps: dict[str, dict[str, Any]] = {}
    per_host: dict[str, dict[str, int]] = {}
    failures = []
    downtime = None
    types = [ev.STEP_STARTED, ev.STEP_COMPLETED, ev.OPERATION_FAILED, ev.OPERATION_REFUSED, "FileCopied",
             "FileRestored", "DowntimeEnded"]
    for e in j.events(op_id, types=types):
        d = e.data
        if e.type == "DowntimeEnded":
            downtime = {"seconds": d.get("seconds"), "how": d.get("how")}
        elif e.type == ev.STEP_STARTED:
            steps.setdefault(d["step"], {})["started"] = e.time
        elif e.type == ev.STEP_COMPLETED and d["step"] in steps:
            s = steps[d["step"]]
            s["completed"] = e.time
            s["seconds"] = round(_ts(e.time) - _ts(s["started"]), 3)
        elif e.type in (ev.OPERATION_FAILED, ev.OPERATION_REFUSED):
            failures.append({"seq": e.seq, "time": e.time, "step": d.get("step"), "error": d.get("error"),
                             "hint": d.get("hint"), "refused": e.type == ev.OPERATION_REFUSED})
        else:
            h = per_host.setdefault(d.get("host", "?"), {"files": 0, "bytes": 0})
            h["files"] += 1
            h["bytes"] += int(d.get("size", 0))
    out = {"steps": steps, "per_host": per_host, "failures": failures}
    if downtime is not None:  # a restore: first service stopped → every storaged ONLINE
        out["downtime"] = downtime
    return out


def chain_error(op_id: int, report: Any) -> VerificationFailed | None:
    """The error a broken hash chain of one operation gets (None when it verifies)."""
    if report.ok:
        return None
    first = report.problems[0]
    return VerificationFailed(
        f"the journal of operation {op_id} was tampered with at event {first.seq}: {first.reason}",
        hint="the journal was edited outside brsm; keep a copy for investigation (`brsm journal verify` lists "
             "every problem)")


def _audit_backup_name(j: Any, op: Any) -> str | None:
    try:
        st = fold(KINDS[op.kind], j.events(op.id, types=_STATE_EVENTS))
        return backup_name(st.facts, st.params)
    except Exception:  # noqa: BLE001 - an unknown kind or edited events: the events say it all
        return None


def print_audit(j: Any, op_id: int, out: Output) -> VerificationFailed | None:
    """Print every event; returns the chain's error (the caller exits 6 with it) when it does not verify."""
    op = j.operation(op_id)
    report = j.verify(op_id)
    chain = "verified" if report.ok else f"tampered at event {report.problems[0].seq}: {report.problems[0].reason}"
    err = chain_error(op_id, report)
    try:
        summary = summarize(j, op_id)
    except (KeyError, TypeError, ValueError, AttributeError):
        if err is None:
            raise
        summary = {"steps": {}, "per_host": {}, "failures": []}  # edited events: the events say it all
    # What an older brsm journaled unredacted is shown redacted (the rows stay as they are: hash-chained).
    summary = redact(summary)
    if out.as_json:
        _write_audit_json(j, op, op_id, chain, summary, err)
        return err
    # Plain lines, not a rich table: an audit of 100,000 events must print in well under 2 s.
    buf = [visible(f"operation {op.id}: {op.kind} by {op.who} (brsm {op.version}) created {op.created}"),
           visible(f"target: {scrub_text(op.target)}"), f"journal: {chain}", ""]
    name = _audit_backup_name(j, op)
    if name:
        buf.insert(2, visible(f"backup: {name}"))
    for step, st in summary["steps"].items():
        took = f"{st['seconds']:.2f} s" if "seconds" in st else "not completed"
        buf.append(visible(f"step {step:<14} {took}"))
    if summary.get("downtime"):
        d = summary["downtime"]
        buf.append(f"downtime {d['seconds']} s (first service stopped → every storaged ONLINE; {d['how']})")
    for host, h in sorted(summary["per_host"].items()):
        buf.append(visible(f"host {host:<14} {h['files']} files, {h['bytes'] / 2**20:.1f} MiB"))
    for f in summary["failures"]:
        buf.append(visible(f"{'refused' if f.get('refused') else 'failed'} at event {f['seq']} in {f['step']}: "
                           f"{f['error']}" + (f" (hint: {f['hint']})" if f["hint"] else "")))
    buf.append("")
    for e in j.events(op_id):
        line = f"{e.seq:>6}  {e.time}  {e.type:<18} {_facts_text(e.data)}"
        if e.type not in _BULK and suspect(line):
            line = scrub_text(f"{e.seq:>6}  {e.time}  {e.type:<18} {_facts_text(redact(e.data))}")
        buf.append(visible(line))
        if len(buf) >= 5000:
            sys.stdout.write("\n".join(buf) + "\n")
            buf.clear()
    sys.stdout.write("\n".join(buf) + "\n")
    return err


def _write_audit_json(j: Any, op: Any, op_id: int, chain: str, summary: dict[str, Any],
                      err: VerificationFailed | None) -> None:
    """``audit --json``: one document, the operation, its summary and every event."""
    w = sys.stdout.write
    head = {"op_id": op.id, "kind": op.kind, "created": op.created, "who": op.who, "version": op.version,
            "backup": _audit_backup_name(j, op),
            "target": scrub_text(op.target), "params": redact(op.params), "chain": chain, "summary": summary}
    if err is not None:  # still one document: the error rides in it
        head.update(error=err.message, hint=err.hint, exit_code=err.exit_code)
    # Stream a verified chain; read a tampered one whole first, so a row that no longer decodes
    # gives one error document instead of half of this one.
    events = j.events(op_id) if err is None else list(j.events(op_id))
    w(json.dumps(head, default=str, sort_keys=True)[:-1] + ', "events": [')
    first = True
    for e in events:
        doc = json.dumps({"seq": e.seq, "time": e.time, "type": e.type, "data": e.data}, default=str,
                         sort_keys=True)
        if e.type not in _BULK and suspect(doc):
            doc = json.dumps({"seq": e.seq, "time": e.time, "type": e.type, "data": redact(e.data)}, default=str,
                             sort_keys=True)
        w(("" if first else ",") + doc)
        first = False
    w("]}\n")


def compact_table(out: Output, title: str | None, columns: list[str], rows: list[list[Any]], wrap: set[str]) -> None:
    """Like Output.table, compact, and only the ``wrap`` columns wrap: names and times stay whole."""
    from rich import box
    from rich.table import Table

    from brsm.console.output import cell

    cells = [[cell(v) for v in r] for r in rows]
    t = Table(title=None if title is None else cell(title), show_lines=False, box=box.SIMPLE_HEAD,
              collapse_padding=True, pad_edge=False, title_justify="left")
    for i, c in enumerate(columns):
        widest = max([len(c)] + [len(r[i].plain) for r in cells]) if c not in wrap else None
        t.add_column(c, no_wrap=c not in wrap, overflow="fold", ratio=1 if c in wrap else None,
                     min_width=widest)
    for r in cells:
        t.add_row(*r)
    out.out.print(t)
