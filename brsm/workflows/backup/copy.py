"""COPIED: every checkpoint file (and metad's SSTs) streamed into storage, each journaled."""
from __future__ import annotations

import json
import posixpath
from typing import Any

from brsm import failpoints
from brsm.errors import PreflightFailed, StorageError
from brsm.ports import HostAddr, UploadState
from brsm.workflows import common, direct, topology
from brsm.workflows.layout import data_key, in_progress_key, meta_checkpoint_dir, meta_sst_key
from brsm.workflows.transfer import EventBatcher, FileJob, Limits, run_bounded, upload_file, whole_file
from brsm.workflows.backup.context import FILES_PLANNED, PLAN_WALKS, ports
from brsm.workflows.backup.ledger import FileCopied, PartUploaded
from brsm.workflows.backup.state import BackupContext


# -- COPIED ---------------------------------------------------------------------------------------------
async def _plan(ctx: BackupContext) -> list[FileJob]:
    p = ports(ctx)
    name = ctx.data.name
    topo = ctx.data.topo
    by_addr = {s["addr"]: s for s in topo["storage"]}
    # data<i> is the index of the checkpoint's data path among the host's, compared canonically;
    # two checkpoints of one space landing on one index would overwrite each other: refuse
    owner: dict[tuple[str, int, int], str] = {}
    walks = []
    for h, cps in sorted(ctx.data.checkpoints.items()):
        if h not in by_addr:
            raise PreflightFailed(f"metad made a checkpoint on {h}, which is not among the storage hosts it lists",
                                  hint="a storaged joined or left during the backup: roll back and start again")
        for space_id, data_path, cdir in cps:
            idx = topology.data_path_index(by_addr[h], data_path)
            seen = owner.setdefault((h, idx, int(space_id)), cdir)
            if seen != cdir:
                raise PreflightFailed(f"two checkpoints of space {space_id} on {h} map to data{idx}: {seen} and {cdir}",
                                      hint="two --data_path entries of that storaged resolve to one directory; fix its "
                                           "flagfile (nothing was copied)")
            walks.append((h, space_id, idx, cdir))

    async def walk(job: tuple[str, Any, int, str]) -> list[FileJob]:
        host_addr, space_id, idx, cdir = job
        addr = HostAddr.parse(host_addr)
        if posixpath.basename(cdir.rstrip("/")) in ("data", "wal"):
            cdir = posixpath.dirname(cdir.rstrip("/"))
        prefix = cdir.rstrip("/") + "/"
        found = await p.hosts.host(addr.host).walk(cdir)
        return [FileJob(addr.host, f.path, f.size,
                        data_key(name, addr, idx, int(space_id),
                                 f.path[len(prefix):] if f.path.startswith(prefix) else posixpath.relpath(f.path, cdir)))
                for f in sorted(found, key=lambda f: f.path)]

    # One `find` per checkpoint dir, all at once (PLAN_WALKS at a time); the jobs in host, then dir order.
    jobs = [j for js in await common.gather_bounded(PLAN_WALKS, walk, walks) for j in js]
    jobs.extend(await _meta_jobs(ctx))
    return jobs


async def _meta_jobs(ctx: BackupContext) -> list[FileJob]:
    """The meta SSTs sit on the metad that made the backup (the leader), at the full paths metad
    returned (``<data_path>/nebula/0/checkpoints/<NAME>/<table>.sst``): find the host that has them."""
    p = ports(ctx)
    name = ctx.data.name
    files = {posixpath.basename(f) for f in ctx.data.meta_files}
    dirs = sorted({posixpath.dirname(f) for f in ctx.data.meta_paths if posixpath.isabs(f)})
    for m in ctx.data.topo["meta"]:
        host = p.hosts.host(m["host"])
        candidates = dirs or [meta_checkpoint_dir(dp, name) for dp in m["data_paths"]]
        for mdir in candidates:
            if await host.exists(mdir):
                found = [f for f in await host.walk(mdir) if posixpath.basename(f.path) in files]
                if {posixpath.basename(f.path) for f in found} == files:
                    return [FileJob(m["host"], f.path, f.size, meta_sst_key(name, f.path)) for f in found]
    raise StorageError(f"meta SST files of {name} not found on any metad host", permanent=True,
                       hint="was the snapshot dropped by hand? roll back and start a new backup")


