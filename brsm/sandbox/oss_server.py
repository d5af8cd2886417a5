"""A small Alibaba-OSS-compatible HTTP server for the sandbox (the ``oss2`` SDK works against it).

No OSS emulator exists, so this is ours. Objects are files under ``DATA/<bucket>/``; bodies are
streamed to and from disk in 64 KiB pieces, never held whole in memory.

Supported (what oss2 uses): PUT/GET (Range → 206)/HEAD/DELETE object, copy (``x-oss-copy-source``,
also of a byte range into a part: UploadPartCopy), POST ``?delete`` (batch delete), list objects v1 and v2 (``list-type=2``, prefix, delimiter, max-keys, marker,
continuation-token, start-after, ``encoding-type=url``), multipart (POST ``?uploads``, PUT
``?partNumber&uploadId``, POST ``?uploadId`` incl. ``x-oss-complete-all``, GET ``?uploadId``
(ListParts), DELETE ``?uploadId``, GET ``?uploads`` (ListMultipartUploads)), GET service
(list buckets), bucket ``?bucketInfo``/``?location``. Responses carry ``x-oss-request-id``,
``ETag`` (quoted upper-case MD5; multipart: ``"<MD5 of part MD5s>-<N>"``), and
``x-oss-hash-crc64ecma`` (computed with ``oss2.utils.Crc64``, the SDK's own implementation).
Errors are OSS XML (``<Error><Code>..``) with OSS's status codes.

Addressing: oss2 uses path style (``http://ip:port/bucket/key``) whenever the endpoint host is
an IP address or ``localhost`` (``oss2.utils.is_ip_or_localhost``), whatever ``is_cname``
says; with a host name it uses virtual-host style (``Host: bucket.<host>``). Both are served.
Keys arrive percent-encoded with ``/`` encoded as ``%2F``.

Authentication: ``Authorization: OSS <id>:<sig>`` (V1, HMAC-SHA1, fully verified),
``OSS2 AccessKeyId:..`` (V2, key id checked) and ``OSS4-HMAC-SHA256 Credential=<id>/..``
(V4, fully verified). Unknown key id → 403 InvalidAccessKeyId; bad signature → 403
SignatureDoesNotMatch; no Authorization → 403 AccessDenied.

Faults (see :mod:`brsm.sandbox.faultproxy`): ``POST /_sandbox/fault`` on the same port.

Run: ``python -m brsm.sandbox.oss_server --host 127.0.0.1 --port 0 --data DIR --bucket NAME
--access-key-id ID --access-key-secret SECRET [--port-file F] [--pid-file F]``
"""
from __future__ import annotations

import argparse
import base64
import email.utils
import hashlib
import hmac
import json
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, urlsplit
from xml.etree import ElementTree
from xml.sax.saxutils import escape

from oss2.auth import ProviderAuth
from oss2.utils import Crc64

from brsm.sandbox.served import ServedInThread
from brsm.sandbox.faultproxy import (CHUNK, BodyReader, FaultState, reset_connection, error_xml,
                                     handle_control, is_control_request, new_request_id,
                                     virtual_host_bucket,
                                     write_throttled)

SUBRESOURCES = ProviderAuth._subresource_key_set
MIN_PART_SIZE = 100 * 1024  # OSS: every part but the last must be >= 100 KiB
MAX_KEYS = 1000
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")


class OssError(Exception):
    def __init__(self, status: int, code: str, message: str, **extra: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(ts))


def _http_date(ts: float) -> str:
    return email.utils.formatdate(ts, usegmt=True)


def _crc_str(v: int) -> str:
    return str(v)


@dataclass
class ObjMeta:
    key: str
    size: int
    etag: str  # without quotes
    crc64: int
    mtime: float
    type: str = "Normal"
    content_type: str = "application/octet-stream"
    user_meta: dict = field(default_factory=dict)


@dataclass
class Upload:
    upload_id: str
    key: str
    initiated: float
    content_type: str
    user_meta: dict
    parts: dict = field(default_factory=dict)  # number -> {"etag","size","crc64","mtime"}


