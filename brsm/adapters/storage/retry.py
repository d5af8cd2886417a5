"""Retries as a wrapper, applied once around a backend (restic's ``backend/retry``).

Transient ``StorageError`` (permanent=False) is retried with capped exponential backoff and
jitter; permanent ones (auth, missing bucket, ObjectNotFound, quota) are raised at once. The
SDKs' own retries are switched off in the adapters, so there is exactly one retry layer.

Streams are the subtle part:
* ``get`` resumes after a mid-stream failure from the byte it reached (a new range request);
* ``put`` of a ``ByteSource`` (a file that can be opened again) is retried like any other verb, with
  the journaled ``UploadState`` so stored parts are kept;
* ``put`` of a plain stream can only be retried if the stream can be replayed: objects up to ``replay_limit``
  bytes are teed into memory as they pass and replayed; for bigger ones the call is retried
  only if it failed before the stream was touched. Otherwise the error reaches the caller,
  which re-runs ``put`` with a fresh stream and the journaled ``UploadState`` (parts already
  stored are not sent again).
"""
from __future__ import annotations

import asyncio
import random
from contextlib import aclosing
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from brsm.errors import StorageError
from brsm.ports import ObjectInfo, PutResult, UploadState, reopenable

T = TypeVar("T")


def _gave_up(e: StorageError, exhausted: bool) -> StorageError:
    """Mark an error RetryStorage retried as often as it may: the one retry layer (issue 14) is this
    one, so the transfer loop does not retry it again (brsm.workflows.transfer._transient)."""
    if exhausted:
        e.exhausted = True
    return e


class RetryStorage:
    """``RetryStorage(inner)`` is a Storage; every verb retries transient errors."""

    def __init__(self, inner: Any, *, attempts: int = 5, base_delay: float = 0.25, max_delay: float = 8.0,
                 replay_limit: int = 16 << 20, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 on_retry: Callable[[str, int, StorageError, float], None] | None = None) -> None:
        self.inner = inner
        self.attempts = max(1, attempts)
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.replay_limit = replay_limit
        self._sleep = sleep
        self.on_retry = on_retry
        self.retries = 0  # total retries done: for tests and diagnostics

    @property
    def uri(self) -> str:
        return self.inner.uri

    def __getattr__(self, name: str) -> Any:  # backend extras (requests, inject_fault, ...)
        return getattr(self.inner, name)

    def __repr__(self) -> str:
        return f"<RetryStorage {self.inner!r}>"

    def delay(self, attempt: int) -> float:
        """Backoff before retry number ``attempt`` (1-based): full jitter in the upper half."""
        d = min(self.max_delay, self.base_delay * (2 ** (attempt - 1)))
        return d * (0.5 + random.random() / 2)

    async def _backoff(self, what: str, attempt: int, e: StorageError) -> None:
        d = self.delay(attempt)
        self.retries += 1
        if self.on_retry is not None:
            self.on_retry(what, attempt, e, d)
        await self._sleep(d)

    async def _run(self, what: str, fn: Callable[[], Awaitable[T]]) -> T:
        attempt = 0
        while True:
            try:
                return await fn()
            except StorageError as e:
                attempt += 1
                if e.permanent or attempt >= self.attempts:
                    raise _gave_up(e, attempt >= self.attempts)
                await self._backoff(what, attempt, e)

    # -- verbs -----------------------------------------------------------------------------
    async def put(self, key: str, chunks: AsyncIterator[bytes], size: int, *,
                  state: UploadState | None = None, on_part: Any = None) -> PutResult:
        if reopenable(chunks):  # a ByteSource: every attempt opens the file anew (no tee)
            return await self._run(f"put {key}", lambda: self.inner.put(key, chunks, size, state=state,
                                                                       on_part=on_part))
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
                    # source anew, may retry (not exhausted); a spent budget is final (exhausted)
                    raise _gave_up(e, not touched and attempt >= self.attempts)
                await self._backoff(f"put {key}", attempt, e)

    async def _put_replayable(self, key: str, chunks: AsyncIterator[bytes], size: int,
                              state: UploadState | None, on_part: Any) -> PutResult:
        seen: list[bytes] = []
        it = chunks.__aiter__()
        exhausted = False

        async def stream() -> AsyncIterator[bytes]:
            nonlocal exhausted
            for c in list(seen):  # replay what an earlier attempt consumed
                yield c
            while not exhausted:
                try:
                    c = await it.__anext__()
                except StopAsyncIteration:
                    exhausted = True
                    return
                c = bytes(c)
                seen.append(c)
                yield c
        return await self._run(f"put {key}", lambda: self.inner.put(key, stream(), size, state=state,
                                                                   on_part=on_part))

    async def put_bytes(self, key: str, data: bytes) -> None:
        return await self._run(f"put_bytes {key}", lambda: self.inner.put_bytes(key, data))

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
                    raise _gave_up(e, attempt >= self.attempts)
                await self._backoff(f"get {key}@{pos}", attempt, e)

    async def get_bytes(self, key: str) -> bytes:
        from .base import read_all

        return await read_all(self.get(key))

    async def stat(self, key: str) -> ObjectInfo:
        return await self._run(f"stat {key}", lambda: self.inner.stat(key))

    async def list(self, prefix: str) -> list[ObjectInfo]:
        return await self._run(f"list {prefix}", lambda: self.inner.list(prefix))

    async def list_dirs(self, prefix: str) -> list[str]:
        return await self._run(f"list_dirs {prefix}", lambda: self.inner.list_dirs(prefix))

    async def delete(self, key: str) -> None:
        return await self._run(f"delete {key}", lambda: self.inner.delete(key))

    async def delete_prefix(self, prefix: str) -> int:
        # after a failure the retry re-lists: the count then misses what earlier attempts removed
        return await self._run(f"delete_prefix {prefix}", lambda: self.inner.delete_prefix(prefix))

    async def abort_uploads(self, prefix: str) -> int:
        return await self._run(f"abort_uploads {prefix}", lambda: self.inner.abort_uploads(prefix))

    async def probe(self) -> None:
        """Write, read back and delete a probe object (backup preflight), with retries."""
        from .base import probe
        await probe(self)

    async def close(self) -> None:
        await self.inner.close()
