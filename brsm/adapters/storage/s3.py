"""Amazon S3 (and S3-compatible stores) with aioboto3: ``s3://bucket/prefix``.

Credentials come from the standard AWS chain (env, shared config/credentials files, profile,
instance metadata); endpoint and region from the caller (``--s3-endpoint``/config), else the
chain's region, else us-east-1. Path-style addressing when an endpoint is given.

Integrity: every PutObject/UploadPart carries Content-MD5, which S3 checks before storing (a
body damaged in transit is rejected with BadDigest); after CompleteMultipartUpload a HEAD
confirms the size. The SDK's own retries are off (one attempt): :mod:`.retry` is the only
retry layer. SHA-256 of the bytes received is computed by the shared :class:`.streams.Source`.
"""
from __future__ import annotations

import asyncio
import io
import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

from brsm.errors import ObjectNotFound, StorageError
from brsm.ports import ObjectInfo
from brsm.store_limits import MIN_PART

from .base import BaseStorage
from .keys import check_prefix, dir_prefix
from .replies import ReplyRules, classify_reply, transport_error
from .streams import content_md5, reblock

_TRANSIENT_CODES = frozenset({"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeTooSkewed",
                    "InternalError", "ServiceUnavailable", "RequestLimitExceeded", "TooManyRequestsException",
                    "OperationAborted", "BadDigest", "IncompleteBody", "XAmzContentSHA256Mismatch"})
_CRED_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "ExpiredToken", "InvalidToken",
               "TokenRefreshRequired", "AllAccessDisabled", "InvalidClientTokenId"}
_CRED_HINT = ("check the AWS credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or "
              "~/.aws/credentials) and that they may access the bucket")


