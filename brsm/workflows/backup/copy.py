"""COPIED: every checkpoint file (and metad's SSTs) streamed into storage, each journaled.

Nothing holds the list of all files: each host's checkpoint dirs are listed a page at a time
(``HostPort.walk_pages``) into that host's bounded queue (``transfer.run_fed``), and a first pass
counts them without a list (``count_files``) so FilesPlanned still carries the totals before any
byte moves. On the path through brsm, small files of a host go in groups, one SSH exec each
(:mod:`brsm.workflows.backup.groups`).
"""
from __future__ import annotations

import contextlib
import json
import posixpath
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from brsm.concurrency import gather_bounded
from brsm import failpoints
from brsm.errors import ObjectNotFound, PreflightFailed, StorageError
from brsm.ports import FileIdentity, FileTally, HostAddr, UploadState
from brsm.workflows import direct, topology
from brsm.workflows.listing import side_by_side
from brsm.workflows.layout import data_key, in_progress_key, meta_checkpoint_dir, meta_sst_key
from brsm.workflows.transfer import EventBatcher, FileJob, run_fed, upload_file, whole_file
from brsm.workflows.backup.context import BASE_DROPPED, FILES_PLANNED, PLAN_WALKS, ports
from brsm.workflows.backup.groups import GROUP_BYTES, GROUP_FILES, copy_group, small_file_limit
from brsm.workflows.backup import incremental
from brsm.workflows.backup.reuse import Base, HashBatch, ReuseBatch
from brsm.workflows.backup.ledger import FileCopied, PartUploaded
from brsm.workflows.backup.state import BackupContext

PAGE = 1000  # files per page of a checkpoint dir's listing
LIST_TIMEOUT = 120.0  # seconds a listing may go without sending its next bytes
FILES_AHEAD = 2 * GROUP_FILES  # files a host's listing may run ahead of its copies (groups weigh their files)
STAT_AT_ONCE = 16  # objects looked at together when a resume checks what the journal says is copied
ABSENT_MOST = 100_000  # journaled files found missing kept by name at most; past it, a resume stats each


@dataclass(frozen=True)
class Walk:
    """One checkpoint dir to list: its host ("ip:port" of the storaged), space and data path index."""

    addr: str
    space_id: int
    idx: int
    cdir: str

    @property
    def host(self) -> str:
        return HostAddr.parse(self.addr).host

    @property
    def root(self) -> str:
        """The dir listed: the checkpoint dir itself, or its parent when metad named its data/ or wal/."""
        if posixpath.basename(self.cdir.rstrip("/")) in ("data", "wal"):
            return posixpath.dirname(self.cdir.rstrip("/"))
        return self.cdir

    def job(self, name: str, path: str, size: int, ident: FileIdentity | None = None) -> FileJob:
        prefix = self.root.rstrip("/") + "/"
        rel = path[len(prefix):] if path.startswith(prefix) else posixpath.relpath(path, self.root)
        return FileJob(self.host, path, size, data_key(name, HostAddr.parse(self.addr), self.idx, self.space_id, rel),
                       ident)


# -- COPIED ---------------------------------------------------------------------------------------------
def _walks(ctx: BackupContext) -> list[Walk]:
    """The checkpoint dirs to list, in host then dir order; refuses a plan that would overwrite itself."""
    by_addr = {s["addr"]: s for s in ctx.data.topo["storage"]}
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
            walks.append(Walk(h, int(space_id), idx, cdir))
    return walks


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


async def _tally(ctx: BackupContext, walks: list[Walk], meta: list[FileJob]) -> tuple[FileTally, dict[str, int]]:
    """What the copy will list, counted first (PLAN_WALKS dirs at a time) and kept as numbers: the
    totals, and the files of each host."""
    p = ports(ctx)
    counts = await gather_bounded(
        PLAN_WALKS, lambda w: p.hosts.host(w.host).count_files(w.root, timeout=LIST_TIMEOUT), walks)
    per_host: dict[str, int] = {}
    for w, c in zip(walks, counts):
        per_host[w.host] = per_host.get(w.host, 0) + c.files
    for j in meta:
        per_host[j.host] = per_host.get(j.host, 0) + 1
    total = FileTally(sum(c.files for c in counts) + len(meta), sum(c.bytes for c in counts) + sum(j.size for j in meta))
    return total, per_host


