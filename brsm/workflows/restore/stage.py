"""Getting the backup's files onto the hosts: STAGED and DOWNLOADED.

Staged (the default): STAGED downloads every file, checked against its SHA-256, into
``<root>/nebula_brsm_new_<op>`` beside the live data of each root (the same filesystem), and the meta
SSTs into ``<meta data path>/brsm_restore_<op>``, **while the cluster serves**; then re-hashes them
on the hosts and fingerprints the staged trees. DOWNLOADED, once the live data is aside, renames each
staged tree into place: one rename per root (or per chosen space), no copy.

Offline (``--offline``, or when staging does not fit): STAGED does nothing, and DOWNLOADED downloads
every file straight into place once everything is stopped (what every restore did before staging).
"""
from __future__ import annotations

import posixpath
from collections.abc import AsyncIterator
from typing import Any

from brsm.concurrency import gather_bounded
from brsm import failpoints
from brsm.errors import OperationFailed
from brsm.workflows import common, direct
from brsm.workflows import manifest as manifests
from brsm.workflows.restore import control, placement, proof, scratch, source
from brsm.workflows.restore.context import chosen_spaces, pairs, ports, staged
from brsm.workflows.transfer import EventBatcher, Limits, download_file, run_lanes, whole_file
from brsm.workflows.restore.ledger import FileRestored
from brsm.workflows.restore.state import RestoreContext

Job = tuple[str, str, dict[str, Any]]  # (host, destination, manifest file)


def _jobs_of(ctx: RestoreContext, f: dict[str, Any], *, into_staging: bool) -> list[Job]:
    """Where one file of the backup goes: in place, or its staged path (meta SSTs go to the meta
    restore dir of every metad either way: restoreMeta reads them from there)."""
    topo, name = ctx.data.topo, ctx.data.params.name
    tgt = placement.target(name, f["key"], pairs(ctx), topo)
    if tgt:
        host, dest, root = tgt
        return [(host, placement.staged_path(dest, root, ctx.ref) if into_staging else dest, f)]
    if f["key"].startswith(f"{name}/meta/"):
        return [(mh["host"], posixpath.join(placement.meta_restore_dir(mh["data_paths"][0], ctx.ref),
                                            posixpath.basename(f["key"])), f) for mh in topo["meta"]]
    return []


async def _jobs(ctx: RestoreContext, *, into_staging: bool, host: str | None = None) -> AsyncIterator[Job]:
    """Every file of the backup and where it goes (only those bound for ``host`` when given), streamed
    from the manifest: never a list of them all."""
    async for f in source.files(ctx):
        for job in _jobs_of(ctx, f, into_staging=into_staging):
            if host is None or job[0] == host:
                yield job


def _journaled(ctx: RestoreContext, job: Job) -> bool:
    """A journaled FileRestored covers this job (a resume skips it if the file is still there)."""
    _host, dest, f = job
    prev = ctx.data.restored.get(dest)
    return bool(prev and prev.sha256 == f["sha256"] and prev.size == f["size"])


async def _download(ctx: RestoreContext, *, into_staging: bool) -> tuple[int, int]:
    """Download what a journaled FileRestored does not already cover (a resume skips those still
    there); every finished file journaled, also when another one fails. Returns (jobs, skipped).
    Progress goes to the "download" task, the one transfer.download_file advances.

    The manifest's files are streamed: once to count (which also proves the whole file list against
    its tally before anything is downloaded), then once per destination host, each host's workers
    pulling from its own stream, so hosts are fed at once although the list is in key order."""
    task = "download"
    p = ports(ctx)
    jobs = todo_bytes = 0
    hosts: set[str] = set()
    async for job in _jobs(ctx, into_staging=into_staging):
        jobs += 1
        hosts.add(job[0])
        if not _journaled(ctx, job):
            todo_bytes += job[2]["size"]
    limits: Limits = ctx.runtime.limits
    p.progress.start(task, todo_bytes)
    events = EventBatcher(ctx.record_batch)
    count = skipped = 0

    async def one(job: Job) -> None:
        nonlocal count, skipped
        host, dest, f = job
        h = p.hosts.host(host)
        if _journaled(ctx, job) and await h.exists(dest):
            skipped += 1
            return
        await h.makedirs(posixpath.dirname(dest))
        if helpers is not None:
            await _fetch_direct(ctx, f, h, dest, helpers)
        else:
            await download_file(f["key"], f["sha256"], f["size"], p.storage, h, dest, limits, p.progress)
        count += 1
        failpoints.hit(f"file:{count}")
        events.add(FileRestored(key=f["key"], host=host, dest=dest, size=f["size"], sha256=f["sha256"]))

    helpers = direct.Helpers() if ctx.data.data_path == direct.DIRECT else None
    try:
        await run_lanes({h: _jobs(ctx, into_staging=into_staging, host=h) for h in sorted(hosts)}, limits, one)
    finally:
        events.flush()  # what finished is journaled even when another file failed
        p.progress.done(task)
        if helpers is not None:
            await helpers.close()
    return jobs, skipped


async def _fetch_direct(ctx: RestoreContext, f: dict[str, Any], host: Any, dest: str, helpers: direct.Helpers) -> None:
    """The host fetches the object itself, checked against the manifest's SHA-256 there; a dropped
    helper or a mismatch is tried again by the same file-level rule as on the path through brsm (bytes
    can be damaged on the way; the same mismatch every time is a damaged backup, exit 6)."""
    p, limits = ports(ctx), ctx.runtime.limits
    rate = int(limits.bucket.rate / max(1, limits.concurrency)) if limits.bucket.rate else None
    await whole_file(f"downloading {f['key']} to {host.name}:{dest}", lambda: direct.download(
        f["key"], f.get("sha256"), f["size"], host, p.storage, p.progress, dest, rate=rate, helpers=helpers))