class S3Storage(BaseStorage):
    scheme = "s3"

    def __init__(self, bucket: str, prefix: str = "", *, endpoint: str | None = None, region: str | None = None,
                 session: Any = None, connect_timeout: float = 10, read_timeout: float = 120,
                 max_pool_connections: int = 32, **options: Any) -> None:
        super().__init__(f"s3://{bucket}/{prefix.strip('/')}".rstrip("/"), prefix, **options)
        self.bucket = bucket
        self.endpoint = endpoint
        self.region = region
        self._session = session
        self._timeouts = (connect_timeout, read_timeout)
        self._pool = max_pool_connections
        self._client: Any = None
        self._stack: AsyncExitStack | None = None
        self._lock = asyncio.Lock()

    # -- plumbing --------------------------------------------------------------------------
    async def _c(self) -> Any:
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is None:
                import aioboto3
                from botocore.config import Config
                session = self._session or aioboto3.Session()
                region = self.region or session.region_name or os.environ.get("AWS_REGION") or "us-east-1"
                cfg = Config(
                    retries={"total_max_attempts": 1, "mode": "standard"},
                    connect_timeout=self._timeouts[0], read_timeout=self._timeouts[1],
                    max_pool_connections=self._pool,
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",
                    s3={"addressing_style": "path"} if self.endpoint else None,
                    signature_version="s3v4",  # also for presigned URLs (the direct data path)
                )
                stack = AsyncExitStack()
                try:
                    self._client = await stack.enter_async_context(
                        session.client("s3", endpoint_url=self.endpoint, region_name=region, config=cfg))
                except Exception as e:
                    await stack.aclose()
                    raise self._error("opening the S3 client", e) from e
                self._stack = stack
        return self._client

    def _rules(self) -> ReplyRules:
        return ReplyRules(f"bucket {self.bucket!r} does not exist: check the URI and --s3-endpoint/region",
                          {c: _CRED_HINT for c in _CRED_CODES}, _CRED_HINT, _TRANSIENT_CODES)

    def _error(self, what: str, e: BaseException, key: str | None = None) -> StorageError:
        """Translate an SDK/transport error (never include credentials: botocore messages don't)."""
        from botocore import exceptions as bx
        where = f"s3://{self.bucket}" + (f"/{self.prefix}{key}" if key is not None else "")
        if isinstance(e, StorageError):
            return e
        if isinstance(e, bx.ClientError):
            err = e.response.get("Error", {})
            code = str(err.get("Code", ""))
            status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            msg = f"{what} {where}: {code or status} {err.get('Message', '')}".rstrip()
            missing = key if key is not None and code in ("NoSuchKey", "NotFound", "404") else None
            return classify_reply(msg, status, code, self._rules(), missing_key=missing)
        if isinstance(e, bx.NoCredentialsError | bx.PartialCredentialsError):
            return StorageError(f"{what} {where}: no AWS credentials found", permanent=True, hint=_CRED_HINT)
        if isinstance(e, bx.NoRegionError):
            return StorageError(f"{what} {where}: no region", permanent=True, hint="pass --s3-region or set AWS_REGION")
        if isinstance(e, bx.ParamValidationError):
            return StorageError(f"{what} {where}: {e}", permanent=True)
        if isinstance(e, (bx.EndpointConnectionError, bx.ConnectionClosedError, bx.ReadTimeoutError,
                          bx.ConnectTimeoutError, bx.ResponseStreamingError, bx.IncompleteReadError,
                          bx.HTTPClientError, bx.ChecksumError)):
            return StorageError(f"{what} {where}: {e}", permanent=False,
                                hint="is the S3 endpoint reachable?" if isinstance(e, bx.EndpointConnectionError) else None)
        if (te := transport_error(e, what, where, "aiohttp")) is not None:
            return te
        if isinstance(e, bx.BotoCoreError):
            return StorageError(f"{what} {where}: {e}", permanent=True)
        raise e

    async def _call(self, what: str, op: str, key: str | None = None, **kw: Any) -> Any:
        c = await self._c()
        self.requests[what] += 1
        try:
            return await getattr(c, op)(Bucket=self.bucket, **kw)
        except Exception as e:
            raise self._error(what, e, key) from e

    # -- objects ---------------------------------------------------------------------------
    async def put_bytes(self, key: str, data: bytes) -> None:
        full = self.full_key(key)
        await self._call("put_object", "put_object", key, Key=full, Body=bytes(data), ContentMD5=await content_md5(data))

    async def _put_single(self, full: str, data: bytes) -> None:
        body = io.BytesIO(data)
        try:
            await self._call("put_object", "put_object", self.rel_key(full), Key=full, Body=body,
                             ContentMD5=await content_md5(data))
        finally:
            body.close()  # see _mp_upload_part

    async def get(self, key: str, *, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        full = self.full_key(key)
        if length == 0 or offset < 0:
            await self._stat_full(full)
            return
        kw: dict[str, Any] = {}
        if offset or length is not None:
            kw["Range"] = f"bytes={offset}-" + ("" if length is None else str(offset + length - 1))
        try:
            resp = await self._call("get_object", "get_object", key, Key=full, **kw)
        except StorageError as e:
            if "InvalidRange" in e.message or " 416" in e.message:  # offset at/after the end
                await self._stat_full(full)
                return
            raise
        body = resp["Body"]
        try:
            async def raw() -> AsyncIterator[bytes]:
                while True:
                    try:
                        data = await body.read(1 << 20)
                    except Exception as e:
                        raise self._error("reading", e, key) from e
                    if not data:
                        return
                    yield data
            async for block in reblock(raw(), min(self.block_size, 1 << 20)):
                yield block
        finally:
            body.close()

    async def _stat_full(self, full: str) -> ObjectInfo:
        rel = self.rel_key(full)
        r = await self._call("head_object", "head_object", rel, Key=full)
        return ObjectInfo(rel, int(r["ContentLength"]))

    async def list(self, prefix: str) -> list[ObjectInfo]:
        fp = self.full_prefix(prefix)
        out: list[ObjectInfo] = []
        token = None
        while True:
            kw: dict[str, Any] = {"Prefix": fp, "MaxKeys": self.list_page_size}
            if token:
                kw["ContinuationToken"] = token
            r = await self._call("list_objects", "list_objects_v2", **kw)
            out.extend(ObjectInfo(self.rel_key(o["Key"]), int(o["Size"])) for o in r.get("Contents", []))
            if not r.get("IsTruncated"):
                return out
            token = r.get("NextContinuationToken")
            if not token:
                raise StorageError(f"s3://{self.bucket}: truncated listing without a continuation token")

    async def iter_objects(self, prefix: str, *, page: int = 1000, after: str = "") -> AsyncIterator[ObjectInfo]:
        """ListObjectsV2 a page at a time (S3 lists in the byte order of the keys' UTF-8)."""
        fp = self.full_prefix(prefix)
        kw: dict[str, Any] = {"Prefix": fp, "MaxKeys": self.page_size(page)}
        if after:
            kw["StartAfter"] = self.prefix + after
        while True:
            r = await self._call("list_objects", "list_objects_v2", **kw)
            for o in r.get("Contents", []):
                yield ObjectInfo(self.rel_key(o["Key"]), int(o["Size"]))
            if not r.get("IsTruncated"):
                return
            token = r.get("NextContinuationToken")
            if not token:
                raise StorageError(f"s3://{self.bucket}: truncated listing without a continuation token")
            kw["ContinuationToken"] = token

    async def list_dirs(self, prefix: str) -> list[str]:
        fp = self.full_prefix(dir_prefix(check_prefix(prefix)))
        names: set[str] = set()
        token = None
        while True:
            kw: dict[str, Any] = {"Prefix": fp, "Delimiter": "/", "MaxKeys": self.list_page_size}
            if token:
                kw["ContinuationToken"] = token
            r = await self._call("list_objects", "list_objects_v2", **kw)
            for cp in r.get("CommonPrefixes", []):
                names.add(cp["Prefix"][len(fp):].rstrip("/"))
            if not r.get("IsTruncated"):
                return sorted(names)
            token = r.get("NextContinuationToken")

    async def delete(self, key: str) -> None:
        full = self.full_key(key)
        try:
            await self._call("delete_object", "delete_object", key, Key=full)
        except ObjectNotFound:
            pass

    async def _delete_many(self, fulls: list[str]) -> None:
        for i in range(0, len(fulls), 1000):
            batch = fulls[i:i + 1000]
            r = await self._call("delete_objects", "delete_objects",
                                 Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True})
            errs = [e for e in r.get("Errors", []) if e.get("Code") != "NoSuchKey"]
            if errs:
                e0 = errs[0]
                raise StorageError(f"s3://{self.bucket}: deleting {len(errs)} objects failed, first "
                                   f"{e0.get('Key')}: {e0.get('Code')} {e0.get('Message', '')}",
                                   permanent=e0.get("Code") in _CRED_CODES)

    async def abort_uploads(self, prefix: str) -> int:
        fp = self.full_prefix(prefix)
        n = 0
        km = um = None
        while True:
            kw: dict[str, Any] = {"Prefix": fp, "MaxUploads": self.list_page_size}
            if km:
                kw["KeyMarker"] = km
                if um:
                    kw["UploadIdMarker"] = um
            r = await self._call("list_uploads", "list_multipart_uploads", **kw)
            for u in r.get("Uploads", []):
                try:
                    await self._call("abort_upload", "abort_multipart_upload", Key=u["Key"], UploadId=u["UploadId"])
                    n += 1
                except StorageError as e:
                    if "NoSuchUpload" not in e.message:
                        raise
            if not r.get("IsTruncated"):
                return n
            km, um = r.get("NextKeyMarker"), r.get("NextUploadIdMarker")
            if not km:
                return n

    async def close(self) -> None:
        if self._stack is not None:
            stack, self._stack, self._client = self._stack, None, None
            await stack.aclose()

    # -- multipart -------------------------------------------------------------------------
    async def _mp_create(self, full: str) -> str:
        r = await self._call("create_upload", "create_multipart_upload", self.rel_key(full), Key=full)
        return r["UploadId"]

    async def _mp_upload_part(self, full: str, upload_id: str, n: int, data: bytes) -> dict[str, Any]:
        body = io.BytesIO(data)
        try:
            r = await self._call("upload_part", "upload_part", self.rel_key(full), Key=full, UploadId=upload_id,
                                 PartNumber=n, Body=body, ContentMD5=await content_md5(data))
        finally:
            # the SDK and aiohttp keep request objects (and so the body) alive past the call; closing
            # frees the part's bytes now instead of whenever those go
            body.close()
        return {"etag": r["ETag"].strip('"')}

    async def _mp_list_parts(self, full: str, upload_id: str) -> dict[int, dict[str, Any]] | None:
        out: dict[int, dict[str, Any]] = {}
        marker = 0
        while True:
            try:
                r = await self._call("list_parts", "list_parts", Key=full, UploadId=upload_id,
                                     PartNumberMarker=marker, MaxParts=1000)
            except StorageError as e:
                if "NoSuchUpload" in e.message or (" 404" in e.message):
                    return None
                raise
            for p in r.get("Parts", []):
                out[int(p["PartNumber"])] = {"etag": p["ETag"].strip('"'), "size": int(p["Size"])}
            if not r.get("IsTruncated"):
                return out
            marker = int(r.get("NextPartNumberMarker") or 0)
            if not marker:
                return out

    async def _mp_complete(self, full: str, upload_id: str, parts: list[dict[str, Any]]) -> None:
        await self._call("complete_upload", "complete_multipart_upload", self.rel_key(full), Key=full,
                         UploadId=upload_id,
                         MultipartUpload={"Parts": [{"PartNumber": p["n"], "ETag": f'"{p["etag"]}"'} for p in parts]})

    # -- signed URLs (SigV4 query signing, computed locally: no request) ----------------------
    signs_urls = True
    MIN_PART_SIZE = MIN_PART["s3"]

    async def part_url(self, key: str, upload_id: str, n: int, md5: str, expires: int) -> str:
        c = await self._c()
        return await c.generate_presigned_url("upload_part", ExpiresIn=int(expires), Params={
            "Bucket": self.bucket, "Key": self.full_key(key), "UploadId": upload_id, "PartNumber": int(n),
            "ContentMD5": md5})

    async def get_url(self, key: str, expires: int) -> str:
        c = await self._c()
        return await c.generate_presigned_url("get_object", ExpiresIn=int(expires),
                                              Params={"Bucket": self.bucket, "Key": self.full_key(key)})

    async def _copy_single(self, src_full: str, dst_full: str) -> None:
        await self._call("copy_object", "copy_object", self.rel_key(dst_full), Key=dst_full,
                         CopySource={"Bucket": self.bucket, "Key": src_full})

    async def _copy_part(self, dst_full: str, upload_id: str, n: int, src_full: str, first: int,
                         last: int) -> dict[str, Any]:
        r = await self._call("upload_part_copy", "upload_part_copy", self.rel_key(dst_full), Key=dst_full,
                             UploadId=upload_id, PartNumber=n, CopySource={"Bucket": self.bucket, "Key": src_full},
                             CopySourceRange=f"bytes={first}-{last}")
        return {"etag": r["CopyPartResult"]["ETag"].strip('"')}

    async def _mp_abort(self, full: str, upload_id: str) -> None:
        try:
            await self._call("abort_upload", "abort_multipart_upload", Key=full, UploadId=upload_id)
        except StorageError as e:
            if "NoSuchUpload" not in e.message:
                raise