def files_in(item: object) -> int:
    """What a queued item of the feed weighs: a group its files, anything else one (pure).

    >>> files_in([1, 2, 3]), files_in("one job")
    (3, 1)
    """
    return len(item) if isinstance(item, list) else 1


def group_files(host_files: int, per_host: int) -> int:
    """Files per group for a host (pure): enough groups that each of its ``per_host`` workers has
    one (a host with few files still copies ``per_host`` at a time), at most GROUP_FILES.

    >>> group_files(680, 4), group_files(1_000_000, 4), group_files(3, 4)
    (170, 1024, 16)
    """
    return min(GROUP_FILES, max(16, -(-host_files // max(1, per_host))))


async def copied(ctx: BackupContext) -> dict[str, Any]:
    p = ports(ctx)
    walks = _walks(ctx)
    meta = await _meta_jobs(ctx)
    tally, per_host = await _tally(ctx, walks, meta)
    await p.storage.put_bytes(in_progress_key(ctx.data.name), json.dumps({"op_id": ctx.op_id, "op_ref": ctx.ref}).encode())
    ctx.record(FILES_PLANNED, {"files": tally.files, "bytes": tally.bytes})
    helpers = direct.Helpers() if ctx.data.data_path == direct.DIRECT else None
    run = _Copy(ctx, helpers)
    if run.resuming:
        run.absent = await absent_copies(p.storage, f"{ctx.data.name}/", ctx.data.files, ABSENT_MOST)
    chosen = ctx.data.base
    if chosen is not None and chosen.name:
        run.base, why = await Base.load(p.storage, chosen.name, chosen.file_list_sha256, p.base_index())
        if run.base is None:
            p.progress.note(f"{why}: every file is sent, as in a full backup")
            ctx.record(BASE_DROPPED, {"base": chosen.name, "why": why})
    p.progress.start("copy", tally.bytes)
    try:
        units: dict[str, list[Walk | list[FileJob]]] = {}
        for w in walks:
            units.setdefault(w.host, []).append(w)
        for j in meta:
            units.setdefault(j.host, []).append([j])
        n = ctx.runtime.limits.per_host
        await run_fed({h: run.feed(us, group_files(per_host.get(h, 0), n)) for h, us in units.items()},
                      ctx.runtime.limits, run.work, depth=FILES_AHEAD, weight=files_in)
    finally:
        run.events.flush()  # what finished is journaled even when another file failed
        p.progress.done("copy")
        if run.base is not None:
            run.base.close()
        if helpers is not None:
            await helpers.close()
    out = {"files": run.files, "bytes": run.bytes, "skipped_on_resume": run.skipped,
           "bytes_sent": run.sent, "data_path": (ctx.data.data_path or direct.VIA_BRSM),
           "data_path_why": ctx.data.data_path_why}
    if chosen is not None:
        out.update(base=chosen.name, files_reused=run.reused_files, bytes_reused=run.reused_bytes,
                   bytes_hashed=run.hashed, files_hashed=run.hashed_files)
    return out


class _Copy:
    """One run of COPIED: the hosts' feeds (listing, resume check, grouping) and the work on each job."""

    def __init__(self, ctx: BackupContext, helpers: direct.Helpers | None) -> None:
        self.ctx, self.helpers = ctx, helpers
        self.events = EventBatcher(ctx.record_batch)
        ledger = ctx.data.files
        self.resuming = len(ledger) > 0 or any(True for _ in ledger.uploads())
        self.grouping = helpers is None  # the direct path sends each file by its host's helper
        self.small = small_file_limit(ports(ctx).storage.properties())
        self.files = self.bytes = self.skipped = 0  # listed, and skipped as already copied
        self.sent = 0  # bytes read from the hosts in this run (a resume sends less than the files' sizes)
        self.count = 0  # files finished in this process (failpoint file:N)
        self.parts_sent = 0
        self.absent: set[str] | None = None  # a resume's journaled files not in storage (None: stat each)
        self.base: Base | None = None  # an incremental backup's base, loaded
        self.reused_files = self.reused_bytes = 0  # copied inside the storage from the base in this run
        self.hashed = self.hashed_files = 0  # bytes (files) hashed on their hosts in this run before deciding

    # -- the feeds ------------------------------------------------------------------------------
    async def _pages(self, unit: Walk | list[FileJob]) -> AsyncIterator[list[FileJob]]:
        if isinstance(unit, list):
            yield unit
            return
        host, name = ports(self.ctx).hosts.host(unit.host), self.ctx.data.name
        # closed at once when the copy stops early: the host's `find` ends with its channel
        async with contextlib.aclosing(host.walk_pages(unit.root, page=PAGE, timeout=LIST_TIMEOUT)) as pages:
            async for page in pages:
                yield [unit.job(name, f.path, f.size, f.ident) for f in page]

    async def feed(self, units: list[Walk | list[FileJob]], most: int) -> AsyncIterator[FileJob | list[FileJob]]:
        """One host's jobs as its dirs are listed: a file already copied left out, small files in
        groups (at most ``most`` files, GROUP_BYTES bytes), every other file alone."""
        group: list[FileJob] = []
        size = 0
        for unit in units:
            async with contextlib.aclosing(self._pages(unit)) as pages:
                async for page in pages:
                    self.files += len(page)
                    self.bytes += sum(j.size for j in page)
                    todo = await self._todo(page)
                    if self.base is not None and todo:
                        items, todo = incremental.sort(self.base, todo)
                        for item in items:
                            yield item
                    for job in todo:
                        if not self._groupable(job):
                            yield job
                            continue
                        if group and (len(group) >= most or size + job.size > GROUP_BYTES):
                            yield group if len(group) > 1 else group[0]
                            group, size = [], 0
                        group.append(job)
                        size += job.size
        if group:
            yield group if len(group) > 1 else group[0]

    def _groupable(self, job: FileJob) -> bool:
        """Whether ``job`` goes in a group of small files: on the path through brsm, small, and with no
        multipart upload of it journaled (that one resumes alone)."""
        return self.grouping and job.size < self.small and not self._saved(job)

    def _saved(self, job: FileJob) -> dict[str, Any] | None:
        return self.ctx.data.files.upload(job.key) if self.resuming else None

    async def _todo(self, page: list[FileJob]) -> list[FileJob]:
        """The page without the files a resume need not copy again: a file journaled as copied counts
        only if its object is there with that size (``absent``, from one listing; or, when too many were
        missing to keep their names, looked at STAT_AT_ONCE at a time)."""
        if not self.resuming:
            return page
        ledger, storage = self.ctx.data.files, ports(self.ctx).storage
        copied = ledger.get_many([j.key for j in page])
        maybe = [j for j in page if (d := copied.get(j.key)) is not None and d.size == j.size]
        if not maybe:
            return page

        async def there(j: FileJob) -> bool:
            try:
                return (await storage.stat(j.key)).size == j.size
            except ObjectNotFound:
                return False

        if self.absent is not None:
            kept = {j.key for j in maybe if j.key not in self.absent}
        else:
            kept = {j.key for j, ok in zip(maybe, await gather_bounded(STAT_AT_ONCE, there, maybe)) if ok}
        skipped = [j for j in page if j.key in kept]
        self.skipped += len(skipped)
        ports(self.ctx).progress.advance("copy", sum(j.size for j in skipped))
        return [j for j in page if j.key not in kept]

    # -- the work ------------------------------------------------------------------------------
    async def work(self, item: FileJob | list[FileJob]) -> None:
        if isinstance(item, ReuseBatch):
            await incremental.reuse(self, item)
        elif isinstance(item, HashBatch):
            await incremental.hash_then_reuse(self, item)
        elif isinstance(item, list):
            await copy_group(self, item)
        else:
            await self.one(item)

    async def send(self, jobs: list[FileJob]) -> None:
        """Files sent from their host as a full backup sends them: small ones together."""
        small = [j for j in jobs if self._groupable(j)]
        if len(small) < 2:
            small = []
        for i in range(0, len(small), GROUP_FILES):
            await copy_group(self, small[i:i + GROUP_FILES])
        grouped = {j.key for j in small}
        for j in jobs:
            if j.key not in grouped:
                await self.one(j)

    def on_part(self, job: FileJob, state: UploadState):
        """The journaling of ``job``'s multipart parts (PartUploaded), as they finish."""
        journaled = {(state.upload_id, p["n"], p["etag"]) for p in state.parts}

        def on_part(s: UploadState) -> None:
            # Parts finish out of order (several in flight): journal every stored part not journaled
            # yet, not the highest-numbered one, so the journal names exactly the parts stored.
            for part in s.parts:
                if (s.upload_id, part["n"], part["etag"]) in journaled:
                    continue
                journaled.add((s.upload_id, part["n"], part["etag"]))
                # a hint, not a commitment: lost (power loss only), it costs re-sending one part or block,
                # and UPLOADED aborts any upload left unfinished; so no fsync per part
                self.ctx.record(PartUploaded(key=job.key, upload_id=s.upload_id, part_size=s.part_size, n=part["n"],
                                             etag=part["etag"], size=part["size"]), durable=False)
                self.parts_sent += 1
                failpoints.hit(f"part:{self.parts_sent}")

        return on_part

    def finished(self, job: FileJob, digest: str, *, reused_from: str | None = None) -> FileCopied:
        """A file is in storage: counted (failpoint ``file:N``) and its event made (journaled by the caller)."""
        self.count += 1
        failpoints.hit(f"file:{self.count}")
        extra: dict[str, Any] = {}
        if job.ident is not None:
            extra["ident"] = job.ident.as_list()
        if reused_from:
            extra["reused_from"] = reused_from
        return FileCopied(key=job.key, host=job.host, path=job.path, size=job.size, sha256=digest, **extra)

    async def one(self, job: FileJob) -> None:
        p, limits = ports(self.ctx), self.ctx.runtime.limits
        saved = self.ctx.data.files.upload(job.key)
        state = UploadState(saved["upload_id"], list(saved["parts"]), saved["part_size"]) if saved else UploadState()
        on_part = self.on_part(job, state)
        if self.helpers is not None:
            digest = await _send_direct(self.ctx, job, state, on_part, self.helpers)
        else:
            up = await upload_file(job, p.hosts.host(job.host), p.storage, limits, p.progress,
                                   state=state, on_part=on_part)
            digest = up.sha256
            self.sent += up.sent
        self.events.add(self.finished(job, digest))


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


async def absent_copies(storage: Any, prefix: str, ledger: Any, most: int) -> set[str] | None:
    """The keys the journal says are copied whose object is not in storage with the journaled size,
    from one listing of the backup set side by side with the ledger, both in key order: a resume of a
    million files pays a listing (a thousand keys a request on S3), not a stat per file. None when
    more than ``most`` are missing: their names would be a set as big as the backup."""
    absent: set[str] = set()
    async for key, copied, size in side_by_side(storage, prefix, ledger, key=lambda e: e.key):
        if copied is not None and size != copied.size:
            absent.add(key)
            if len(absent) > most:
                return None
    return absent


async def undo_copied(ctx: BackupContext) -> None:
    p = ports(ctx)
    name = ctx.data.backup_name
    if name:
        await p.storage.abort_uploads(f"{name}/")
        await p.storage.delete_prefix(f"{name}/")
