"""Alibaba Cloud OSS with oss2: ``oss://bucket/prefix``.

oss2 is synchronous: every SDK call (and every read of a response body) runs in a worker thread
via ``asyncio.to_thread``; the event loop never blocks on it. Credentials come from the
environment (``OSS_ACCESS_KEY_ID``, ``OSS_ACCESS_KEY_SECRET``, optional ``OSS_SESSION_TOKEN``),
the endpoint from the caller (``--oss-endpoint``) or ``OSS_ENDPOINT``.

Integrity: oss2's CRC-64 check is on (``enable_crc=True``): the client computes CRC-64 of each
PutObject/UploadPart body and compares it with the server's ``x-oss-hash-crc64ecma``; on
CompleteMultipartUpload it combines the part CRCs and compares with the object's. Content-MD5 is
sent as well (the server rejects a damaged body). Whole-object downloads are CRC-checked at EOF.
"""
from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from brsm.errors import ObjectNotFound, StorageError, UsageError
from brsm.ports import ObjectInfo
from brsm.store_limits import MIN_PART

from .base import BaseStorage
from .keys import check_prefix, dir_prefix
from .replies import ReplyRules, classify_reply, transport_error
from .streams import content_md5

T = TypeVar("T")
ENV_ID = "OSS_ACCESS_KEY_ID"
ENV_SECRET = "OSS_ACCESS_KEY_SECRET"
ENV_TOKEN = "OSS_SESSION_TOKEN"
ENV_ENDPOINT = "OSS_ENDPOINT"


