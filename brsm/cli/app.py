"""The `brsm` command. Only this layer catches BrsmError, prints it and picks the exit code."""
from __future__ import annotations

import os
import sys
from typing import Annotated, Any, Optional

import typer

from brsm import __version__
from brsm.console.output import Output
from brsm.errors import BrsmError, UsageError

from brsm.cli.foreign_errors import (CLICK_ABORT, CLICK_ERROR, CLICK_EXIT, is_sandbox_failure, map_foreign,
                                     print_trace)
from brsm.cli.journal_commands import open_journal
from brsm.cli.logfile import open_log
from brsm.cli.starting import cluster_label, set_metrics_file, start

from brsm.cli.options import (AcceptNewOpt, ClusterFlags, JsonOpt, MetricsFileOpt, StoreFlags,
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


@app.command()
def version(json_: JsonOpt = False) -> None:
    """Print brsm's version."""
    Output(as_json=json_).result({"version": __version__}, text=f"brsm {__version__}")


# -- start / resume / rollback ----------------------------------------------------------------
from brsm.cli.starting import register as _register_start  # noqa: E402

_register_start(start_app)


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

    j = open_journal()
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
    set_metrics_file(metrics_file)
    _continue(op_id, "resume", storage, accept_new_host_keys, json_)


@app.command()
def rollback(op_id: Annotated[int, typer.Argument(metavar="OP_ID", help="Operation id (see `brsm ops`).")],
             storage: PinnedStorageOpt = None, accept_new_host_keys: AcceptNewOpt = False,
             metrics_file: MetricsFileOpt = None, json_: JsonOpt = False) -> None:
    """Undo every step of an operation that may have taken effect, newest first. Safe to repeat."""
    set_metrics_file(metrics_file)
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
    set_metrics_file(metrics_file)
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
                       f"and drop its snapshot on {cluster_label(p)} if it is still there" if p.get("config") or p.get("meta")
                       else "(no --config or --meta: a snapshot of it on the cluster stays)"])

    st = start("cleanup", params, out=out, auto_rollback=False, report=False, confirm=confirm)
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
    """Find orphans (snapshots, incomplete backups, set-aside dirs, stray meta checkpoints, stale leases); remove
    them with --yes (or --confirm), or when you answer y on a terminal."""
    set_metrics_file(metrics_file)
    out = Output(as_json=json_)
    params = {"config": os.path.abspath(config) if config else os.environ.get("BRSM_CONFIG"), "storage": storage,
              "confirm": confirm, "grace_seconds": _duration(grace), **store.params(), **cluster.params()}
    st = start("gc", params, out=out, auto_rollback=False, report=False)
    orphans = st.facts.get("orphans", [])
    if json_:
        out.result({"orphans": orphans, "removed": st.facts.get("removed", 0), "dry_run": not confirm})
        return
    if not orphans:
        out.line("no orphans found")
        return
    out.table("orphans", ["kind", "where", "why"],
              [[o["kind"], f"{o.get('host')}:{o['path']}" if o.get("path") else o.get("name"), o["why"]]
               for o in orphans])
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
from brsm.cli.journal_commands import register as _register_journal  # noqa: E402

_register_journal(app, journal_app)


# -- entry point --------------------------------------------------------------------------------
def _global_flags(argv: list[str] | None) -> tuple[list[str], bool]:
    """The command line with --debug taken out and --quiet moved first, and whether to debug: both
    are accepted anywhere (cron lines put them after the command as often as before it)."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("BRSM_DEBUG") == "1"
    args = [a for a in args if a != "--debug"]
    from brsm.console import output as _output

    cut = args.index("--") if "--" in args else len(args)
    _output.QUIET = "--quiet" in args[:cut]
    if _output.QUIET:  # moved to where the app's own option is (it shows in `brsm --help`)
        args = ["--quiet"] + [a for a in args[:cut] if a != "--quiet"] + args[cut:]
    return args, debug


def main(argv: list[str] | None = None) -> int:
    args, debug = _global_flags(argv)
    from brsm.cli import drive

    drive.metrics_flag = None  # set again by --metrics-file: one command's flag never leaks into the next
    out = Output(as_json="--json" in args)
    log = open_log()
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
            print_trace()
    except CLICK_EXIT as e:
        code = e.exit_code
    except CLICK_ERROR as e:
        ctx = getattr(e, "ctx", None)
        where = ctx.command_path if ctx is not None and ctx.command_path else "brsm"
        from brsm.cli.habits import suggest, without_click_guess

        habit = suggest(args)  # a nebula-br command line: say the brsm one instead of click's guess
        out.error(without_click_guess(e.format_message()) if habit else e.format_message(),
                  habit or f"see `{where} --help`", 2)  # the subcommand's own help
        code = 2
    except (*CLICK_ABORT, KeyboardInterrupt):
        out.error("interrupted", "the journal records where it stopped; see `brsm ops`", 130)
        code = 130
    except Exception as e:  # noqa: BLE001 - the one place that turns any error into an exit code
        if is_sandbox_failure(e):  # `brsm sandbox …`: the sandbox's own errors, printed like ours
            code = e.exit_code
            out.error(e.message, e.hint, code)
            log.warning("%s: %s", type(e).__name__, e.message)
        else:
            code, msg, hint = map_foreign(e)
            out.error(msg, hint, code)
            log.error("unexpected: %s", msg, exc_info=True)
            if debug or code == 1:
                print_trace()
    log.info("exit %s", code)
    return code


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
