"""What every storage backend shares: key layout under the prefix (what a key may be is checked in
``keys``), stream re-blocking and hashing, and the multipart put (resume, bounded concurrency,
journaling callback) written once.

A backend subclasses :class:`BaseStorage` and implements a handful of primitives; S3, OSS and
the in-memory fake go through the same :meth:`BaseStorage.put`, so the resume logic is tested
once for all of them. The local backend overrides ``put`` (temp file + fsync + rename).
"""
from __future__ import annotations

import asyncio
import hashlib
import math
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import aclosing
from typing import Any

from brsm.errors import StorageError
from brsm.ports import ObjectInfo, PutResult, StorageProperties, UploadState, reopenable, stream_of
from brsm.store_limits import MAX_PART, MAX_PARTS

from .copy_within import COPY_ONE_REQUEST, copy_object
from .keys import check_key, check_prefix, normalize_root_prefix
from .part_window import PartWindow
from .probe import probe
from .put_group import put_each
from .streams import ByteBudget, SizeMismatch, Source, read_all

KiB = 1 << 10
MiB = 1 << 20
DEFAULT_BLOCK_SIZE = 4 * MiB  # reads and local writes
DEFAULT_PART_SIZE = 8 * MiB
DEFAULT_MULTIPART_THRESHOLD = 16 * MiB
DEFAULT_PART_CONCURRENCY = 4
DEFAULT_MEMORY_BUDGET = 32 * MiB  # part buffers of all puts of one storage together


def norm_etag(etag: str | None) -> str:
    return (etag or "").strip().strip('"').lower()


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
        src = Source(key, stream_of(chunks), size, owned=reopenable(chunks))
        try:
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
                await self._put_owned_or_resumable(full, src, state, on_part)
        finally:
            await src.close()
        return PutResult(size=src.count, sha256=src.sha256)

    async def put_many(self, items: Sequence[tuple[str, bytes]]) -> list[PutResult]:
        """Each object by the single-object path, a few at a time (``put_group.put_each``): an object
        store makes each durable as it answers, so there is nothing to share between them."""
        return await put_each(self, items)

    async def _put_owned_or_resumable(self, full: str, src: Source, state: UploadState | None,
                                      on_part: Callable[[UploadState], Any] | None) -> None:
        """A multipart put. Given a ``state``, its caller keeps (journals) the upload to resume it; without
        one nobody can, so an upload that failed is aborted here: a retry starts another, and the first
        would otherwise stay in the bucket for good (UPLOADED aborts its backup's open uploads before the
        manifest's own put)."""
        if state is not None:
            await self._put_multipart(full, src, state, on_part)
            return
        own = UploadState()
        try:
            await self._put_multipart(full, src, own, on_part)
        except Exception:
            if own.upload_id is not None:
                await self._abort_quietly(full, own.upload_id)
            raise

    async def _put_multipart(self, full: str, src: Source, state: UploadState,
                             on_part: Callable[[UploadState], Any] | None) -> None:
        done = await self._resume_point(full, state, src.size)
        if state.upload_id is None:
            state.upload_id = await self._mp_create(full)
            state.parts = []
            state.part_size = self.choose_part_size(src.size)
            done = {}
        window = PartWindow(self, full, state, on_part)
        try:
            n = await self._send_parts(src, state, done, window)
        except BaseException as e:
            # let parts in flight land (they are journaled), then report the first failure;
            # on cancellation, stop them instead
            await window.settle(cancel=isinstance(e, asyncio.CancelledError))
            if isinstance(e, SizeMismatch):  # the parts hold other bytes than declared: start over
                await self._abort_quietly(full, window.upload_id)
                state.upload_id, state.parts, state.part_size = None, [], 0
            raise
        await window.drain()
        await self._complete_upload(full, src, state, n)

    async def _send_parts(self, src: Source, state: UploadState, done: dict[int, dict],
                          window: PartWindow) -> int:
        """Read the stream part by part and start each part's upload, skipping the parts the store
        already holds with the same bytes; the number of parts."""
        n = 0
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
                raise StorageError(f"{src.key}: more than {MAX_PARTS} parts", permanent=True)
            old = done.pop(n, None)
            if old is not None:
                if norm_etag(old["etag"]) == hashlib.md5(block).hexdigest() and old["size"] == len(block):
                    del block
                    await self.budget.release(held)
                    continue  # already stored, same bytes: not sent again
            await window.start(n, block, held)
            del block
        src.check_size()
        return n

    async def _complete_upload(self, full: str, src: Source, state: UploadState, n: int) -> None:
        """Complete the upload once its parts cover 1..n, and check the object has the size sent."""
        key = src.key
        if n == 0 or [p["n"] for p in state.parts] != list(range(1, n + 1)):
            raise StorageError(f"{key}: parts {[p['n'] for p in state.parts]} do not cover 1..{n}")
        await self._mp_complete(full, state.upload_id, list(state.parts))
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

    copy_one_request = COPY_ONE_REQUEST  # bigger objects are copied in parts (tests lower it)

    async def copy(self, src: str, dst: str) -> ObjectInfo:
        return await copy_object(self, src, dst)  # inside the store: see copy_within

    async def stat(self, key: str) -> ObjectInfo:
        return await self._stat_full(self.full_key(key))

    async def delete_prefix(self, prefix: str) -> int:
        """A batch of keys at a time, each listed afresh after the last deleted (never listed whole)."""
        n, after, batch_size = 0, "", 1000
        while True:
            batch: list[str] = []
            async with aclosing(self.iter_objects(prefix, after=after)) as objs:
                async for o in objs:
                    batch.append(o.key)
                    if len(batch) >= batch_size:
                        break
            if batch:
                await self._delete_many([self.full_key(k) for k in batch])
                n, after = n + len(batch), batch[-1]
            if len(batch) < batch_size:
                return n

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
    def iter_objects(self, prefix: str, *, page: int = 1000, after: str = "") -> AsyncIterator[ObjectInfo]:
        """In strictly increasing key order, ``page`` at a time (see brsm.ports.Storage)."""

    def page_size(self, page: int) -> int:
        """Objects per listing request: ``page``, within the store's limit and the configured size."""
        return max(1, min(page, self.list_page_size))

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
            return StorageProperties(server_side_copy=True)
        return StorageProperties(multipart=True, signs_urls=self.signs_urls, part_size=self.part_size,
                                 min_part_size=self.MIN_PART_SIZE, max_part_size=MAX_PART, max_parts=MAX_PARTS,
                                 multipart_threshold=self.multipart_threshold, server_side_copy=True)

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
