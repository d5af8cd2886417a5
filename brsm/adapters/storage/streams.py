"""The bytes of one put on their way to a store: the caller's stream counted, hashed and cut into
blocks (Source), network pieces coalesced (reblock), Content-MD5 off the event loop, and the
memory budget every put of a storage shares."""
from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import AsyncIterator
from typing import Any

from brsm.errors import StorageError

KiB = 1 << 10
# hashing a block this large in a worker thread (hashlib drops the GIL) beats blocking the loop
_HASH_IN_THREAD = 256 * KiB


class SizeMismatch(StorageError):
    """The stream did not have the declared number of bytes (permanent: the source changed)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, permanent=True,
                         hint="the source changed while it was read, or the declared size is wrong")


class Source:
    """The caller's byte stream, consumed once from offset 0: counts, hashes (SHA-256), enforces the
    declared size and re-blocks into fixed-size pieces.

    The hash is taken per yielded block or group, not per incoming chunk, and big blocks are hashed
    in a worker thread (hashlib drops the GIL): the event loop, which also runs every SSH packet, never
    waits on SHA-256. With ``defer_hash`` the consumer calls :meth:`absorb` itself (e.g. in the thread
    that writes the block).
    """

    def __init__(self, key: str, chunks: AsyncIterator[bytes], size: int, *, defer_hash: bool = False,
                 start: int = 0, hasher: Any = None, owned: bool = False) -> None:
        self.key = key
        self._it = chunks.__aiter__()
        self._owned = owned  # the put opened this stream (from a ByteSource): the put closes it
        self.size = size
        self.count = start  # a resumed stream starts at ``start``; ``hasher`` holds the prefix's hash
        self._h = hasher if hasher is not None else hashlib.sha256()
        self._defer_hash = defer_hash
        self._carry: list[bytes] = []  # bytes read past the last block (next_block)

    async def close(self) -> None:
        """Close the stream when the put opened it, done or failed: an async generator left half read
        is otherwise closed later by the event loop, in a task of its own that outlives the put. A
        caller's plain stream stays the caller's."""
        aclose = getattr(self._it, "aclose", None)
        if self._owned and aclose is not None:
            try:
                await aclose()
            except Exception:  # noqa: BLE001 - the put's own outcome (or error) is what the caller needs
                pass

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
