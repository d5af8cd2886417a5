"""The restore's preflight and CHECKED: everything is verified before the cluster is touched — the
backup (manifest, ``.meta``, sizes, and with ``--verify full`` every SHA-256), the topology it goes
onto, the free space — the mode chosen (staged or offline), and the cluster's lease taken."""
from __future__ import annotations

from typing import Any

from brsm.errors import ObjectNotFound, PreflightFailed, VerificationFailed
from brsm.workflows import catalog, common, direct, topology
from brsm.workflows import manifest as manifests
from brsm.workflows.limits import TokenBucket, parse_rate
from brsm.workflows.restore import disk, partial_meta, placement, source, zones
from brsm.workflows.restore.context import UNVERIFIED_ALLOWED, down_error, ports
from brsm.workflows.transfer import Limits
from brsm.workflows.verify import rehash
from brsm.workflows.restore.state import RestoreContext


async def preflight(ctx: RestoreContext) -> dict[str, Any]:
    p = ports(ctx)
    topo = await common.preflight_topology(ctx, p.meta, p.hosts, p.install_dir)
    p.progress.note(f"topology from {topo['source']}")
    m = await common.as_preflight(source.manifest(ctx))
    unchecked = source.unverified_refusal(ctx.data.params.name, m, ctx.data.params.allow_unverified)
    if unchecked:
        raise VerificationFailed(unchecked, hint=source.UNVERIFIED_HINT)
    if not source.has_checksums(m):
        p.progress.note(f"WARNING: restoring {ctx.data.params.name} WITHOUT CHECKSUMS (--allow-unverified): its "
                        f"{manifests.file_count(m)} file(s) are checked by size only; changed bytes of the same size "
                        "would be restored as they are")
        ctx.record(UNVERIFIED_ALLOWED, {"name": ctx.data.params.name, "files": manifests.file_count(m)})
    # a full restore replaces all of meta: every space's listeners go; a restore of chosen spaces
    # replaces those (whichever of them still exist: the backup's spaces may be gone since)
    await common.as_preflight(common.warn_not_backed_up(
        ctx, p.meta, [int(k) for k in m.get("spaces", {})] if not m.get("all_spaces", True) else None, p.progress,
        "the restore does not bring these back (recreate them after it)"))
    names = sorted({s["host"] for role in ("storage", "meta") for s in topo[role]})
    path = await direct.choose(ctx.data.params.data_path or direct.VIA_BRSM, [p.hosts.host(h) for h in names],
                               p.storage, p.progress, common.probe_journal(ctx))
    return {"topology": topo, "data_path": path.mode, "data_path_why": path.why}


async def attach(ctx: RestoreContext) -> None:
    ctx.runtime.limits = Limits(concurrency=ctx.data.params.concurrency,
                                   per_host=ctx.data.params.per_host,
                                   bucket=TokenBucket(parse_rate(ctx.data.params.rate_limit)))
    try:
        if ctx.mode == "rollback":
            await common.remove_probes(ctx, ports(ctx).storage)
        await common.reattach_lease(ctx, ports(ctx).hosts, "restore", lease_step="CHECKED")
        st = ctx.state
        if (ctx.mode == "resume" and "CHECKED" in st.completed and "STOPPED" not in st.started
                and ctx.data.manifest is None):
            # a restore journaled by an older brsm, resumed while the cluster still serves: journal the
            # manifest now, so no step after STOPPED needs the backup's manifest in storage
            ctx.record(source.journaled(await source.manifest(ctx)))
    except BaseException as e:  # a resume that cannot start while the cluster is down says how to bring it up
        out = down_error(ctx, e) if ctx.mode != "rollback" else e
        if out is e:
            raise
        raise out from e


async def detach(ctx: RestoreContext) -> None:
    common.record_host_keys(ctx, ports(ctx).hosts)
    await common.detach_lease(ctx)


