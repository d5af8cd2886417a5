"""Read-side operating commands: `brsm show`, `brsm verify`, `brsm prune`, `brsm check` (and `brsm config
check`, in config_commands).

Thin: parse flags, open the storage, run one workflow from brsm.workflows.{catalog,verify,prune} under
one ``asyncio.run``, print. Registered on the main app with :func:`register`.

With ``--json`` stdout carries exactly one document even when the command fails its check: the
result with ``error``/``hint``/``exit_code`` added, and the process exits with that code.
"""
from __future__ import annotations

import asyncio
import os
import time
from dataclasses import asdict
from typing import Annotated, Any, Optional

import click
import typer

from brsm.console.output import Output
from brsm.errors import BrsmError, PreflightFailed, UsageError, VerificationFailed
from brsm.sizes import size_text

from brsm.cli.views import compact_table
from brsm.cli.options import (ClusterFlags, ConfigOpt, JsonOpt, MetricsFileOpt, StoreFlags, StorageOpt,
                              YesOrConfirmOpt, with_options)


def register(app: typer.Typer) -> None:
    """Add show, verify, prune, check and `config check` to the main app."""
    from brsm.cli.config_commands import config_app

    app.command("show")(show)
    app.command("verify")(verify)
    app.command("prune")(prune)
    app.command("check")(check)
    app.add_typer(config_app, name="config")


# -- plumbing -------------------------------------------------------------------------------------
def decode_meta(data: bytes):
    """``<NAME>.meta`` bytes → catalog.MetaFacts (brsm.wiring.decode_meta_facts: one decoder)."""
    from brsm.wiring import decode_meta_facts

    return decode_meta_facts(data)


def _params(storage: str | None, config: str | None, store: StoreFlags) -> tuple[dict[str, Any], Any]:
    from brsm.config import load_config

    config = config or os.environ.get("BRSM_CONFIG")
    cfg = load_config(config) if config else None
    params = {"storage": storage, **store.params()}
    return params, cfg


def _run_on_storage(params: dict[str, Any], cfg: Any, work) -> Any:
    from brsm.wiring import run_on_storage

    return run_on_storage(params, cfg, work)


def fail(out: Output, data: dict[str, Any], err: BrsmError) -> None:
    """A command that ran but found something wrong: one JSON document, or text error; exit code of ``err``."""
    if out.as_json:
        data = dict(data, error=err.message, hint=err.hint, exit_code=err.exit_code)
        out.result(data)
        raise click.exceptions.Exit(err.exit_code)
    raise err


def human(n: int | None) -> str:
    return "" if n is None else size_text(n)


def _spaces_text(e: Any) -> str:
    s = ",".join(e.spaces)
    if e.all_spaces:
        s = f"all: {s}" if s else "all"
    return s + (" (incremental)" if e.full is False else "")


def _when(e: Any) -> str:
    return (e.created or "")[:16].replace("T", " ")


def _state(e: Any) -> str:
    return "complete*" if e.state == "complete" and not e.checksums else e.state


NO_CHECKSUMS = ("* complete by structure, no checksums: made by nebula-br, or a brsm backup whose manifest was "
                "deleted (verify checks its structure only; restore needs --allow-unverified)")


def _in_use() -> dict[str, int]:
    """Backup names unfinished brsm operations use, from the journal (none when there is no journal yet)."""
    from brsm.cli.journal_commands import open_journal
    from brsm.wiring import live_operations

    j = open_journal(only_if_there=True)
    if j is None:
        return {}
    try:
        return dict(live_operations(j).names)
    finally:
        j.close()