async def copied(ctx: BackupContext) -> dict[str, Any]:
    p = ports(ctx)
    name = ctx.data.name
    jobs = await _plan(ctx)
    await p.storage.put_bytes(in_progress_key(name), json.dumps({"op_id": ctx.op_id, "op_ref": ctx.ref}).encode())
    ctx.record(FILES_PLANNED, {"files": len(jobs), "bytes": sum(j.size for j in jobs)})
    # Resume: a file journaled as copied counts only if the object is there with that size.
    present = {o.key: o.size for o in await p.storage.list(f"{name}/")}
    done = ctx.data.files
    todo = [j for j in jobs if not ((d := done.get(j.key)) is not None and d.size == j.size
                                    and present.get(j.key) == j.size)]
    limits: Limits = ctx.runtime.limits
    p.progress.start("copy", sum(j.size for j in todo))
    events = EventBatcher(ctx.record_batch)
    sent = [0]  # bytes read from the hosts in this run (a resume sends less than the files' sizes)
    count = 0
    parts_sent = 0

    async def one(job: FileJob) -> None:
        nonlocal count
        saved = ctx.data.files.upload(job.key)
        state = UploadState(saved["upload_id"], list(saved["parts"]), saved["part_size"]) if saved else UploadState()
        journaled = {(state.upload_id, p["n"], p["etag"]) for p in state.parts}

        def on_part(s: UploadState) -> None:
            # Parts finish out of order (several in flight): journal every stored part not journaled
            # yet, not the highest-numbered one, so the journal names exactly the parts stored.
            nonlocal parts_sent
            for part in s.parts:
                if (s.upload_id, part["n"], part["etag"]) in journaled:
                    continue
                journaled.add((s.upload_id, part["n"], part["etag"]))
                # a hint, not a commitment: lost (power loss only), it costs re-sending one part or block,
                # and UPLOADED aborts any upload left unfinished; so no fsync per part
                ctx.record(PartUploaded(key=job.key, upload_id=s.upload_id, part_size=s.part_size, n=part["n"],
                                        etag=part["etag"], size=part["size"]), durable=False)
                parts_sent += 1
                failpoints.hit(f"part:{parts_sent}")

        if helpers is not None:
            digest = await _send_direct(ctx, job, state, on_part, helpers)
        else:
            up = await upload_file(job, p.hosts.host(job.host), p.storage, limits, p.progress,
                                   state=state, on_part=on_part)
            digest = up.sha256
            sent[0] += up.sent
        count += 1
        failpoints.hit(f"file:{count}")
        events.add(FileCopied(key=job.key, host=job.host, path=job.path, size=job.size, sha256=digest))

    helpers = direct.Helpers() if ctx.data.data_path == direct.DIRECT else None
    try:
        await run_bounded(todo, lambda j: j.host, limits, one)
    finally:
        events.flush()  # what finished is journaled even when another file failed
        p.progress.done("copy")
        if helpers is not None:
            await helpers.close()
    return {"files": len(jobs), "bytes": sum(j.size for j in jobs), "skipped_on_resume": len(jobs) - len(todo),
            "bytes_sent": sent[0], "data_path": (ctx.data.data_path or direct.VIA_BRSM),
            "data_path_why": ctx.data.data_path_why}


async def _send_direct(ctx: BackupContext, job: FileJob, state: UploadState, on_part, helpers: direct.Helpers) -> str:
    """The host sends the file itself; a dropped helper or an upload the store dropped is tried again
    from the parts journaled so far, by the same file-level rule as on the path through brsm."""
    p, limits = ports(ctx), ctx.runtime.limits
    latest = [state]

    def journal(s: UploadState) -> None:
        latest[0] = s
        on_part(s)

    rate = int(limits.bucket.rate / max(1, limits.concurrency)) if limits.bucket.rate else None

    async def once() -> str:
        moved = await direct.upload(job.key, job.path, job.size, p.hosts.host(job.host), p.storage,
                                    p.progress, state=latest[0], on_part=journal, rate=rate, helpers=helpers)
        return moved.sha256

    return await whole_file(f"copying {job.host}:{job.path}", once)


async def undo_copied(ctx: BackupContext) -> None:
    p = ports(ctx)
    name = ctx.data.backup_name
    if name:
        await p.storage.abort_uploads(f"{name}/")
        await p.storage.delete_prefix(f"{name}/")
