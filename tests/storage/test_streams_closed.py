"""A put that opened its stream (from a ByteSource) closes it, whether it finished or failed.

Left half read, an async generator is closed later by the event loop in a task of its own, which
outlives the put: the backup campaign saw such tasks ("async_generator_athrow") between drives. A
caller's plain stream stays the caller's to close.
"""
from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from brsm.adapters.storage import open_storage
from brsm.adapters.storage.memory import MemoryStorage
from brsm.errors import StorageError


class Opened:
    """A ByteSource that notes whether each stream it opened ran its cleanup."""

    def __init__(self, data: bytes, chunk: int = 4) -> None:
        self.data, self.chunk = data, chunk
        self.closed: list[bool] = []

    def open(self, offset: int = 0) -> AsyncIterator[bytes]:
        i = len(self.closed)
        self.closed.append(False)

        async def gen() -> AsyncIterator[bytes]:
            try:
                for at in range(offset, len(self.data), self.chunk):
                    yield self.data[at:at + self.chunk]
            finally:
                self.closed[i] = True
        return gen()


@pytest.fixture(params=["memory", "memory-multipart", "local"])
async def store(request, tmp_path):
    if request.param == "local":
        st = open_storage(f"local://{tmp_path}", retry=False)
    else:
        st = MemoryStorage(part_size=8, multipart_threshold=8 if request.param == "memory-multipart" else 1 << 20)
    try:
        yield st
    finally:
        await st.close()


async def test_a_put_that_fails_midway_closes_the_stream_it_opened(store):
    src = Opened(b"x" * 40)
    with pytest.raises((StorageError, ValueError)):
        await store.put("k", src, 20)  # the stream is longer than declared: refused part way through it
    assert src.closed == [True], "the half-read stream was left for the event loop to close"


async def test_a_put_that_finishes_closes_the_stream_it_opened(store):
    src = Opened(b"y" * 40)
    got = await store.put("k", src, 40)
    assert got.size == 40 and src.closed == [True]


async def test_a_callers_plain_stream_is_not_closed_by_the_put(store):
    closed = []

    async def plain() -> AsyncIterator[bytes]:
        try:
            yield b"z" * 40
            yield b"more than declared"
        finally:
            closed.append(True)
    stream = plain()
    with pytest.raises((StorageError, ValueError)):
        await store.put("k", stream, 40)
    assert closed == [], "the caller's stream was closed by the put"
    await stream.aclose()
    assert closed == [True]
