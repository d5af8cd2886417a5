"""The SSH adapter's pipelined SFTP transfers: a window of single requests (``sftp_io``) kept in
flight for one open file, read or written, so a link with latency stays busy.

Kept apart from ``SshHost``, which owns the connection, the file's opening and closing, the temp
name and the rename: here is only the window, and the rule that every request sent is awaited
before the transfer returns or raises (cancelling one would orphan asyncssh's inner request
tasks). ``guard`` is the host's translation of an SFTP error into a RemoteError naming the host.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncssh

from brsm.adapters.sftp_io import READ_AHEAD_BYTES, SFTP_REQUEST, WRITE_AHEAD_BYTES, read_at, write_at
from brsm.errors import RemoteError

Guard = Callable[[str, Awaitable[Any]], Awaitable[Any]]


async def read_pipelined(f: asyncssh.SFTPClientFile, path: str, *, host: str, offset: int, block_size: int,
                         guard: Guard) -> AsyncIterator[bytes]:
    """Yield the open file ``f`` from ``offset`` in chunks of at most ``block_size`` bytes (each SFTP
    read as it arrives: re-slicing would copy every byte on the event loop), in order, with reads
    pipelined: READ_AHEAD_BYTES worth of SFTP read requests (each of the server's maximum read
    length) are in flight at all times. Reads the file up to the size it had when opened
    (checkpoints are static); a file that shrank meanwhile is an error. ``f`` is the caller's to close."""
    pending: list[tuple[int, asyncio.Task]] = []
    try:
        size = (await guard(f"stat {path}", f.stat())).size or 0
        req = max(4096, min(f.read_len or SFTP_REQUEST, SFTP_REQUEST))
        depth = max(4, READ_AHEAD_BYTES // req)
        pos = offset

        def ahead() -> None:
            nonlocal pos
            while pos < size and len(pending) < depth:
                n = min(req, size - pos)
                # one request each (n <= read_len): no hidden sub-tasks left behind on errors
                pending.append((n, asyncio.ensure_future(read_at(f, pos, n))))
                pos += n

        ahead()
        while pending:
            n, task = pending[0]
            data = await guard(f"read {path}", task)
            pending.pop(0)
            if len(data) != n:  # the file shrank under us
                raise RemoteError(f"{host}: {path} ended early (it changed while being read)", host=host)
            ahead()
            if len(data) <= block_size:
                yield data  # as received: no copy on the event loop
            else:
                for i in range(0, len(data), block_size):
                    yield data[i:i + block_size]
    finally:
        # let requests in flight finish (cancelling would orphan asyncssh's inner request tasks)
        if pending:
            await asyncio.gather(*(t for _, t in pending), return_exceptions=True)


async def write_pipelined(f: asyncssh.SFTPClientFile, path: str, chunks: AsyncIterator[bytes], *,
                          guard: Guard) -> int:
    """Write ``chunks`` to the open file ``f`` (named ``path`` in errors) from its start, WRITE_AHEAD_BYTES
    worth of write requests in flight; the bytes written once every request has been answered. If
    ``chunks`` or a request raises, the requests in flight are awaited and the exception propagates
    unchanged. ``f`` (and ``chunks``) are the caller's to close."""
    written = 0
    pending: list[asyncio.Task] = []
    req = max(4096, min(f.write_len or SFTP_REQUEST, SFTP_REQUEST))
    depth = max(4, WRITE_AHEAD_BYTES // req)
    try:
        async for chunk in chunks:
            view = memoryview(chunk)
            for i in range(0, len(view), req):
                # one SFTP request per task (<= write_len): nothing hidden is left running on errors
                piece = bytes(view[i:i + req])
                pending.append(asyncio.ensure_future(write_at(f, written, piece)))
                written += len(piece)
                while len(pending) >= depth:
                    await guard(f"write {path}", pending.pop(0))
        while pending:
            await guard(f"write {path}", pending.pop(0))
        return written
    finally:
        if pending:  # let requests in flight finish (see read_pipelined)
            await asyncio.gather(*pending, return_exceptions=True)