def meta_dirs(ctx: RestoreContext) -> list[tuple[str, str]]:
    return placement.meta_restore_dirs(ctx.data.topo, ctx.ref)


# -- STAGED ---------------------------------------------------------------------------------------
async def staged_step(ctx: RestoreContext) -> dict[str, Any]:
    if not staged(ctx):
        return {"staged": False}
    m = await source.manifest(ctx)
    ports(ctx).progress.note(f"staging {manifests.file_count(m)} file(s) beside the live data; the cluster keeps "
                             "serving")
    await scratch.ensure(ctx, scratch.dirs(ctx, staged=True))  # made here, or the ones made before
    jobs, skipped = await _download(ctx, into_staging=True)
    await scratch.verify(ctx, scratch.dirs(ctx, staged=True))
    prints = await proof.fingerprints(ctx, proof.fingerprinted_dirs(ctx))
    proved = await proof.rehash_restored(ctx, staged=True)
    return {"staged": True, "files": jobs, "skipped_on_resume": skipped, "proved": proved,
            "fingerprints": prints, "fingerprint_format": proof.FORMAT, **_data_path(ctx)}


async def undo_staged(ctx: RestoreContext) -> None:
    """The staging dirs and meta restore dirs go; the cluster (serving all along) is not touched."""
    p = ports(ctx)
    for host, d in scratch.dirs(ctx, staged=True):  # only the ones this operation made: a planted one stays
        if await scratch.ours(ctx, host, d):
            await p.hosts.host(host).remove_tree(d)


# -- DOWNLOADED -----------------------------------------------------------------------------------
async def downloaded(ctx: RestoreContext) -> dict[str, Any]:
    if staged(ctx):
        # the meta SSTs are checked here, beside the "still down" check, rather than in META_RESTORED:
        # one round trip less in the downtime, and still before metad ingests them
        await gather_bounded(2, lambda aw: aw, [control.ensure_down(ctx, "DOWNLOADED"),
                                                       proof.check_fingerprints(ctx, meta_only=True)])
        await scratch.verify(ctx, scratch.dirs(ctx, staged=True))  # the trees about to be renamed into place
        return await _swap_in(ctx)
    await control.ensure_down(ctx, "DOWNLOADED")
    await scratch.ensure(ctx, scratch.dirs(ctx, staged=False))
    jobs, skipped = await _download(ctx, into_staging=False)
    await scratch.verify(ctx, scratch.dirs(ctx, staged=False))
    return {"files": jobs, "skipped_on_resume": skipped,
            "meta_dirs": sorted({f"{h}:{d}" for h, d in meta_dirs(ctx)}), **_data_path(ctx)}


def _data_path(ctx: RestoreContext) -> dict[str, str]:
    return {"data_path": (ctx.data.data_path or direct.VIA_BRSM), "data_path_why": ctx.data.data_path_why}


async def _swap_in(ctx: RestoreContext) -> dict[str, Any]:
    """Each staged tree renamed into place (the live one is aside since SET_ASIDE). Repeatable: a
    tree already in place is skipped; a live tree that is not ours is never overwritten."""
    p = ports(ctx)
    moved: list[str] = []
    absent: list[str] = []

    async def one(swap: tuple[str, str, str]) -> None:
        host, staged_dir, live = swap
        h = p.hosts.host(host)
        if not await h.exists(staged_dir):
            if not await h.exists(live):
                absent.append(f"{host}:{live}")  # the backup has nothing for it (storaged creates it)
            return  # else renamed by an earlier attempt
        if await h.exists(live):
            raise OperationFailed(
                f"{host}:{live} exists although the live data was set aside: something wrote it since; the "
                f"staged tree {staged_dir} was not moved over it",
                hint=f"look at what created it, move it away, then `brsm resume {ctx.op_id}`, or `brsm rollback "
                     f"{ctx.op_id}` (puts the original data back)")
        await h.makedirs(posixpath.dirname(live))
        await h.rename(staged_dir, live)
        moved.append(f"{host}:{live}")
        failpoints.hit(f"swap:{len(moved)}")

    await common.each_host(placement.swaps(ctx.data.topo, ctx.ref, chosen_spaces(ctx)), lambda s: s[0], one)
    return {"swapped": sorted(moved), "nothing_staged_for": sorted(absent)}


async def undo_downloaded(ctx: RestoreContext) -> None:
    """The restored data goes where the original is safe aside; staged trees not yet swapped in stay
    for undo_staged."""
    p = ports(ctx)
    await control.ensure_down(ctx, "removing the downloaded data (undo of DOWNLOADED)")
    for host, src, dst, mode in placement.moves(ctx.data.topo, ctx.ref, chosen_spaces(ctx)):
        h = p.hosts.host(host)
        # Only where the original is safe aside may the restored dir go.
        if mode == "move" and await h.exists(dst) and await h.exists(src):
            await h.remove_tree(src)
    if not staged(ctx):
        for host, d in meta_dirs(ctx):
            if await scratch.ours(ctx, host, d):
                await p.hosts.host(host).remove_tree(d)