# -- show -----------------------------------------------------------------------------------------
@with_options(store=StoreFlags)
def show(
    store: StoreFlags,
    storage: StorageOpt = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
) -> None:
    """List the backups in a storage: created, spaces, size, state (complete, incomplete, broken), made by."""
    from brsm.workflows.catalog import list_backups

    out = Output(as_json=json_)
    params, cfg = _params(storage, config, store)
    uri_holder: dict[str, str] = {}

    async def work(st):
        uri_holder["uri"] = st.uri
        return await list_backups(st, decode_meta=decode_meta)

    entries = _run_on_storage(params, cfg, work)
    uri = uri_holder.get("uri", "")
    if json_:
        out.result({"storage": uri, "backups": [e.to_dict() for e in entries]})
        return
    if not entries:
        out.line(f"no backups in {uri}")
        return
    cols = ["name", "created (UTC)", "state", "by", "spaces", "files", "size", "sent"]
    rows = [[e.name, _when(e), _state(e), e.made_by, _spaces_text(e), e.files, human(e.bytes), _sent(e)]
            for e in entries]
    if out.out.width < 100:  # a narrow terminal: the essentials, spaces among them (--json has everything)
        keep = [0, 1, 2, 4, 6]
        cols, rows = [cols[i] for i in keep], [[r[i] for i in keep] for r in rows]
    compact_table(out, f"backups in {uri}", cols, rows, wrap={"spaces"})
    if any(_state(e) == "complete*" for e in entries):
        out.line(NO_CHECKSUMS)
    for e in entries:
        for p in e.problems:
            out.line(f"{e.name}: {p}")
    counts: dict[str, int] = {}
    for e in entries:
        counts[e.state] = counts.get(e.state, 0) + 1
    out.line(", ".join(f"{n} {s}" for s, n in sorted(counts.items())))


def _sent(e: Any) -> str:
    """Bytes read from the hosts to make it, and for an incremental backup the base it copied the rest from."""
    if e.incremental_from:
        return f"{human(e.bytes_sent)} (rest from {e.incremental_from})"
    return "-" if e.bytes and not e.bytes_sent else human(e.bytes_sent)  # "-": not known (no manifest read)


# -- verify ---------------------------------------------------------------------------------------
@with_options(store=StoreFlags)
def verify(
    store: StoreFlags,
    name: Annotated[str, typer.Argument(metavar="NAME", help="The backup to check (BACKUP_...).")],
    storage: StorageOpt = None,
    config: ConfigOpt = None,
    quick: Annotated[bool, typer.Option("--quick", help="Every object exists with its size (default).")] = False,
    full: Annotated[bool, typer.Option("--full", help="Re-hash every object (SHA-256).")] = False,
    sample: Annotated[Optional[str], typer.Option(help="Re-hash a random share of the objects, e.g. 5%.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed for --sample, to repeat the same pick.")] = None,
    concurrency: Annotated[int, typer.Option(help="Objects re-hashed at once (1-1024).")] = 4,
    json_: JsonOpt = False,
) -> None:
    """Check a backup: objects present with their sizes (--quick), re-hashed (--full), or a share re-hashed (--sample)."""
    from brsm.console.progress import make_progress
    from brsm.workflows.verify import FULL, QUICK, SAMPLE, parse_sample, verify_backup

    if sum([quick, full, sample is not None]) > 1:
        raise UsageError("choose one of --quick, --full and --sample", hint="e.g. brsm verify NAME --sample 5%")
    if seed is not None and sample is None:
        raise UsageError("--seed only applies to --sample", hint="e.g. --sample 5% --seed 42")
    from brsm.cli.inputs import CONCURRENCY, check_backup_name, in_range

    check_backup_name(name)
    in_range("--concurrency", concurrency, CONCURRENCY)
    mode = FULL if full else SAMPLE if sample is not None else QUICK
    share = parse_sample(sample) if sample is not None else None
    out = Output(as_json=json_)
    params, cfg = _params(storage, config, store)
    progress = make_progress(as_json=json_) if mode != QUICK else None

    async def work(st):
        return await verify_backup(st, name, decode_meta=decode_meta, mode=mode, sample=share, seed=seed,
                                   concurrency=concurrency, progress=progress)

    r = _run_on_storage(params, cfg, work)
    data = r.to_dict()
    if not json_:
        _print_verify(out, name, mode, r)
    if r.ok:
        out.result(data)
        return
    if all(p["problem"] == "unverifiable" for p in r.problems):
        fail(out, data, VerificationFailed(
            f"backup {name} could not be verified: it records no checksums, so --{mode} re-hashed 0 objects; "
            f"only its structure was checked ({r.checked} object(s) or host trees present)",
            hint="a backup with a brsm-manifest.json can be re-hashed; restoring this one needs --allow-unverified"))
        return
    fail(out, data, VerificationFailed(
        f"backup {name} failed verification: {len(r.problems)} problem(s)"
        + (f", e.g. {r.problems[0]['problem']} {r.problems[0]['key']}" if r.problems else ""),
        hint="restore another backup (see `brsm show`); delete this one with `brsm cleanup NAME`"))


