"""What every storage backend shares: key layout under the prefix, stream re-blocking and hashing,
and the multipart put (resume, bounded concurrency, journaling callback) written once.

A backend subclasses :class:`BaseStorage` and implements a handful of primitives; S3, OSS and
the in-memory fake go through the same :meth:`BaseStorage.put`, so the resume logic is tested
once for all of them. The local backend overrides ``put`` (temp file + fsync + rename).
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import math
import uuid
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from brsm.errors import ObjectNotFound, StorageError
from brsm.ports import ObjectInfo, PutResult, StorageProperties, UploadState, stream_of
from brsm.store_limits import MAX_PART, MAX_PARTS

KiB = 1 << 10
MiB = 1 << 20
DEFAULT_BLOCK_SIZE = 4 * MiB  # reads and local writes
DEFAULT_PART_SIZE = 8 * MiB
DEFAULT_MULTIPART_THRESHOLD = 16 * MiB
DEFAULT_PART_CONCURRENCY = 4
DEFAULT_MEMORY_BUDGET = 32 * MiB  # part buffers of all puts of one storage together
PROBE_PREFIX = ".brsm-probe-"
# hashing a block this large in a worker thread (hashlib drops the GIL) beats blocking the loop
_HASH_IN_THREAD = 256 * KiB


class SizeMismatch(StorageError):
    """The stream did not have the declared number of bytes (permanent: the source changed)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, permanent=True,
                         hint="the source changed while it was read, or the declared size is wrong")


def check_key(key: str) -> str:
    """A key is relative, '/'-separated, without empty, '.' or '..' segments."""
    if not key or key.startswith("/") or key.endswith("/"):
        raise StorageError(f"invalid object key {key!r}: must be relative and name an object", permanent=True)
    for seg in key.split("/"):
        if seg in ("", ".", ".."):
            raise StorageError(f"invalid object key {key!r}: empty, '.' or '..' segment", permanent=True)
    return key


def check_prefix(prefix: str) -> str:
    """A listing prefix: '' (everything) or a relative string (a key prefix, not necessarily a dir)."""
    if prefix.startswith("/") or any(s in (".", "..") for s in prefix.split("/")[:-1]) or "//" in prefix:
        raise StorageError(f"invalid prefix {prefix!r}", permanent=True)
    return prefix


def dir_prefix(prefix: str) -> str:
    """'' stays '', 'a/b' becomes 'a/b/'."""
    return prefix if prefix == "" or prefix.endswith("/") else prefix + "/"


def normalize_root_prefix(prefix: str) -> str:
    """The prefix from a URI: no leading '/', one trailing '/' unless empty."""
    p = prefix.strip("/")
    if any(s in ("", ".", "..") for s in p.split("/")) and p:
        raise StorageError(f"invalid storage prefix {prefix!r}", permanent=True)
    return p + "/" if p else ""


def norm_etag(etag: str | None) -> str:
    return (etag or "").strip().strip('"').lower()