def _check_topology(m: dict[str, Any], topo: dict[str, Any], pairs: list[tuple[str, str]],
                    restored: zones.RestoredZones) -> None:
    old_storage = {s["addr"]: s for s in m["topology"]["storage"]}
    new_storage = {s["addr"]: s for s in topo["storage"]}
    for old, new in pairs:
        if len(old_storage[old]["data_paths"]) != len(new_storage[new]["data_paths"]):
            raise PreflightFailed(
                f"topology differs: {old} had {len(old_storage[old]['data_paths'])} data path(s), {new} has "
                f"{len(new_storage[new]['data_paths'])}", hint="restore onto hosts with as many data paths")
    # zones restoreMeta will rewrite (brsm.workflows.restore.zones): the backup's for all spaces,
    # the cluster's for chosen spaces
    crash = topology.zone_problem(restored.zones, pairs)
    if crash:
        raise PreflightFailed(f"{crash} (zones read from {restored.source})", hint=(
            "restore onto the hosts the backup was taken from (no --host-map), or split the zone into one zone per "
            "host first" if restored.from_cluster else
            "restore onto the hosts the backup was taken from (no --host-map): the zone is in the backup's own zone "
            "table, which a restore of all spaces brings back, so splitting zones in the cluster does not help"))
    wrong = topology.version_mismatch((m.get("topology") or {}).get("nebula_version"), topo.get("nebula_version"))
    if wrong:
        raise PreflightFailed(wrong, hint="restore it onto a cluster of the same major release, then upgrade")


def _pairs(ctx: RestoreContext, m: dict[str, Any], topo: dict[str, Any]) -> list[tuple[str, str]]:
    old = [s["addr"] for s in m["topology"]["storage"]]
    new = [s["addr"] for s in topo["storage"]]
    if len(set(old)) != len(set(new)):
        raise PreflightFailed(f"topology differs: the backup has {len(set(old))} storage hosts, the cluster "
                              f"{len(set(new))}", hint="restore onto a cluster with the same number of storage hosts")
    return placement.pair_hosts(sorted(set(old)), sorted(set(new)), ctx.data.params.host_map)


async def _choose_mode(ctx: RestoreContext, m: dict[str, Any], pairs: list[tuple[str, str]]) -> placement.ModeChoice:
    """Free space on every data path the files go to (the rename aside costs nothing), and whether
    staging beside a serving cluster fits there."""
    p, topo = ports(ctx), ctx.data.topo
    need: dict[tuple[str, str], int] = {}
    async for f in source.files(ctx):
        tgt = placement.target(ctx.data.params.name, f["key"], pairs, topo)
        if tgt:
            need[(tgt[0], tgt[2])] = need.get((tgt[0], tgt[2]), 0) + f["size"]
    free = {(host, dp): await p.hosts.host(host).free_bytes(dp) for host, dp in sorted(need)}
    free = disk.usable(need, free, topo)  # Nebula's reserve stays free, or the restore stops here
    choice = placement.choose_mode(need, free, ctx.data.params.offline)
    if choice.mode is None:
        raise PreflightFailed(choice.why, hint="free space on those data paths")
    return choice


