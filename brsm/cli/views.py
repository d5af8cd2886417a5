"""Read-only views of the journal for `brsm ops` and `brsm audit`."""
from __future__ import annotations

import json
import sys
from typing import Any

from brsm.cli.output import Output
from brsm.engine import events as ev
from brsm.engine.definitions import KINDS
from brsm.engine.fold import fold

_STATE_EVENTS = sorted(ev.ENGINE_EVENTS)


def operations_rows(j: Any, *, kind: str | None, limit: int) -> list[dict[str, Any]]:
    rows = []
    for op in j.operations(kind=kind, limit=limit):
        okind = KINDS.get(op.kind)
        # Only engine events decide the state: skip the (possibly 100k) file events.
        evs = list(j.events(op.id, types=_STATE_EVENTS))
        state = fold(okind, evs).state if okind else "?"
        finished = None
        if evs and evs[-1].type in (ev.OPERATION_FINISHED, ev.ROLLED_BACK):
            finished = evs[-1].time
        rows.append({
            "id": op.id, "kind": op.kind, "state": state, "started": op.created, "finished": finished,
            "target": op.target, "who": op.who, "version": op.version,
        })
    return rows


def _facts_text(data: dict[str, Any]) -> str:
    parts = []
    for k, v in data.items():
        if isinstance(v, (dict, list)):
            v = json.dumps(v, sort_keys=True, separators=(",", ":"), default=str)
            if len(v) > 200:
                v = v[:197] + "..."
        parts.append(f"{k}={v}")
    return " ".join(parts)


def print_audit(j: Any, op_id: int, out: Output) -> None:
    op = j.operation(op_id)
    report = j.verify(op_id)
    chain = "verified" if report.ok else f"tampered at event {report.problems[0].seq}: {report.problems[0].reason}"
    if out.as_json:
        w = sys.stdout.write
        head = {"op_id": op.id, "kind": op.kind, "created": op.created, "who": op.who, "version": op.version,
                "target": op.target, "params": op.params, "chain": chain}
        w(json.dumps(head, default=str, sort_keys=True)[:-1] + ', "events": [')
        first = True
        for e in j.events(op_id):
            w(("" if first else ",") + json.dumps({"seq": e.seq, "time": e.time, "type": e.type, "data": e.data},
                                                   default=str, sort_keys=True))
            first = False
        w("]}\n")
        return
    # Plain lines, not a rich table: an audit of 100,000 events must print in well under 2 s.
    buf = [f"operation {op.id}: {op.kind} by {op.who} (brsm {op.version}) created {op.created}",
           f"target: {op.target}", f"journal: {chain}", ""]
    for e in j.events(op_id):
        buf.append(f"{e.seq:>6}  {e.time}  {e.type:<18} {_facts_text(e.data)}")
        if len(buf) >= 5000:
            sys.stdout.write("\n".join(buf) + "\n")
            buf.clear()
    sys.stdout.write("\n".join(buf) + "\n")