class Source:
    """The caller's byte stream, consumed once from offset 0: counts, hashes (SHA-256), enforces the
    declared size and re-blocks into fixed-size pieces.

    The hash is taken per yielded block or group, not per incoming chunk, and big blocks are hashed
    in a worker thread (hashlib drops the GIL): the event loop, which also runs every SSH packet, never
    waits on SHA-256. With ``defer_hash`` the consumer calls :meth:`absorb` itself (e.g. in the thread
    that writes the block).
    """

    def __init__(self, key: str, chunks: AsyncIterator[bytes], size: int, *, defer_hash: bool = False,
                 start: int = 0, hasher: Any = None) -> None:
        self.key = key
        self._it = chunks.__aiter__()
        self.size = size
        self.count = start  # a resumed stream starts at ``start``; ``hasher`` holds the prefix's hash
        self._h = hasher if hasher is not None else hashlib.sha256()
        self._defer_hash = defer_hash
        self._carry: list[bytes] = []  # bytes read past the last block (next_block)

    async def _next(self) -> bytes | None:
        try:
            chunk = await self._it.__anext__()
        except StopAsyncIteration:
            return None
        if not isinstance(chunk, (bytes, bytearray, memoryview)):
            raise TypeError(f"put({self.key!r}): the stream yielded {type(chunk).__name__}, not bytes")
        n = len(chunk)
        if n:
            self.count += n
            if self.count > self.size:
                raise SizeMismatch(f"{self.key}: the stream has more than the declared {self.size} bytes")
        return bytes(chunk) if not isinstance(chunk, bytes) else chunk

    async def _hash(self, pieces: list[bytes]) -> None:
        if self._defer_hash:
            return
        if sum(len(p) for p in pieces) >= _HASH_IN_THREAD:
            await asyncio.to_thread(self.absorb, pieces)
        else:
            self.absorb(pieces)

    async def next_block(self, block_size: int) -> bytes | None:
        """The next piece of exactly ``block_size`` bytes (the last one shorter, never empty), or None
        at the end.

        A method, not a generator: a generator's frame would keep the block it last yielded alive
        until it is resumed, i.e. while the caller waits for memory budget for the next one. Each
        block is built with one copy (a join of the chunks, the last one cut).
        """
        pending: list[bytes] = self._carry
        self._carry = []
        n = sum(len(p) for p in pending)
        while n < block_size:
            chunk = await self._next()
            if chunk is None:
                break
            if not pending and len(chunk) == block_size:
                await self._hash([chunk])
                return chunk
            pending.append(chunk)
            n += len(chunk)
        if n > block_size:
            last = pending[-1]
            cut = len(last) - (n - block_size)
            pending[-1] = last[:cut]
            self._carry = [last[cut:]]
        if not pending:
            return None
        block = pending[0] if len(pending) == 1 else b"".join(pending)
        pending.clear()
        if not block:
            return None
        await self._hash([block])
        return block

    async def coalesced(self, min_size: int) -> AsyncIterator[list[bytes]]:
        """Yield lists of chunks totalling at least ``min_size`` bytes (the last list may be smaller)."""
        pending: list[bytes] = []
        n = 0
        while True:
            chunk = await self._next()
            if chunk is None:
                break
            if not chunk:
                continue
            pending.append(chunk)
            n += len(chunk)
            if n >= min_size:
                await self._hash(pending)
                yield pending
                pending, n = [], 0
        if pending:
            await self._hash(pending)
            yield pending

    async def read_all(self) -> bytes:
        parts = []
        while (chunk := await self._next()) is not None:
            parts.append(chunk)
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        await self._hash([data])
        return data

    def absorb(self, pieces: list[bytes]) -> None:
        """Hash ``pieces`` in stream order; sync, so it can run in a worker thread."""
        for p in pieces:
            self._h.update(p)

    def check_size(self) -> None:
        if self.count != self.size:
            raise SizeMismatch(f"{self.key}: the stream had {self.count} bytes, {self.size} declared")

    @property
    def sha256(self) -> str:
        """SHA-256 of everything absorbed so far (the whole stream once it is consumed)."""
        return self._h.hexdigest()


#: bodies at least this big get their Content-MD5 in a worker thread (hashlib releases the GIL)
MD5_OFF_LOOP = 256 << 10


async def content_md5(data: bytes) -> str:
    """The Content-MD5 header of ``data``, the store's check that the body arrived intact.

    MD5 runs at ~700 MiB/s here: 11 ms per 8 MiB part. On the event loop, which also does every SSH
    packet of every transfer, those milliseconds stall all of them; in a worker thread they overlap
    with the loop.
    """
    if len(data) < MD5_OFF_LOOP:
        return _md5_b64(data)
    return await asyncio.to_thread(_md5_b64, data)


def _md5_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


class ByteBudget:
    """Bytes that every put of one storage may hold in memory at once (single-request bodies and
    multipart part buffers). One budget for the process, not a buffer per file times --concurrency:
    peak memory no longer grows with the number of files in flight."""

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self.free = self.limit
        self._cond: asyncio.Condition | None = None

    async def acquire(self, n: int) -> int:
        """Wait for ``n`` bytes (at most the whole budget); returns what to release."""
        n = max(1, min(n, self.limit))
        if self._cond is None:
            self._cond = asyncio.Condition()
        async with self._cond:
            await self._cond.wait_for(lambda: self.free >= n)
            self.free -= n
        return n

    async def release(self, n: int) -> None:
        assert self._cond is not None
        async with self._cond:
            self.free += n
            self._cond.notify_all()