class OssStorage(BaseStorage):
    scheme = "oss"

    def __init__(self, bucket: str, prefix: str = "", *, endpoint: str | None = None,
                 connect_timeout: float = 10, environ: dict[str, str] | None = None, **options: Any) -> None:
        super().__init__(f"oss://{bucket}/{prefix.strip('/')}".rstrip("/"), prefix, **options)
        env = os.environ if environ is None else environ
        key_id, secret = env.get(ENV_ID), env.get(ENV_SECRET)
        for name, val in ((ENV_ID, key_id), (ENV_SECRET, secret)):
            if not val:
                raise UsageError(f"oss storage needs credentials: {name} is not set",
                                 hint=f"export {ENV_ID} and {ENV_SECRET} (and {ENV_TOKEN} for STS)")
        endpoint = endpoint or env.get(ENV_ENDPOINT)
        if not endpoint:
            raise UsageError("oss storage needs an endpoint",
                             hint=f"pass --oss-endpoint (e.g. https://oss-cn-hangzhou.aliyuncs.com) or set {ENV_ENDPOINT}")
        import oss2
        token = env.get(ENV_TOKEN)
        auth = oss2.StsAuth(key_id, secret, token) if token else oss2.Auth(key_id, secret)
        self.bucket_name = bucket
        self.endpoint = endpoint
        try:
            self._bucket = oss2.Bucket(auth, endpoint, bucket, enable_crc=True, connect_timeout=connect_timeout)
        except oss2.exceptions.ClientError as e:
            raise UsageError(f"bad OSS bucket name {bucket!r}", hint="OSS bucket names: 3-63 of a-z, 0-9, '-'") from e

    # -- plumbing --------------------------------------------------------------------------
    def _rules(self) -> ReplyRules:
        return ReplyRules(f"bucket {self.bucket_name!r} does not exist: check the URI and --oss-endpoint",
                          {"InvalidAccessKeyId": f"check {ENV_ID}", "SignatureDoesNotMatch": f"check {ENV_SECRET}"},
                          f"check {ENV_ID}/{ENV_SECRET} and the key's permissions on the bucket",
                          frozenset({"RequestTimeout", "InvalidDigest"}))

    def _error(self, what: str, e: BaseException, key: str | None = None) -> StorageError:
        import oss2.exceptions as ox
        where = f"oss://{self.bucket_name}" + (f"/{self.prefix}{key}" if key is not None else "")
        if isinstance(e, StorageError):
            return e
        if isinstance(e, ox.OssError):
            status, code = int(e.status), str(e.code or "")
            if status < 0:  # client-side: -1 client error, -2 request (connection) error, -3 CRC mismatch
                body = str(e.body or "")
                if isinstance(e, ox.RequestError):
                    return StorageError(f"{what} {where}: connection failed: {body[:300]}", permanent=False,
                                        hint="is the OSS endpoint reachable?")
                if isinstance(e, ox.InconsistentError):
                    return StorageError(f"{what} {where}: CRC-64 mismatch, data damaged in transit", permanent=False)
                return StorageError(f"{what} {where}: {body[:300]}", permanent=True)
            msg = f"{what} {where}: {status} {code} {e.message or ''}".rstrip()
            missing = key if key is not None and (
                code == "NoSuchKey" or (status == 404 and code not in ("NoSuchBucket", "NoSuchUpload"))) else None
            return classify_reply(msg, status, code, self._rules(), missing_key=missing)
        if (te := transport_error(e, what, where, "requests")) is not None:
            return te
        raise e

    async def _run(self, what: str, fn: Callable[..., T], *args: Any, key: str | None = None, **kw: Any) -> T:
        self.requests[what] += 1
        try:
            return await asyncio.to_thread(fn, *args, **kw)
        except Exception as e:
            raise self._error(what, e, key) from e

    # -- objects ---------------------------------------------------------------------------
    async def put_bytes(self, key: str, data: bytes) -> None:
        await self._put_single(self.full_key(key), bytes(data))

    async def _put_single(self, full: str, data: bytes) -> None:
        await self._run("put_object", self._bucket.put_object, full, data,
                        headers={"Content-MD5": await content_md5(data)}, key=self.rel_key(full))

    async def get(self, key: str, *, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        full = self.full_key(key)
        if length == 0 or offset < 0:
            await self._stat_full(full)
            return
        ranged = bool(offset) or length is not None
        byte_range = (offset, None if length is None else offset + length - 1) if ranged else None
        try:
            res = await self._run("get_object", self._bucket.get_object, full, byte_range=byte_range,
                                  headers={"x-oss-range-behavior": "standard"}, key=key)
        except StorageError as e:
            if " 416 " in e.message or "InvalidRange" in e.message:
                await self._stat_full(full)
                return
            raise
        # a server that ignores the range answers 200 with the whole object: cut it ourselves
        skip = offset if ranged and res.status == 200 else 0
        left = length if ranged and res.status == 200 else None
        try:
            while left is None or left > 0:
                try:
                    data = await asyncio.to_thread(res.read, self.block_size)
                except Exception as e:
                    raise self._error("reading", e, key) from e
                if not data:
                    break
                if skip:
                    cut = min(skip, len(data))
                    data, skip = data[cut:], skip - cut
                    if not data:
                        continue
                if left is not None:
                    data = data[:left]
                    left -= len(data)
                yield data
            else:
                return
            if not ranged and res.server_crc is not None and res.client_crc != res.server_crc:
                raise StorageError(f"oss://{self.bucket_name}/{full}: CRC-64 of the download differs "
                                   "from the server's", permanent=False)
        finally:
            await asyncio.to_thread(res.resp.response.close)

    async def _stat_full(self, full: str) -> ObjectInfo:
        rel = self.rel_key(full)
        r = await self._run("head_object", self._bucket.head_object, full, key=rel)
        return ObjectInfo(rel, int(r.content_length))

    async def list(self, prefix: str) -> list[ObjectInfo]:
        fp = self.full_prefix(prefix)

        def scan() -> list[ObjectInfo]:
            out, token = [], ""
            while True:
                self.requests["list_objects"] += 1
                r = self._bucket.list_objects_v2(prefix=fp, continuation_token=token, max_keys=self.list_page_size)
                out.extend(ObjectInfo(self.rel_key(o.key), int(o.size)) for o in r.object_list)
                if not r.is_truncated:
                    return out
                token = r.next_continuation_token
        return await self._run("list", scan)

    async def iter_objects(self, prefix: str, *, page: int = 1000, after: str = "") -> AsyncIterator[ObjectInfo]:
        """ListObjectsV2 a page at a time, each request in a worker thread (OSS lists in the byte
        order of the keys' UTF-8)."""
        fp = self.full_prefix(prefix)
        start, token, n = (self.prefix + after) if after else "", "", self.page_size(page)
        while True:
            r = await self._run("list_objects", self._bucket.list_objects_v2, prefix=fp, continuation_token=token,
                                start_after=start if not token else "", max_keys=n)
            for o in r.object_list:
                yield ObjectInfo(self.rel_key(o.key), int(o.size))
            if not r.is_truncated:
                return
            token = r.next_continuation_token
            if not token:
                raise StorageError(f"oss://{self.bucket_name}: truncated listing without a continuation token")

    async def list_dirs(self, prefix: str) -> list[str]:
        fp = self.full_prefix(dir_prefix(check_prefix(prefix)))

        def scan() -> list[str]:
            names, token = set(), ""
            while True:
                self.requests["list_objects"] += 1
                r = self._bucket.list_objects_v2(prefix=fp, delimiter="/", continuation_token=token,
                                                 max_keys=self.list_page_size)
                names.update(p[len(fp):].rstrip("/") for p in r.prefix_list)
                if not r.is_truncated:
                    return sorted(names)
                token = r.next_continuation_token
        return await self._run("list_dirs", scan)

    async def delete(self, key: str) -> None:
        try:
            await self._run("delete_object", self._bucket.delete_object, self.full_key(key), key=key)
        except ObjectNotFound:
            pass

    async def _delete_many(self, fulls: list[str]) -> None:
        for i in range(0, len(fulls), 1000):
            await self._run("delete_objects", self._bucket.batch_delete_objects, fulls[i:i + 1000])

    async def abort_uploads(self, prefix: str) -> int:
        fp = self.full_prefix(prefix)

        def sweep() -> int:
            import oss2.exceptions as ox
            n, km, um = 0, "", ""
            while True:
                self.requests["list_uploads"] += 1
                r = self._bucket.list_multipart_uploads(prefix=fp, key_marker=km, upload_id_marker=um,
                                                        max_uploads=self.list_page_size)
                for u in r.upload_list:
                    try:
                        self.requests["abort_upload"] += 1
                        self._bucket.abort_multipart_upload(u.key, u.upload_id)
                        n += 1
                    except ox.NoSuchUpload:
                        pass
                if not r.is_truncated or not r.next_key_marker:
                    return n
                km, um = r.next_key_marker, r.next_upload_id_marker
        return await self._run("abort_uploads", sweep)

    async def close(self) -> None:
        session = getattr(self._bucket, "session", None)
        s = getattr(session, "session", None)
        if s is not None:
            await asyncio.to_thread(s.close)

    # -- multipart -------------------------------------------------------------------------
    async def _mp_create(self, full: str) -> str:
        r = await self._run("create_upload", self._bucket.init_multipart_upload, full, key=self.rel_key(full))
        return r.upload_id

    async def _mp_upload_part(self, full: str, upload_id: str, n: int, data: bytes) -> dict[str, Any]:
        r = await self._run("upload_part", self._bucket.upload_part, full, upload_id, n, data,
                            headers={"Content-MD5": await content_md5(data)}, key=self.rel_key(full))
        return {"etag": r.etag.strip('"'), "crc64": r.crc}

    async def _mp_list_parts(self, full: str, upload_id: str) -> dict[int, dict[str, Any]] | None:
        import oss2.exceptions as ox

        def scan() -> dict[int, dict[str, Any]] | None:
            out: dict[int, dict[str, Any]] = {}
            marker = ""
            while True:
                try:
                    r = self._bucket.list_parts(full, upload_id, marker=marker, max_parts=1000)
                except ox.NoSuchUpload:
                    return None
                for p in r.parts:
                    out[int(p.part_number)] = {"etag": p.etag.strip('"'), "size": int(p.size),
                                               "crc64": p.part_crc}
                if not r.is_truncated:
                    return out
                marker = r.next_marker
        return await self._run("list_parts", scan)

    async def _mp_complete(self, full: str, upload_id: str, parts: list[dict[str, Any]]) -> None:
        import oss2
        infos = [oss2.models.PartInfo(p["n"], p["etag"], size=p["size"], part_crc=p.get("crc64")) for p in parts]
        await self._run("complete_upload", self._bucket.complete_multipart_upload, full, upload_id, infos,
                        key=self.rel_key(full))

    # -- signed URLs (OSS V1 URL signatures, computed locally: no request) --------------------
    signs_urls = True
    MIN_PART_SIZE = MIN_PART["oss"]

    async def part_url(self, key: str, upload_id: str, n: int, md5: str, expires: int) -> str:
        # the V1 signature covers Content-MD5 and Content-Type: the host sends exactly these
        return self._bucket.sign_url("PUT", self.full_key(key), int(expires), slash_safe=True,
                                     headers={"Content-MD5": md5, "Content-Type": "application/octet-stream"},
                                     params={"partNumber": str(int(n)), "uploadId": upload_id})

    async def get_url(self, key: str, expires: int) -> str:
        return self._bucket.sign_url("GET", self.full_key(key), int(expires), slash_safe=True)

    async def _copy_single(self, src_full: str, dst_full: str) -> None:
        await self._run("copy_object", self._bucket.copy_object, self._bucket.bucket_name, src_full, dst_full,
                        key=self.rel_key(dst_full))

    async def _copy_part(self, dst_full: str, upload_id: str, n: int, src_full: str, first: int,
                         last: int) -> dict[str, Any]:
        r = await self._run("upload_part_copy", self._bucket.upload_part_copy, self._bucket.bucket_name, src_full,
                            (first, last), dst_full, upload_id, n, key=self.rel_key(dst_full))
        return {"etag": r.etag.strip('"')}

    async def _mp_abort(self, full: str, upload_id: str) -> None:
        import oss2.exceptions as ox
        try:
            await self._run("abort_upload", self._bucket.abort_multipart_upload, full, upload_id)
        except StorageError as e:
            if not isinstance(e.__cause__, ox.NoSuchUpload):
                raise
