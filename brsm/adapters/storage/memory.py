"""An in-process Storage for tests (hypothesis property tests of workflows, the contract suite).

Behaves like an object store: flat keys, multipart uploads with ids and part etags (MD5), so the
shared put/resume logic of :class:`BaseStorage` runs unchanged. Faults are injected by verb:

    mem = MemoryStorage()
    mem.inject_fault("put", count=2)                   # next 2 put() calls: transient StorageError
    mem.inject_fault("upload_part", count=1, skip=2)   # the 3rd part upload fails
    mem.inject_fault("stat", count=-1, permanent=True) # every stat fails for good
    mem.quota = 10 << 20                               # bytes stored (objects + parts) may not exceed

Verbs: the public ones (put, put_bytes, get, get_bytes, stat, list, list_dirs, delete,
delete_prefix, abort_uploads) and the requests behind put (put_object, create_upload,
upload_part, list_parts, complete_upload, abort_upload). A fault on a public verb fires when the
call starts (for ``get``: at the first iteration), before any byte of a stream is consumed.
"""
from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from brsm.errors import ObjectNotFound, StorageError
from brsm.ports import ObjectInfo

from .base import BaseStorage, check_prefix, dir_prefix

_VERBS = {"put", "put_bytes", "get", "get_bytes", "stat", "list", "list_dirs", "delete", "delete_prefix",
          "abort_uploads", "put_object", "create_upload", "upload_part", "list_parts", "complete_upload",
          "abort_upload"}


@dataclass
class _Fault:
    count: int  # -1: forever
    permanent: bool
    skip: int = 0
    message: str = ""


@dataclass
class _Upload:
    key: str
    parts: dict[int, bytes] = field(default_factory=dict)


