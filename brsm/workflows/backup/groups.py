"""Small files cost per file, not per byte: on the path through brsm, a host's small files are read
in groups with one SSH exec (``HostPort.read_files``), each put into storage (which hashes the
stream it receives) and the group's FileCopied events journaled together.

Why groups this big: starting an SSH exec costs the host a session and a shell (measured 0.2-0.3 s
on a loaded 2-core sandbox, where one SFTP file costs ~1 ms), so reading 2,000 small files went
from 1,100 files/s in groups of 128 to 2,800 files/s in groups of 512; GROUP_BYTES bounds what a
group holds in memory whatever its count.

A file of the group that did not come back whole and as the walk saw it (missing, not a regular
file, another size), or that storage refused, is copied again alone by the single-file path, with
its retries: a group never fails for one file, and never journals a file it did not store.
"""
from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

from brsm.errors import BrsmError, RemoteError
from brsm.ports import FileRead, UploadState
from brsm.workflows.backup.context import ports
from brsm.workflows.backup.ledger import FileCopied
from brsm.workflows.backup.state import BackupContext
from brsm.workflows.transfer import EventBatcher, FileJob

SMALL_FILE = 1 << 20  # files under this many bytes go in groups (the path through brsm)
GROUP_FILES = 1024  # files read by one exec at most (an exec costs more than its files: see the module doc)
GROUP_BYTES = 2 << 20  # bytes of one group at most: its answer is held in memory (tar and members: ~2x)
READ_TIMEOUT = 300.0  # seconds one group's read may take


class Run(Protocol):
    """What a group needs of COPIED's run (brsm.workflows.backup.copy)."""

    ctx: BackupContext
    events: EventBatcher
    sent: int

    def on_part(self, job: FileJob, state: UploadState) -> Any: ...
    def finished(self, job: FileJob, digest: str) -> FileCopied: ...
    async def one(self, job: FileJob) -> None: ...


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


def usable(job: FileJob, r: FileRead) -> bool:
    """Whether the group's answer for ``job`` is the file the walk listed (pure).

    >>> j = FileJob("h", "/d/a", 2, "k")
    >>> usable(j, FileRead("/d/a", b"hi")), usable(j, FileRead("/d/a", b"hi!")), usable(j, FileRead("/d/a", None, "gone"))
    (True, False, False)
    """
    return r.path == job.path and r.data is not None and len(r.data) == job.size


async def copy_group(run: Run, jobs: list[FileJob]) -> None:
    """One exec reads ``jobs`` (all of one host); each file stored, then journaled with the others."""
    p, limits = ports(run.ctx), run.ctx.runtime.limits
    try:
        got = await p.hosts.host(jobs[0].host).read_files([j.path for j in jobs], timeout=READ_TIMEOUT)
    except RemoteError:  # the read failed as a whole (a dropped connection): each file alone, retried
        got = []
    if len(got) != len(jobs):
        got = [FileRead(j.path, None, "not read") for j in jobs]
    alone: list[FileJob] = []
    done: list[FileCopied] = []
    try:
        for job, r in zip(jobs, got):
            if not usable(job, r):
                alone.append(job)
                continue
            assert r.data is not None
            await limits.bucket.consume(job.size)
            try:
                res = await p.storage.put(job.key, _once(r.data), job.size, state=None,
                                          on_part=run.on_part(job, UploadState()))
            except BrsmError:
                alone.append(job)  # alone, with the storage's and the file's retries
                continue
            if res.size != job.size or len(res.sha256) != 64:
                alone.append(job)
                continue
            run.sent += job.size
            p.progress.advance("copy", job.size)
            done.append(run.finished(job, res.sha256))
    finally:
        run.events.add_all(done)  # what is stored is journaled, also when a later file failed
    for job in alone:
        await run.one(job)
