"""Copy pipelines: host file → SHA-256 while streaming → storage, and back.

Bounded by a global semaphore (--concurrency), one per host (--per-host) and one token bucket
(--rate-limit). Never holds a file in memory: blocks flow from the SFTP reader straight into the
storage writer. A transfer counts only when the target confirmed the size and the SHA-256.
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from brsm.errors import BrsmError, OperationFailed, RemoteError, StorageError, VerificationFailed
from brsm.ports import FileIdentity, HostPort, Progress, Storage, UploadState
from brsm.retries import WHOLE_FILE
from brsm.workflows.limits import TokenBucket
from brsm.workflows.weighted_queue import QueueClosed, WeightedQueue, one

T = TypeVar("T")

_HASH_IN_THREAD = 256 << 10


class EventBatcher:
    """Finished-file events (FileCopied, FileRestored) journaled in batches, one durable transaction
    each: an fsync per file would cost more than small files take to copy. A crash loses at most the
    last batch (``FLUSH_SECONDS`` of work, ``FLUSH_BYTES`` of data), which a resume copies again."""

    BATCH = 256
    FLUSH_SECONDS = 1.0
    FLUSH_BYTES = 8 << 20

    def __init__(self, record_batch: Callable[[list[Any]], None]) -> None:
        self._record = record_batch
        self.pending: list[Any] = []  # Events (FileCopied, FileRestored), journaled by record_batch
        self._bytes = 0
        self._last = time.monotonic()

    def add(self, event: Any) -> None:
        """``event``: a finished file's Event (it has a ``size``)."""
        self.pending.append(event)
        self._bytes += int(getattr(event, "size", 0) or 0)
        if (len(self.pending) >= self.BATCH or self._bytes >= self.FLUSH_BYTES
                or time.monotonic() - self._last >= self.FLUSH_SECONDS):
            self.flush()

    def add_all(self, events: list[Any]) -> None:
        """Several finished files (a group read in one go), journaled in the same batch."""
        for e in events:
            self.pending.append(e)
            self._bytes += int(getattr(e, "size", 0) or 0)
        if (len(self.pending) >= self.BATCH or self._bytes >= self.FLUSH_BYTES
                or time.monotonic() - self._last >= self.FLUSH_SECONDS):
            self.flush()

    def flush(self) -> None:
        """Journal what is pending (also when the step fails: what finished is not copied again)."""
        self._last = time.monotonic()
        batch, self.pending, self._bytes = self.pending, [], 0
        if batch:
            self._record(batch)


@dataclass(frozen=True)
class FileJob:
    host: str
    path: str
    size: int
    key: str
    ident: FileIdentity | None = None  # the host file's identity, when its listing said it


@dataclass
class Limits:
    concurrency: int = 8
    per_host: int = 4
    bucket: TokenBucket = field(default_factory=lambda: TokenBucket(None))
    _global: asyncio.Semaphore | None = None

    def global_sem(self) -> asyncio.Semaphore:
        if self._global is None:
            self._global = asyncio.Semaphore(max(1, self.concurrency))
        return self._global


def _transient(e: BaseException) -> bool:
    """Worth moving the whole file again: a host-side drop (the host port does not retry; the helper
    died), or a storage error that asks for the bytes again (``resend``: the stream the storage was
    sending was already consumed, the store dropped the upload). Any other storage error was retried
    by the storage's own layer as often as it may, and retrying it here too would multiply the
    attempts (3 x 5)."""
    if isinstance(e, StorageError):
        return not e.permanent and e.resend
    return isinstance(e, (RemoteError, ConnectionError, asyncio.TimeoutError))


