"""``Storage.copy`` on a local file system: a hard link, made the way every local object is made.

A link shares the source's bytes, and no object here is ever written in place (every put makes a new
file and renames it over the key), so the two backups stay independent: deleting either leaves the
other whole. Where the file system refuses a link (another file system under the root, one without
links, a link count at its limit), the bytes are copied. The link is made at a fresh temp name (the
link call creates it exclusively) and renamed over the key, so a symlink planted at the key is
replaced, never followed; a source that is a symlink, or under a symlinked directory leading out of
the storage, is no object (ObjectNotFound, as ``get`` says).
"""
from __future__ import annotations

import asyncio
import errno
import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from brsm.errors import ObjectNotFound, StorageError
from brsm.ports import ObjectInfo

from .local_group import make_dir, temp_for
from .local_write import fsync_dir, os_error, unlink_quietly

_NO_LINKS = frozenset({errno.EXDEV, errno.EPERM, errno.EMLINK, errno.EOPNOTSUPP, errno.ENOSYS})


def _copy_bytes(src: Path, tmp: Path) -> None:
    """The bytes of ``src`` into ``tmp``, created exclusively, made durable."""
    with open(os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC), "rb") as f, \
            open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644), "wb") as g:
        shutil.copyfileobj(f, g, 1 << 20)
        g.flush()
        os.fsync(g.fileno())


def link_or_copy(root: Path, src: Path, dst: Path, within: Callable[[Path], bool],
                 inside: Callable[[Path], bool]) -> int:
    """``dst`` made the same file as ``src`` (see the module doc); the size. FileNotFoundError when
    ``src`` is not an object of this storage."""
    st = os.lstat(src)
    if not stat.S_ISREG(st.st_mode) or not inside(src):
        raise FileNotFoundError(errno.ENOENT, "not an object of this storage", str(src))
    make_dir(root, dst.parent, within)
    tmp = temp_for(dst)
    try:
        try:
            os.link(src, tmp, follow_symlinks=False)
            made = os.lstat(tmp)
            if (made.st_dev, made.st_ino) != (st.st_dev, st.st_ino):
                raise StorageError(f"{src} was replaced while it was linked", permanent=False)
        except OSError as e:
            if e.errno not in _NO_LINKS:
                raise
            _copy_bytes(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        unlink_quietly(tmp)
        raise
    fsync_dir(dst.parent)
    return st.st_size


async def copy_locally(store: Any, src: str, dst: str) -> ObjectInfo:
    """LocalStorage.copy."""
    s, d = store._path(src), store._path(dst)
    try:
        size = await asyncio.to_thread(link_or_copy, store.root, s, d, store._dir_within, store._inside)
    except FileNotFoundError as e:
        raise ObjectNotFound(src) from e
    except OSError as e:
        raise os_error(f"{store.uri}: copying {src} to {dst} failed", e) from e
    store.requests["copy_object"] += 1
    return ObjectInfo(dst, size)
