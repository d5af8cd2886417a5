"""_read_at completes short SFTP replies and stops at the end of the file (the server may return
fewer bytes than asked; OpenSSH rarely does, so a handler that always does stands in for it)."""
from __future__ import annotations

import asyncssh

from brsm.adapters.sftp_io import read_at as _read_at, write_at as _write_at

DATA = bytes(range(256)) * 40


class ShortHandler:
    def __init__(self, cap: int) -> None:
        self.cap, self.calls, self.written = cap, [], {}

    async def read(self, handle, offset, length):
        self.calls.append((offset, length))
        if offset >= len(DATA):
            raise asyncssh.SFTPEOFError("eof")
        return DATA[offset:offset + min(length, self.cap)], False

    async def write(self, handle, offset, data):
        self.written[offset] = data


class File:
    def __init__(self, handler) -> None:
        self._handler, self._handle = handler, b"h"


async def test_short_replies_are_completed():
    h = ShortHandler(cap=1000)
    assert await _read_at(File(h), 100, 4000) == DATA[100:4100]
    assert [c[0] for c in h.calls] == [100, 1100, 2100, 3100]


async def test_the_end_of_the_file_ends_the_read():
    h = ShortHandler(cap=100_000)
    assert await _read_at(File(h), len(DATA) - 10, 500) == DATA[-10:]


async def test_write_goes_to_the_handler():
    h = ShortHandler(cap=1)
    await _write_at(File(h), 7, b"abc")
    assert h.written == {7: b"abc"}