async def read_all(blocks: AsyncIterator[bytes]) -> bytes:
    """A whole (small) object's stream as bytes: commit files, manifests."""
    out = []
    async for b in blocks:
        out.append(b)
    return b"".join(out)


def upload_gone(msg: str) -> StorageError:
    """The store no longer has the upload (aborted under us, expired): asking again cannot bring it
    back; only sending the bytes again, in a new upload, can (``resend``)."""
    e = StorageError(msg, permanent=False)
    e.resend = True
    return e


@dataclass(frozen=True)
class ReplyRules:
    """One object store's words for the failures every store has: S3 and OSS answer with the same
    HTTP statuses and different codes and hints, and :func:`classify_reply` decides for both."""
    bucket_hint: str  # NoSuchBucket
    credential_hints: Mapping[str, str]  # error code → what to check
    auth_hint: str  # any other 401/403
    transient_codes: frozenset[str]


FULL_CODES = frozenset({"InsufficientStorage", "QuotaExceeded"})


def classify_reply(msg: str, status: int, code: str, rules: ReplyRules, *,
                   missing_key: str | None = None) -> StorageError:
    """An error reply (HTTP ``status``, the store's error ``code``) → the StorageError brsm acts on:
    retried (transient) or not, with what to check. ``missing_key``: the key when the reply says it
    does not exist (each store says that its own way).

    >>> r = ReplyRules("b", {"Sig": "check the secret"}, "check the key", frozenset({"SlowDown"}))
    >>> [(e.permanent, e.hint) for e in (classify_reply("m", 403, "Sig", r), classify_reply("m", 503, "", r),
    ...                                  classify_reply("m", 400, "SlowDown", r), classify_reply("m", 400, "", r))]
    [(True, 'check the secret'), (False, None), (False, None), (True, None)]
    """
    if missing_key is not None:
        return ObjectNotFound(missing_key)
    if code == "NoSuchUpload":  # aborted under us: a put with the state starts over
        return upload_gone(msg)
    if code == "NoSuchBucket":
        return StorageError(msg, permanent=True, hint=rules.bucket_hint)
    if code in rules.credential_hints:
        return StorageError(msg, permanent=True, hint=rules.credential_hints[code])
    if status in (401, 403):
        return StorageError(msg, permanent=True, hint=rules.auth_hint)
    if status == 507 or code in FULL_CODES:
        return StorageError(msg, permanent=True, hint="the storage is full: free space or raise its quota")
    if code in rules.transient_codes or status >= 500 or status in (0, 408, 429):
        return StorageError(msg, permanent=False)
    return StorageError(msg, permanent=True)


def transport_error(e: BaseException, what: str, where: str, http_module: str = "") -> StorageError | None:
    """The failures below any SDK (socket, timeout, OS, and the HTTP client library the SDK uses,
    ``http_module``'s own exception classes when it is installed): transient for every backend."""
    if http_module:
        import importlib

        try:
            mod = importlib.import_module(http_module)
        except ImportError:  # pragma: no cover - the SDK needs it
            mod = None
        base = {"requests": "RequestException", "aiohttp": "ClientError"}[http_module]
        if mod is not None and isinstance(e, getattr(mod, base)):
            return StorageError(f"{what} {where}: {type(e).__name__}: {e}", permanent=False)
    if isinstance(e, (ConnectionError, TimeoutError, asyncio.TimeoutError, OSError)):
        return StorageError(f"{what} {where}: {type(e).__name__}: {e}", permanent=False)
    return None


async def reblock(chunks: AsyncIterator[bytes], block_size: int) -> AsyncIterator[bytes]:
    """Coalesce small pieces from a network stream into blocks of at least ``block_size``."""
    buf: list[bytes] = []
    n = 0
    async for c in chunks:
        if not c:
            continue
        buf.append(c)
        n += len(c)
        if n >= block_size:
            yield buf[0] if len(buf) == 1 else b"".join(buf)
            buf, n = [], 0
    if buf:
        yield b"".join(buf)


