"""Starting an operation from the command line: `brsm start backup` and `brsm start restore`, and
the one path every new operation takes (inputs checked, confirmation asked, then journaled)."""
from __future__ import annotations

import functools
import os
from typing import Annotated, Any, Optional

import typer

from brsm.cli.options import ClusterFlags, JsonOpt, MetricsFileOpt, StoreFlags, TransferFlags, YesOpt, with_options
from brsm.console.output import Output
from brsm.errors import BrsmError, UsageError


def register(start_app: typer.Typer) -> None:
    start_app.command("backup")(start_backup)
    start_app.command("restore")(start_restore)


def set_metrics_file(path: str | None) -> None:
    """`--metrics-file` given after the command (where a user puts it) wins over one before it."""
    if path:
        from brsm.cli import drive

        drive.metrics_flag = os.path.abspath(path)


def start(kind: str, params: dict[str, Any], *, out: Output, auto_rollback: bool, report: bool = True,
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
    start(kind, params, out=Output(as_json=json_), auto_rollback=auto_rollback, confirm=confirm)


def cluster_label(params: dict[str, Any]) -> str:
    if params.get("meta"):
        return "the cluster of metad " + ",".join(params["meta"])
    if params.get("config"):
        from brsm.config import load_config

        try:
            return f"cluster {load_config(params['config']).name} ({params['config']})"
        except BrsmError:
            return f"the cluster of {params['config']}"
    return "the cluster"


@with_options(run=TransferFlags, store=StoreFlags, cluster=ClusterFlags)
def start_backup(
    run: TransferFlags,
    store: StoreFlags,
    cluster: ClusterFlags,
    config: Annotated[Optional[str], typer.Option(help="Cluster config (TOML); default $BRSM_CONFIG.")] = None,
    storage: Annotated[Optional[str], typer.Option(help="local:///path, s3://bucket/prefix or oss://bucket/prefix")] = None,
    spaces: Annotated[Optional[str], typer.Option(help="Comma-separated space names; default all.")] = None,
    incremental_from: Annotated[Optional[str], typer.Option(
        "--incremental-from", metavar="BACKUP",
        help="Send only content BACKUP (a complete brsm backup in --storage) lacks; the rest is copied inside "
             "the storage. The new backup stands alone.")] = None,
    incremental: Annotated[bool, typer.Option(
        "--incremental", help="As --incremental-from the newest complete backup of this cluster in --storage; "
                              "a full backup when there is none.")] = False,
    metrics_file: MetricsFileOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Back up the cluster's graph spaces (all, or --spaces) to --storage."""
    set_metrics_file(metrics_file)
    if incremental_from is not None and incremental:
        raise UsageError("--incremental and --incremental-from name the base two ways",
                         hint="give one: --incremental-from BACKUP, or --incremental for the newest")
    if incremental_from is not None:
        from brsm.cli.inputs import check_backup_name

        check_backup_name(incremental_from, "--incremental-from")
    params = {
        "config": os.path.abspath(config) if config else os.environ.get("BRSM_CONFIG"),
        "storage": storage,
        "spaces": [s for s in (spaces or "").split(",") if s],
        "incremental_from": incremental_from, "incremental": incremental,
        **run.params(), **store.params(), **cluster.params(),
    }
    _drive("backup", params, json_=json_, auto_rollback=not run.keep_on_failure)


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
    set_metrics_file(metrics_file)
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

    confirm = functools.partial(_confirm_restore, name=name, offline=offline, keep_old=keep_old, yes=yes, json_=json_)
    _drive("restore", params, json_=json_, auto_rollback=not run.keep_on_failure, confirm=confirm)


def _confirm_restore(p: dict[str, Any], *, name: str, offline: bool, keep_old: bool, yes: bool, json_: bool) -> None:
    """Say what a restore will do to which cluster, and ask (or take --yes)."""
    from brsm.cli.confirm import require

    down = ("stops graphd, storaged and metad on every host before the download (--offline)" if offline
            else "stages the files while the cluster serves, then stops graphd, storaged and metad on every "
                 "host for the swap (or before the download, when staging does not fit)")
    require(yes, json_=json_, command="start restore", what="replaces the cluster's data and stops it",
            lines=[f"restore {name} from {p.get('storage') or '(the config has no storage.default)'}",
                   f"onto {cluster_label(p)}: every space's data is replaced by the backup's;",
                   f"it {down};",
                   "the data it has now is set aside: `brsm rollback ID` puts it back until the restore "
                   "finishes" + (", and --keep-old keeps it after" if not keep_old else " (--keep-old keeps it after)")])
