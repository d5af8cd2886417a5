"""The `brsm` command. Only this layer catches BrsmError, prints it and picks the exit code."""
from __future__ import annotations

import logging
import os
import sys
import traceback
from typing import Annotated, Any, Optional

import click
import typer

from brsm import __version__
from brsm.console.output import Output
from brsm.errors import BrsmError, LockHeld, UsageError, VerificationFailed

from brsm.cli.options import (AcceptNewOpt, ClusterFlags, JsonOpt, MetricsFileOpt, StoreFlags, TransferFlags,
                              YesOpt, YesOrConfirmOpt, with_options)

# rich_markup_mode=None: click's own help layout. Typer's rich panels squeezed every help text into a
# column of about 20 characters at 80 columns, and read "[ssh] user" in a help text as markup.
app = typer.Typer(
    name="brsm",
    help="Backup and restore for Nebula Graph clusters: resumable, reversible, journaled.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
start_app = typer.Typer(help="Start a new backup or restore.", no_args_is_help=True, rich_markup_mode=None)
journal_app = typer.Typer(help="Inspect the operations journal.", no_args_is_help=True, rich_markup_mode=None)


def _print_version(value: bool) -> None:
    if value:
        print(f"brsm {__version__}")
        raise typer.Exit()


@app.callback()
def _global_options(
    version_: Annotated[bool, typer.Option("--version", is_eager=True, callback=_print_version,
                                           help="Print brsm's version and exit.")] = False,
    metrics_file: Annotated[Optional[str], typer.Option(
        "--metrics-file", help="After every operation, write Prometheus textfile-collector metrics here "
                               "(atomically); default $BRSM_METRICS_FILE, else the config's metrics.file. "
                               "The commands that run an operation take it too.")] = None,
    quiet: Annotated[bool, typer.Option(
        "--quiet", help="Print errors and warnings only (for cron); --json output is printed as ever. "
                        "Taken anywhere on the command line.")] = False,
) -> None:
    """Backup and restore for Nebula Graph clusters: resumable, reversible, journaled."""
    from brsm.cli import drive

    del quiet  # shown here for --help; main() takes it from anywhere on the line (brsm.console.output.QUIET)
    drive.metrics_flag = os.path.abspath(metrics_file) if metrics_file else None


def _metrics_file(path: str | None) -> None:
    """`--metrics-file` given after the command (where a user puts it) wins over one before it."""
    if path:
        from brsm.cli import drive

        drive.metrics_flag = os.path.abspath(path)


app.add_typer(start_app, name="start")
app.add_typer(journal_app, name="journal")

from brsm.cli.ops_commands import register as _register_ops  # noqa: E402

_register_ops(app)

# The sandbox is optional: it needs the [sandbox] extra. Only that extra missing hides the command; any
# other import error in the sandbox is a bug and is raised, never silently turned into "no sandbox".
SANDBOX_EXTRA = ("rocksdict", "moto", "flask", "werkzeug")  # the [sandbox] extra and what moto[server] brings
try:
    from brsm.sandbox.cli import sandbox_app

    app.add_typer(sandbox_app, name="sandbox")
except ModuleNotFoundError as _e:  # pragma: no cover - depends on the installation
    if (_e.name or "").split(".")[0] not in SANDBOX_EXTRA:
        raise


def _journal():
    from journal import Journal

    from brsm.home import journal_path

    return Journal.open(journal_path())


@app.command()
def version(json_: JsonOpt = False) -> None:
    """Print brsm's version."""
    Output(as_json=json_).result({"version": __version__}, text=f"brsm {__version__}")


# -- start / resume / rollback ----------------------------------------------------------------
def _start(kind: str, params: dict[str, Any], *, out: Output, auto_rollback: bool, report: bool = True,
           confirm: Any = None):
    """Every operation the CLI starts comes through here: its storage pinned and no credential in its
    params (brsm.cli.inputs), or refused with exit 2 before anything is journaled. ``confirm(params)``,
    when given, asks (brsm.cli.confirm) once the inputs are known good, and refuses before anything exists."""
    from brsm.cli.drive import start_operation
    from brsm.cli.inputs import prepare

    params, target = prepare(params)
    if confirm is not None:
        confirm(params)
    return start_operation(kind, params, target=target, out=out, auto_rollback=auto_rollback, report=report)


def _drive(kind: str, params: dict[str, Any], *, json_: bool, auto_rollback: bool, confirm: Any = None) -> None:
    _start(kind, params, out=Output(as_json=json_), auto_rollback=auto_rollback, confirm=confirm)


def _cluster_label(params: dict[str, Any]) -> str:
    if params.get("meta"):
        return "the cluster of metad " + ",".join(params["meta"])
    if params.get("config"):
        from brsm.config import load_config

        try:
            return f"cluster {load_config(params['config']).name} ({params['config']})"
        except BrsmError:
            return f"the cluster of {params['config']}"
    return "the cluster"


@start_app.command("backup")
@with_options(run=TransferFlags, store=StoreFlags, cluster=ClusterFlags)
def start_backup(
    run: TransferFlags,
    store: StoreFlags,
    cluster: ClusterFlags,
    config: Annotated[Optional[str], typer.Option(help="Cluster config (TOML); default $BRSM_CONFIG.")] = None,
    storage: Annotated[Optional[str], typer.Option(help="local:///path, s3://bucket/prefix or oss://bucket/prefix")] = None,
    spaces: Annotated[Optional[str], typer.Option(help="Comma-separated space names; default all.")] = None,
    metrics_file: MetricsFileOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Back up the cluster's graph spaces (all, or --spaces) to --storage."""
    _metrics_file(metrics_file)
    params = {
        "config": os.path.abspath(config) if config else os.environ.get("BRSM_CONFIG"),
        "storage": storage,
        "spaces": [s for s in (spaces or "").split(",") if s],
        **run.params(), **store.params(), **cluster.params(),
    }
    _drive("backup", params, json_=json_, auto_rollback=not run.keep_on_failure)


@start_app.command("restore")
@with_options(run=TransferFlags, store=StoreFlags, cluster=ClusterFlags)
def start_restore(
    run: TransferFlags,
    store: StoreFlags,
    cluster: ClusterFlags,
    name: Annotated[str, typer.Option(help="The backup to restore (BACKUP_...).")],
    config: Annotated[Optional[str], typer.Option(help="Cluster config (TOML); default $BRSM_CONFIG.")] = None,
    storage: Annotated[Optional[str], typer.Option(help="Where the backup is.")] = None,
    host_map: Annotated[Optional[str], typer.Option(help="old=new,... host pairing (default: sorted order).")] = None,
    verify: Annotated[str, typer.Option(help="quick or full (re-hash every object first).")] = "quick",
    keep_old: Annotated[bool, typer.Option(help="Keep the set-aside data dirs after success.")] = False,
    offline: Annotated[bool, typer.Option(
        help="Stop the cluster before the download instead of staging the files while it serves (for hosts "
             "where two copies of the data cannot coexist; chosen by itself when staging does not fit).")] = False,
    allow_unverified: Annotated[bool, typer.Option(
        help="Restore a backup that records no checksums (nebula-br's, or one whose brsm-manifest.json is "
             "gone): its files are checked by size only.")] = False,
    service_timeout: Annotated[Optional[float], typer.Option(
        help="Seconds each daemon may take to stop, or to start and listen (all hosts at once). Default: 300, or "
             "2 s per GiB of a storage host's share of the backup if longer (a storaged opens its port only once "
             "it has loaded its data). A storaged still loading when it runs out is not rolled back: `brsm resume`.",
        show_default=False)] = None,
    yes: YesOpt = False,
    metrics_file: MetricsFileOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Restore backup --name from --storage onto the cluster: its data is replaced and its services are
    stopped for a while. Asks first on a terminal; --yes in scripts."""
    _metrics_file(metrics_file)
    if verify not in ("quick", "full"):
        raise UsageError(f"--verify must be quick or full, not {verify!r}")
    if service_timeout is not None and not 1 <= service_timeout <= 86400:
        raise UsageError(f"--service-timeout must be 1 to 86400 seconds, not {service_timeout:g}")
    from brsm.cli.inputs import check_backup_name

    check_backup_name(name, "--name")
    params = {
        "config": os.path.abspath(config) if config else os.environ.get("BRSM_CONFIG"),
        "storage": storage,
        "name": name,
        "host_map": host_map,
        "verify": verify,
        "keep_old": keep_old,
        "offline": offline,
        "allow_unverified": allow_unverified,
        "service_timeout": service_timeout,
        **run.params(), **store.params(), **cluster.params(),
    }

    def confirm(p: dict[str, Any]) -> None:
        from brsm.cli.confirm import require

        down = ("stops graphd, storaged and metad on every host before the download (--offline)" if offline
                else "stages the files while the cluster serves, then stops graphd, storaged and metad on every "
                     "host for the swap (or before the download, when staging does not fit)")
        require(yes, json_=json_, command="start restore", what="replaces the cluster's data and stops it",
                lines=[f"restore {name} from {p.get('storage') or '(the config has no storage.default)'}",
                       f"onto {_cluster_label(p)}: every space's data is replaced by the backup's;",
                       f"it {down};",
                       "the data it has now is set aside: `brsm rollback ID` puts it back until the restore "
                       "finishes" + (", and --keep-old keeps it after" if not keep_old else " (--keep-old keeps it after)")])

    _drive("restore", params, json_=json_, auto_rollback=not run.keep_on_failure, confirm=confirm)


PinnedStorageOpt = Annotated[Optional[str], typer.Option(
    "--storage", help="Only check: refuse unless this is the storage the operation was started with (it always "
                      "continues on that one, whatever the config's storage.default says now).")]


def _continue(op_id: int, mode: str, storage: str | None, accept_new_host_keys: bool, json_: bool) -> None:
    from brsm.cli.drive import continue_operation

    out = Output(as_json=json_)
    _check_pinned_storage(op_id, mode, storage, out)
    continue_operation(op_id, mode, out=out, accept_new_host_keys=accept_new_host_keys)


def _check_pinned_storage(op_id: int, mode: str, storage: str | None, out: Output) -> None:
    """An operation continues on the storage it was created with (brsm.cli.inputs pins it). Refuse a
    --storage that names another; say so when the config's storage.default has moved since."""
    from journal.redact import scrub_text

    from brsm.cli.inputs import same_storage

    j = _journal()
    try:
        op = j.operation(op_id)
        pinned = (op.params.get("storage") if isinstance(op.params, dict) else None) or op.target or ""
        differs = storage is not None and not same_storage(scrub_text(storage), pinned)
        if differs and not j.verify(op_id).ok:
            return  # an edited journal: continue_operation refuses it, with exit 6
    finally:
        j.close()
    if differs:
        raise UsageError(
            f"refusing to {mode} operation {op_id} on {scrub_text(storage)}: it was started on "
            + (pinned or "a storage it did not record (the config's storage.default when it started)"),
            hint=f"run `brsm {mode} {op_id}` without --storage: it continues on the storage it started with" if pinned
            else f"an older brsm did not pin it: without --storage, `brsm {mode} {op_id}` uses the config's "
                 "storage.default as it is now; make sure that is where it started")
    if storage is None and pinned and isinstance(op.params, dict) and op.params.get("config"):
        from brsm.config import load_config

        try:
            now = load_config(op.params["config"]).storage.default
        except UsageError:
            return
        was = op.params.get("storage_default")  # None: an operation an older brsm journaled
        if now and not same_storage(now, pinned) and (was is None or not same_storage(now, was)):
            out.line(f"note: {op.params['config']} now says storage.default = {now}; operation {op_id} "
                     f"continues on {pinned}, where it started")


@app.command()
def resume(op_id: Annotated[int, typer.Argument(metavar="OP_ID", help="Operation id (see `brsm ops`).")],
           storage: PinnedStorageOpt = None, accept_new_host_keys: AcceptNewOpt = False,
           metrics_file: MetricsFileOpt = None, json_: JsonOpt = False) -> None:
    """Continue an interrupted or failed operation from its last completed step, on the storage it started with."""
    _metrics_file(metrics_file)
    _continue(op_id, "resume", storage, accept_new_host_keys, json_)


@app.command()
def rollback(op_id: Annotated[int, typer.Argument(metavar="OP_ID", help="Operation id (see `brsm ops`).")],
             storage: PinnedStorageOpt = None, accept_new_host_keys: AcceptNewOpt = False,
             metrics_file: MetricsFileOpt = None, json_: JsonOpt = False) -> None:
    """Undo every step of an operation that may have taken effect, newest first. Safe to repeat."""
    _metrics_file(metrics_file)
    _continue(op_id, "rollback", storage, accept_new_host_keys, json_)


@app.command()
@with_options(store=StoreFlags, cluster=ClusterFlags)
def cleanup(
    store: StoreFlags,
    cluster: ClusterFlags,
    name: Annotated[str, typer.Argument(metavar="NAME", help="The backup to delete (BACKUP_...).")],
    storage: Annotated[Optional[str], typer.Option(help="Where the backup is.")] = None,
    config: Annotated[Optional[str], typer.Option(
        help="Cluster config: also drop the snapshot there (or name the cluster with --meta).")] = None,
    yes: YesOpt = False,
    metrics_file: MetricsFileOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Delete a backup from storage and drop its snapshot on the cluster; refuses one in use. Asks first on a
    terminal; --yes in scripts."""
    _metrics_file(metrics_file)
    from brsm.cli.inputs import check_backup_name

    check_backup_name(name)
    out = Output(as_json=json_)
    params = {"name": name, "storage": storage, "config": os.path.abspath(config) if config else os.environ.get("BRSM_CONFIG"),
              **store.params(), **cluster.params()}

    def confirm(p: dict[str, Any]) -> None:
        from brsm.cli.confirm import require

        require(yes, json_=json_, command="cleanup", what=f"deletes backup {name}",
                lines=[f"delete {name} from {p.get('storage') or '(the config has no storage.default)'}: every "
                       "object of it, for good",
                       f"and drop its snapshot on {_cluster_label(p)} if it is still there" if p.get("config") or p.get("meta")
                       else "(no --config or --meta: a snapshot of it on the cluster stays)"])

    st = _start("cleanup", params, out=out, auto_rollback=False, report=False, confirm=confirm)
    f = st.facts
    out.result(f, text=f"deleted {name}: {f['objects_deleted']} object(s)"
               + ("; dropped its snapshot on the cluster" if f["snapshot_dropped"] else ""))


@app.command()
@with_options(store=StoreFlags, cluster=ClusterFlags)
def gc(
    store: StoreFlags,
    cluster: ClusterFlags,
    config: Annotated[Optional[str], typer.Option(help="Cluster config (snapshots, set-aside dirs, leases).")] = None,
    storage: Annotated[Optional[str], typer.Option(help="Storage to scan for incomplete backups.")] = None,
    confirm: YesOrConfirmOpt = False,
    grace: Annotated[str, typer.Option(help="Incomplete backups younger than this are left alone, e.g. 1h, 2d.")] = "1h",
    metrics_file: MetricsFileOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Find orphans (snapshots, incomplete backups, set-aside dirs, stale leases); remove them with --yes (or
    --confirm), or when you answer y on a terminal."""
    _metrics_file(metrics_file)
    out = Output(as_json=json_)
    params = {"config": os.path.abspath(config) if config else os.environ.get("BRSM_CONFIG"), "storage": storage,
              "confirm": confirm, "grace_seconds": _duration(grace), **store.params(), **cluster.params()}
    st = _start("gc", params, out=out, auto_rollback=False, report=False)
    orphans = st.facts.get("orphans", [])
    if json_:
        out.result({"orphans": orphans, "removed": st.facts.get("removed", 0), "dry_run": not confirm})
        return
    if not orphans:
        out.line("no orphans found")
        return
    out.table("orphans", ["kind", "where", "why"],
              [[o["kind"], o.get("name") or f"{o.get('host')}:{o.get('path')}", o["why"]] for o in orphans])
    if confirm:
        out.line(f"removed {st.facts.get('removed', 0)}")
        return
    from brsm.cli.confirm import wanted

    if wanted(False, json_=json_, question=f"remove these {len(orphans)} orphan(s)?"):
        from dataclasses import asdict

        gc(**asdict(store), **asdict(cluster), config=config, storage=storage, confirm=True, grace=grace, metrics_file=metrics_file,
           json_=json_)
        return
    out.line("dry run: nothing removed; add --yes to remove them")


def _duration(text: str, flag: str = "--grace") -> float:
    from brsm.durations import FORMS, DurationError, parse_duration

    try:
        return parse_duration(text, allow_zero=True)
    except DurationError as e:
        raise UsageError(f"{flag}: {e}", hint=f"write it like {FORMS}") from None


# -- reading the journal ------------------------------------------------------------------------
@app.command()
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
    j = _journal()
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
    from brsm.cli.views import compact_table, short_time

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


@app.command()
def audit(op_id: Annotated[int, typer.Argument(metavar="OP_ID")], json_: JsonOpt = False) -> None:
    """Every event of one operation: time, type, facts; and whether its hash chain verifies."""
    from brsm.cli.views import print_audit

    j = _journal()
    try:
        err = print_audit(j, op_id, Output(as_json=json_))
    finally:
        j.close()
    if err is not None:
        if json_:  # the error is already in the one JSON document
            raise click.exceptions.Exit(err.exit_code)
        raise err


@journal_app.command("verify")
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
    j = _journal()
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


# -- entry point --------------------------------------------------------------------------------
def _click_families() -> tuple[tuple, tuple, tuple]:
    """Typer 0.29 parses with its own copy of click (``typer._click``), whose exceptions are not
    click's: a bad argument would otherwise end as an 'unexpected error' with a traceback."""
    mods = [click.exceptions]
    try:
        from typer._click import exceptions as vendored
        mods.append(vendored)
    except ImportError:
        pass
    def family(name: str) -> tuple:
        return tuple(getattr(m, name) for m in mods if hasattr(m, name))
    return family("Exit"), family("ClickException"), family("Abort")


_EXIT, _CLICK_ERROR, _ABORT = _click_families()


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("BRSM_DEBUG") == "1"
    args = [a for a in args if a != "--debug"]
    # --quiet anywhere, as --debug: cron lines put it after the command as often as before it
    from brsm.console import output as _output

    cut = args.index("--") if "--" in args else len(args)
    _output.QUIET = "--quiet" in args[:cut]
    if _output.QUIET:  # moved to where the app's own option is (it shows in `brsm --help`)
        args = ["--quiet"] + [a for a in args[:cut] if a != "--quiet"] + args[cut:]
    from brsm.cli import drive

    drive.metrics_flag = None  # set again by --metrics-file: one command's flag never leaks into the next
    out = Output(as_json="--json" in args)
    log = _open_log()
    words = []
    for a in args[:2]:  # the command's name only: option values could carry a secret
        if a.startswith("-"):
            break
        words.append(a)
    log.info("brsm %s: %s", __version__, " ".join(words))
    code = 0
    try:
        # With standalone_mode=False click returns a typer.Exit's code instead of raising it.
        rv = app(args=args, prog_name="brsm", standalone_mode=False)
        code = rv if isinstance(rv, int) else 0
    except BrsmError as e:
        out.error(e.message, e.hint, e.exit_code,
                  **({"op_id": e.op_id, "state": e.state} if e.op_id is not None else {}))
        code = e.exit_code
        log.warning("%s: %s", type(e).__name__, e.message)
        if debug:
            _print_trace()
    except _EXIT as e:
        code = e.exit_code
    except _CLICK_ERROR as e:
        ctx = getattr(e, "ctx", None)
        where = ctx.command_path if ctx is not None and ctx.command_path else "brsm"
        from brsm.cli.habits import suggest, without_click_guess

        habit = suggest(args)  # a nebula-br command line: say the brsm one instead of click's guess
        out.error(without_click_guess(e.format_message()) if habit else e.format_message(),
                  habit or f"see `{where} --help`", 2)  # the subcommand's own help
        code = 2
    except (*_ABORT, KeyboardInterrupt):
        out.error("interrupted", "the journal records where it stopped; see `brsm ops`", 130)
        code = 130
    except Exception as e:  # noqa: BLE001 - the one place that turns any error into an exit code
        if _is_sandbox_failure(e):  # `brsm sandbox …`: the sandbox's own errors, printed like ours
            code = e.exit_code
            out.error(e.message, e.hint, code)
            log.warning("%s: %s", type(e).__name__, e.message)
        else:
            code, msg, hint = _map_foreign(e)
            out.error(msg, hint, code)
            log.error("unexpected: %s", msg, exc_info=True)
            if debug or code == 1:
                _print_trace()
    log.info("exit %s", code)
    return code


def _print_trace() -> None:
    """The traceback of the exception being handled, credentials scrubbed (an SDK's message may hold one)."""
    from journal.redact import scrub_text

    sys.stderr.write(scrub_text(traceback.format_exc()))


class _ScrubbingFormatter(logging.Formatter):
    """brsm.log is kept and shared: every line, tracebacks included, has credentials scrubbed."""

    def format(self, record: logging.LogRecord) -> str:
        from journal.redact import scrub_text

        return scrub_text(super().format(record))


def _open_log():
    """``$BRSM_HOME/logs/brsm.log`` (0600): one line per command and its exit, traces of surprises.
    Messages only, never params, and every line scrubbed: a secret must not reach it."""
    from brsm.home import logs_dir

    log = logging.getLogger("brsm")
    want = str(logs_dir() / "brsm.log")
    if any(getattr(h, "baseFilename", None) == want for h in log.handlers):
        return log
    for h in list(log.handlers):  # $BRSM_HOME changed (tests, or main() called twice)
        log.removeHandler(h)
        h.close()
    log.setLevel(logging.INFO)
    log.propagate = False
    try:
        from brsm.home import ensure_home

        ensure_home()  # 0700 when brsm makes it; not a directory: the command says so (exit 2), not the log
        d = logs_dir()
        d.mkdir(exist_ok=True, mode=0o700)
        path = d / "brsm.log"
        # never through a link planted at the name (it would be chmodded and written): ELOOP, no log
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(fd, 0o600)
        finally:
            os.close(fd)
        h = logging.FileHandler(path)
        h.setFormatter(_ScrubbingFormatter("%(asctime)s %(process)d %(levelname)s %(message)s"))
        log.addHandler(h)
        # library warnings and what libraries log at WARNING or above: here, never on stderr (brsm.cli)
        for other in (logging.getLogger("py.warnings"), logging.getLogger()):
            for old in [x for x in other.handlers if isinstance(x, logging.FileHandler)
                        and isinstance(x.formatter, _ScrubbingFormatter)]:
                other.removeHandler(old)
            other.addHandler(h)
    except (OSError, BrsmError):
        log.addHandler(logging.NullHandler())
    return log


def _is_sandbox_failure(e: Exception) -> bool:
    errors = sys.modules.get("brsm.sandbox.errors")
    return errors is not None and isinstance(e, errors.SandboxFailure)


def _map_foreign(e: Exception) -> tuple[int, str, str | None]:
    try:
        import journal as jr
    except ImportError:  # pragma: no cover
        jr = None
    if jr is not None:
        if isinstance(e, jr.JournalLocked):
            return LockHeld.exit_code, str(e), "wait for it to finish, or stop that process first"
        if isinstance(e, jr.UnknownOperation):
            return UsageError.exit_code, str(e), "see `brsm ops` for operation ids"
        if isinstance(e, jr.JournalCorrupt):
            from brsm.home import brsm_home

            p = brsm_home() / "journal.db"
            return (VerificationFailed.exit_code, f"the journal is damaged: {e}",
                    f"keep a copy for investigation, then move {p} and its -wal/-shm files aside: brsm starts "
                    "a new journal; `brsm gc` finds what unfinished operations left on the cluster and storage")
        if isinstance(e, jr.JournalError):
            return 1, f"journal: {e}", None
    return 1, f"unexpected error: {type(e).__name__}: {e}", "please report this with the output of --debug"


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