class Store:
    """Objects on disk + an in-memory index. Thread-safe."""

    def __init__(self, root: Path, bucket: str) -> None:
        self.bucket = bucket
        self.root = Path(root) / bucket
        self.obj_dir = self.root / "obj"
        self.mpu_dir = self.root / "mpu"
        self.tmp_dir = self.root / "tmp"
        for d in (self.obj_dir, self.mpu_dir, self.tmp_dir):
            d.mkdir(parents=True, exist_ok=True)
        for f in self.tmp_dir.iterdir():
            f.unlink(missing_ok=True)
        self.lock = threading.RLock()
        self.created = time.time()
        self.objects: dict[str, ObjMeta] = {}
        self.uploads: dict[str, Upload] = {}
        self._sorted: list[str] | None = None
        for mf in self.obj_dir.glob("*.json"):
            try:
                m = ObjMeta(**json.loads(mf.read_text()))
            except (ValueError, TypeError):
                continue
            if self._data_path(m.key).exists():
                self.objects[m.key] = m
        for ud in self.mpu_dir.iterdir():
            try:
                info = json.loads((ud / "upload.json").read_text())
            except (OSError, ValueError):
                continue
            up = Upload(**{k: v for k, v in info.items() if k != "parts"})
            for pf in ud.glob("*.json"):
                if pf.name == "upload.json":
                    continue
                up.parts[int(pf.stem)] = json.loads(pf.read_text())
            self.uploads[up.upload_id] = up

    # -- paths -----------------------------------------------------------------------------
    @staticmethod
    def _name(key: str) -> str:
        return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()

    def _data_path(self, key: str) -> Path:
        return self.obj_dir / (self._name(key) + ".bin")

    def _meta_path(self, key: str) -> Path:
        return self.obj_dir / (self._name(key) + ".json")

    def tmp_file(self):
        return tempfile.NamedTemporaryFile(dir=self.tmp_dir, delete=False)

    # -- accounting ------------------------------------------------------------------------
    def stored_bytes(self) -> int:
        with self.lock:
            n = sum(m.size for m in self.objects.values())
            n += sum(p["size"] for u in self.uploads.values() for p in u.parts.values())
            return n

    def sorted_keys(self) -> list[str]:
        with self.lock:
            if self._sorted is None:
                self._sorted = sorted(self.objects)
            return self._sorted

    # -- objects ---------------------------------------------------------------------------
    def get(self, key: str) -> ObjMeta:
        with self.lock:
            m = self.objects.get(key)
        if m is None:
            raise OssError(404, "NoSuchKey", "The specified key does not exist.", Key=key)
        return m

    def open(self, key: str):
        return open(self._data_path(key), "rb")

    def commit(self, tmp_path: str, meta: ObjMeta) -> None:
        with self.lock:
            os.replace(tmp_path, self._data_path(meta.key))
            mp = self._meta_path(meta.key)
            mtmp = mp.with_suffix(".json.tmp")
            mtmp.write_text(json.dumps(meta.__dict__))
            os.replace(mtmp, mp)
            if meta.key not in self.objects:
                self._sorted = None
            self.objects[meta.key] = meta

    def delete(self, key: str) -> None:
        with self.lock:
            if self.objects.pop(key, None) is not None:
                self._sorted = None
            self._data_path(key).unlink(missing_ok=True)
            self._meta_path(key).unlink(missing_ok=True)

    # -- multipart -------------------------------------------------------------------------
    def new_upload(self, key: str, content_type: str, user_meta: dict) -> Upload:
        up = Upload(uuid.uuid4().hex.upper(), key, time.time(), content_type, user_meta)
        d = self.mpu_dir / up.upload_id
        d.mkdir()
        info = {k: v for k, v in up.__dict__.items() if k != "parts"}
        (d / "upload.json").write_text(json.dumps(info))
        with self.lock:
            self.uploads[up.upload_id] = up
        return up

    def upload(self, upload_id: str, key: str | None = None) -> Upload:
        with self.lock:
            up = self.uploads.get(upload_id)
        if up is None or (key is not None and up.key != key):
            raise OssError(404, "NoSuchUpload",
                           "The specified upload does not exist. The upload ID may be invalid, "
                           "or the upload may have been aborted or completed.", UploadId=upload_id)
        return up

    def part_path(self, up: Upload, n: int) -> Path:
        return self.mpu_dir / up.upload_id / f"{n}.bin"

    def commit_part(self, up: Upload, n: int, tmp_path: str, info: dict) -> None:
        with self.lock:
            if up.upload_id not in self.uploads:
                os.unlink(tmp_path)
                raise OssError(404, "NoSuchUpload", "The specified upload does not exist.",
                               UploadId=up.upload_id)
            os.replace(tmp_path, self.part_path(up, n))
            (self.mpu_dir / up.upload_id / f"{n}.json").write_text(json.dumps(info))
            up.parts[n] = info

    def drop_upload(self, up: Upload) -> None:
        with self.lock:
            self.uploads.pop(up.upload_id, None)
        shutil.rmtree(self.mpu_dir / up.upload_id, ignore_errors=True)


class OssServer(ServedInThread):
    """In-process OSS endpoint: ``OssServer(host, port, data_dir, bucket, key_id, key_secret)``."""

    thread_name = "oss-server"

    def __init__(self, host: str, port: int, data_dir: str | os.PathLike, bucket: str,
                 key_id: str, key_secret: str, *, min_part_size: int = MIN_PART_SIZE) -> None:
        if not _BUCKET_RE.match(bucket):
            raise ValueError(f"invalid OSS bucket name {bucket!r}")
        self.bucket = bucket
        self.key_id = key_id
        self.key_secret = key_secret
        self.min_part_size = min_part_size
        self.store = Store(Path(data_dir), bucket)
        self.faults = FaultState("oss")
        httpd = _OssHTTPServer((host, port), _OssHandler)
        httpd.oss = self
        super().__init__(httpd)

    def __enter__(self) -> "OssServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class _OssHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default 5 drops SYNs when many SDK threads connect at once
    allow_reuse_address = True
    oss: OssServer

    def handle_error(self, request, client_address) -> None:
        if isinstance(sys.exc_info()[1], (ConnectionError, socket.timeout)):
            return  # a client went away: not worth a traceback
        super().handle_error(request, client_address)


def _v4_encode(s: str, keep_slash: bool) -> str:
    return quote(s.encode("utf-8"), safe="-_.~" + ("/" if keep_slash else ""))