def _print_verify(out: Output, name: str, mode: str, r: Any) -> None:
    """The problems ``verify_backup`` found, one line each, its notes, and ``ok`` with what was checked."""
    from brsm.workflows.verify import FULL, QUICK, SAMPLE

    what = {QUICK: f"{r.checked} object(s) present with their sizes",
            FULL: f"{r.hashed_files} object(s) re-hashed ({human(r.hashed_bytes)})",
            SAMPLE: f"{r.hashed_files} of {r.files} object(s) re-hashed (sample {r.sample:.2%}, seed {r.seed})"
            if r.sample is not None else ""}[mode]
    for p in r.problems:
        detail = p.get("detail")
        if p["problem"] == "size":
            detail = f"expected {p['expected']} bytes, found {p['actual']}"
        elif p["problem"] == "sha256":
            detail = f"expected sha256 {p['expected'][:16]}…, found {p['actual'][:16]}…"
        out.line(f"{p['problem']:<12} {p['key']}" + (f": {detail}" if detail else ""))
    for n in r.notes:
        out.line(f"note: {n}")
    if r.ok:
        out.line(f"{name}: ok ({r.made_by}; {what})")


# -- prune ----------------------------------------------------------------------------------------
@with_options(store=StoreFlags)
def prune(
    store: StoreFlags,
    storage: StorageOpt = None,
    config: ConfigOpt = None,
    keep_last: Annotated[Optional[int], typer.Option(help="Keep the N newest complete backups.")] = None,
    keep_within: Annotated[Optional[str], typer.Option(help="Keep complete backups created within this, e.g. 30d.")] = None,
    confirm: YesOrConfirmOpt = False,
    metrics_file: MetricsFileOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Retention: delete complete backups that are neither among --keep-last N newest nor within --keep-within.
    Shows what it would delete; deletes with --yes (or --confirm), or when you answer y on a terminal."""
    from brsm.cli.starting import set_metrics_file

    set_metrics_file(metrics_file)
    from brsm.workflows.prune import DELETE, GC_NOTE, KEEP, SKIP, check_policy, parse_duration

    within = parse_duration(keep_within) if keep_within is not None else None
    check_policy(keep_last, within)
    out = Output(as_json=json_)
    params, cfg = _params(storage, config, store)
    now = int(time.time() * 1000)
    op_id = None
    if confirm:  # a journaled operation: audit shows every deleted backup, resume finishes a killed one
        from brsm.cli.starting import start

        cfg_path = config or os.environ.get("BRSM_CONFIG")
        st = start("prune", {**params, "config": os.path.abspath(cfg_path) if cfg_path else None,
                              "keep_last": keep_last, "keep_within": within, "now_ms": now},
                    out=out, auto_rollback=False, report=False)
        uri, decisions = st.facts["storage"], st.facts["decisions"]
        deleted, warnings, op_id = st.facts["deleted"], st.facts["warnings"], st.facts["op_id"]
    else:  # a dry run reads only and is not journaled
        uri, decisions, warnings = _dry_run(params, cfg, keep_last=keep_last, within=within, now=now)
        deleted = []
    of = {a: [d for d in decisions if d["action"] == a] for a in (KEEP, DELETE, SKIP)}
    data = {"storage": uri, "dry_run": not confirm, "keep_last": keep_last, "keep_within": keep_within,
            "kept": of[KEEP], "delete": of[DELETE], "skipped": of[SKIP], "deleted": deleted,
            "failed": [], "warnings": warnings, "note": GC_NOTE, "op_id": op_id}
    if json_:
        out.result(data)
        return
    _print_decisions(out, uri, decisions, deleted=deleted, warnings=warnings, confirm=confirm)
    n = len(of[DELETE])
    if not confirm:
        from brsm.cli.confirm import wanted

        if n and wanted(False, json_=json_, question=f"delete these {n} backup(s)?"):
            prune(**asdict(store), storage=storage, config=config, keep_last=keep_last, keep_within=keep_within,
                  confirm=True, metrics_file=metrics_file, json_=json_)
            return
        out.line(f"dry run: {n} backup(s) would be deleted, nothing was; add --yes to delete them"
                 if n else "nothing to delete")
    else:
        out.line(f"deleted {len(deleted)} backup(s) (operation {op_id}: brsm audit {op_id})")


def _dry_run(params: dict[str, Any], cfg: Any, *, keep_last: int | None, within: float | None,
             now: int) -> tuple[str, list[dict[str, Any]], list[str]]:
    """What prune would delete, read from the storage only: its URI, the decisions (a backup an
    unfinished operation uses is kept) and the warnings."""
    from brsm.workflows.catalog import list_backups
    from brsm.workflows.prune import plan_prune

    in_use = _in_use()

    async def work(st):
        entries = await list_backups(st, decode_meta=decode_meta)
        return st.uri, plan_prune(entries, keep_last=keep_last, keep_within=within, now_ms=now, in_use=in_use)

    uri, plan = _run_on_storage(params, cfg, work)
    return uri, [d.to_dict() for d in plan.decisions], plan.warnings


def _print_decisions(out: Output, uri: str, decisions: list[dict[str, Any]], *, deleted: list[str],
                     warnings: list[str], confirm: bool) -> None:
    """Prune's decisions, a table (or a line per backup on a narrow terminal), with its warnings and notes."""
    from brsm.workflows.prune import DELETE, GC_NOTE, SKIP

    rows = [[d["name"], (d["created"] or "")[:16].replace("T", " "), _state_of(d),
             ("deleted" if d["name"] in deleted else "kept (in use)" if confirm and d["action"] == DELETE
              else "would delete" if d["action"] == DELETE else d["action"]), d["why"]]
            for d in decisions]
    if decisions and out.out.width < 120:
        # narrow: the table would leave `why` a column of one word per line; a line per backup instead
        out.line(f"prune {uri}:")
        for name, created, state, action, why in rows:
            out.line(f"  {action:<12} {name} ({state}, {created}): {why}")
    elif decisions:
        compact_table(out, f"prune {uri}", ["name", "created (UTC)", "state", "action", "why"], rows, wrap={"why"})
    else:
        out.line(f"no backups in {uri}")
    if any(_state_of(d) == "complete*" for d in decisions):
        out.line(NO_CHECKSUMS)
    for w in warnings:
        out.line(f"warning: {w}")
    if any(d["action"] == SKIP for d in decisions):
        out.line(f"note: {GC_NOTE}")


def _state_of(d: dict[str, Any]) -> str:
    return "complete*" if d["state"] == "complete" and not d.get("checksums") else d["state"]


# -- check ----------------------------------------------------------------------------------------
@with_options(store=StoreFlags, cluster=ClusterFlags)
def check(
    store: StoreFlags,
    cluster: ClusterFlags,
    config: ConfigOpt = None,
    storage: StorageOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Every preflight of a backup and a restore, changing nothing: metad, SSH and host keys, topology,
    nebula.service, free space, the lease, the storage, and with S3/OSS each host's direct data path. Exit 0
    only when all pass."""
    from brsm.wiring import open_check
    from brsm.workflows.check_command import run_checks

    out = Output(as_json=json_)
    cfg_path = config or os.environ.get("BRSM_CONFIG")
    params = {"config": os.path.abspath(cfg_path) if cfg_path else None, "storage": storage,
              **store.params(), **cluster.params()}

    from brsm.cli.unfinished import warn_unfinished

    warn_unfinished(params["config"])  # a restore that left the cluster down: said before metad is asked

    async def go():
        ports, closables = open_check(params, out=out)
        try:
            return await run_checks(ports)
        finally:
            for c in closables:
                try:
                    await c.close()
                except Exception:  # noqa: BLE001 - closing is best effort
                    pass

    results = asyncio.run(go())
    failed = [r for r in results if not r.ok]
    data = {"ok": not failed, "checks": [r.to_dict() for r in results]}
    if not json_:
        for r in results:
            out.line(f"{'ok  ' if r.ok else 'FAIL'}  {r.name}: {r.detail}" + (f" (hint: {r.hint})" if r.hint and not r.ok else ""))
    if failed:
        fail(out, data, PreflightFailed(f"{len(failed)} of {len(results)} check(s) failed, e.g. {failed[0].name}: "
                                         f"{failed[0].detail}", hint=failed[0].hint or "fix what the FAIL lines name"))
        return
    if json_:
        out.result(data)
    else:
        out.line(f"all {len(results)} checks passed")
