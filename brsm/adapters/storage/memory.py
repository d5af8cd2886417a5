"""An in-process Storage for tests (hypothesis property tests of workflows, the contract suite).

Behaves like an object store: flat keys, multipart uploads with ids and part etags (MD5), so the
shared put/resume logic of :class:`BaseStorage` runs unchanged. Faults are injected by verb:

    mem = MemoryStorage()
    mem.inject_fault("put", count=2)                   # next 2 put() calls: transient StorageError
    mem.inject_fault("upload_part", count=1, skip=2)   # the 3rd part upload fails
    mem.inject_fault("stat", count=-1, permanent=True) # every stat fails for good
    mem.quota = 10 << 20                               # bytes stored (objects + parts) may not exceed

Verbs: the public ones (put, put_many, put_bytes, get, get_bytes, stat, list, list_dirs, delete,
delete_prefix, abort_uploads) and the requests behind put (put_object, create_upload,
upload_part, list_parts, complete_upload, abort_upload). A fault on a public verb fires when the
call starts (for ``get``: at the first iteration), before any byte of a stream is consumed. A
``put_many`` puts its objects one by one through ``put``, so a fault on ``put`` with a ``skip`` fails
a group midway (the objects before it stored, the rest not).
"""
from __future__ import annotations

import base64
import heapq
import hashlib
import time
import uuid
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

from brsm.errors import ObjectNotFound, StorageError
from brsm.ports import ObjectInfo

from .base import BaseStorage
from .put_group import check_group, one_block
from .keys import check_prefix, dir_prefix

_VERBS = {"put", "put_many", "put_bytes", "get", "get_bytes", "stat", "list", "list_dirs", "delete", "delete_prefix",
          "abort_uploads", "put_object", "create_upload", "upload_part", "list_parts", "complete_upload",
          "abort_upload", "copy_object", "upload_part_copy"}


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
                 signs_urls: bool = False, **options: Any) -> None:
        super().__init__(uri, prefix, **options)
        self.signs_urls = signs_urls
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

    async def put_many(self, items):
        self._alive()
        self._fault("put_many")
        check_group(items)
        # one by one, in order (the default puts several at once): a fault midway is reproducible
        return [await self.put(k, one_block(d), len(d)) for k, d in items]

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

    async def iter_objects(self, prefix: str, *, page: int = 1000, after: str = "") -> AsyncIterator[ObjectInfo]:
        """A page at a time, like a store: each page is the next ``page`` keys after the last one given
        (objects put or deleted meanwhile show or vanish as they would on S3)."""
        fp = self.full_prefix(prefix)
        last = self.prefix + after if after else ""
        n = self.page_size(page)
        while True:
            self._alive()
            self._fault("list")
            self.requests["list_objects"] += 1
            keys = heapq.nsmallest(n, (k for k in self.objects if k.startswith(fp) and k > last))
            for k in keys:
                data = self.objects.get(k)
                if data is not None:
                    yield ObjectInfo(self.rel_key(k), len(data))
            if len(keys) < n:
                return
            last = keys[-1]

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
            e = StorageError(f"{self.rel_key(full)}: NoSuchUpload {upload_id}", permanent=False)
            e.resend = True  # as a store says it (NoSuchUpload): only a new upload helps
            raise e
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

    async def _copy_single(self, src_full: str, dst_full: str) -> None:
        self._fault("copy_object")
        self.requests["copy_object"] += 1
        data = self.objects[src_full]
        self._room(self.rel_key(dst_full), len(data), len(self.objects.get(dst_full, b"")))
        self.objects[dst_full] = data

    async def _copy_part(self, dst_full: str, upload_id: str, n: int, src_full: str, first: int,
                         last: int) -> dict[str, Any]:
        self._fault("upload_part_copy")
        self.requests["upload_part_copy"] += 1
        data = self.objects[src_full][first:last + 1]
        self._upload(dst_full, upload_id).parts[n] = data
        return {"etag": hashlib.md5(data).hexdigest()}

    async def _mp_abort(self, full: str, upload_id: str) -> None:
        self._fault("abort_upload")
        self.requests["abort_upload"] += 1
        self.uploads.pop(upload_id, None)

    # -- signed URLs, for the fake hosts' helpers ----------------------------------------------
    # Off unless a test turns it on (``signs_urls=True``, or the attribute set later; properties()
    # says which). A URL names this store by a token, the request, and its expiry; brsm.fakes.helper
    # "sends" it with :meth:`signed_request`, the way a host's helper sends a presigned URL over HTTP.
    # Faults by verb apply: upload_part, get.
    async def part_url(self, key: str, upload_id: str, n: int, md5: str, expires: int) -> str:
        return self._sign("PUT", key, expires, upload=upload_id, part=str(n), md5=md5)

    async def get_url(self, key: str, expires: int) -> str:
        return self._sign("GET", key, expires)

    def _sign(self, method: str, key: str, expires: int, **q: str) -> str:
        if not self.signs_urls:
            raise NotImplementedError("memory storage signs no URLs unless signs_urls is set")
        token = getattr(self, "_url_token", None)
        if token is None:
            token = self._url_token = uuid.uuid4().hex
            _SIGNERS[token] = self
        query = urlencode(dict(q, method=method, expires=str(int(time.time() + expires))))
        return f"memory-signed://{token}/{quote(self.full_key(key))}?{query}"

    @staticmethod
    def signed_request(url: str, method: str, data: bytes = b"", *, offset: int = 0,
                       length: int | None = None) -> tuple[int, dict[str, Any]]:
        """(HTTP status, {"etag"} or {"data"} or {"code", "message"}) for one request with a URL of
        :meth:`part_url` / :meth:`get_url`: refused as a real store would (expired, wrong method,
        a body whose MD5 is not the signed one), faults by verb as injected."""
        u = urlsplit(url)
        q = {k: v[0] for k, v in parse_qs(u.query).items()}
        store = _SIGNERS.get(u.netloc)
        if store is None or store.closed:
            return 0, {"code": "ConnectionRefusedError", "message": "no such store"}
        if q.get("method") != method:
            return 403, {"code": "SignatureDoesNotMatch", "message": f"signed for {q.get('method')}"}
        if time.time() > int(q.get("expires", "0")):
            return 403, {"code": "AccessDenied", "message": "Request has expired"}
        full = unquote(u.path.lstrip("/"))
        try:
            if method == "PUT":
                if base64.b64encode(hashlib.md5(data).digest()).decode() != q.get("md5"):
                    return 400, {"code": "BadDigest", "message": "The Content-MD5 you specified did not match"}
                store._fault("upload_part")
                store.requests["upload_part"] += 1
                up = store.uploads.get(q.get("upload", ""))
                if up is None or up.key != full:
                    return 404, {"code": "NoSuchUpload", "message": "The specified upload does not exist"}
                store._room(store.rel_key(full), len(data), len(up.parts.get(int(q["part"]), b"")))
                up.parts[int(q["part"])] = bytes(data)
                return 200, {"etag": hashlib.md5(data).hexdigest()}
            store._fault("get")
            store.requests["get_object"] += 1
            obj = store.objects.get(full)
            if obj is None:
                return 404, {"code": "NoSuchKey", "message": "The specified key does not exist."}
            end = len(obj) if length is None else min(len(obj), offset + length)
            return 206, {"data": obj[offset:end]}
        except StorageError as e:
            return (507 if "quota" in e.message else 503), {"code": "ServiceUnavailable", "message": e.message[:200]}


_SIGNERS: weakref.WeakValueDictionary[str, MemoryStorage] = weakref.WeakValueDictionary()  # URL token -> store
