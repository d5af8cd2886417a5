"""Retries as a wrapper, applied once around a backend (restic's ``backend/retry``): the one rule for
a request brsm makes of the store.

Transient ``StorageError`` (permanent=False) is retried with capped exponential backoff and
jitter; permanent ones (auth, missing bucket, ObjectNotFound, quota) are raised at once. The
SDKs' own retries are switched off in the adapters, so there is exactly one retry layer. Every
verb of :class:`brsm.ports.Storage` is implemented here, one by one: a verb added to the port and
not here fails the contract suite rather than going through unretried. What a test needs of the
backend beneath (``requests``, ``inject_fault``) it reaches through ``inner``.

A transient error that comes out of this wrapper was retried as often as it may be, with one
exception, marked ``resend``: a failure this layer could not retry because the bytes must come
from their source again (see ``put``). Only the caller who can open the source anew retries that.

Streams are the subtle part:
* ``get`` resumes after a mid-stream failure from the byte it reached (a new range request);
* ``put`` of a ``ByteSource`` (a file that can be opened again) is retried like any other verb, with
  the journaled ``UploadState`` so stored parts are kept;
* ``put`` of a plain stream can only be retried if the stream can be replayed: objects up to ``replay_limit``
  bytes are teed into memory as they pass and replayed; for bigger ones the call is retried
  only if it failed before the stream was touched. Otherwise the error reaches the caller marked
  ``resend``, who re-runs ``put`` with a fresh stream and the journaled ``UploadState`` (parts already
  stored are not sent again).
"""
from __future__ import annotations

import asyncio
from contextlib import aclosing
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

from brsm.errors import StorageError
from brsm.retries import STORE_REQUEST, Backoff
from brsm.ports import ObjectInfo, PutResult, Storage, StorageProperties, UploadState, reopenable

from .probe import probe

T = TypeVar("T")


