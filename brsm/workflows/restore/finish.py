"""META_RESTORED, STARTED and CLEANED: the restored cluster comes up, proves itself, and the
set-aside originals go."""
from __future__ import annotations

import asyncio
import posixpath
import time
from typing import Any

from brsm.concurrency import gather_bounded
from brsm import failpoints
from brsm.errors import OperationFailed
from brsm.ports import HostAddr
from brsm.workflows import anchors, common
from brsm.workflows.restore import control, partial_meta, placement, proof, scratch, source, stage
from brsm.workflows.restore.context import (SPACES_DROPPED, pairs, partial, ports,
                                            root_of, staged)
from brsm.workflows.restore.state import RestoreContext, ServicesStarting

CLEAN_AT_ONCE = 32  # set-aside data dirs removed at once by CLEANED


async def meta_restored(ctx: RestoreContext) -> dict[str, Any]:
    p = ports(ctx)
    m = await source.manifest(ctx)
    # on a resume metad may run already (started by an earlier attempt of this step); the others must not
    await control.ensure_down(ctx, "META_RESTORED", control.ALL_DOWN if ctx.mode == "run" else control.STARTED_BY_US)
    await control.start(ctx, "metad")
    await control.wait_meta(ctx)
    await scratch.verify(ctx, placement.meta_restore_dirs(ctx.data.topo, ctx.ref))  # what metad ingests
    own_sst = None
    dropped: list[str] = []
    if partial(ctx) and p.meta_sst is not None:
        # a space of the backup's name re-created since under another id is not the backup's space: it
        # goes as Nebula drops a space (its data was set aside in SET_ASIDE), and the schema that
        # DropSpaceProcessor leaves behind goes in the same SST as the chosen spaces' keys
        orphaned = await partial_meta.replaced_schema_keys(ctx)
        dropped = await _drop_chosen_spaces(ctx, m, only_replaced=True)
        await partial_meta.settle(ctx)
        own_sst = await partial_meta.build(ctx, m, also_delete=orphaned)  # the chosen spaces' keys exactly
    elif partial(ctx):
        dropped = await _drop_chosen_spaces(ctx, m)
    host_pairs = [(HostAddr.parse(o), HostAddr.parse(n)) for o, n in pairs(ctx)]
    for mh in ctx.data.topo["meta"]:
        # restoreMeta unlinks the SSTs it ingested (RestoreProcessor.cpp): hand it copies, so this
        # step can run again after a crash (ingesting the same tables twice changes nothing)
        d = placement.meta_restore_dir(mh["data_paths"][0], ctx.ref)
        ingest = posixpath.join(d, "ingest")
        h = p.hosts.host(mh["host"])
        if await h.exists(ingest):
            await h.remove_tree(ingest)
        await h.makedirs(ingest)
        if own_sst is not None:
            names = [partial_meta.INGEST_NAME]
            await h.write_file(posixpath.join(ingest, names[0]), _chunks(own_sst))
        else:
            names = [posixpath.basename(f) for f in m["meta_files"]]
            await h.copy_into([posixpath.join(d, n) for n in names], ingest)
        await p.meta.restore_meta(HostAddr.parse(mh["addr"]), [posixpath.join(ingest, n) for n in names], host_pairs)
    leftovers = await partial_meta.leftover_keys(ctx, m, own_sst) if own_sst is not None else set()
    if leftovers:  # tombstones only, no host pairs: the parts were mapped by the first ingest
        blob = p.meta_sst.write({}, leftovers)
        for mh in ctx.data.topo["meta"]:
            ingest = posixpath.join(placement.meta_restore_dir(mh["data_paths"][0], ctx.ref), "ingest")
            path = posixpath.join(ingest, partial_meta.LEFTOVERS_NAME)
            h = p.hosts.host(mh["host"])
            if await h.exists(path):
                await h.remove_tree(path)
            await h.write_file(path, _chunks(blob))
            await p.meta.restore_meta(HostAddr.parse(mh["addr"]), [path], [])
    return {"meta_restored_on": [mh["addr"] for mh in ctx.data.topo["meta"]], "spaces_dropped": dropped,
            **({"meta_ingested": "the chosen spaces' keys only (brsm's SST)",
                "leftover_schema_removed": len(leftovers)} if own_sst is not None else {})}


async def _chunks(blob: bytes):
    yield blob


async def _drop_chosen_spaces(ctx: RestoreContext, m: dict[str, Any], *, only_replaced: bool = False) -> list[str]:
    """A backup of chosen spaces replaces those spaces' meta entries: drop them first, as nebula-br's
    ``checkAndDropSpaces`` does, or what was added since the backup (tags, edges, indexes, roles of
    that space) would survive beside the restored entries. Done while storaged is down (it never
    sees the drop: the same space id is back before it starts) and after metad's data was copied
    aside in SET_ASIDE, so a rollback brings the spaces back exactly. A space of the backup's name
    re-created since under another id (CHECKED's ``replaced_spaces``, its data set aside) is dropped
    too. Safe to repeat: a space already gone is skipped. A name that has got yet another id since
    CHECKED is refused: its data was not set aside. ``only_replaced``: drop only those re-created
    spaces (the chosen spaces themselves are replaced by brsm's own SST)."""
    p = ports(ctx)
    current = await p.meta.list_spaces()
    replaced = {int(k) for k in ctx.data.replaced_spaces}
    dropped = []
    for sid, name in sorted(m["spaces"].items()):
        now = current.get(name)
        if now is None:
            continue
        if now != int(sid) and now not in replaced:
            raise OperationFailed(
                f"space {name} was re-created (id {now}) after the restore's checks: its data was not set aside, "
                f"so it is not dropped", hint=f"`brsm rollback {ctx.op_id}` brings the cluster back up as it was")
        if only_replaced and now == int(sid):
            continue
        await p.meta.drop_space(name)
        dropped.append(name)
    if dropped:
        ctx.record(SPACES_DROPPED, {"spaces": dropped, "why": "replaced by the backup's (restore of chosen spaces)"})
    return dropped


