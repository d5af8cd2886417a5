"""Small files cost per file, not per byte: on the path through brsm, a host's small files are read
in groups with one SSH exec (``HostPort.read_files``), put into storage together (``Storage.put_many``:
a local store pays its durability barrier once for the group instead of once per file, which is
what a small file costs there) and the group's FileCopied events journaled together.

Why groups this big: starting an SSH exec costs the host a session and a shell (measured 0.2-0.3 s
on a loaded 2-core sandbox, where one SFTP file costs ~1 ms), so reading 2,000 small files went
from 1,100 files/s in groups of 128 to 2,800 files/s in groups of 512; GROUP_BYTES bounds what a
group holds in memory whatever its count.

A file of the group that did not come back whole and as the walk saw it (missing, not a regular
file, another size), is copied again alone by the single-file path, with its retries; so is every
file of a group whose put_many failed (after its own retries): which of them were stored is not
known. A group never fails for one file, and never journals a file it did not store.
"""
from __future__ import annotations

from typing import Any, Protocol

from brsm.errors import BrsmError
from brsm.ports import FileRead, StorageProperties, UploadState
from brsm.workflows.backup.context import ports
from brsm.workflows.backup.ledger import FileCopied
from brsm.workflows.backup.state import BackupContext
from brsm.workflows.transfer import EventBatcher, FileJob, whole_file

SMALL_FILE = 1 << 20  # files under this many bytes go in groups (the path through brsm)
GROUP_FILES = 1024  # files read by one exec at most (an exec costs more than its files: see the module doc)
GROUP_BYTES = 2 << 20  # bytes of one group at most: its answer is held in memory (tar and members: ~2x)
READ_TIMEOUT = 300.0  # seconds one group's read may take


def small_file_limit(props: StorageProperties) -> int:
    """Files under this many bytes go in groups: SMALL_FILE, or less where the store would upload a
    file in parts (a grouped file goes by one put, so it would lose its journaled, resumable parts).

    >>> small_file_limit(StorageProperties(multipart=True, multipart_threshold=512 << 10))
    524288
    >>> small_file_limit(StorageProperties()) == SMALL_FILE
    True
    """
    if props.multipart and props.multipart_threshold:
        return min(SMALL_FILE, props.multipart_threshold)
    return SMALL_FILE


class Run(Protocol):
    """What a group needs of COPIED's run (brsm.workflows.backup.copy)."""

    ctx: BackupContext
    events: EventBatcher
    sent: int

    def on_part(self, job: FileJob, state: UploadState) -> Any: ...
    def finished(self, job: FileJob, digest: str) -> FileCopied: ...
    async def one(self, job: FileJob) -> None: ...


def usable(job: FileJob, r: FileRead) -> bool:
    """Whether the group's answer for ``job`` is the file the walk listed (pure).

    >>> j = FileJob("h", "/d/a", 2, "k")
    >>> usable(j, FileRead("/d/a", b"hi")), usable(j, FileRead("/d/a", b"hi!")), usable(j, FileRead("/d/a", None, "gone"))
    (True, False, False)
    """
    return r.path == job.path and r.data is not None and len(r.data) == job.size


async def copy_group(run: Run, jobs: list[FileJob]) -> None:
    """One exec reads ``jobs`` (all of one host); the files stored together (``Storage.put_many``),
    then journaled together."""
    p, limits = ports(run.ctx), run.ctx.runtime.limits
    host = p.hosts.host(jobs[0].host)
    # A read that fails as a whole (a dropped connection) is tried again whole, by the same rule as one
    # file, and then fails the copy as one file would: going on file by file over a link that keeps
    # dropping would turn one failure into hundreds of reconnects.
    got = await whole_file(f"reading {len(jobs)} small files on {jobs[0].host}",
                           lambda: host.read_files([j.path for j in jobs], timeout=READ_TIMEOUT))
    if len(got) != len(jobs):
        got = [FileRead(j.path, None, "not read") for j in jobs]
    alone = [job for job, r in zip(jobs, got) if not usable(job, r)]
    ready = [(job, r.data) for job, r in zip(jobs, got) if usable(job, r) and r.data is not None]
    done: list[FileCopied] = []
    try:
        if ready:
            await limits.bucket.consume(sum(job.size for job, _ in ready))
            try:
                results = await p.storage.put_many([(job.key, data) for job, data in ready])
            except BrsmError:
                # which of them were stored is not known: none is journaled, each goes again alone
                # (with the storage's and the file's retries); a put overwrites, so that is safe
                results = []
                alone += [job for job, _ in ready]
            for (job, _data), res in zip(ready, results):
                if res.size != job.size or len(res.sha256) != 64:
                    alone.append(job)
                    continue
                run.sent += job.size
                p.progress.advance("copy", job.size)
                done.append(run.finished(job, res.sha256))  # failpoint file:N: stored, not journaled yet
    finally:
        run.events.add_all(done)  # what is stored is journaled, also when a later file failed
    for job in alone:
        await run.one(job)
