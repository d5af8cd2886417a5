"""The steps of one local put, each on the file system: a temp file beside the key, blocks written
and read back, the writer task fed and stopped, and the rename with the directory fsynced that
makes the object visible whole or not at all."""
from __future__ import annotations

import asyncio
import errno
import os
import uuid
from pathlib import Path
from typing import Any

from brsm.errors import StorageError

from .streams import Source

TMP_MARK = ".brsm-tmp."
_PERMANENT = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR,
              errno.EISDIR, errno.ENAMETOOLONG, errno.EINVAL, errno.ENOENT, errno.EEXIST, errno.ENOTEMPTY}


def os_error(what: str, e: OSError) -> StorageError:
    permanent = e.errno in _PERMANENT
    hint = None
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        hint = "the backup file system is full: free space or choose another --storage"
    elif e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = "brsm needs write access to the storage directory"
    return StorageError(f"{what}: {e.strerror or e}", permanent=permanent, hint=hint)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


async def open_temp(key: str, path: Path, resumed: tuple[Path, int, Any] | None) -> tuple[Path, int, int, Any]:
    """(temp file, its descriptor positioned at the offset, offset, hash of the prefix): the resumed
    temp file, or a new one beside ``path``."""
    try:
        if resumed is not None:
            tmp, offset, prefix = resumed
            fd = await asyncio.to_thread(os.open, tmp, os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
            await asyncio.to_thread(os.lseek, fd, offset, os.SEEK_SET)
        else:
            tmp, offset, prefix = path.parent / f"{TMP_MARK}{path.name}.{uuid.uuid4().hex[:12]}", 0, None
            fd = await asyncio.to_thread(os.open, tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                                         | os.O_CLOEXEC, 0o644)
    except OSError as e:
        raise os_error(f"{key}: cannot create a temp file", e) from e
    return tmp, fd, offset, prefix


async def feed(src: Source, queue: asyncio.Queue[list[bytes] | None], writer: asyncio.Task, block_size: int) -> None:
    """Hand the stream's blocks to the writer task, then the end; raise the writer's error."""
    try:
        async for pieces in src.coalesced(block_size):
            if writer.done():
                break  # the writer failed: its error is raised below
            await queue.put(pieces)
        src.check_size()
    finally:
        if not writer.done():
            await queue.put(None)
        await asyncio.wait({writer})
    writer.result()


async def stop_writer(writer: asyncio.Task) -> None:
    if not writer.done():
        writer.cancel()
        await asyncio.wait({writer})
    if not writer.cancelled():
        # the writer failed too (ENOSPC while this put was being cancelled): retrieve its error,
        # or asyncio prints "Task exception was never retrieved" and a traceback at exit
        writer.exception()


class ReadBack:
    """Writes blocks at the end of the temp file, then reads each back and compares it with what was
    written. Byte-equal to the stream means the stored file's SHA-256 is the stream's: the check costs
    a read and a memcmp instead of a second SHA-256 pass over every byte."""

    def __init__(self, path: Path, offset: int = 0) -> None:
        self.path = path
        self.offset = offset
        self.mismatch: int | None = None  # first offset where the file differs from the stream

    def write(self, fd: int, pieces: list[bytes]) -> None:
        start = self.offset
        views = [memoryview(p) for p in pieces]
        total = sum(len(v) for v in views)
        while views:
            n = os.writev(fd, views[:1024])
            while n and views:
                if n >= len(views[0]):
                    n -= len(views[0])
                    views.pop(0)
                else:
                    views[0] = views[0][n:]
                    n = 0
        self.offset += total
        rfd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)  # the temp file, never a link
        try:
            pos = start
            for p in pieces:
                got = os.pread(rfd, len(p), pos)
                if got != p and self.mismatch is None:
                    if len(got) < len(p):
                        raise OSError(errno.EIO, f"{self.path}: short read-back at {pos + len(got)}")
                    self.mismatch = pos + next(i for i in range(len(p)) if got[i] != p[i])
                pos += len(p)
        finally:
            os.close(rfd)


def close_quietly(fd: int) -> None:
    if fd >= 0:
        try:
            os.close(fd)
        except OSError:
            pass


def discard(fd: int, tmp: Path) -> None:
    if fd >= 0:
        try:
            os.close(fd)
        except OSError:
            pass
    unlink_quietly(tmp)


def commit(tmp: Path, path: Path) -> None:
    os.replace(tmp, path)
    fsync_dir(path.parent)


def unlink_quietly(p: Path) -> None:
    try:
        p.unlink()
    except OSError:
        pass