class _OssHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes
    server: _OssHTTPServer
    server_version = "AliyunOSS"
    sys_version = ""

    def log_message(self, fmt, *args):
        if os.environ.get("BRSM_SANDBOX_HTTP_LOG"):
            super().log_message(fmt, *args)

    # -- plumbing ----------------------------------------------------------------------------
    def _dispatch(self) -> None:
        oss = self.server.oss
        self.request_id = new_request_id()
        self._sent = False
        if is_control_request(self.path, self.headers.get("Host"), oss.bucket):
            handle_control(self, oss.faults, None, {"x-oss-request-id": self.request_id})
            return
        self.body = BodyReader(self.rfile, self.headers, oss.faults)
        try:
            try:
                self._route()
            except OssError as e:
                self._error(e)
        except (ConnectionError, BrokenPipeError, socket.timeout):
            self.close_connection = True
        except Exception as e:  # a bug here must not kill the server
            if not self._sent:
                self._error(OssError(500, "InternalError", f"sandbox OSS server: {e!r}"))
            else:
                self.close_connection = True
        finally:
            if not self.close_connection and not self.body.done and not self.body.drain():
                self.close_connection = True

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_OPTIONS = _dispatch

    def _start(self, status: int, headers: dict[str, str], length: int | None) -> None:
        self._sent = True
        self.send_response(status)
        self.send_header("x-oss-request-id", self.request_id)
        for k, v in headers.items():
            self.send_header(k, v)
        if length is not None:
            self.send_header("Content-Length", str(length))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()

    def _reply(self, status: int = 200, body: bytes = b"", headers: dict | None = None,
               content_type: str | None = None) -> None:
        h = dict(headers or {})
        if body and content_type:
            h["Content-Type"] = content_type
        self._start(status, h, len(body))
        if body and self.command != "HEAD":
            write_throttled(self.wfile, body, self.server.oss.faults)

    def _xml(self, root_tag: str, inner: str, headers: dict | None = None) -> None:
        data = ('<?xml version="1.0" encoding="UTF-8"?>\n'
                f"<{root_tag}>{inner}</{root_tag}>\n").encode()
        self._reply(200, data, headers, "application/xml")

    def _error(self, e: OssError) -> None:
        if self._sent:
            self.close_connection = True
            return
        if not self.body.drain():
            self.close_connection = True
        data = b"" if self.command == "HEAD" else error_xml(
            e.code, e.message, self.request_id, f"{self.server.oss.bucket}.sandbox-oss", e.extra)
        h = {"Content-Type": "application/xml"} if data else {}
        if self.command == "HEAD":
            h["x-oss-err"] = base64.b64encode(error_xml(e.code, e.message, self.request_id)).decode()
            h["x-oss-ec"] = "0000-00000000"
        self._start(e.status, h, len(data))
        if data:
            self.wfile.write(data)

    # -- addressing & auth -----------------------------------------------------------------
    def _parse_target(self) -> tuple[str | None, str, dict[str, str]]:
        parts = urlsplit(self.path)
        params = dict(parse_qsl(parts.query, keep_blank_values=True))
        raw_path = parts.path
        vbucket = virtual_host_bucket(self.headers.get("Host"), self.server.oss.bucket)
        if vbucket is not None:
            return vbucket, unquote(raw_path[1:], errors="surrogateescape"), params
        p = raw_path[1:]
        if not p:
            return None, "", params
        bucket, _, key = p.partition("/")
        return unquote(bucket), unquote(key, errors="surrogateescape"), params

    def _authenticate(self, bucket: str | None, key: str, params: dict[str, str]) -> None:
        oss = self.server.oss
        auth = self.headers.get("Authorization")
        if not auth and "OSSAccessKeyId" in params and "Signature" in params:
            return self._check_signed_url(bucket, key, params)
        if not auth:
            raise OssError(403, "AccessDenied", "You have no right to access this object because "
                           "of bucket acl (anonymous request).")
        if auth.startswith("OSS "):
            key_id, _, sig = auth[4:].rpartition(":")
            self._check_key_id(key_id)
            sts = self._v1_string_to_sign(bucket, key, params)
            want = base64.b64encode(hmac.new(oss.key_secret.encode(), sts, hashlib.sha1).digest()).decode()
            if not hmac.compare_digest(want, sig.strip()):
                raise OssError(403, "SignatureDoesNotMatch",
                               "The request signature we calculated does not match the signature "
                               "you provided. Check your key and signing method.",
                               OSSAccessKeyId=key_id, StringToSign=sts.decode("utf-8", "replace"))
        elif auth.startswith("OSS4-HMAC-SHA256 "):
            fields = {}
            for item in auth[len("OSS4-HMAC-SHA256 "):].split(","):
                k, _, v = item.strip().partition("=")
                fields[k] = v
            cred = fields.get("Credential", "").split("/")
            if len(cred) != 5:
                raise OssError(400, "InvalidArgument", "Malformed V4 Credential.")
            key_id, date, region, product, _term = cred
            self._check_key_id(key_id)
            self._check_v4(bucket, key, params, date, region, product,
                           fields.get("Signature", ""), fields.get("AdditionalHeaders"))
        elif auth.startswith("OSS2 "):
            fields = dict(i.strip().split(":", 1) for i in auth[5:].split(",") if ":" in i)
            self._check_key_id(fields.get("AccessKeyId", ""))
        else:
            raise OssError(400, "InvalidArgument", "Authorization header is invalid.")

    def _check_signed_url(self, bucket: str | None, key: str, params: dict[str, str]) -> None:
        """V1 presigned URL (``bucket.sign_url``): OSSAccessKeyId, Expires, Signature."""
        key_id = params["OSSAccessKeyId"]
        self._check_key_id(key_id)
        expires = params.get("Expires", "")
        if not expires.isdigit() or int(expires) < self.server.oss.faults.now_for_presigned():
            raise OssError(403, "AccessDenied", "Request has expired.", Expires=expires)
        sts = self._v1_string_to_sign(bucket, key, params, date=expires)
        want = base64.b64encode(hmac.new(self.server.oss.key_secret.encode(), sts,
                                         hashlib.sha1).digest()).decode()
        if not hmac.compare_digest(want, params["Signature"]):
            raise OssError(403, "SignatureDoesNotMatch", "The request signature we calculated "
                           "does not match the signature you provided.",
                           OSSAccessKeyId=key_id, StringToSign=sts.decode("utf-8", "replace"))

    def _check_key_id(self, key_id: str) -> None:
        if key_id != self.server.oss.key_id:
            raise OssError(403, "InvalidAccessKeyId", "The OSS Access Key Id you provided does "
                           "not exist in our records.", OSSAccessKeyId=key_id)

    def _v1_string_to_sign(self, bucket: str | None, key: str, params: dict[str, str],
                           date: str | None = None) -> bytes:
        h = self.headers
        canon = sorted((k.lower(), v) for k, v in h.items() if k.lower().startswith("x-oss-"))
        hdrs = b"".join(k.encode() + b":" + v.encode("utf-8", "surrogateescape") + b"\n"
                        for k, v in canon)
        sub = sorted((k, v) for k, v in params.items() if k in SUBRESOURCES)
        subs = ("?" + "&".join(k + "=" + v if v else k for k, v in sub)) if sub else ""
        if bucket is None:
            resource = "/" + subs
        else:
            resource = f"/{bucket}/{key}{subs}"
        if date is None:
            date = h.get("x-oss-date") or h.get("Date", "")
        return b"\n".join([self.command.encode(), h.get("Content-MD5", "").encode(),
                           h.get("Content-Type", "").encode(), date.encode(),
                           hdrs + resource.encode("utf-8", "surrogateescape")])

    def _check_v4(self, bucket, key, params, date, region, product, signature, additional):
        h = self.headers
        extra = [a.strip().lower() for a in additional.split(";")] if additional else []

        def signed(name: str) -> bool:
            return name.startswith("x-oss-") or name in ("content-type", "content-md5") or name in extra
        canon_h = sorted((k.lower(), v) for k, v in h.items() if signed(k.lower()))
        uri = _v4_encode(f"/{bucket}/{key}" if bucket else "/", True)
        q = sorted((_v4_encode(k, False), _v4_encode(v, False)) for k, v in params.items())
        query = "&".join(k + "=" + v if v else k for k, v in q)
        creq = "\n".join([self.command, uri, query,
                          "".join(f"{k}:{v}\n" for k, v in canon_h),
                          ";".join(sorted(extra)),
                          h.get("x-oss-content-sha256", "UNSIGNED-PAYLOAD")])
        dt = h.get("x-oss-date", "")
        scope = f"{date}/{region}/{product}/aliyun_v4_request"
        sts = "\n".join(["OSS4-HMAC-SHA256", dt, scope,
                         hashlib.sha256(creq.encode("utf-8", "surrogateescape")).hexdigest()])
        k = ("aliyun_v4" + self.server.oss.key_secret).encode()
        for part in (date, region, product, "aliyun_v4_request"):
            k = hmac.new(k, part.encode(), hashlib.sha256).digest()
        want = hmac.new(k, sts.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(want, signature):
            raise OssError(403, "SignatureDoesNotMatch",
                           "The request signature we calculated does not match the signature you "
                           "provided.", CanonicalRequest=creq, StringToSign=sts)

    # -- routing ---------------------------------------------------------------------------
    def _route(self) -> None:
        oss = self.server.oss
        bucket, key, params = self._parse_target()
        self._authenticate(bucket, key, params)
        fault = oss.faults.take_error(self.command)
        if fault is not None:
            if fault["kind"] == "reset":
                self.close_connection = True
                self._sent = True
                reset_connection(self.connection)
                return
            raise OssError(fault["status"], fault["code"], fault["message"])
        m = self.command
        if bucket is None:
            if m == "GET":
                return self._list_buckets()
            raise OssError(405, "MethodNotAllowed", "The specified method is not allowed.")
        if bucket != oss.bucket:
            raise OssError(404, "NoSuchBucket", "The specified bucket does not exist.",
                           BucketName=bucket)
        if not key:
            if m == "GET" and "uploads" in params:
                return self._list_uploads(params)
            if m == "GET" and "bucketInfo" in params:
                return self._bucket_info()
            if m == "GET" and "location" in params:
                return self._xml("LocationConstraint", "oss-sandbox")
            if m == "GET":
                return self._list_objects(params)
            if m == "POST" and "delete" in params:
                return self._batch_delete(params)
            if m == "PUT":
                return self._reply(200)  # create bucket: it exists
            if m == "HEAD":
                return self._reply(200)
            raise OssError(405, "MethodNotAllowed", "The specified method is not allowed.")
        if len(key.encode("utf-8", "surrogateescape")) > 1023:
            raise OssError(400, "InvalidObjectName", "The length of key must be less than 1024.")
        if m == "PUT" and "uploadId" in params:
            return self._upload_part(key, params)
        if m == "POST" and "uploads" in params:
            return self._init_upload(key, params)
        if m == "POST" and "uploadId" in params:
            return self._complete(key, params)
        if m == "GET" and "uploadId" in params:
            return self._list_parts(key, params)
        if m == "DELETE" and "uploadId" in params:
            up = oss.store.upload(params["uploadId"], key)
            oss.store.drop_upload(up)
            return self._reply(204)
        if m == "PUT":
            if "x-oss-copy-source" in self.headers:
                return self._copy(key)
            return self._put(key)
        if m == "HEAD" and "objectMeta" in params:
            return self._get(key, params, head=True, meta_only=True)
        if m == "GET":
            return self._get(key, params, head=False)
        if m == "HEAD":
            return self._get(key, params, head=True)
        if m == "DELETE":
            oss.store.delete(key)
            return self._reply(204)
        raise OssError(405, "MethodNotAllowed", "The specified method is not allowed.")

    # -- writing bodies ----------------------------------------------------------------------
    def _check_quota(self, incoming: int) -> None:
        oss = self.server.oss
        room = oss.faults.quota_room(oss.store.stored_bytes())
        if room is not None and incoming > room:
            oss.faults.quota_rejected()
            raise OssError(507, "InsufficientStorage",
                           f"Quota exceeded (sandbox fault): {incoming} bytes do not fit, "
                           f"{max(room, 0)} left.")

    def _receive(self) -> tuple[str, int, str, int]:
        """Stream the body to a temp file: (path, size, md5 hex upper, crc64)."""
        oss = self.server.oss
        if self.body.length is not None:
            self._check_quota(self.body.length)
        md5 = hashlib.md5()
        crc = Crc64(0)
        size = 0
        tmp = oss.store.tmp_file()
        ok = False
        try:
            with tmp:
                for piece in self.body:
                    size += len(piece)
                    if self.body.length is None and size % (1 << 20) < len(piece):
                        self._check_quota(size)
                    md5.update(piece)
                    crc.update(piece)
                    tmp.write(piece)
            if self.body.length is None:
                self._check_quota(size)
            want_md5 = self.headers.get("Content-MD5")
            if want_md5 and base64.b64decode(want_md5) != md5.digest():
                raise OssError(400, "InvalidDigest", "The Content-MD5 you specified is not valid.")
            ok = True
            return tmp.name, size, md5.hexdigest().upper(), crc.crc
        finally:
            if not ok:
                os.unlink(tmp.name)

    def _user_meta(self) -> dict:
        return {k.lower(): v for k, v in self.headers.items() if k.lower().startswith("x-oss-meta-")}

    def _put(self, key: str) -> None:
        store = self.server.oss.store
        if self.headers.get("x-oss-forbid-overwrite", "").lower() == "true" and key in store.objects:
            raise OssError(409, "FileAlreadyExists", "The object you specified already exists and "
                           "can not be overwritten.")
        path, size, md5, crc = self._receive()
        meta = ObjMeta(key, size, md5, crc, time.time(), "Normal",
                       self.headers.get("Content-Type") or "application/octet-stream",
                       self._user_meta())
        store.commit(path, meta)
        self._reply(200, headers={"ETag": f'"{md5}"', "x-oss-hash-crc64ecma": _crc_str(crc),
                                  "Content-MD5": base64.b64encode(bytes.fromhex(md5)).decode()})

    def _copy(self, key: str) -> None:
        store = self.server.oss.store
        src = unquote(self.headers["x-oss-copy-source"])
        sb, _, sk = src.lstrip("/").partition("/")
        if sb != store.bucket:
            raise OssError(404, "NoSuchBucket", "The specified bucket does not exist.")
        m = store.get(sk)
        self._check_quota(m.size)
        tmp = store.tmp_file()
        with tmp, store.open(sk) as f:
            shutil.copyfileobj(f, tmp, CHUNK)
        directive = self.headers.get("x-oss-metadata-directive", "COPY").upper()
        meta = ObjMeta(key, m.size, m.etag, m.crc64, time.time(), m.type,
                       m.content_type if directive == "COPY" else
                       (self.headers.get("Content-Type") or "application/octet-stream"),
                       m.user_meta if directive == "COPY" else self._user_meta())
        store.commit(tmp.name, meta)
        self._xml("CopyObjectResult", f"<ETag>\"{m.etag}\"</ETag><LastModified>{_iso(meta.mtime)}"
                  "</LastModified>", {"x-oss-hash-crc64ecma": _crc_str(m.crc64)})

    # -- reading -----------------------------------------------------------------------------
    def _get(self, key: str, params: dict, head: bool, meta_only: bool = False) -> None:
        oss = self.server.oss
        with oss.store.lock:  # meta and data of the same version, even if overwritten meanwhile
            m = oss.store.get(key)
            f = None if head else oss.store.open(key)
        try:
            self._get_open(key, params, head, meta_only, m, f)
        finally:
            if f is not None:
                f.close()

    def _get_open(self, key, params, head, meta_only, m: ObjMeta, f) -> None:
        oss = self.server.oss
        h = self.headers
        etag_q = f'"{m.etag}"'
        if_match = h.get("If-Match")
        if if_match and if_match.strip().strip('"') != m.etag and if_match.strip() != "*":
            raise OssError(412, "PreconditionFailed", "At least one of the pre-conditions you "
                           "specified did not hold.", Condition="If-Match")
        ius = h.get("If-Unmodified-Since")
        if ius:
            t = email.utils.parsedate_tz(ius)
            if t and int(m.mtime) > email.utils.mktime_tz(t):
                raise OssError(412, "PreconditionFailed", "At least one of the pre-conditions "
                               "you specified did not hold.", Condition="If-Unmodified-Since")
        inm = h.get("If-None-Match")
        if inm and inm.strip().strip('"') == m.etag:
            return self._reply(304, headers={"ETag": etag_q})
        ims = h.get("If-Modified-Since")
        if ims:
            t = email.utils.parsedate_tz(ims)
            if t and int(m.mtime) <= email.utils.mktime_tz(t):
                return self._reply(304, headers={"ETag": etag_q})
        headers = {"ETag": etag_q, "Last-Modified": _http_date(m.mtime),
                   "x-oss-hash-crc64ecma": _crc_str(m.crc64)}
        if meta_only:  # HEAD ?objectMeta: the size goes in Content-Length, no body
            headers["x-oss-last-access-time"] = _http_date(m.mtime)
            return self._start(200, headers, m.size)
        headers.update({"x-oss-object-type": m.type, "x-oss-storage-class": "Standard",
                        "Accept-Ranges": "bytes", "Content-Type": m.content_type})
        headers.update(m.user_meta)
        for p, hn in (("response-content-type", "Content-Type"),
                      ("response-content-disposition", "Content-Disposition"),
                      ("response-cache-control", "Cache-Control"),
                      ("response-content-encoding", "Content-Encoding"),
                      ("response-expires", "Expires")):
            if p in params:
                headers[hn] = params[p]
        start, end, status = 0, m.size - 1, 200
        rng = h.get("Range")
        if rng and not head:
            r = self._parse_range(rng, m.size)
            if r is not None:
                start, end = r
                status = 206
                headers["Content-Range"] = f"bytes {start}-{end}/{m.size}"
                # like OSS, x-oss-hash-crc64ecma stays the whole object's CRC on a 206
        length = max(0, end - start + 1)
        self._start(status, headers, length)
        if head or length == 0:
            return
        faults = oss.faults
        f.seek(start)
        left = length
        while left > 0:
            tb = faults.throttle
            n = min(left, tb.chunk_size() if tb else CHUNK)
            data = f.read(n)
            if not data:
                raise ConnectionError("object shrank while reading")
            if tb:
                tb.consume(len(data))
            self.wfile.write(data)
            left -= len(data)

    def _parse_range(self, rng: str, size: int) -> tuple[int, int] | None:
        standard = self.headers.get("x-oss-range-behavior", "").lower() == "standard"
        mt = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", rng)
        if not mt or (mt.group(1) == "" and mt.group(2) == ""):
            return None  # OSS ignores a malformed range
        a, b = mt.group(1), mt.group(2)
        if a == "":
            n = int(b)
            if n == 0:
                raise OssError(416, "InvalidRange", "The requested range cannot be satisfied.")
            return max(0, size - n), size - 1
        start = int(a)
        end = int(b) if b else size - 1
        if start >= size or (b and end < start):
            if standard or start >= size:
                raise OssError(416, "InvalidRange", "The requested range cannot be satisfied.")
            return None
        return start, min(end, size - 1)

    # -- listing ---------------------------------------------------------------------------
    def _list_buckets(self) -> None:
        oss = self.server.oss
        b = (f"<Bucket><CreationDate>{_iso(oss.store.created)}</CreationDate>"
             f"<ExtranetEndpoint>{escape(self.headers.get('Host', ''))}</ExtranetEndpoint>"
             f"<IntranetEndpoint>{escape(self.headers.get('Host', ''))}</IntranetEndpoint>"
             f"<Location>oss-sandbox</Location><Name>{escape(oss.bucket)}</Name>"
             "<Region>sandbox</Region><StorageClass>Standard</StorageClass></Bucket>")
        self._xml("ListAllMyBucketsResult", "<Owner><ID>sandbox</ID><DisplayName>sandbox"
                  f"</DisplayName></Owner><Buckets>{b}</Buckets>")

    def _bucket_info(self) -> None:
        oss = self.server.oss
        self._xml("BucketInfo", f"<Bucket><CreationDate>{_iso(oss.store.created)}</CreationDate>"
                  "<ExtranetEndpoint>sandbox</ExtranetEndpoint><IntranetEndpoint>sandbox"
                  "</IntranetEndpoint><Location>oss-sandbox</Location>"
                  f"<Name>{escape(oss.bucket)}</Name><StorageClass>Standard</StorageClass>"
                  "<Owner><ID>sandbox</ID><DisplayName>sandbox</DisplayName></Owner>"
                  "<AccessControlList><Grant>private</Grant></AccessControlList>"
                  "<DataRedundancyType>LRS</DataRedundancyType>"
                  "<ServerSideEncryptionRule><SSEAlgorithm>None</SSEAlgorithm>"
                  "</ServerSideEncryptionRule><Versioning></Versioning></Bucket>")

    @staticmethod
    def _max_keys(params: dict, name: str) -> int:
        try:
            n = int(params.get(name) or 100)
        except ValueError:
            raise OssError(400, "InvalidArgument", f"{name} must be an integer.")
        if n < 0 or n > MAX_KEYS:
            raise OssError(400, "InvalidArgument", f"{name} must be between 0 and {MAX_KEYS}.")
        return n

    def _scan(self, keys: list[str], prefix: str, delimiter: str, marker: str, max_keys: int):
        """S3/OSS listing: (entries [(key|None, prefix|None)], truncated, last item)."""
        import bisect
        out: list[tuple[str | None, str | None]] = []
        i = bisect.bisect_right(keys, marker) if marker else 0
        if prefix:
            i = max(i, bisect.bisect_left(keys, prefix))
        skip_prefix = marker if (delimiter and marker.endswith(delimiter)) else None
        last = None
        while i < len(keys):
            k = keys[i]
            if prefix and not k.startswith(prefix):
                break
            if skip_prefix and k.startswith(skip_prefix):
                i += 1
                continue
            if delimiter:
                j = k.find(delimiter, len(prefix))
                if j >= 0:
                    cp = k[:j + len(delimiter)]
                    if len(out) >= max_keys:
                        return out, True, last
                    out.append((None, cp))
                    last = cp
                    skip_prefix = cp
                    i += 1
                    continue
            if len(out) >= max_keys:
                return out, True, last
            out.append((k, None))
            last = k
            i += 1
        return out, False, last

    def _list_objects(self, params: dict) -> None:
        store = self.server.oss.store
        v2 = params.get("list-type") == "2"
        prefix = params.get("prefix", "")
        delimiter = params.get("delimiter", "")
        enc = params.get("encoding-type", "")
        if enc not in ("", "url"):
            raise OssError(400, "InvalidArgument", "encoding-type must be url.")
        max_keys = self._max_keys(params, "max-keys")

        def e(s: str) -> str:
            return escape(quote(s, safe="/") if enc == "url" else s)
        if v2:
            token = params.get("continuation-token", "")
            if token:
                try:
                    marker = base64.urlsafe_b64decode(token.encode()).decode("utf-8", "surrogatepass")
                except (ValueError, UnicodeDecodeError):
                    raise OssError(400, "InvalidArgument", "The continuation token is not valid.")
            else:
                marker = params.get("start-after", "")
        else:
            marker = params.get("marker", "")
        with store.lock:
            keys = store.sorted_keys()
            entries, truncated, last = self._scan(keys, prefix, delimiter, marker, max_keys)
            metas = {k: store.objects[k] for k, _ in entries if k is not None}
        x = [f"<Name>{escape(store.bucket)}</Name>", f"<Prefix>{e(prefix)}</Prefix>"]
        if v2:
            if params.get("continuation-token"):
                x.append(f"<ContinuationToken>{escape(params['continuation-token'])}</ContinuationToken>")
            if params.get("start-after"):
                x.append(f"<StartAfter>{e(params['start-after'])}</StartAfter>")
        else:
            x.append(f"<Marker>{e(marker)}</Marker>")
        x.append(f"<MaxKeys>{max_keys}</MaxKeys><Delimiter>{e(delimiter)}</Delimiter>")
        if enc:
            x.append("<EncodingType>url</EncodingType>")
        x.append(f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>")
        if truncated and last is not None:
            if v2:
                tok = base64.urlsafe_b64encode(last.encode("utf-8", "surrogatepass")).decode()
                x.append(f"<NextContinuationToken>{tok}</NextContinuationToken>")
            else:
                x.append(f"<NextMarker>{e(last)}</NextMarker>")
        if v2:
            x.append(f"<KeyCount>{len(entries)}</KeyCount>")
        owner = v2 is False or params.get("fetch-owner") == "true"
        for k, cp in entries:
            if k is None:
                continue
            m = metas[k]
            x.append(f"<Contents><Key>{e(k)}</Key><LastModified>{_iso(m.mtime)}</LastModified>"
                     f"<ETag>\"{m.etag}\"</ETag><Type>{m.type}</Type><Size>{m.size}</Size>"
                     "<StorageClass>Standard</StorageClass>"
                     + ("<Owner><ID>sandbox</ID><DisplayName>sandbox</DisplayName></Owner>"
                        if owner else "") + "</Contents>")
        for k, cp in entries:
            if cp is not None:
                x.append(f"<CommonPrefixes><Prefix>{e(cp)}</Prefix></CommonPrefixes>")
        self._xml("ListBucketResult", "".join(x))

    def _read_xml_body(self, limit: int = 16 << 20) -> ElementTree.Element:
        data = bytearray()
        for piece in self.body:
            data += piece
            if len(data) > limit:
                raise OssError(400, "MalformedXML", "The XML you provided is too large.")
        want_md5 = self.headers.get("Content-MD5")
        if want_md5 and base64.b64decode(want_md5) != hashlib.md5(data).digest():
            raise OssError(400, "InvalidDigest", "The Content-MD5 you specified is not valid.")
        try:
            return ElementTree.fromstring(bytes(data))
        except ElementTree.ParseError:
            raise OssError(400, "MalformedXML", "The XML you provided was not well-formed.")

    def _batch_delete(self, params: dict) -> None:
        store = self.server.oss.store
        root = self._read_xml_body()
        quiet = (root.findtext("Quiet") or "false").strip().lower() == "true"
        keys = [o.findtext("Key") or "" for o in root.findall("Object")]
        if len(keys) > 1000:
            raise OssError(400, "MalformedXML", "At most 1000 keys per request.")
        enc = params.get("encoding-type") == "url"
        x = ["<EncodingType>url</EncodingType>"] if enc else []
        for k in keys:
            store.delete(k)
            if not quiet:
                x.append(f"<Deleted><Key>{escape(quote(k, safe='/') if enc else k)}</Key></Deleted>")
        self._xml("DeleteResult", "".join(x))

    # -- multipart ---------------------------------------------------------------------------
    def _init_upload(self, key: str, params: dict) -> None:
        store = self.server.oss.store
        up = store.new_upload(key, self.headers.get("Content-Type") or "application/octet-stream",
                              self._user_meta())
        enc = params.get("encoding-type") == "url"
        k = quote(key, safe="/") if enc else key
        self._xml("InitiateMultipartUploadResult",
                  f"<Bucket>{escape(store.bucket)}</Bucket><Key>{escape(k)}</Key>"
                  f"<UploadId>{up.upload_id}</UploadId>"
                  + ("<EncodingType>url</EncodingType>" if enc else ""))

    def _upload_part(self, key: str, params: dict) -> None:
        store = self.server.oss.store
        up = store.upload(params["uploadId"], key)
        try:
            n = int(params.get("partNumber", ""))
        except ValueError:
            raise OssError(400, "InvalidArgument", "partNumber must be an integer.")
        if not 1 <= n <= 10000:
            raise OssError(400, "InvalidArgument", "Part number must be an integer between 1 and "
                           "10000, inclusive.")
        if "x-oss-copy-source" in self.headers:
            return self._upload_part_copy(up, n)
        path, size, md5, crc = self._receive()
        if size > 5 << 30:
            os.unlink(path)
            raise OssError(400, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size.")
        store.commit_part(up, n, path, {"etag": md5, "size": size, "crc64": crc,
                                        "mtime": time.time()})
        self._reply(200, headers={"ETag": f'"{md5}"', "x-oss-hash-crc64ecma": _crc_str(crc),
                                  "Content-MD5": base64.b64encode(bytes.fromhex(md5)).decode()})

    def _upload_part_copy(self, up: "Upload", n: int) -> None:
        """UploadPartCopy: the part is a byte range (``x-oss-copy-source-range: bytes=a-b``, or the
        whole) of another object, copied by the store."""
        store = self.server.oss.store
        sb, _, sk = unquote(self.headers["x-oss-copy-source"]).lstrip("/").partition("/")
        if sb != store.bucket:
            raise OssError(404, "NoSuchBucket", "The specified bucket does not exist.")
        m = store.get(sk)
        first, last = 0, m.size - 1
        rng = self.headers.get("x-oss-copy-source-range")
        if rng:
            a, _, b = rng.strip().removeprefix("bytes=").partition("-")
            try:
                first, last = int(a), (int(b) if b else m.size - 1)
            except ValueError:
                raise OssError(400, "InvalidArgument", "The copy source range is not valid.")
            if not 0 <= first <= last < m.size:
                raise OssError(400, "InvalidArgument", "The copy source range is not valid.")
        self._check_quota(last - first + 1)
        md5, crc, left = hashlib.md5(), Crc64(0), last - first + 1
        tmp = store.tmp_file()
        with tmp, store.open(sk) as f:
            f.seek(first)
            while left > 0 and (piece := f.read(min(CHUNK, left))):
                md5.update(piece)
                crc.update(piece)
                tmp.write(piece)
                left -= len(piece)
        etag = md5.hexdigest().upper()
        store.commit_part(up, n, tmp.name, {"etag": etag, "size": last - first + 1, "crc64": crc.crc,
                                            "mtime": time.time()})
        self._xml("CopyPartResult", f"<LastModified>{_iso(time.time())}</LastModified><ETag>\"{etag}\"</ETag>",
                  {"ETag": f'"{etag}"', "x-oss-hash-crc64ecma": _crc_str(crc.crc)})

    def _complete(self, key: str, params: dict) -> None:
        oss = self.server.oss
        store = oss.store
        up = store.upload(params["uploadId"], key)
        if self.headers.get("x-oss-complete-all", "").lower() == "yes":
            chosen = sorted(up.parts)
            if self.body.length:
                raise OssError(400, "InvalidArgument", "x-oss-complete-all: yes takes no body.")
        else:
            root = self._read_xml_body()
            chosen = []
            for p in root.findall("Part"):
                try:
                    n = int(p.findtext("PartNumber") or "")
                except ValueError:
                    raise OssError(400, "MalformedXML", "PartNumber must be an integer.")
                etag = (p.findtext("ETag") or "").strip().strip('"').upper()
                info = up.parts.get(n)
                if info is None or info["etag"] != etag:
                    raise OssError(400, "InvalidPart", "One or more of the specified parts could "
                                   "not be found or the specified entity tag might not have "
                                   "matched the part's entity tag.", PartNumber=str(n),
                                   UploadId=up.upload_id)
                if chosen and n <= chosen[-1]:
                    raise OssError(400, "InvalidPartOrder", "The list of parts was not in "
                                   "ascending order.", UploadId=up.upload_id)
                chosen.append(n)
        if not chosen:
            raise OssError(400, "InvalidArgument", "At least one part is required.")
        for n in chosen[:-1]:
            if up.parts[n]["size"] < oss.min_part_size:
                raise OssError(400, "EntityTooSmall", "Your proposed upload is smaller than the "
                               "minimum allowed size.", PartNumber=str(n),
                               MinSizeAllowed=str(oss.min_part_size))
        crc = Crc64(0)
        md5s = hashlib.md5()
        size = 0
        tmp = store.tmp_file()
        try:
            with tmp:
                for n in chosen:
                    md5s.update(bytes.fromhex(up.parts[n]["etag"]))
                    with open(store.part_path(up, n), "rb") as f:
                        while True:
                            d = f.read(1 << 20)
                            if not d:
                                break
                            crc.update(d)
                            tmp.write(d)
                            size += len(d)
        except BaseException:
            os.unlink(tmp.name)
            raise
        etag = f"{md5s.hexdigest().upper()}-{len(chosen)}"
        store.commit(tmp.name, ObjMeta(key, size, etag, crc.crc, time.time(), "Multipart",
                                       up.content_type, up.user_meta))
        store.drop_upload(up)
        enc = params.get("encoding-type") == "url"
        k = quote(key, safe="/") if enc else key
        self._xml("CompleteMultipartUploadResult",
                  ("<EncodingType>url</EncodingType>" if enc else "")
                  + f"<Location>{escape(self.headers.get('Host', ''))}/{escape(k)}</Location>"
                  f"<Bucket>{escape(store.bucket)}</Bucket><Key>{escape(k)}</Key>"
                  f"<ETag>\"{etag}\"</ETag>",
                  {"ETag": f'"{etag}"', "x-oss-hash-crc64ecma": _crc_str(crc.crc)})

    def _list_parts(self, key: str, params: dict) -> None:
        store = self.server.oss.store
        up = store.upload(params["uploadId"], key)
        max_parts = self._max_keys({"max-parts": params.get("max-parts")}, "max-parts")
        marker = int(params.get("part-number-marker") or 0)
        nums = sorted(n for n in list(up.parts) if n > marker)
        page, truncated = nums[:max_parts], len(nums) > max_parts
        enc = params.get("encoding-type") == "url"
        k = quote(key, safe="/") if enc else key
        x = [f"<Bucket>{escape(store.bucket)}</Bucket><Key>{escape(k)}</Key>"
             f"<UploadId>{up.upload_id}</UploadId><PartNumberMarker>{marker}</PartNumberMarker>"
             f"<NextPartNumberMarker>{page[-1] if page else marker}</NextPartNumberMarker>"
             f"<MaxParts>{max_parts}</MaxParts>"
             f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>"]
        if enc:
            x.append("<EncodingType>url</EncodingType>")
        for n in page:
            p = up.parts[n]
            x.append(f"<Part><PartNumber>{n}</PartNumber><LastModified>{_iso(p['mtime'])}"
                     f"</LastModified><ETag>\"{p['etag']}\"</ETag>"
                     f"<HashCrc64ecma>{p['crc64']}</HashCrc64ecma><Size>{p['size']}</Size></Part>")
        self._xml("ListPartsResult", "".join(x))

    def _list_uploads(self, params: dict) -> None:
        store = self.server.oss.store
        prefix = params.get("prefix", "")
        delimiter = params.get("delimiter", "")
        key_marker = params.get("key-marker", "")
        id_marker = params.get("upload-id-marker", "")
        max_uploads = self._max_keys({"max-uploads": params.get("max-uploads")}, "max-uploads")
        enc = params.get("encoding-type") == "url"

        def e(s: str) -> str:
            return escape(quote(s, safe="/") if enc else s)
        with store.lock:
            ups = sorted(((u.key, u.initiated, u.upload_id) for u in store.uploads.values()))
        items: list[tuple[str, str | None, float]] = []  # key or prefix, upload id, initiated
        prefixes_seen: set[str] = set()
        for k, ini, uid in ups:
            if prefix and not k.startswith(prefix):
                continue
            if key_marker and (k < key_marker or (k == key_marker and (not id_marker or uid <= id_marker))):
                continue
            if delimiter:
                j = k.find(delimiter, len(prefix))
                if j >= 0:
                    cp = k[:j + len(delimiter)]
                    if cp not in prefixes_seen:
                        prefixes_seen.add(cp)
                        items.append((cp, None, 0))
                    continue
            items.append((k, uid, ini))
        truncated = len(items) > max_uploads
        items = items[:max_uploads]
        nk = items[-1][0] if truncated and items else ""
        nu = (items[-1][1] or "") if truncated and items else ""
        x = [f"<Bucket>{escape(store.bucket)}</Bucket><KeyMarker>{e(key_marker)}</KeyMarker>"
             f"<UploadIdMarker>{escape(id_marker)}</UploadIdMarker>"
             f"<NextKeyMarker>{e(nk)}</NextKeyMarker><NextUploadIdMarker>{nu}</NextUploadIdMarker>"
             f"<Delimiter>{e(delimiter)}</Delimiter><Prefix>{e(prefix)}</Prefix>"
             f"<MaxUploads>{max_uploads}</MaxUploads>"
             f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>"]
        if enc:
            x.append("<EncodingType>url</EncodingType>")
        for k, uid, ini in items:
            if uid is not None:
                x.append(f"<Upload><Key>{e(k)}</Key><UploadId>{uid}</UploadId>"
                         f"<StorageClass>Standard</StorageClass><Initiated>{_iso(ini)}</Initiated></Upload>")
        for k, uid, _ in items:
            if uid is None:
                x.append(f"<CommonPrefixes><Prefix>{e(k)}</Prefix></CommonPrefixes>")
        self._xml("ListMultipartUploadsResult", "".join(x))


# -- process entry point -------------------------------------------------------------------

def _write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def add_common_args(ap: argparse.ArgumentParser) -> None:
    """The CLI shape shared by the sandbox object stores (gflags-style ``--k=v`` works too)."""
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--data", required=True, help="data directory")
    ap.add_argument("--bucket", required=True)
    ap.add_argument("--access-key-id", "--access_key_id", required=True)
    ap.add_argument("--access-key-secret", "--access_key_secret", required=True)
    ap.add_argument("--port-file", "--port_file", help="write the bound port here once serving")
    ap.add_argument("--pid-file", "--pid_file", help="write the pid here; removed at clean exit")


def parse_args(ap: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    argv = list(sys.argv[1:] if argv is None else argv)
    expanded: list[str] = []
    for a in argv:  # --flagfile=<file>: one --key=value per line
        if a.startswith("--flagfile="):
            with open(a.split("=", 1)[1]) as f:
                expanded += [ln.strip() for ln in f if ln.strip() and not ln.startswith("#")]
        else:
            expanded.append(a)
    return ap.parse_args(expanded)


def announce(host: str, port: int, args: argparse.Namespace) -> None:
    if args.pid_file:
        _write_atomic(args.pid_file, f"{os.getpid()}\n")
    if args.port_file:
        _write_atomic(args.port_file, f"{port}\n")
    print(f"listening http://{host}:{port}", flush=True)


def run_until_signal(serve, stop, args) -> None:
    def on_term(signum, frame):
        threading.Thread(target=stop, daemon=True).start()
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    try:
        serve()
    finally:
        if args.pid_file:
            try:
                os.unlink(args.pid_file)
            except OSError:
                pass


class StoreProcess:
    """Runs a sandbox store module (``brsm.sandbox.oss_server``/``s3_server``) as a child process.

    ``start()`` waits until the port file appears (the store is serving), ``stop()`` sends
    SIGTERM and waits (SIGKILL after ``timeout``). ``.endpoint`` is ``http://host:port``.
    """

    def __init__(self, module: str, host: str, port: int, data_dir: str | os.PathLike,
                 bucket: str, key_id: str, key_secret: str, extra_args: list[str] | None = None,
                 python: str | None = None, log_path: str | os.PathLike | None = None) -> None:
        self.module, self.host, self.port = module, host, port
        self.data_dir = Path(data_dir)
        self.bucket, self.key_id, self.key_secret = bucket, key_id, key_secret
        self.extra_args = list(extra_args or [])
        self.python = python or sys.executable
        self.log_path = Path(log_path) if log_path else self.data_dir / f"{module.rsplit('.', 1)[-1]}.log"
        self.proc = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> "StoreProcess":
        import subprocess
        self.data_dir.mkdir(parents=True, exist_ok=True)
        port_file = self.data_dir / f".{self.module.rsplit('.', 1)[-1]}.port"
        port_file.unlink(missing_ok=True)
        cmd = [self.python, "-m", self.module, "--host", self.host, "--port", str(self.port),
               "--data", str(self.data_dir), "--bucket", self.bucket,
               "--access-key-id", self.key_id, "--access-key-secret", self.key_secret,
               "--port-file", str(port_file), *self.extra_args]
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if port_file.exists():
                self.port = int(port_file.read_text().strip())
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        self.stop()
        tail = self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""
        raise RuntimeError(f"{self.module} did not start: {tail}")

    def stop(self, timeout: float = 10.0) -> None:
        import subprocess
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> "StoreProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m brsm.sandbox.oss_server",
                                 description="Sandbox Alibaba-OSS-compatible endpoint")
    add_common_args(ap)
    ap.add_argument("--min-part-size", "--min_part_size", type=int, default=MIN_PART_SIZE)
    args = parse_args(ap, argv)
    srv = OssServer(args.host, args.port, args.data, args.bucket, args.access_key_id,
                    args.access_key_secret, min_part_size=args.min_part_size)
    host, port = srv.address
    announce(host, port, args)

    def stop() -> None:
        srv._httpd.shutdown()
    run_until_signal(srv.serve_forever, stop, args)
    srv._httpd.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