class MemoryStorage(BaseStorage):
    scheme = "memory"

    def __init__(self, uri: str = "memory://test", prefix: str = "", *, quota: int | None = None,
                 **options: Any) -> None:
        super().__init__(uri, prefix, **options)
        self.objects: dict[str, bytes] = {}
        self.uploads: dict[str, _Upload] = {}
        self.quota = quota
        self.faults: dict[str, _Fault] = {}
        self.closed = False

    # -- fault injection -------------------------------------------------------------------
    def inject_fault(self, verb: str, count: int = 1, *, permanent: bool = False, skip: int = 0,
                     message: str = "") -> None:
        """The next ``count`` calls of ``verb`` (after ``skip`` that pass) raise StorageError."""
        if verb not in _VERBS:
            raise ValueError(f"unknown verb {verb!r}; one of {sorted(_VERBS)}")
        self.faults[verb] = _Fault(count, permanent, skip, message)

    def clear_faults(self) -> None:
        self.faults.clear()

    def _fault(self, verb: str) -> None:
        f = self.faults.get(verb)
        if f is None or f.count == 0:
            return
        if f.skip > 0:
            f.skip -= 1
            return
        if f.count > 0:
            f.count -= 1
        kind = "permanent" if f.permanent else "transient"
        raise StorageError(f.message or f"injected {kind} fault on {verb}", permanent=f.permanent,
                           hint=None if not f.permanent else "injected by the test")

    def stored_bytes(self) -> int:
        return sum(map(len, self.objects.values())) + sum(
            len(p) for u in self.uploads.values() for p in u.parts.values())

    def _room(self, key: str, incoming: int, replacing: int = 0) -> None:
        if self.quota is not None and self.stored_bytes() - replacing + incoming > self.quota:
            raise StorageError(f"{key}: storage quota of {self.quota} bytes exceeded", permanent=True,
                               hint="free space on the storage or raise its quota")

    def _alive(self) -> None:
        if self.closed:
            raise StorageError(f"{self.uri}: storage is closed", permanent=True)

    # -- verbs -----------------------------------------------------------------------------
    async def put(self, key, chunks, size, *, state=None, on_part=None):
        self._alive()
        self._fault("put")
        return await super().put(key, chunks, size, state=state, on_part=on_part)

    async def put_bytes(self, key: str, data: bytes) -> None:
        self._alive()
        full = self.full_key(key)
        self._fault("put_bytes")
        await self._put_single(full, bytes(data))

    async def get(self, key: str, *, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        self._alive()
        full = self.full_key(key)
        self._fault("get")
        self.requests["get_object"] += 1
        data = self.objects.get(full)
        if data is None:
            raise ObjectNotFound(key)
        end = len(data) if length is None else min(len(data), offset + length)
        pos = offset
        while pos < end:
            n = min(self.block_size, end - pos)
            yield data[pos:pos + n]
            pos += n

    async def get_bytes(self, key: str) -> bytes:
        self._fault("get_bytes")
        return await super().get_bytes(key)

    async def _stat_full(self, full: str) -> ObjectInfo:
        self._alive()
        self._fault("stat")
        self.requests["head_object"] += 1
        data = self.objects.get(full)
        if data is None:
            raise ObjectNotFound(self.rel_key(full))
        return ObjectInfo(self.rel_key(full), len(data))

    async def list(self, prefix: str) -> list[ObjectInfo]:
        self._alive()
        fp = self.full_prefix(prefix)
        self._fault("list")
        self.requests["list_objects"] += 1
        return [ObjectInfo(self.rel_key(k), len(v)) for k, v in sorted(self.objects.items())
                if k.startswith(fp)]

    async def list_dirs(self, prefix: str) -> list[str]:
        self._alive()
        fp = self.full_prefix(dir_prefix(check_prefix(prefix)))
        self._fault("list_dirs")
        self.requests["list_objects"] += 1
        out = {k[len(fp):].split("/", 1)[0] for k in self.objects if k.startswith(fp) and "/" in k[len(fp):]}
        return sorted(out)

    async def delete(self, key: str) -> None:
        self._alive()
        full = self.full_key(key)
        self._fault("delete")
        self.requests["delete_object"] += 1
        self.objects.pop(full, None)

    async def delete_prefix(self, prefix: str) -> int:
        self._fault("delete_prefix")
        return await super().delete_prefix(prefix)

    async def _delete_many(self, fulls: list[str]) -> None:
        self.requests["delete_objects"] += 1
        for f in fulls:
            self.objects.pop(f, None)

    async def abort_uploads(self, prefix: str) -> int:
        self._alive()
        fp = self.full_prefix(prefix)
        self._fault("abort_uploads")
        ids = [uid for uid, u in self.uploads.items() if u.key.startswith(fp)]
        for uid in ids:
            self.requests["abort_upload"] += 1
            del self.uploads[uid]
        return len(ids)

    async def close(self) -> None:
        self.closed = True

    # -- primitives behind BaseStorage.put -------------------------------------------------
    async def _put_single(self, full: str, data: bytes) -> None:
        self._fault("put_object")
        self.requests["put_object"] += 1
        self._room(self.rel_key(full), len(data), len(self.objects.get(full, b"")))
        self.objects[full] = data

    async def _mp_create(self, full: str) -> str:
        self._fault("create_upload")
        self.requests["create_upload"] += 1
        uid = uuid.uuid4().hex
        self.uploads[uid] = _Upload(full)
        return uid

    def _upload(self, full: str, upload_id: str) -> _Upload:
        u = self.uploads.get(upload_id)
        if u is None or u.key != full:
            raise StorageError(f"{self.rel_key(full)}: NoSuchUpload {upload_id}", permanent=False)
        return u

    async def _mp_upload_part(self, full: str, upload_id: str, n: int, data: bytes) -> dict[str, Any]:
        self._fault("upload_part")
        self.requests["upload_part"] += 1
        u = self._upload(full, upload_id)
        self._room(self.rel_key(full), len(data), len(u.parts.get(n, b"")))
        u.parts[n] = bytes(data)
        return {"etag": hashlib.md5(data).hexdigest()}

    async def _mp_list_parts(self, full: str, upload_id: str) -> dict[int, dict[str, Any]] | None:
        self._fault("list_parts")
        self.requests["list_parts"] += 1
        u = self.uploads.get(upload_id)
        if u is None or u.key != full:
            return None
        return {n: {"etag": hashlib.md5(d).hexdigest(), "size": len(d)} for n, d in u.parts.items()}

    async def _mp_complete(self, full: str, upload_id: str, parts: list[dict[str, Any]]) -> None:
        self._fault("complete_upload")
        self.requests["complete_upload"] += 1
        u = self._upload(full, upload_id)
        chunks = []
        for p in parts:
            d = u.parts.get(p["n"])
            if d is None or hashlib.md5(d).hexdigest() != p["etag"]:
                raise StorageError(f"{self.rel_key(full)}: part {p['n']} missing or different", permanent=True)
            chunks.append(d)
        del self.uploads[upload_id]
        self.objects[full] = b"".join(chunks)

    async def _mp_abort(self, full: str, upload_id: str) -> None:
        self._fault("abort_upload")
        self.requests["abort_upload"] += 1
        self.uploads.pop(upload_id, None)