class _Meter:
    """The pass every transferred byte makes: the shared rate limit, progress, and (for downloads)
    SHA-256. Big blocks are hashed in a worker thread, so the event loop never waits on the hash.

    Uploads do not hash here: the storage hashes the stream it receives (once, off the loop) and
    checks what it stored against that (local: read back; S3/OSS: Content-MD5 per request), so a
    second hash of the same bytes would only cost CPU.
    """

    def __init__(self, limits: Limits, progress: Progress, task: str, *, hash: bool = True) -> None:
        self._h = hashlib.sha256() if hash else None
        self._limits = limits
        self._progress = progress
        self._task = task
        self.bytes = 0  # bytes that passed through (sent), over every opening of the stream
        self.skipped = 0  # bytes the current opening did not need to send (it resumed there)
        self._this_open = 0  # bytes sent by the current opening

    def skip(self, n: int) -> None:
        """The stream is (re)opened at ``n``: the bar shows ``n`` bytes done, whatever an earlier
        opening had reached."""
        self._progress.advance(self._task, n - self.skipped - self._this_open)
        self.skipped, self._this_open = n, 0

    async def wrap(self, source: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for block in source:
            n = len(block)
            if self._h is not None:
                if n >= _HASH_IN_THREAD:
                    await asyncio.to_thread(self._h.update, block)
                else:
                    self._h.update(block)
            await self._limits.bucket.consume(n)
            self.bytes += n
            self._this_open += n
            self._progress.advance(self._task, n)
            yield block

    def hexdigest(self) -> str:
        assert self._h is not None
        return self._h.hexdigest()

    def undo(self) -> None:
        """A failed attempt's bytes leave the progress total, so a retry does not count twice."""
        self._progress.advance(self._task, -(self._this_open + self.skipped))


@dataclass(frozen=True)
class Uploaded:
    sha256: str
    sent: int  # bytes that crossed SSH for this file in this run (less than its size after a resume)


class _HostFile:
    """A host file as a ByteSource: the storage may open it at the offset where a cut upload stopped.
    Bytes before that offset count as done for the progress bar, not as sent."""

    def __init__(self, host: HostPort, path: str, meter: _Meter) -> None:
        self._host, self._path, self._meter = host, path, meter

    def open(self, offset: int = 0) -> AsyncIterator[bytes]:
        self._meter.skip(offset)
        return self._meter.wrap(self._host.open_read(self._path, offset=offset))


class _Redo(Exception):
    """An attempt whose result is wrong although nothing failed (the target holds another size): tried
    again at once, from the start."""

    def __init__(self, error: BrsmError) -> None:
        super().__init__(str(error))
        self.error = error


async def whole_file(what: str, once: Callable[[], Awaitable[T]], *, undo: Callable[[], None] = lambda: None) -> T:
    """The one file-level retry loop, for every way a file moves (through brsm or by the host itself,
    up or down): ``once`` again, as ``retries.WHOLE_FILE`` says, after what :func:`_transient` says
    the storage could not retry itself, or at once after a result that came out wrong (:class:`_Redo`;
    a VerificationFailed, the bytes did not match, is one too). Not a storage retry: what it mends is
    on the way from or to the host, so the bytes must be read from their source again. ``undo``
    after each failed attempt (its bytes leave the progress total). A permanent error ends it at once."""
    last: BaseException | None = None
    for attempt in range(WHOLE_FILE.attempts):
        try:
            return await once()
        except _Redo as r:
            undo()
            last = r.error
        except VerificationFailed as e:  # the bytes a host fetched itself did not match
            undo()
            last = e
        except BrsmError as e:
            undo()
            last = e
            if not (_transient(e) and attempt + 1 < WHOLE_FILE.attempts):
                raise
            await asyncio.sleep(WHOLE_FILE.delay(attempt + 1))
    assert last is not None
    if isinstance(last, VerificationFailed):
        raise last  # the same wrong bytes every time: what is stored is damaged, not the way there
    raise OperationFailed(f"{what} failed {WHOLE_FILE.attempts} times: {last}", hint=getattr(last, "hint", None)) from last


async def _metered(what: str, once: Callable[[_Meter], Awaitable[T]], meter: Callable[[], _Meter]) -> T:
    """:func:`whole_file` with a fresh meter per attempt, a failed one's bytes taken off the progress."""
    current: list[_Meter] = []

    async def attempt() -> T:
        current[:] = [meter()]
        return await once(current[0])

    return await whole_file(what, attempt, undo=lambda: current[0].undo())


async def upload_file(job: FileJob, host: HostPort, storage: Storage, limits: Limits, progress: Progress,
                      *, state: UploadState | None, on_part: Callable[[UploadState], None] | None) -> Uploaded:
    """Stream one host file into storage; returns its SHA-256 once the target confirmed it."""
    sent = 0

    async def once(meter: _Meter) -> Uploaded:
        nonlocal sent, state
        try:
            res = await storage.put(job.key, _HostFile(host, job.path, meter), job.size, state=state, on_part=on_part)
        finally:
            sent += meter.bytes
        if res.size != job.size or len(res.sha256) != 64:
            state = None  # start the object over
            raise _Redo(StorageError(f"{job.key}: target has {res.size} bytes, source {job.size} bytes"))
        return Uploaded(res.sha256, sent)

    return await _metered(f"copying {job.host}:{job.path}", once,
                          lambda: _Meter(limits, progress, "copy", hash=False))


async def download_file(key: str, expected_sha: str | None, size: int, storage: Storage, host: HostPort, dest: str,
                        limits: Limits, progress: Progress) -> None:
    """Stream one object to a host (temp name + rename by the host port), hash checked on arrival
    (size only for a nebula-br backup, which records no checksums)."""

    async def once(meter: _Meter) -> None:
        async def checked() -> AsyncIterator[bytes]:
            async for block in meter.wrap(storage.get(key)):
                yield block
            # Raised inside the stream, so the host port drops its temp file and nothing is renamed.
            # Tried again (bytes can be damaged on the way); the same mismatch every time is a damaged
            # backup (exit 6), and restoring another one is the way out, not starting this one again.
            if meter.bytes != size or (expected_sha is not None and meter.hexdigest() != expected_sha):
                raise _Redo(VerificationFailed(
                    f"this backup is damaged: file {key} reads {meter.bytes} bytes sha256 "
                    f"{meter.hexdigest()[:12]}…, its manifest says {size} bytes {(expected_sha or 'no checksum')[:12]}…",
                    hint=f"restore another one: `brsm show --storage {storage.uri}`"))

        await host.write_file(dest, checked())

    await _metered(f"downloading {key} to {host.name}:{dest}", once, lambda: _Meter(limits, progress, "download"))


async def run_bounded(jobs: list[Any], host_of: Callable[[Any], str], limits: Limits,
                      work: Callable[[Any], Any]) -> None:
    """Run ``work(job)`` for every job of a list within the global and per-host limits; first error wins
    (:func:`run_fed`, each host fed from its share of the list)."""
    queues: dict[str, list] = {}
    for j in jobs:
        queues.setdefault(host_of(j), []).append(j)

    async def feed(js: list) -> AsyncIterator[Any]:
        for j in js:
            yield j

    await run_fed({h: feed(js) for h, js in queues.items()}, limits, work)


QUEUE_DEPTH = 32  # jobs a host's feed may run ahead of its workers


async def run_fed(feeds: Mapping[str, AsyncIterable[Any]], limits: Limits, work: Callable[[Any], Any], *,
                  depth: int = QUEUE_DEPTH, weight: Callable[[Any], int] = one) -> None:
    """Run ``work(job)`` for every job of every host's feed, within the global and per-host limits;
    first error wins, and every feed is closed (a host's listing stops).

    One task per host reads its feed into a queue that holds at most ``depth`` of weight (``weight(job)``:
    1 a job unless told otherwise; a group of files weighs its files), from which that host's
    ``per_host`` workers take: no list of all the jobs exists, the feeds run ahead of the copy by
    ``depth`` at most, and a host whose queue is full holds up no other host. 100,000 files cost
    ``hosts x (per_host + 1)`` tasks, not 100,000.
    """
    end = object()
    n = max(1, limits.per_host)

    async def feeder(feed: AsyncIterable[Any], q: WeightedQueue) -> None:
        it = aiter(feed)
        try:
            async for job in it:
                await q.put(job)
        finally:
            aclose = getattr(it, "aclose", None)
            if aclose is not None:
                await aclose()
        for _ in range(n):
            await q.put(end)

    async def worker(q: WeightedQueue) -> None:
        with contextlib.suppress(QueueClosed):
            while (job := await q.get()) is not end:
                async with limits.global_sem():
                    await work(job)

    tasks, queues = [], []
    for feed in feeds.values():
        q = WeightedQueue(depth, weight)
        queues.append(q)
        tasks.append(asyncio.create_task(feeder(feed, q)))
        tasks.extend(asyncio.create_task(worker(q)) for _ in range(n))
    try:
        for t in asyncio.as_completed(tasks):
            await t
    finally:
        for q in queues:  # before the cancel: a task that loses its cancellation still finds the end
            await q.close()
        for t in tasks:
            if not t.done():
                t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def run_lanes(lanes: dict[str, AsyncIterator[Any]], limits: Limits, work: Callable[[Any], Any]) -> None:
    """``run_bounded`` over streams: ``work(job)`` for every job of every lane (one per host), within
    the global and per-host limits; first error wins. Each lane's ``per_host`` workers pull from its
    stream one at a time, so a million jobs are never held, and every host is fed at once."""

    stopping = False  # set before the workers are cancelled: one that loses its cancellation takes no next job

    async def worker(stream: AsyncIterator[Any], lock: asyncio.Lock) -> None:
        while not stopping:
            async with lock:
                job = _END if stopping else await anext(stream, _END)
            if job is _END:
                return
            async with limits.global_sem():
                await work(job)

    tasks = []
    for stream in lanes.values():
        lock = asyncio.Lock()  # a lane's workers take its jobs one at a time
        tasks.extend(asyncio.create_task(worker(stream, lock)) for _ in range(max(1, limits.per_host)))
    try:
        for t in asyncio.as_completed(tasks):
            await t
    finally:
        stopping = True
        for t in tasks:
            if not t.done():
                t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for stream in lanes.values():
            closing = getattr(stream, "aclose", None)
            if closing is not None:
                await closing()


_END = object()
