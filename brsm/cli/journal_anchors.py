"""`brsm journal verify --against STORAGE`: the journal checked against the anchors kept in a storage.

The hash chain in the file is unkeyed: whoever can write the file can rewrite it consistently. The
anchors each backup (in its manifest) and each restore (a record) left in the storage say what the
journal was at that moment; every one of this journal's anchors is checked, and each that no longer
matches is named with what changed.
"""
from __future__ import annotations

import os
from typing import Any

from brsm.console.output import Output
from brsm.errors import VerificationFailed


def _find(params: dict[str, Any], cfg: Any) -> tuple[str, list[Any]]:
    from brsm.wiring import run_on_storage
    from brsm.workflows.anchors import find_anchors

    async def work(storage: Any) -> tuple[str, list[Any]]:
        return storage.uri, await find_anchors(storage)

    return run_on_storage(params, cfg, work)


def _text(p: dict[str, Any]) -> str:
    where = "its operation row" if p["seq"] == 0 else f"event {p['seq']}"
    return p["reason"] if p["op_id"] == 0 else f"operation {p['op_id']} {where}: {p['reason']}"


def check_against(j: Any, uri: str, config: str | None, store: dict[str, Any], op_id: int | None) -> dict[str, Any]:
    """Every anchor of this journal in the storage, each with whether the journal still matches it
    (only the problems of ``op_id`` when one is given). Anchors of other journals are counted: a
    storage that holds only those may be looking at a journal that was replaced."""
    from journal import Anchor

    from brsm.config import load_config

    config = config or os.environ.get("BRSM_CONFIG")
    cfg = load_config(config) if config else None
    jid = j.journal_id
    uri, found = _find({**store, "storage": uri}, cfg)
    mine = [f for f in found if f.journal_id == jid]
    others = sorted({f.journal_id for f in found if f.journal_id and f.journal_id != jid})
    rows: list[dict[str, Any]] = []
    parsed: list[tuple[dict[str, Any], Any]] = []
    unknown = [{"source": f.source, "error": f.error} for f in found if f.journal_id is None]
    for f in mine:
        row: dict[str, Any] = {"source": f.source, "taken": None, "operations": None, "ok": False, "problems": []}
        rows.append(row)
        if f.error is not None:
            row["problems"] = [{"op_id": 0, "seq": 0, "reason": f"the anchor cannot be read: {f.error}"}]
            continue
        try:
            a = Anchor.from_dict(f.anchor)
        except ValueError as e:
            row["problems"] = [{"op_id": 0, "seq": 0, "reason": f"the anchor cannot be read: {e}"}]
            continue
        row["taken"], row["operations"] = a.taken, a.operations
        parsed.append((row, a))
    for (row, _), problems in zip(parsed, j.check_anchors([a for _, a in parsed])):
        row["problems"] = [{"op_id": p.op_id, "seq": p.seq, "reason": p.reason} for p in problems
                           if op_id is None or p.op_id in (0, op_id)]
        row["ok"] = not row["problems"]
    newest = j.operations(limit=1)
    top = newest[0].id if newest else 0
    covered = max((a.operations for _, a in parsed), default=0)
    return {"storage": uri, "journal_id": jid, "anchors": rows, "other_journals": others, "unreadable": unknown,
            "not_covered": [covered + 1, top] if top > covered else None}


def print_against(out: Output, r: dict[str, Any]) -> VerificationFailed | None:
    """Print one line per anchor; the error to raise when the journal does not match them all."""
    rows = r["anchors"]
    if not out.as_json:
        out.line(f"against {r['storage']}: {len(rows)} anchor(s) of journal {r['journal_id']}")
        for row in rows:
            n = row["operations"]
            what = f"taken {row['taken']}, {n} operation{'' if n == 1 else 's'}" if row["taken"] else "unreadable"
            verdict = "matches" if row["ok"] else "; ".join(_text(p) for p in row["problems"])
            out.line(f"  {row['source']} ({what}): {verdict}")
        for u in r["unreadable"]:  # whose it is cannot be told: shown, not held against this journal
            out.line(f"  note: {u['source']}: {u['error']}")
        if r["not_covered"] and rows:
            lo, hi = r["not_covered"]
            ops = f"operation {lo}" if lo == hi else f"operations {lo}..{hi}"
            out.line(f"  note: {ops} came after the newest anchor here: no anchor vouches for them yet")
    bad = [row for row in rows if not row["ok"]]
    if not rows:
        others = r["other_journals"]
        return VerificationFailed(
            f"no anchor of journal {r['journal_id']} in {r['storage']}: nothing to check the journal against"
            + (f"; it holds anchors of other journals ({', '.join(others)}): was this journal replaced?"
               if others else ""),
            hint="backups (in their manifest) and restores leave anchors in the storage they use; name that storage")
    if bad:
        first = bad[0]
        return VerificationFailed(
            f"the journal does not match {len(bad)} of {len(rows)} anchors in {r['storage']}; "
            f"{first['source']}: {_text(first['problems'][0])}",
            hint="the journal was changed outside brsm after that anchor was taken (or the anchor was); "
                 "keep a copy of both for investigation")
    return None
