"""A group of small objects put at once on a local file system, in one worker thread.

What a small file costs here is durability, not bytes: measured on a 2-core VM, 4 KiB files with
create + write + rename go at ~5,600/s, with an fsync of each file at ~700/s, with the directory's
fsync too at ~370/s. So a group pays the barrier once:

1. each object written to its own exclusively created temp file beside its key (O_EXCL|O_NOFOLLOW:
   nothing is written through a name brsm did not just create) and read back and compared;
2. ONE barrier for all of them: ``syncfs`` of each file system the group's directories are on
   (where the C library has no ``syncfs``, or the kernel refuses it, each temp file is fsynced);
3. each temp file renamed over its key, then each distinct directory fsynced once.

No object is visible before its bytes are durable, and none half-written. On an error the temp
files not yet renamed are removed; the objects renamed before it stay (whole): the caller treats the
group as not stored and puts each file again alone. Temp files are named like a single put's
(``TMP_MARK``), so list() never shows one and abort_uploads() removes what a crash leaves.
"""
from __future__ import annotations

import asyncio
import ctypes
import errno
import hashlib
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from brsm.errors import StorageError

from .local_write import TMP_MARK, fsync_dir, unlink_quietly


# Groups written at once. More threads do not make a file system create files faster here (the
# kernel's side of a create is most of the cost), but each of them takes the GIL back after every
# syscall, and the event loop's journal appends waited behind them: on a 2-core VM, 100,063 files,
# two runs each, 8 at once spent 7.0 s of a 39-43 s backup in journal appends, 2 at once 3.0 s,
# with the same wall time; 1 at once was 10 s slower (docs/performance.md).
GROUP_WRITERS = 2


def temp_for(path: Path) -> Path:
    """A fresh temp name beside ``path`` (created exclusively by the caller, never reused)."""
    return path.parent / f"{TMP_MARK}{path.name}.{uuid.uuid4().hex[:12]}"


def _load_syncfs() -> Any:
    try:
        f = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):  # not glibc/musl on Linux: no syncfs
        return None
    f.argtypes, f.restype = [ctypes.c_int], ctypes.c_int
    return f


_SYNCFS = _load_syncfs()


def syncfs(fd: int) -> bool:
    """Write out the whole file system ``fd`` is on and wait for it; False where there is no syncfs
    (the caller then fsyncs file by file)."""
    if _SYNCFS is None:
        return False
    if _SYNCFS(fd) != 0:
        e = ctypes.get_errno()
        if e in (errno.ENOSYS, errno.EPERM):  # no such call here (an old kernel, a seccomp filter)
            return False
        raise OSError(e, os.strerror(e))
    return True


def _sync_filesystems(dirs: list[Path]) -> bool:
    """``syncfs`` once per file system among ``dirs`` (a directory of the group may be a mount point
    of another one); False if any could not be synced that way."""
    seen: set[int] = set()
    for d in dirs:
        fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            dev = os.fstat(fd).st_dev
            if dev in seen:
                continue
            if not syncfs(fd):
                return False
            seen.add(dev)
        finally:
            os.close(fd)
    return True


def make_dir(root: Path, d: Path, within: Callable[[Path], bool]) -> None:
    """``d`` and its missing parents made, never through a symlink that leads out of the storage:
    the nearest existing ancestor is checked before anything is created, ``d`` again after."""
    root.mkdir(parents=True, exist_ok=True)  # the storage itself, as a single put makes it
    a = d
    while not os.path.lexists(a) and a != a.parent:
        a = a.parent
    if within(a):
        d.mkdir(parents=True, exist_ok=True)
    if not within(d):
        raise StorageError(f"{d}: a symlink leads this directory out of the storage: refused",
                           permanent=True, hint="the backup directory was tampered with; remove the link")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def write_group(root: Path, entries: list[tuple[Path, bytes]], within: Callable[[Path], bool]) -> list[str]:
    """Store every (path, bytes) as one group (see the module doc); their SHA-256s, in order.
    ``root``: the storage's directory; ``within(dir)``: the directory is the root or inside it."""
    dirs = list(dict.fromkeys(p.parent for p, _ in entries))
    for d in dirs:
        make_dir(root, d, within)
    temps: list[tuple[Path, Path]] = []  # (temp file, its key's path)
    renamed = 0
    barrier = _SYNCFS is not None
    try:
        digests = []
        for path, data in entries:
            tmp = temp_for(path)
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
            temps.append((tmp, path))
            try:
                _write_all(fd, data)
                if os.pread(fd, len(data) + 1, 0) != data:
                    raise StorageError(f"{path}: the written file reads back different bytes than were sent",
                                       permanent=False, hint="the disk or file system may be failing")
                if not barrier:
                    os.fsync(fd)
            finally:
                os.close(fd)
            digests.append(hashlib.sha256(data).hexdigest())
        if barrier and not _sync_filesystems(dirs):
            for tmp, _path in temps:  # syncfs refused at run time: the files one by one
                fd = os.open(tmp, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        for tmp, path in temps:
            os.replace(tmp, path)  # a symlink planted at the key is replaced, never followed
            renamed += 1
        for d in dirs:
            fsync_dir(d)
    finally:
        for tmp, _path in temps[renamed:]:
            unlink_quietly(tmp)
    return digests


class GroupWriters:
    """One store's group writes: each in a worker thread, at most GROUP_WRITERS at once."""

    def __init__(self) -> None:
        self._slots = asyncio.Semaphore(GROUP_WRITERS)

    async def write(self, root: Path, entries: list[tuple[Path, bytes]], within: Callable[[Path], bool]) -> list[str]:
        async with self._slots:
            return await asyncio.to_thread(write_group, root, entries, within)
