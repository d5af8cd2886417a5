"""A directory on a local (or mounted) file system as backup storage: ``local:///abs/path``.

put: the stream is written to a temp file in the target directory with large writes (no
per-chunk fsync), fsynced, read back and compared by SHA-256 (page cache: fast), renamed over
the key and the directory fsynced. Nothing is ever visible under the final name half-written.
Resume: ``state`` is ignored (a local write is restarted from 0; there is no part to keep).
Temp files (``.brsm-tmp.*``) left by a crash are invisible to list() and removed by abort_uploads().
"""
from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from brsm.errors import ObjectNotFound, StorageError
from brsm.ports import ObjectInfo, PutResult, UploadState

from .base import BaseStorage, Source, check_prefix, dir_prefix

TMP_MARK = ".brsm-tmp."
_PERMANENT = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR,
              errno.EISDIR, errno.ENAMETOOLONG, errno.EINVAL, errno.ENOENT, errno.EEXIST, errno.ENOTEMPTY}


def _os_error(what: str, e: OSError) -> StorageError:
    permanent = e.errno in _PERMANENT
    hint = None
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        hint = "the backup file system is full: free space or choose another --storage"
    elif e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = "brsm needs write access to the storage directory"
    return StorageError(f"{what}: {e.strerror or e}", permanent=permanent, hint=hint)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalStorage(BaseStorage):
    scheme = "local"

    def __init__(self, root: str | os.PathLike, *, uri: str | None = None, **options: Any) -> None:
        root = Path(root)
        if not root.is_absolute():
            raise StorageError(f"local storage path {str(root)!r} is not absolute", permanent=True)
        super().__init__(uri or f"local://{root}", "", **options)
        self.root = root

    def _path(self, key: str) -> Path:
        return self.root / self.full_key(key)

    async def _ensure_dir(self, d: Path) -> None:
        try:
            await asyncio.to_thread(d.mkdir, parents=True, exist_ok=True)
        except OSError as e:
            raise _os_error(f"{self.uri}: cannot create {d}", e) from e

    # -- writes ----------------------------------------------------------------------------
    async def put(self, key: str, chunks: AsyncIterator[bytes], size: int, *,
                  state: UploadState | None = None, on_part: Any = None) -> PutResult:
        """Pipelined: while block k is hashed (one worker thread) and written + read back + hashed
        again (another), block k+1 is being received. At most ``2 + depth`` blocks in memory."""
        path = self._path(key)
        await self._ensure_dir(path.parent)
        src = Source(key, chunks, size, defer_hash=True)
        tmp = path.parent / f"{TMP_MARK}{path.name}.{uuid.uuid4().hex[:12]}"
        try:
            fd = await asyncio.to_thread(os.open, tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise _os_error(f"{key}: cannot create a temp file", e) from e
        readback = _ReadBack(tmp)
        queue: asyncio.Queue[list[bytes] | None] = asyncio.Queue(maxsize=2)

        async def writer() -> None:
            while (pieces := await queue.get()) is not None:
                await asyncio.gather(asyncio.to_thread(src.absorb, pieces),
                                     asyncio.to_thread(readback.write, fd, pieces))

        task = asyncio.create_task(writer())
        try:
            try:
                async for pieces in src.coalesced(self.block_size):
                    if task.done():
                        break  # the writer failed: its error is raised below
                    await queue.put(pieces)
                src.check_size()
            finally:
                if not task.done():
                    await queue.put(None)
                await asyncio.wait({task})
            task.result()
            await asyncio.to_thread(os.fsync, fd)
            self.requests["put_object"] += 1
            got = readback.sha256
            if got != src.sha256:
                raise StorageError(f"{key}: the written file reads back with SHA-256 {got[:12]}…, "
                                   f"{src.sha256[:12]}… was sent", permanent=False,
                                   hint="the disk or file system may be failing")
            await asyncio.to_thread(os.close, fd)
            fd = -1
            await asyncio.to_thread(_commit, tmp, path)
        except OSError as e:
            await asyncio.to_thread(_discard, fd, tmp)
            raise _os_error(f"{key}: write failed", e) from e
        except BaseException:
            if not task.done():
                task.cancel()
                await asyncio.wait({task})
            await asyncio.to_thread(_discard, fd, tmp)
            raise
        return PutResult(size=src.count, sha256=src.sha256)

    async def put_bytes(self, key: str, data: bytes) -> None:
        async def one() -> AsyncIterator[bytes]:
            yield bytes(data)
        await self.put(key, one(), len(data))

    # -- reads -----------------------------------------------------------------------------
    async def get(self, key: str, *, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        path = self._path(key)
        self.requests["get_object"] += 1
        try:
            f = await asyncio.to_thread(open, path, "rb", buffering=0)
        except FileNotFoundError as e:
            raise ObjectNotFound(key) from e
        except IsADirectoryError as e:
            raise ObjectNotFound(key) from e
        except OSError as e:
            raise _os_error(f"{key}: cannot open", e) from e
        try:
            left = length
            if offset:
                f.seek(offset)
            while left is None or left > 0:
                n = self.block_size if left is None else min(self.block_size, left)
                try:
                    data = await asyncio.to_thread(f.read, n)
                except OSError as e:
                    raise _os_error(f"{key}: read failed", e) from e
                if not data:
                    break
                if left is not None:
                    left -= len(data)
                yield data
        finally:
            f.close()

    async def _stat_full(self, full: str) -> ObjectInfo:
        rel = self.rel_key(full)
        self.requests["head_object"] += 1
        try:
            st = await asyncio.to_thread(os.stat, self.root / full)
        except (FileNotFoundError, NotADirectoryError) as e:
            raise ObjectNotFound(rel) from e
        except OSError as e:
            raise _os_error(f"{rel}: stat failed", e) from e
        if not os.path.isfile(self.root / full):
            raise ObjectNotFound(rel)
        return ObjectInfo(rel, st.st_size)

    async def list(self, prefix: str) -> list[ObjectInfo]:
        prefix = check_prefix(prefix)
        self.requests["list_objects"] += 1
        try:
            return await asyncio.to_thread(self._list, prefix)
        except OSError as e:
            raise _os_error(f"{self.uri}: listing {prefix!r} failed", e) from e

    def _list(self, prefix: str) -> list[ObjectInfo]:
        base, _, _ = prefix.rpartition("/")
        start = self.root / base if base else self.root
        out = []
        for dirpath, dirnames, filenames in os.walk(start):
            rel_dir = os.path.relpath(dirpath, self.root).replace(os.sep, "/")
            rel_dir = "" if rel_dir == "." else rel_dir + "/"
            dirnames[:] = [d for d in dirnames if (rel_dir + d + "/").startswith(prefix)
                           or prefix.startswith(rel_dir + d + "/")]
            for name in filenames:
                if name.startswith(TMP_MARK):
                    continue
                k = rel_dir + name
                if k.startswith(prefix):
                    try:
                        out.append(ObjectInfo(k, os.stat(os.path.join(dirpath, name)).st_size))
                    except FileNotFoundError:
                        pass  # deleted meanwhile
        out.sort(key=lambda o: o.key)
        return out

    async def list_dirs(self, prefix: str) -> list[str]:
        p = dir_prefix(check_prefix(prefix))
        self.requests["list_objects"] += 1

        def scan() -> list[str]:
            d = self.root / p if p else self.root
            try:
                entries = list(os.scandir(d))
            except (FileNotFoundError, NotADirectoryError):
                return []
            return sorted(e.name for e in entries if e.is_dir(follow_symlinks=False) and _has_object(e.path))
        try:
            return await asyncio.to_thread(scan)
        except OSError as e:
            raise _os_error(f"{self.uri}: listing {p!r} failed", e) from e

    # -- deletes ---------------------------------------------------------------------------
    async def delete(self, key: str) -> None:
        path = self._path(key)
        self.requests["delete_object"] += 1
        try:
            await asyncio.to_thread(self._delete_path, path)
        except OSError as e:
            raise _os_error(f"{key}: delete failed", e) from e

    def _delete_path(self, path: Path) -> None:
        try:
            path.unlink()
        except FileNotFoundError:
            return
        except IsADirectoryError:
            return
        self._prune(path.parent)

    def _prune(self, d: Path) -> None:
        """Remove empty directories up to (not including) the root."""
        while d != self.root and self.root in d.parents:
            try:
                d.rmdir()
            except OSError:
                return
            d = d.parent

    async def _delete_many(self, fulls: list[str]) -> None:
        try:
            await asyncio.to_thread(lambda: [self._delete_path(self.root / f) for f in fulls])
        except OSError as e:
            raise _os_error(f"{self.uri}: delete failed", e) from e

    async def abort_uploads(self, prefix: str) -> int:
        prefix = check_prefix(prefix)

        def sweep() -> int:
            base, _, _ = prefix.rpartition("/")
            start = self.root / base if base else self.root
            n = 0
            for dirpath, _dirs, files in os.walk(start):
                rel_dir = os.path.relpath(dirpath, self.root).replace(os.sep, "/")
                rel_dir = "" if rel_dir == "." else rel_dir + "/"
                for name in files:
                    if name.startswith(TMP_MARK) and (rel_dir + name[len(TMP_MARK):]).startswith(prefix):
                        _unlink_quietly(Path(dirpath) / name)
                        n += 1
            return n
        try:
            return await asyncio.to_thread(sweep)
        except OSError as e:
            raise _os_error(f"{self.uri}: removing temp files failed", e) from e

    async def close(self) -> None:
        pass


class _ReadBack:
    """Writes blocks at the end of the temp file, then reads each back (page cache) and hashes
    what the file system returns: the SHA-256 of the file as stored, computed alongside."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self._h = hashlib.sha256()

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
        rfd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            pos = start
            while pos < self.offset:
                data = os.pread(rfd, min(4 << 20, self.offset - pos), pos)
                if not data:
                    raise OSError(errno.EIO, f"{self.path}: short read-back at {pos}")
                self._h.update(data)
                pos += len(data)
        finally:
            os.close(rfd)

    @property
    def sha256(self) -> str:
        return self._h.hexdigest()


def _discard(fd: int, tmp: Path) -> None:
    if fd >= 0:
        try:
            os.close(fd)
        except OSError:
            pass
    _unlink_quietly(tmp)


def _commit(tmp: Path, path: Path) -> None:
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _unlink_quietly(p: Path) -> None:
    try:
        p.unlink()
    except OSError:
        pass


def _has_object(d: str) -> bool:
    for _dirpath, _dirs, files in os.walk(d):
        if any(not f.startswith(TMP_MARK) for f in files):
            return True
    return False