class RetryStorage:
    """``RetryStorage(inner)`` is a Storage; every verb retries transient errors."""

    def __init__(self, inner: Storage, *, attempts: int = STORE_REQUEST.attempts, base_delay: float = STORE_REQUEST.first,
                 max_delay: float = STORE_REQUEST.cap, replay_limit: int = 16 << 20,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 on_retry: Callable[[str, int, StorageError, float], None] | None = None) -> None:
        self.inner = inner  # the backend itself: what tests ask of it (requests, inject_fault) goes here
        self.rule = Backoff(max(1, attempts), base_delay, max_delay, jitter=True)
        self.replay_limit = replay_limit
        self._sleep = sleep
        self.on_retry = on_retry
        self.retries = 0  # total retries done: for tests and diagnostics

    @property
    def attempts(self) -> int:
        return self.rule.attempts

    @property
    def uri(self) -> str:
        return self.inner.uri

    def properties(self) -> StorageProperties:
        return self.inner.properties()

    def __repr__(self) -> str:
        return f"<RetryStorage {self.inner!r}>"

    def delay(self, attempt: int) -> float:
        """Backoff before retry number ``attempt`` (1-based): full jitter in the upper half."""
        return self.rule.delay(attempt)

    async def _backoff(self, what: str, attempt: int, e: StorageError) -> None:
        d = self.delay(attempt)
        self.retries += 1
        if self.on_retry is not None:
            self.on_retry(what, attempt, e, d)
        await self._sleep(d)

    async def _run(self, what: str, fn: Callable[[], Awaitable[T]], *, reopens: bool = False) -> T:
        """``fn`` until it succeeds, fails for good, or its attempts are spent. An error that asks for
        the bytes again (``resend``: the store dropped the upload) is retried only by a call that
        sends them again itself (``reopens``: a put); for any other the same request cannot help."""
        attempt = 0
        while True:
            try:
                return await fn()
            except StorageError as e:
                attempt += 1
                if e.permanent or (e.resend and not reopens) or attempt >= self.attempts:
                    raise
                await self._backoff(what, attempt, e)

    # -- verbs -----------------------------------------------------------------------------
    async def put(self, key: str, chunks: AsyncIterator[bytes], size: int, *,
                  state: UploadState | None = None, on_part: Any = None) -> PutResult:
        if reopenable(chunks):  # a ByteSource: every attempt opens the file anew (no tee)
            return await self._run(f"put {key}", lambda: self.inner.put(key, chunks, size, state=state,
                                                                       on_part=on_part), reopens=True)
        if size <= self.replay_limit:
            return await self._put_replayable(key, chunks, size, state, on_part)
        touched = False

        async def watched() -> AsyncIterator[bytes]:
            nonlocal touched
            async for c in chunks:
                touched = True
                yield c
        attempt = 0
        while True:
            try:
                return await self.inner.put(key, watched(), size, state=state, on_part=on_part)
            except StorageError as e:
                attempt += 1
                if e.permanent or touched or attempt >= self.attempts:
                    # a consumed stream cannot be sent again from here: the caller, who can open the
                    # source anew, may (resend); a spent budget is final
                    if touched and not e.permanent:
                        e.resend = True
                    raise
                await self._backoff(f"put {key}", attempt, e)

    async def _put_replayable(self, key: str, chunks: AsyncIterator[bytes], size: int,
                              state: UploadState | None, on_part: Any) -> PutResult:
        seen: list[bytes] = []
        it = chunks.__aiter__()
        ended = False

        async def stream() -> AsyncIterator[bytes]:
            nonlocal ended
            for c in list(seen):  # replay what an earlier attempt consumed
                yield c
            while not ended:
                try:
                    c = await it.__anext__()
                except StopAsyncIteration:
                    ended = True
                    return
                c = bytes(c)
                seen.append(c)
                yield c
        return await self._run(f"put {key}", lambda: self.inner.put(key, stream(), size, state=state,
                                                                   on_part=on_part), reopens=True)

    async def put_many(self, items: Sequence[tuple[str, bytes]]) -> list[PutResult]:
        # the bytes are in memory: every attempt sends the whole group again (a put overwrites, so
        # what an earlier attempt stored is stored again, the same), an upload the store dropped too
        items = list(items)
        first = items[0][0] if items else "-"
        return await self._run(f"put_many {first} (+{max(0, len(items) - 1)})",
                               lambda: self.inner.put_many(items), reopens=True)

    async def put_bytes(self, key: str, data: bytes) -> None:
        return await self._run(f"put_bytes {key}", lambda: self.inner.put_bytes(key, data))

    async def copy(self, src: str, dst: str) -> ObjectInfo:
        # a copy in parts that failed was aborted: the next attempt starts it over (reopens)
        return await self._run(f"copy {src} -> {dst}", lambda: self.inner.copy(src, dst), reopens=True)

    async def get(self, key: str, *, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        pos = offset
        attempt = 0
        while True:
            left = None if length is None else length - (pos - offset)
            if left is not None and left <= 0 and pos > offset:
                return
            try:
                async with aclosing(self.inner.get(key, offset=pos, length=left)) as blocks:
                    async for block in blocks:
                        pos += len(block)
                        attempt = 0  # progress was made: a fresh budget for the next failure
                        yield block
                return
            except StorageError as e:
                attempt += 1
                if e.permanent or attempt >= self.attempts:
                    raise
                await self._backoff(f"get {key}@{pos}", attempt, e)

    async def get_bytes(self, key: str) -> bytes:
        from .streams import read_all

        return await read_all(self.get(key))

    async def stat(self, key: str) -> ObjectInfo:
        return await self._run(f"stat {key}", lambda: self.inner.stat(key))

    async def list(self, prefix: str) -> list[ObjectInfo]:
        return await self._run(f"list {prefix}", lambda: self.inner.list(prefix))

    async def iter_objects(self, prefix: str, *, page: int = 1000, after: str = "") -> AsyncIterator[ObjectInfo]:
        """The listing, a page failing transiently asked again from after the last key yielded (a
        fresh budget after each key: progress was made). A key not after the one before it breaks the
        order every reader merges by: refused, never passed on."""
        last = after
        attempt = 0
        while True:
            try:
                async with aclosing(self.inner.iter_objects(prefix, page=page, after=last)) as objs:
                    async for o in objs:
                        if last and not o.key > last:
                            raise StorageError(f"{self.uri}: the listing of {prefix!r} gave {o.key!r} after "
                                               f"{last!r}: out of key order", permanent=True,
                                               hint="the store lists keys out of order; report this")
                        last = o.key
                        attempt = 0
                        yield o
                return
            except StorageError as e:
                attempt += 1
                if e.permanent or attempt >= self.attempts:
                    raise
                await self._backoff(f"list {prefix} after {last!r}", attempt, e)

    async def list_dirs(self, prefix: str) -> list[str]:
        return await self._run(f"list_dirs {prefix}", lambda: self.inner.list_dirs(prefix))

    async def delete(self, key: str) -> None:
        return await self._run(f"delete {key}", lambda: self.inner.delete(key))

    async def delete_prefix(self, prefix: str) -> int:
        # after a failure the retry re-lists: the count then misses what earlier attempts removed
        return await self._run(f"delete_prefix {prefix}", lambda: self.inner.delete_prefix(prefix))

    async def abort_uploads(self, prefix: str) -> int:
        return await self._run(f"abort_uploads {prefix}", lambda: self.inner.abort_uploads(prefix))

    # -- an upload whose parts a host sends (the direct data path) ---------------------------
    async def begin_upload(self, key: str) -> str:
        return await self._run(f"begin_upload {key}", lambda: self.inner.begin_upload(key))

    async def uploaded_parts(self, key: str, upload_id: str) -> dict[int, dict[str, Any]] | None:
        return await self._run(f"uploaded_parts {key}", lambda: self.inner.uploaded_parts(key, upload_id))

    async def finish_upload(self, key: str, upload_id: str, parts: list[dict[str, Any]]) -> None:
        return await self._run(f"finish_upload {key}", lambda: self.inner.finish_upload(key, upload_id, parts))

    async def abort_upload(self, key: str, upload_id: str) -> None:
        return await self._run(f"abort_upload {key}", lambda: self.inner.abort_upload(key, upload_id))

    # Signing is computed locally; only opening the SDK's client on first use can fail transiently.
    async def part_url(self, key: str, upload_id: str, n: int, md5: str, expires: int) -> str:
        return await self._run(f"part_url {key}", lambda: self.inner.part_url(key, upload_id, n, md5, expires))

    async def get_url(self, key: str, expires: int) -> str:
        return await self._run(f"get_url {key}", lambda: self.inner.get_url(key, expires))

    async def probe(self) -> None:
        """Write, read back and delete a probe object (backup preflight), with retries."""
        await probe(self)

    async def close(self) -> None:
        await self.inner.close()
