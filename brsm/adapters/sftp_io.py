"""Single SFTP read and write requests, without asyncssh's parallel reader and writer: the SSH
adapter keeps its own window of requests in flight and wants each reply as it comes."""
from __future__ import annotations

import asyncssh

SFTP_REQUEST = 256 << 10  # largest single read request (OpenSSH serves up to 256 KiB per read)
READ_AHEAD_BYTES = 4 << 20  # bytes of read requests in flight per open file (more bought nothing, see docs/performance.md)
WRITE_AHEAD_BYTES = 4 << 20  # bytes of write requests in flight per file


async def read_at(f: asyncssh.SFTPClientFile, pos: int, n: int) -> bytes:
    """One SFTP read request of ``n`` (<= read_len) bytes at ``pos``.

    asyncssh's ``SFTPClientFile.read`` runs even a single request through its parallel reader, which
    re-assembles into a bytearray and copies that into bytes: two extra copies of every byte and an
    extra task, on the event loop that also does all SSH packet work. The file's request handler
    returns the server's reply as it is. A short reply (allowed by the protocol) is completed with
    further requests; the end of the file ends the loop.
    """
    handler, handle = getattr(f, "_handler", None), getattr(f, "_handle", None)
    if handler is None or handle is None:  # another asyncssh: the public, slower path
        return await f.read(n, pos)
    parts: list[bytes] = []
    got = 0
    while got < n:
        try:
            data, _ = await handler.read(handle, pos + got, n - got)
        except asyncssh.SFTPEOFError:
            break
        if not data:
            break
        parts.append(data)
        got += len(data)
    return parts[0] if len(parts) == 1 else b"".join(parts)


async def write_at(f: asyncssh.SFTPClientFile, pos: int, data: bytes) -> None:
    """One SFTP write request (``data`` <= write_len), without asyncssh's parallel writer (see read_at)."""
    handler, handle = getattr(f, "_handler", None), getattr(f, "_handle", None)
    if handler is None or handle is None:
        await f.write(data, pos)
        return
    await handler.write(handle, pos, data)
