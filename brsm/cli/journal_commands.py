"""The commands that read the journal: `brsm ops` (the list), `brsm audit OP_ID` (one operation's
events) and `brsm journal verify` (the hash chains, and with --against the anchors in storage)."""
from __future__ import annotations

from typing import Annotated, Any, Optional

import click
import typer

from brsm.cli.options import JsonOpt, StoreFlags, with_options
from brsm.console.output import Output
from brsm.errors import UsageError, VerificationFailed


def register(app: typer.Typer, journal_app: typer.Typer) -> None:
    """Add ops and audit to the main app, verify to `brsm journal`."""
    app.command()(ops)
    app.command()(audit)
    journal_app.command("verify")(journal_verify)


def open_journal(*, only_if_there: bool = False) -> Any:
    """The journal at ``$BRSM_HOME/journal.db``: the one place the CLI opens it. With ``only_if_there``,
    None when no operation has made one yet (a command that only reads must not create it)."""
    from journal import Journal

    from brsm.home import journal_path

    if only_if_there and not journal_path().exists():
        return None
    return Journal.open(journal_path())


def ops(
    kind: Annotated[Optional[str], typer.Option(help="Only this kind (backup, restore, ...).")] = None,
    limit: Annotated[int, typer.Option(help="Newest N operations (at least 1).")] = 50,
    json_: JsonOpt = False,
) -> None:
    """List operations: id, kind, state, started, finished, target."""
    from brsm.cli.views import check_chains, operations_rows

    if limit < 1:
        raise UsageError(f"--limit must be at least 1, not {limit}", hint="e.g. brsm ops --limit 10")
    out = Output(as_json=json_)
    j = open_journal()
    try:
        rows = operations_rows(j, kind=kind, limit=limit)
        err, checked = check_chains(j, [r["id"] for r in rows])
    finally:
        j.close()
    if json_:
        if err is not None:  # one document: the listing with the error in it
            out.result({"operations": rows, "error": err.message, "hint": err.hint, "exit_code": err.exit_code})
            raise click.exceptions.Exit(err.exit_code)
        out.result(rows)
        return
    from brsm.cli.views import compact_table
    from brsm.cli.views import short_time

    cols = ["id", "kind", "state", "started (UTC)", "finished", "backup", "target", "by"]
    table = [[r["id"], r["kind"], r["state"], short_time(r["started"]), short_time(r["finished"], since=r["started"]),
              r["name"] or "", r["target"], r["who"]] for r in rows]
    if out.out.width < 120:  # a narrow terminal: whole times and names, not the target and user (--json has them)
        cols, table = cols[:6], [t[:6] for t in table]
    compact_table(out, None, cols, table, wrap={"target"})
    if not checked:
        out.line("note: too many events to re-check the hash chains here; run `brsm journal verify`")
    if err is not None:
        raise err


def audit(op_id: Annotated[int, typer.Argument(metavar="OP_ID")], json_: JsonOpt = False) -> None:
    """Every event of one operation: time, type, facts; and whether its hash chain verifies."""
    from brsm.cli.views import print_audit

    j = open_journal()
    try:
        err = print_audit(j, op_id, Output(as_json=json_))
    finally:
        j.close()
    if err is not None:
        if json_:  # the error is already in the one JSON document
            raise click.exceptions.Exit(err.exit_code)
        raise err


@with_options(store=StoreFlags)
def journal_verify(
    store: StoreFlags,
    op_id: Annotated[Optional[int], typer.Argument(metavar="OP_ID", help="One operation; default all.")] = None,
    against: Annotated[Optional[str], typer.Option(
        help="Also check the journal against the anchors its backups and restores left in this storage "
             "(local:///path, s3://bucket/prefix or oss://bucket/prefix).")] = None,
    config: Annotated[Optional[str], typer.Option(
        help="Cluster config (TOML) for the storage endpoints of --against; default $BRSM_CONFIG if set.")] = None,
    json_: JsonOpt = False,
) -> None:
    """Walk the hash chain; name the first edited, deleted, inserted or reordered event. With
    --against, also name what changed since each anchor in that storage was taken."""
    from brsm.cli.journal_anchors import check_against, print_against

    out = Output(as_json=json_)
    j = open_journal()
    try:
        report = j.verify(op_id)
        against_r = check_against(j, against, config, store.params(), op_id) if against else None
    finally:
        j.close()
    problems = [{"op_id": p.op_id, "seq": p.seq, "reason": p.reason} for p in report.problems]
    doc = {"ok": report.ok, "checked": report.checked, "problems": problems}
    err = None
    if not report.ok:
        first = report.problems[0]
        err = VerificationFailed(
            f"journal tampered at operation {first.op_id} event {first.seq}: {first.reason}"
            + (f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""),
            hint="the journal was edited outside brsm; keep a copy for investigation",
        )
    else:
        out.line(f"verified: {report.checked} events, hash chain intact")
        if against is None:  # the claim's limit, said where it is made
            out.line("note: the chain alone cannot show a rewrite with the hashes recomputed; "
                     "--against STORAGE checks it against the anchors your backups and restores left there")
    if against_r is not None:
        doc["against"] = against_r
        anchor_err = print_against(out, against_r)
        err = err or anchor_err
        doc["ok"] = doc["ok"] and anchor_err is None
    if err is None:
        out.result(doc)
        return
    if json_:  # exactly one JSON document, the error inside it
        out.result({**doc, "error": err.message, "hint": err.hint, "exit_code": err.exit_code})
        raise click.exceptions.Exit(err.exit_code)
    raise err
