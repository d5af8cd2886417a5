"""COPIED's work for an incremental backup (brsm.workflows.backup.reuse says why it is right): a page
sorted by what the base holds, a batch copied inside the storage, a batch hashed on its host first.

Every file ends journaled as a full backup journals it (FileCopied, its SHA-256 and identity), with
``reused_from`` when its object was copied from the base: resume and rollback treat it as any other
copied file, and a rollback deletes only this backup's keys, never the base's.
"""
from __future__ import annotations

from typing import Any, Protocol

from brsm.workflows.backup.context import ports
from brsm.workflows.backup.ledger import FileCopied
from brsm.workflows.backup.reuse import BATCH_FILES, Base, HashBatch, Reuse, ReuseBatch, batches, copy_all
from brsm.workflows.backup.state import BackupContext
from brsm.workflows.transfer import EventBatcher, FileJob, whole_file

HASH_TIMEOUT = 3600.0  # seconds one batch's hashing on its host may take (reuse.HASH_BATCH_BYTES of reads)


class Run(Protocol):
    """What the incremental work needs of COPIED's run (brsm.workflows.backup.copy._Copy)."""

    ctx: BackupContext
    events: EventBatcher
    base: Base | None
    reused_files: int
    reused_bytes: int
    hashed: int
    hashed_files: int

    def finished(self, job: FileJob, digest: str, *, reused_from: str | None = None) -> FileCopied: ...
    async def send(self, jobs: list[FileJob]) -> None: ...


def sort(base: Base, todo: list[FileJob]) -> tuple[list[Any], list[FileJob]]:
    """An incremental's page (one host's files): the files the base holds unchanged (by identity) in
    batches to copy inside the storage, the files of a size the base has in batches to hash on their
    host first; and the rest, to send as in a full backup."""
    known = base.known(todo[0].host, todo)
    reused = [Reuse(j, known[j.key].key, known[j.key].sha256) for j in todo if j.key in known]
    items: list[Any] = [ReuseBatch(reused[i:i + BATCH_FILES]) for i in range(0, len(reused), BATCH_FILES)]
    rest = [j for j in todo if j.key not in known]
    check = base.worth_hashing(rest)
    items += [HashBatch(b) for b in batches(check)]
    hashing = {j.key for j in check}
    return items, [j for j in rest if j.key not in hashing]


async def reuse(run: Run, items: list[Reuse]) -> None:
    """Copied inside the storage from the base, each journaled as reused; one the base no longer holds
    as its manifest says is sent instead."""
    p = ports(run.ctx)
    assert run.base is not None
    resend = []
    for r, ok in await copy_all(p.storage, items):
        if not ok:
            resend.append(r.job)
            continue
        run.reused_files += 1
        run.reused_bytes += r.job.size
        p.progress.advance("copy", r.job.size)
        run.events.add(run.finished(r.job, r.sha256, reused_from=run.base.name))
    if resend:
        p.progress.note(f"{len(resend)} file(s) the base {run.base.name} no longer holds as its manifest says, "
                        f"e.g. {resend[0].key}: sent instead")
        await run.send(resend)


async def hash_then_reuse(run: Run, jobs: list[FileJob]) -> None:
    """Hashed on their host, from its own disk; those whose (size, SHA-256) the base holds are reused,
    the others sent."""
    assert run.base is not None
    host = ports(run.ctx).hosts.host(jobs[0].host)
    got = await whole_file(f"hashing {len(jobs)} file(s) on {jobs[0].host}",
                           lambda: host.hash_files([j.path for j in jobs], timeout=HASH_TIMEOUT))
    run.hashed += sum(j.size for j in jobs)
    run.hashed_files += len(jobs)
    found = run.base.by_content([(j.size, got[j.path]) for j in jobs if j.path in got])
    take = [Reuse(j, found[(j.size, got[j.path])], got[j.path]) for j in jobs
            if j.path in got and (j.size, got[j.path]) in found]
    if take:
        await reuse(run, take)
    taken = {r.job.key for r in take}
    await run.send([j for j in jobs if j.key not in taken])