class BaseStorage(ABC):
    """Shared part of every backend. Keys are relative to ``self.prefix`` (the URI's path)."""

    scheme = "?"

    def __init__(self, uri: str, prefix: str = "", *, block_size: int = DEFAULT_BLOCK_SIZE,
                 part_size: int = DEFAULT_PART_SIZE, multipart_threshold: int = DEFAULT_MULTIPART_THRESHOLD,
                 part_concurrency: int = DEFAULT_PART_CONCURRENCY, list_page_size: int = 1000,
                 memory_budget: int = DEFAULT_MEMORY_BUDGET) -> None:
        self.uri = uri
        self.prefix = normalize_root_prefix(prefix)
        self.block_size = block_size
        self.part_size = part_size
        self.multipart_threshold = multipart_threshold
        self.part_concurrency = max(1, part_concurrency)
        self.budget = ByteBudget(max(memory_budget, part_size))
        self.list_page_size = max(1, min(1000, list_page_size))
        #: requests issued, by verb ("put_object", "upload_part", ...): for tests and diagnostics
        self.requests: Counter[str] = Counter()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.uri}>"

    # -- key layout ------------------------------------------------------------------------
    def full_key(self, key: str) -> str:
        return self.prefix + check_key(key)

    def full_prefix(self, prefix: str) -> str:
        return self.prefix + check_prefix(prefix)

    def rel_key(self, full: str) -> str:
        return full[len(self.prefix):]

    def choose_part_size(self, size: int) -> int:
        """The configured part size, raised so that the object fits in MAX_PARTS parts."""
        return max(self.part_size, math.ceil(size / MAX_PARTS))

    # -- the verbs -------------------------------------------------------------------------
    async def put(self, key: str, chunks: AsyncIterator[bytes], size: int, *,
                  state: UploadState | None = None, on_part: Callable[[UploadState], Any] | None = None) -> PutResult:
        """Stream ``chunks`` (from offset 0) to ``key``; single request up to the threshold,
        multipart above it (resuming ``state`` if it names a live upload)."""
        full = self.full_key(key)
        if size < 0:
            raise StorageError(f"{key}: negative size {size}", permanent=True)
        src = Source(key, stream_of(chunks), size)
        if size <= self.multipart_threshold:
            held = await self.budget.acquire(size)
            try:
                data = await src.read_all()
                src.check_size()
                await self._put_single(full, data)
                del data
            finally:
                await self.budget.release(held)
        else:
            await self._put_multipart(full, src, state if state is not None else UploadState(), on_part)
        return PutResult(size=src.count, sha256=src.sha256)

    async def _put_multipart(self, full: str, src: Source, state: UploadState,
                             on_part: Callable[[UploadState], Any] | None) -> None:
        key = src.key
        done = await self._resume_point(full, state, src.size)
        if state.upload_id is None:
            state.upload_id = await self._mp_create(full)
            state.parts = []
            state.part_size = self.choose_part_size(src.size)
            done = {}
        upload_id = state.upload_id
        sem = asyncio.Semaphore(self.part_concurrency)
        tasks: set[asyncio.Task] = set()
        failed: list[BaseException] = []

        async def send(n: int, data: bytes, held: int) -> None:
            try:
                info = await self._mp_upload_part(full, upload_id, n, data)
                state.parts = [p for p in state.parts if p["n"] != n]
                state.parts.append({"n": n, "size": len(data), **info})
                state.parts.sort(key=lambda p: p["n"])
                if on_part is not None:
                    on_part(state)
            finally:
                del data
                sem.release()
                await self.budget.release(held)

        def reap() -> None:
            for t in [t for t in tasks if t.done()]:
                tasks.discard(t)
                if not t.cancelled() and t.exception() is not None:
                    failed.append(t.exception())

        n = 0
        try:
            while True:
                # the part's bytes are budgeted before they are read, so waiting holds no memory
                held = await self.budget.acquire(state.part_size)
                try:
                    block = await src.next_block(state.part_size)
                except BaseException:
                    await self.budget.release(held)
                    raise
                if block is None:
                    await self.budget.release(held)
                    break
                n += 1
                if n > MAX_PARTS:
                    await self.budget.release(held)
                    raise StorageError(f"{key}: more than {MAX_PARTS} parts", permanent=True)
                old = done.pop(n, None)
                if old is not None:
                    if norm_etag(old["etag"]) == hashlib.md5(block).hexdigest() and old["size"] == len(block):
                        del block
                        await self.budget.release(held)
                        continue  # already stored, same bytes: not sent again
                await sem.acquire()
                reap()
                if failed:
                    sem.release()
                    await self.budget.release(held)
                    raise failed[0]
                tasks.add(asyncio.create_task(send(n, block, held)))
                del block
            src.check_size()
        except BaseException as e:
            # let parts in flight land (they are journaled), then report the first failure;
            # on cancellation, stop them instead
            if isinstance(e, asyncio.CancelledError):
                for t in tasks:
                    t.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            if isinstance(e, SizeMismatch):  # the parts hold other bytes than declared: start over
                await self._abort_quietly(full, upload_id)
                state.upload_id, state.parts, state.part_size = None, [], 0
            raise
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
            reap()
        if failed:
            raise failed[0]
        if n == 0 or [p["n"] for p in state.parts] != list(range(1, n + 1)):
            raise StorageError(f"{key}: parts {[p['n'] for p in state.parts]} do not cover 1..{n}")
        await self._mp_complete(full, upload_id, list(state.parts))
        info = await self._stat_full(full)
        if info.size != src.size:
            raise StorageError(f"{key}: target has {info.size} bytes after completing the upload, "
                               f"{src.size} sent", permanent=True)

    async def _resume_point(self, full: str, state: UploadState, size: int) -> dict[int, dict]:
        """Parts of ``state`` the target still holds (checked with ListParts); resets ``state`` to
        a fresh upload if there is nothing to resume."""
        if state.upload_id is None:
            return {}
        ok = state.part_size > 0 and state.part_size >= math.ceil(size / MAX_PARTS)
        listed = None
        if ok:
            listed = await self._mp_list_parts(full, state.upload_id)
        if listed is None:  # the upload is gone (completed, aborted, expired) or unusable
            if ok is False:
                await self._abort_quietly(full, state.upload_id)
            state.upload_id, state.parts, state.part_size = None, [], 0
            return {}
        done = {}
        for p in state.parts:
            got = listed.get(p["n"])
            if got is not None and norm_etag(got["etag"]) == norm_etag(p["etag"]) and got["size"] == p["size"]:
                done[p["n"]] = {**p, **got}
        state.parts = sorted(done.values(), key=lambda p: p["n"])
        return dict(done)

    async def _abort_quietly(self, full: str, upload_id: str) -> None:
        try:
            await self._mp_abort(full, upload_id)
        except StorageError:
            pass

    async def get_bytes(self, key: str) -> bytes:
        return await read_all(self.get(key))

    async def stat(self, key: str) -> ObjectInfo:
        return await self._stat_full(self.full_key(key))

    async def delete_prefix(self, prefix: str) -> int:
        objs = await self.list(prefix)
        await self._delete_many([self.full_key(o.key) for o in objs])
        return len(objs)

    async def probe(self) -> None:
        """Write a small object, read it back, delete it: the storage is reachable and writable."""
        await probe(self)

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    # -- primitives a backend provides -----------------------------------------------------
    @abstractmethod
    async def put_bytes(self, key: str, data: bytes) -> None: ...

    @abstractmethod
    def get(self, key: str, *, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]: ...

    @abstractmethod
    async def _stat_full(self, full: str) -> ObjectInfo:
        """ObjectInfo with the *relative* key; raises ObjectNotFound."""

    @abstractmethod
    async def list(self, prefix: str) -> list[ObjectInfo]: ...

    @abstractmethod
    async def list_dirs(self, prefix: str) -> list[str]: ...

    @abstractmethod
    async def delete(self, key: str) -> None: ...

    @abstractmethod
    async def _delete_many(self, fulls: list[str]) -> None: ...

    @abstractmethod
    async def abort_uploads(self, prefix: str) -> int: ...

    @abstractmethod
    async def close(self) -> None: ...

    # multipart (not needed by backends that override put)
    async def _put_single(self, full: str, data: bytes) -> None:
        raise NotImplementedError

    async def _mp_create(self, full: str) -> str:
        raise NotImplementedError

    async def _mp_upload_part(self, full: str, upload_id: str, n: int, data: bytes) -> dict[str, Any]:
        """Upload part ``n``; returns at least {"etag": ...} (plus backend extras, e.g. crc64)."""
        raise NotImplementedError

    async def _mp_list_parts(self, full: str, upload_id: str) -> dict[int, dict[str, Any]] | None:
        """{n: {"etag", "size", ...}} of an upload, or None if the upload does not exist."""
        raise NotImplementedError

    async def _mp_complete(self, full: str, upload_id: str, parts: list[dict[str, Any]]) -> None:
        raise NotImplementedError

    async def _mp_abort(self, full: str, upload_id: str) -> None:
        raise NotImplementedError

    # -- capabilities ----------------------------------------------------------------------
    # A store's own limits (brsm.store_limits): every part but the last at least MIN_PART_SIZE, at
    # most MAX_PART, at most MAX_PARTS parts. A backend without multipart uploads sets
    # ``multipart = False``; one that signs URLs (S3, OSS) sets ``signs_urls = True``.
    multipart = True
    signs_urls = False
    MIN_PART_SIZE = 1

    def properties(self) -> StorageProperties:
        if not self.multipart:
            return StorageProperties()
        return StorageProperties(multipart=True, signs_urls=self.signs_urls, part_size=self.part_size,
                                 min_part_size=self.MIN_PART_SIZE, max_part_size=MAX_PART,
                                 max_parts=MAX_PARTS)

    def _refuse(self, what: str) -> None:
        if not self.multipart:
            raise NotImplementedError(f"{self.scheme} storage has no multipart uploads: no {what}")

    # -- an upload whose parts a host sends, on URLs brsm signs: the direct data path ----------
    # The URLs carry a signature: never journaled, logged or printed.
    async def begin_upload(self, key: str) -> str:
        self._refuse("begin_upload")
        return await self._mp_create(self.full_key(key))

    async def uploaded_parts(self, key: str, upload_id: str) -> dict[int, dict[str, Any]] | None:
        self._refuse("uploaded_parts")
        return await self._mp_list_parts(self.full_key(key), upload_id)

    async def finish_upload(self, key: str, upload_id: str, parts: list[dict[str, Any]]) -> None:
        """``parts``: [{"n", "etag", "size"}] in order, as the host reported them."""
        self._refuse("finish_upload")
        await self._mp_complete(self.full_key(key), upload_id, parts)

    async def abort_upload(self, key: str, upload_id: str) -> None:
        self._refuse("abort_upload")
        await self._mp_abort(self.full_key(key), upload_id)

    async def part_url(self, key: str, upload_id: str, n: int, md5: str, expires: int) -> str:
        """A URL that lets its holder PUT part ``n`` (with exactly that Content-MD5) for ``expires`` s."""
        raise NotImplementedError(f"{self.scheme} storage signs no URLs")

    async def get_url(self, key: str, expires: int) -> str:
        """A URL that lets its holder GET (ranges of) the object for ``expires`` s."""
        raise NotImplementedError(f"{self.scheme} storage signs no URLs")


async def probe(storage: Any) -> None:
    """Backup preflight: write a small probe object, read it back, delete it (any Storage)."""
    key = f"{PROBE_PREFIX}{uuid.uuid4().hex}"
    data = b"brsm probe " + key.encode()
    await storage.put_bytes(key, data)
    try:
        got = await storage.get_bytes(key)
        if got != data:
            raise StorageError(f"{storage.uri}: the probe object read back different bytes", permanent=True)
    finally:
        await storage.delete(key)
