"""A directory on a local (or mounted) file system as backup storage: ``local:///abs/path``.

put: the stream is written to a temp file in the target directory with large writes (no
per-chunk fsync), each block read back and compared byte for byte with what was sent (so the
file's SHA-256 is the stream's), fsynced, renamed over the key and the directory fsynced. Nothing
is ever visible under the final name half-written.
Resume: when the caller passes a ByteSource and journals ``on_part``, a cut write continues from
its last whole block (the temp file's prefix is re-hashed locally and must match the journaled hash).
Temp files (``.brsm-tmp.*``) left by a crash are invisible to list() and removed by abort_uploads().
"""
from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import stat
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

from brsm.errors import ObjectNotFound, StorageError
from brsm.ports import ByteSource, ObjectInfo, PutResult, UploadState, reopenable, stream_of

from .base import BaseStorage
from .put_group import check_group
from .keys import check_prefix, dir_prefix
from .local_copy import copy_locally
from .local_group import GroupWriters
from .local_walk import has_object, walk_in_key_order
from .local_write import (TMP_MARK, ReadBack, close_quietly, commit, discard, feed, open_temp, os_error,
                          stop_writer, unlink_quietly)
from .streams import Source


class LocalStorage(BaseStorage):
    scheme = "local"
    multipart = False  # a temp file renamed into place, resumed by offset: no parts for a host to send
    copy = copy_locally  # a hard link (local_copy)

    def __init__(self, root: str | os.PathLike, *, uri: str | None = None, **options: Any) -> None:
        root = Path(root)
        if not root.is_absolute():
            raise StorageError(f"local storage path {str(root)!r} is not absolute", permanent=True)
        super().__init__(uri or f"local://{root}", "", **options)
        self.root, self._groups = root, GroupWriters()  # at most GROUP_WRITERS groups written at once

    def _path(self, key: str) -> Path:
        return self.root / self.full_key(key)

    async def _ensure_dir(self, d: Path) -> None:
        try:
            await asyncio.to_thread(d.mkdir, parents=True, exist_ok=True)
        except OSError as e:
            raise os_error(f"{self.uri}: cannot create {d}", e) from e

    # -- writes ----------------------------------------------------------------------------
    async def put(self, key: str, chunks: AsyncIterator[bytes] | ByteSource, size: int, *,
                  state: UploadState | None = None, on_part: Any = None) -> PutResult:
        """Pipelined: while block k is hashed (one worker thread) and written + read back + hashed
        again (another), block k+1 is being received. At most ``2 + depth`` blocks in memory.

        Resumable when ``chunks`` is a ByteSource and the caller journals ``on_part``: after every
        block the temp file's name, length and the stream's SHA-256 so far are handed to ``on_part``
        (as a one-part UploadState). Given that state again, put re-hashes the temp file's prefix
        here (a local read, no transfer), and if it matches continues the stream from that offset.
        """
        path = self._path(key)
        await self._ensure_dir(path.parent)
        resumable = on_part is not None and state is not None and reopenable(chunks)
        resumed = await self._resume_point(path, state) if resumable else None
        tmp, fd, offset, prefix = await open_temp(key, path, resumed)
        src = Source(key, stream_of(chunks, offset), size, defer_hash=True, start=offset,
                     hasher=prefix.copy() if prefix is not None else None, owned=reopenable(chunks))
        readback = ReadBack(tmp, offset)
        queue: asyncio.Queue[list[bytes] | None] = asyncio.Queue(maxsize=2)

        async def writer() -> None:
            while (pieces := await queue.get()) is not None:
                await asyncio.gather(asyncio.to_thread(src.absorb, pieces),
                                     asyncio.to_thread(readback.write, fd, pieces))
                if resumable and readback.offset < size:
                    state.upload_id, state.part_size = tmp.name, 0
                    state.parts = [{"n": 1, "etag": src.sha256, "size": readback.offset}]
                    on_part(state)

        task = asyncio.create_task(writer())
        try:
            await feed(src, queue, task, self.block_size)
            await asyncio.to_thread(os.fsync, fd)
            self.requests["put_object"] += 1
            if readback.mismatch is not None:
                raise StorageError(f"{key}: the written file reads back different bytes at offset {readback.mismatch} "
                                   "than were sent", permanent=False, hint="the disk or file system may be failing")
            await asyncio.to_thread(os.close, fd)
            fd = -1
            await asyncio.to_thread(commit, tmp, path)
        except OSError as e:
            await asyncio.to_thread(discard, fd, tmp)
            raise os_error(f"{self.uri}: writing {key} failed", e) from e
        except BaseException as e:
            await stop_writer(task)
            if resumable and not isinstance(e, StorageError) and state.upload_id == tmp.name:
                # cut (cancelled, connection lost) after a checkpoint: keep the temp file for a resume
                await asyncio.to_thread(close_quietly, fd)
            else:
                await asyncio.to_thread(discard, fd, tmp)
                if resumable:
                    state.upload_id, state.parts = None, []
            raise
        finally:
            await src.close()
        return PutResult(size=src.count, sha256=src.sha256)

    async def _resume_point(self, path: Path, state: UploadState | None) -> tuple[Path, int, Any] | None:
        """(temp file, offset, hash of its first offset bytes) if ``state`` names a temp file of ``path``
        whose prefix still has the journaled SHA-256; else None (and a stale temp file is removed)."""
        if state is None or not state.upload_id or not state.parts:
            return None
        name = state.upload_id
        if "/" in name or not name.startswith(f"{TMP_MARK}{path.name}."):
            return None  # not ours (e.g. an S3 upload id from another storage)
        tmp = path.parent / name
        offset, want = int(state.parts[-1]["size"]), str(state.parts[-1]["etag"])

        def check() -> Any:
            try:
                try:
                    st = os.lstat(tmp)
                except FileNotFoundError:
                    # The put had finished (the temp file was renamed to the key) when the process died,
                    # before the caller journaled the file. The committed file begins with the same
                    # checkpointed prefix: take it back as the temp file, so only what follows the last
                    # checkpoint crosses again instead of the whole file. The prefix check below decides.
                    if not stat.S_ISREG(os.lstat(path).st_mode):
                        return None
                    os.rename(path, tmp)
                    st = os.lstat(tmp)
                if not stat.S_ISREG(st.st_mode) or st.st_size < offset:
                    return None
                # read and cut through one descriptor that never follows a link: the name is not
                # trusted again after the lstat (a link swapped in would be cut to length)
                fd = os.open(tmp, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
                try:
                    fst = os.fstat(fd)
                    if not stat.S_ISREG(fst.st_mode) or (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino):
                        return None
                    h = hashlib.sha256()
                    left = offset
                    while left:
                        data = os.read(fd, min(4 << 20, left))
                        if not data:
                            return None
                        h.update(data)
                        left -= len(data)
                    if h.hexdigest() != want:
                        return None
                    os.ftruncate(fd, offset)
                finally:
                    os.close(fd)
                return h
            except OSError:
                return None
        h = await asyncio.to_thread(check)
        if h is None:
            await asyncio.to_thread(unlink_quietly, tmp)
            state.upload_id, state.parts = None, []
            return None
        return tmp, offset, h

    async def put_many(self, items: Sequence[tuple[str, bytes]]) -> list[PutResult]:
        """The whole group in one worker thread with one durability barrier (``local_group``)."""
        check_group(items)
        if not items:
            return []
        entries = [(self._path(k), d if isinstance(d, bytes) else bytes(d)) for k, d in items]
        self.requests["put_object"] += len(entries)
        try:
            digests = await self._groups.write(self.root, entries, self._dir_within)
        except OSError as e:
            where = f" ({e.filename})" if e.filename else ""
            raise os_error(f"{self.uri}: writing a group of {len(entries)} objects failed{where}", e) from e
        return [PutResult(size=len(d), sha256=h) for (_p, d), h in zip(entries, digests)]

    async def put_bytes(self, key: str, data: bytes) -> None:
        async def one() -> AsyncIterator[bytes]:
            yield bytes(data)
        await self.put(key, one(), len(data))

    # -- reads -----------------------------------------------------------------------------
    def _inside(self, path: Path) -> bool:
        """The path resolves inside the storage root: no symlinked directory leads out of it."""
        root = os.path.realpath(self.root)
        return os.path.realpath(path).startswith(root.rstrip("/") + "/")

    def _dir_within(self, d: Path) -> bool:
        """``d`` is the root or a real directory inside it: no symlink on the way leads out. A walk,
        a listing or a delete starts only from such a directory (``os.walk`` follows a symlink given
        as its start, and ``unlink`` follows symlinked parents)."""
        root = os.path.realpath(self.root)
        real = os.path.realpath(d)
        return real == root or real.startswith(root.rstrip("/") + "/")

    def _open_object(self, path: Path):
        """Open a stored file for reading. A symlink is no object: a backup directory holds regular
        files only, and following a planted link would read (and restore) whatever it points at."""
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            if not self._inside(path):
                raise OSError(errno.ELOOP, "a symlinked directory leads outside the storage")
            return os.fdopen(fd, "rb", buffering=0)
        except BaseException:
            os.close(fd)
            raise

    async def get(self, key: str, *, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        path = self._path(key)
        self.requests["get_object"] += 1
        try:
            f = await asyncio.to_thread(self._open_object, path)
        except FileNotFoundError as e:
            raise ObjectNotFound(key) from e
        except IsADirectoryError as e:
            raise ObjectNotFound(key) from e
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise StorageError(f"{self.uri}: {key} is a symlink: refused (a backup holds regular files only)",
                                   permanent=True, hint="the backup directory was tampered with; restore another "
                                                        "backup") from e
            raise os_error(f"{key}: cannot open", e) from e
        try:
            left = length
            if offset:
                f.seek(offset)
            while left is None or left > 0:
                n = self.block_size if left is None else min(self.block_size, left)
                try:
                    data = await asyncio.to_thread(f.read, n)
                except OSError as e:
                    raise os_error(f"{key}: read failed", e) from e
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
            st = await asyncio.to_thread(os.lstat, self.root / full)
        except (FileNotFoundError, NotADirectoryError) as e:
            raise ObjectNotFound(rel) from e
        except OSError as e:
            raise os_error(f"{rel}: stat failed", e) from e
        if not stat.S_ISREG(st.st_mode) or not self._inside(self.root / full):
            raise ObjectNotFound(rel)  # a directory, a symlink or a path through one: not an object
        return ObjectInfo(rel, st.st_size)

    async def list(self, prefix: str) -> list[ObjectInfo]:
        prefix = check_prefix(prefix)
        self.requests["list_objects"] += 1
        try:
            return await asyncio.to_thread(lambda: list(self._walk(prefix, "")))
        except OSError as e:
            raise os_error(f"{self.uri}: listing {prefix!r} failed", e) from e

    async def iter_objects(self, prefix: str, *, page: int = 1000, after: str = "") -> AsyncIterator[ObjectInfo]:
        """The directory tree walked in key order (see ``_walk``), a page of files looked at per
        worker-thread call: what is held is the sorted names of the directories on the current path."""
        prefix = check_prefix(prefix)
        walk = self._walk(prefix, after)
        n = self.page_size(page)

        def take() -> list[ObjectInfo]:
            return [o for _, o in zip(range(n), walk)]
        try:
            while True:
                self.requests["list_objects"] += 1
                try:
                    got = await asyncio.to_thread(take)
                except OSError as e:
                    raise os_error(f"{self.uri}: listing {prefix!r} failed", e) from e
                for o in got:
                    yield o
                if len(got) < n:
                    return
        finally:
            try:
                walk.close()
            except ValueError:  # cancelled while a worker thread is in it: it ends with that call
                pass

    def _walk(self, prefix: str, after: str) -> Iterator[ObjectInfo]:
        base, _, _ = prefix.rpartition("/")
        start = self.root / base if base else self.root
        if self._dir_within(start):  # not through a symlink named like a backup (or a path through one)
            yield from walk_in_key_order(str(start), base + "/" if base else "", prefix, after)

    async def list_dirs(self, prefix: str) -> list[str]:
        p = dir_prefix(check_prefix(prefix))
        self.requests["list_objects"] += 1

        def scan() -> list[str]:
            d = self.root / p if p else self.root
            try:
                entries = list(os.scandir(d))
            except (FileNotFoundError, NotADirectoryError):
                return []
            return sorted(e.name for e in entries if e.is_dir(follow_symlinks=False) and has_object(e.path))
        try:
            return await asyncio.to_thread(scan)
        except OSError as e:
            raise os_error(f"{self.uri}: listing {p!r} failed", e) from e

    # -- deletes ---------------------------------------------------------------------------
    async def delete(self, key: str) -> None:
        path = self._path(key)
        self.requests["delete_object"] += 1
        try:
            await asyncio.to_thread(self._delete_path, path)
        except OSError as e:
            raise os_error(f"{key}: delete failed", e) from e

    def _delete_path(self, path: Path) -> None:
        if not self._dir_within(path.parent):
            return  # through a symlinked directory: not an object of this storage, never deleted
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

    async def delete_prefix(self, prefix: str) -> int:
        n = await super().delete_prefix(prefix)
        prefix = check_prefix(prefix)
        if prefix.endswith("/"):
            # Directories made for files that were never written (a copy cut by a full disk) hold no
            # object, so no delete pruned them: a rolled-back backup leaves no empty tree behind.
            await asyncio.to_thread(self._prune_tree, self._path(prefix.rstrip("/")))
        return n

    def _prune_tree(self, top: Path) -> None:
        if top.is_symlink() or not top.is_dir() or not self._inside(top):
            return
        for dirpath, _dirs, _files in os.walk(top, topdown=False):
            try:
                os.rmdir(dirpath)  # only empty ones go
            except OSError:
                pass
        self._prune(top.parent)

    async def _delete_many(self, fulls: list[str]) -> None:
        try:
            await asyncio.to_thread(lambda: [self._delete_path(self.root / f) for f in fulls])
        except OSError as e:
            raise os_error(f"{self.uri}: delete failed", e) from e

    async def abort_uploads(self, prefix: str) -> int:
        prefix = check_prefix(prefix)

        def sweep() -> int:
            base, _, _ = prefix.rpartition("/")
            start = self.root / base if base else self.root
            n = 0
            if not self._dir_within(start):
                return 0  # never sweep through a symlink out of the storage
            for dirpath, _dirs, files in os.walk(start):
                rel_dir = os.path.relpath(dirpath, self.root).replace(os.sep, "/")
                rel_dir = "" if rel_dir == "." else rel_dir + "/"
                for name in files:
                    if name.startswith(TMP_MARK) and (rel_dir + name[len(TMP_MARK):]).startswith(prefix):
                        unlink_quietly(Path(dirpath) / name)
                        n += 1
            return n
        try:
            return await asyncio.to_thread(sweep)
        except OSError as e:
            raise os_error(f"{self.uri}: removing temp files failed", e) from e

    async def close(self) -> None:
        pass