async def undo_meta_restored(ctx: RestoreContext) -> None:
    await control.stop(ctx, "metad")


async def started(ctx: RestoreContext) -> dict[str, Any]:
    """storaged, then graphd, each running and listening on every host; every storaged ONLINE in
    listHosts; the restored spaces listed. Until all of that holds the step fails (and the run rolls
    back): a storaged that does not come up is never reported as restored."""
    p = ports(ctx)
    m = await source.manifest(ctx)
    proved = await _prove_before_start(ctx)
    # storaged and graphd at once (graphd needs only metad, which runs): the downtime is the slower one;
    # a daemon an earlier attempt started answers "already running", which counts as started
    await gather_bounded(2, lambda svc: control.start(ctx, svc), ["storaged", "graphd"])
    failpoints.hit("started:1")
    online = await control.wait_storage_online(ctx)
    downtime = control.downtime_ended(ctx, "restored")
    want = set(m["spaces"].values())
    deadline = time.monotonic() + control.service_timeout(ctx)
    while True:
        have = set(await p.meta.list_spaces())
        if want <= have:
            break
        if time.monotonic() > deadline:
            raise OperationFailed(f"after restore metad lists spaces {sorted(have)}, expected {sorted(want)}",
                                  hint=f"`brsm rollback {ctx.op_id}` brings the old data back")
        await asyncio.sleep(0.5)
    # not "spaces": that fact is CHECKED's {id: name}, which every undo reads (context.chosen_spaces)
    return {"spaces_listed": sorted(want), "storage_online": online, "proved": proved, "downtime_seconds": downtime}


async def _prove_before_start(ctx: RestoreContext) -> dict[str, Any]:
    """Down, and the data the backup's, right before the first start; journaled as done once the
    starts are issued. The sweep found a resume of a STARTED killed after its starts re-proving data
    the daemons had written into since (a false "not as staged", exit 6, the cluster left down): what
    was proved before the journaled start is not proved again, and the daemons then running are ours."""
    if ctx.data.services_starting is not None:
        # the daemons running now may be an earlier attempt's (ours) or someone else's: judged by pid
        await control.refuse_foreign(ctx, control.STARTED_BY_US)
        return {"how": "proved before the first start, which an earlier attempt of this step journaled",
                "starting": ctx.data.services_starting}
    if staged(ctx):
        _, proved = await gather_bounded(2, lambda aw: aw, [
            control.ensure_down(ctx, "STARTED", control.STARTED_BY_US), proof.check_fingerprints(ctx)])
    else:
        await control.ensure_down(ctx, "STARTED", control.STARTED_BY_US)
        proved = await proof.rehash_restored(ctx)
        await control.ensure_down(ctx, "STARTED", control.STARTED_BY_US)  # nothing started while the files were re-hashed
    ctx.record(ServicesStarting(at=time.time(), services=["storaged", "graphd"]))
    return proved


async def undo_started(ctx: RestoreContext) -> None:
    await control.stop(ctx, "graphd")
    await control.stop(ctx, "storaged")


async def cleaned(ctx: RestoreContext) -> dict[str, Any]:
    p = ports(ctx)
    aside = placement.aside_name(ctx.ref)

    async def clean(data_dir: tuple[str, str]) -> str | None:
        host, dp = data_dir
        h = p.hosts.host(host)
        d = posixpath.join(dp, aside)
        if not ctx.data.params.keep_old and await h.exists(d):
            await h.remove_tree(d)
            return f"{host}:{d}"
        return None

    # every set-aside data dir at once (CLEAN_AT_ONCE at a time), one `rm -rf` each, one progress step each
    dirs = placement.data_dirs(ctx.data.topo)
    p.progress.start("remove set-aside data", len(dirs), unit="dirs")

    async def clean_one(data_dir: tuple[str, str]) -> str | None:
        try:
            return await clean(data_dir)
        finally:
            p.progress.advance("remove set-aside data", 1)

    try:
        removed = [r for r in await gather_bounded(CLEAN_AT_ONCE, clean_one, dirs) if r]
    finally:
        p.progress.done("remove set-aside data")
    for c in placement.cluster_id_files(ctx.data.topo, root_of(ctx), ctx.ref):
        h = p.hosts.host(c.host)
        if await h.exists(c.absent_marker):
            await h.remove_tree(c.absent_marker)
        if not ctx.data.params.keep_old and await h.exists(c.aside):
            await h.remove_tree(c.aside)
            removed.append(f"{c.host}:{c.aside}")
    await stage.undo_staged(ctx)  # the meta restore dirs, and any staging dir left empty by the swap
    await anchors.write_anchor(ctx, p.storage, "restore")  # the journal as it is now, kept in the storage
    await common.remove_probes(ctx, p.storage)
    await common.make_lease(ctx, p.hosts, "restore").release()
    return {"removed_aside": removed, "kept_aside": ctx.data.params.keep_old}
