"""The backup's preflight, and LOCKED: the cluster's lease."""
from __future__ import annotations

from typing import Any

from brsm.errors import BrsmError, PreflightFailed, UsageError
from brsm.workflows import common, direct
from brsm.workflows.limits import TokenBucket, parse_rate
from brsm.workflows.transfer import Limits
from brsm.workflows.backup.context import ports
from brsm.workflows.backup import reuse
from brsm.workflows.backup.state import BackupContext, BaseChosen


# -- preflight ----------------------------------------------------------------------------------
async def preflight(ctx: BackupContext) -> dict[str, Any]:
    p = ports(ctx)
    topo = await common.preflight_topology(ctx, p.meta, p.hosts, p.install_dir)
    if not topo["storage"]:
        raise PreflightFailed("metad lists no storage hosts", hint="is --config pointing at the right metad?")
    if not topo["meta"]:
        raise PreflightFailed("metad lists no meta hosts", hint="is --config pointing at the right metad?")
    p.progress.note(f"topology from {topo['source']}")
    await _every_storaged_online(p.meta)
    spaces = await common.as_preflight(p.meta.list_spaces())
    wanted = list(ctx.data.params.spaces)
    missing = [s for s in wanted if s not in spaces]
    if missing:
        raise PreflightFailed(
            f"space(s) not found: {', '.join(missing)}; the cluster has: {', '.join(sorted(spaces)) or 'none'}",
            hint="check --spaces (names are case-sensitive)")
    if not spaces:
        raise PreflightFailed("the cluster has no graph spaces to back up", hint="create a space first")
    await common.check_paths(p.hosts, topo)
    await common.as_preflight(common.warn_not_backed_up(
        ctx, p.meta, [spaces[k] for k in (wanted or spaces)], p.progress,
        "not in the backup (rebuild them after a restore)"))
    await common.probe_storage(ctx, p.storage)
    params = ctx.data.params
    base = await reuse.choose_base(p.storage, named=params.incremental_from, newest=params.incremental, topo=topo)
    if base is not None:
        ctx.record(BaseChosen(**base.to_dict()))
        p.progress.note(reuse.describe(base.to_dict()))
    names = sorted({s["host"] for role in ("storage", "meta") for s in topo[role]})
    path = await direct.choose(ctx.data.params.data_path or direct.VIA_BRSM, [p.hosts.host(h) for h in names],
                               p.storage, p.progress, common.probe_journal(ctx))
    return {"topology": topo, "spaces": {k: spaces[k] for k in (wanted or sorted(spaces))},
            "data_path": path.mode, "data_path_why": path.why}


async def _every_storaged_online(meta) -> None:
    """A backup cannot succeed with a storaged down: metad blocks writes on every host that holds the
    spaces' partitions and fails with E_BLOCK_WRITE_FAILURE when one does not answer
    (src/meta/processors/admin/SnapShot.cpp, ``blockingWrites``), and checkpoints only the active ones
    (CreateBackupProcessor.cpp, ``ActiveHostsMan::getActiveHosts``). Say so before anything is touched,
    naming the host: listCluster leaves a storaged whose heartbeat went stale out of the topology, so
    without this check a host that was down was found only by createBackup (exit 5, after the lease
    and a write block)."""
    hosts = await common.as_preflight(meta.list_hosts("STORAGE"))
    down = sorted(f"{h.addr} ({h.status})" for h in hosts if not h.online)
    if down:
        raise PreflightFailed(f"{len(down)} storaged not ONLINE in metad's listHosts: {', '.join(down)}; "
                              "a backup needs every one (createBackup checkpoints them all)",
                              hint="start it (`nebula.service start storaged` on that host) or remove it from "
                                   "the cluster (DROP HOSTS), then back up")


async def attach(ctx: BackupContext) -> None:
    ctx.runtime.limits = Limits(
        concurrency=ctx.data.params.concurrency,
        per_host=ctx.data.params.per_host,
        bucket=TokenBucket(parse_rate(ctx.data.params.rate_limit)),
    )
    if ctx.mode == "resume":
        await _check_resumable(ctx)
    if ctx.mode == "rollback":
        await common.remove_probes(ctx, ports(ctx).storage)
    await common.reattach_lease(ctx, ports(ctx).hosts, "backup", lease_step="LOCKED")


async def _check_resumable(ctx: BackupContext) -> None:
    """pgBackRest's rule: refuse to resume onto something that changed, and say why."""
    p, st = ports(ctx), ctx.state
    if ctx.data.topology is not None:
        now = await common.discover_topology(p.meta, p.hosts, p.install_dir)
        was = ctx.data.topo
        shape = lambda t: sorted((s["addr"], tuple(s["data_paths"])) for s in t["storage"])  # noqa: E731
        if shape(now) != shape(was):
            raise UsageError(f"cannot resume operation {ctx.op_id}: the cluster's storage hosts changed since it "
                             f"started", hint=f"roll it back with `brsm rollback {ctx.op_id}` and start a new backup")
    name = ctx.data.backup_name
    if name and "CLEANED" not in st.started:
        if name not in {s.name for s in await p.meta.list_snapshots()}:
            raise UsageError(f"cannot resume operation {ctx.op_id}: its snapshot {name} is gone from the cluster",
                             hint=f"roll it back with `brsm rollback {ctx.op_id}` and start a new backup")


async def detach(ctx: BackupContext) -> None:
    common.record_host_keys(ctx, ports(ctx).hosts)
    await common.detach_lease(ctx)
    if ctx.runtime.release_lease and common.lease_active(ctx, "LOCKED"):
        # kept for a resume after Ctrl-C (the runner's keep_interrupted): the cluster is let go now,
        # not at the lease's expiry; `brsm resume` takes the lease again (reattach_lease)
        try:
            await common.make_lease(ctx, ports(ctx).hosts, "backup").release()
        except BrsmError as e:  # best effort: the interruption stays what the run reports
            ports(ctx).progress.note(f"could not release the cluster lease ({e.message}); it expires by itself "
                                      "within its ttl (5 minutes), or `brsm resume`/`brsm rollback` takes it back")
            return
        ctx.record(common.LEASE_RELEASED, {"why": "kept for a resume after an interruption"})


# -- LOCKED ---------------------------------------------------------------------------------------
async def locked(ctx: BackupContext) -> dict[str, Any]:
    lease = common.make_lease(ctx, ports(ctx).hosts, "backup")
    await lease.acquire()
    return {"lease_hosts": [h.name for h, _ in lease.hosts]}


async def undo_locked(ctx: BackupContext) -> None:
    if ctx.data.topology is not None:
        await common.make_lease(ctx, ports(ctx).hosts, "backup").release()