async def checked(ctx: RestoreContext) -> dict[str, Any]:
    p = ports(ctx)
    m = await source.manifest(ctx)
    topo = ctx.data.topo
    replaced = await _check_space_ids(ctx, m) if not m.get("all_spaces", True) else {}
    pairs = _pairs(ctx, m, topo)
    _check_topology(m, topo, pairs, await zones.restored(ctx, m, topo))
    if not m.get("all_spaces", True):
        await partial_meta.check(ctx, pairs, topo)
    source.refuse_unsafe(ctx.data.params.name, m)
    # Verify the backup before touching the cluster: the listing against the manifest, as `brsm verify`.
    try:  # the file list and the listing streamed side by side: neither held whole
        bad = (await catalog.check_files(p.storage, ctx.data.params.name, m)).problems
    except (ValueError, ObjectNotFound) as e:
        raise VerificationFailed(f"backup {ctx.data.params.name}: its file list is unreadable: {e}",
                                 hint="restore another backup; see `brsm verify`") from e
    if bad:
        raise VerificationFailed(f"backup {ctx.data.params.name} is damaged: {len(bad)} file(s) missing or of the "
                                 f"wrong size, e.g. {bad[0]['key']}", hint="restore another backup; see `brsm verify`")
    if ctx.data.params.verify == "full":
        await _verify_full(ctx, m)
    choice = await _choose_mode(ctx, m, pairs)
    lease = common.make_lease(ctx, p.hosts, "restore")
    await lease.acquire()
    p.progress.note("host pairing (backup → cluster): " + ", ".join(f"{o} → {n}" for o, n in pairs))
    p.progress.note(f"restore mode: {choice.mode} ({choice.why})")
    if ctx.data.manifest is None:  # what every later step needs of the backup, kept in the journal
        ctx.record(source.journaled(m))
    return {"pairs": [list(x) for x in pairs], "backup_name": ctx.data.params.name, "files": manifests.file_count(m),
            "all_spaces": bool(m.get("all_spaces", True)), "spaces": m["spaces"],
            "bytes": manifests.total_bytes(m), "mode": choice.mode, "mode_why": choice.why,
            "replaced_spaces": replaced}


async def _check_space_ids(ctx: RestoreContext, m: dict[str, Any]) -> dict[str, str]:
    """A backup of chosen spaces replaces only those, each under the id it has in the backup. A space
    of the backup dropped since is simply brought back; one dropped and re-created since (same name,
    another id) is replaced: returned as {its current id: name}, so SET_ASIDE moves its data aside
    (a rollback brings it back) and META_RESTORED drops it, as nebula-br's ``checkAndDropSpaces``
    drops the spaces it restores. A backup id now held by a space of another name is refused: that
    space is not the backup's to replace."""
    current = await ports(ctx).meta.list_spaces()
    by_id = {v: k for k, v in current.items()}
    replaced = {}
    for sid, name in m["spaces"].items():
        sid = int(sid)
        if sid in by_id and by_id[sid] != name:
            raise PreflightFailed(f"space id {sid} belongs to {by_id[sid]} in the cluster, to {name} in the backup",
                                  hint=f"a restore of selected spaces cannot move a space to another id; restore a "
                                       f"backup of all spaces, or drop {by_id[sid]} first if it may go")
        if name in current and current[name] != sid:
            replaced[str(current[name])] = name
    if replaced:
        ports(ctx).progress.note("re-created since the backup, replaced by the backup's: " + ", ".join(
            f"{n} (id {i} now, {next(k for k, v in m['spaces'].items() if v == n)} in the backup)"
            for i, n in sorted(replaced.items())))
    return replaced


async def _verify_full(ctx: RestoreContext, m: dict[str, Any]) -> None:
    """``--verify full``: every object re-hashed before anything stops (brsm.workflows.verify.rehash,
    the one re-hash, bounded by --concurrency)."""
    p = ports(ctx)

    async def hashed() -> Any:
        async for f in source.files(ctx):
            if f["sha256"] is not None:  # a nebula-br backup's: sizes only, later
                yield f

    problems = await rehash(p.storage, hashed(), concurrency=ctx.runtime.limits.concurrency, progress=p.progress,
                            total=manifests.total_bytes(m) if source.has_checksums(m) else 0)
    if problems:
        raise VerificationFailed(f"backup {ctx.data.params.name}: {len(problems)} file(s) do not match their SHA-256, "
                                 f"e.g. {problems[0]['key']} ({problems[0]['problem']})", hint="restore another backup")


async def undo_checked(ctx: RestoreContext) -> None:
    if ctx.data.topology is not None:
        await common.make_lease(ctx, ports(ctx).hosts, "restore").release()
