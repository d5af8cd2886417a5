"""Fault injection for the sandbox object stores, and an HTTP reverse proxy that applies it.

Both sandbox stores answer the same control interface:

* ``POST http://<addr>/_sandbox/fault`` with a JSON object (one fault; faults of different
  kinds stack, a new fault of a kind replaces the old one of that kind):

  - ``{"kind": "error", "status": 503, "count": 3}``: the next ``count`` store requests are
    answered with ``status`` and an S3-/OSS-style XML error body (``code`` defaults to
    ``SlowDown`` (S3) / ``ServiceUnavailable`` (OSS) for 503, ``InternalError`` for 500, ...).
    Optional: ``"code"``, ``"message"``, ``"methods": ["PUT", ...]`` (only those methods count),
    ``"skip": N`` (let the first N matching requests through first), ``"count": -1`` (forever).
  - ``{"kind": "reset", "count": N}``: like ``error``, but the connection is closed without
    any response (the client sees a connection reset / remote disconnect). Same options.
  - ``{"kind": "throttle", "bytes_per_second": 1048576}``: request and response bodies of the
    whole endpoint together are limited to that rate (one shared token bucket).
  - ``{"kind": "quota", "bytes": N}``: a write whose body would bring the bytes stored beyond
    N fails with HTTP 507 ``InsufficientStorage`` (body drained first, so SDKs see the error
    response, not a broken pipe; 507 is not retried by botocore or oss2).
  - ``{"kind": "late", "count": N, "seconds": 3600}``: the next N requests made with a presigned URL
    are judged as if they arrived ``seconds`` later (a URL used after it expired: a slow host, a long
    queue, a clock ahead); the store's own expiry check answers, as it would (S3: 403 AccessDenied
    "Request has expired"; OSS the same). Requests signed in a header are not counted.
  - ``{"kind": "clear"}``: remove every fault (``{"kind": "clear", "what": "throttle"}``
    removes one kind).

* ``GET http://<addr>/_sandbox/fault`` shows what is active (JSON), with counters.

The prefix ``/_sandbox/`` is reserved: it is only recognised on path-style requests, where
its first segment would be the bucket name ``_sandbox``, which is not a valid S3 or OSS bucket
name (underscore). Virtual-host-style requests (``Host: bucket.<addr>``) never hit it, so no
bucket or object key used by a client can collide with it.

``FaultState`` is the shared logic (used in-process by :mod:`brsm.sandbox.oss_server`);
``FaultProxy`` is a threaded reverse proxy that puts the same faults in front of any HTTP
store (used by :mod:`brsm.sandbox.s3_server` in front of moto).
"""
from __future__ import annotations

import http.client
import json
import os
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Iterator
from urllib.parse import quote, urlsplit
from xml.sax.saxutils import escape

from brsm.sandbox.served import ServedInThread

CONTROL_PREFIX = "/_sandbox/"
FAULT_PATH = "/_sandbox/fault"
CHUNK = 64 * 1024
# A rejected request body up to this size is read and discarded so that the client gets the
# error response; larger ones make the server close the connection instead.
DRAIN_LIMIT = 256 * 1024 * 1024

_S3_CODES = {
    400: ("BadRequest", "Bad Request"),
    403: ("AccessDenied", "Access Denied"),
    404: ("NoSuchKey", "The specified key does not exist."),
    409: ("OperationAborted", "A conflicting conditional operation is in progress."),
    429: ("SlowDown", "Please reduce your request rate."),
    500: ("InternalError", "We encountered an internal error. Please try again."),
    502: ("BadGateway", "Bad Gateway"),
    503: ("SlowDown", "Please reduce your request rate."),
    504: ("GatewayTimeout", "Gateway Timeout"),
    507: ("InsufficientStorage", "Insufficient storage for this write (sandbox quota)."),
}
_OSS_CODES = {
    **_S3_CODES,
    429: ("RequestTimeTooSkewed", "Too many requests."),
    503: ("ServiceUnavailable", "Service is unavailable, please try again later."),
    500: ("InternalError", "We encountered an internal error. Please try again."),
}


class FaultSpecError(ValueError):
    pass


def new_request_id() -> str:
    return uuid.uuid4().hex[:24].upper()


def error_xml(code: str, message: str, request_id: str, host_id: str = "sandbox",
              extra: dict[str, str] | None = None) -> bytes:
    parts = [f"<Code>{escape(code)}</Code>", f"<Message>{escape(message)}</Message>",
             f"<RequestId>{escape(request_id)}</RequestId>", f"<HostId>{escape(host_id)}</HostId>"]
    for k, v in (extra or {}).items():
        parts.append(f"<{k}>{escape(str(v))}</{k}>")
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<Error>' + "".join(parts) + "</Error>\n").encode()


def default_code(flavor: str, status: int) -> tuple[str, str]:
    table = _OSS_CODES if flavor == "oss" else _S3_CODES
    return table.get(status, ("InjectedError", f"Injected fault (HTTP {status})."))


class TokenBucket:
    """A rate limiter shared by all connections of one endpoint."""

    def __init__(self, rate: float) -> None:
        self.rate = float(rate)
        self._lock = threading.Lock()
        self._next = time.monotonic()

    def consume(self, n: int) -> None:
        if n <= 0:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + n / self.rate
            wait = self._next - now  # each chunk waits until the bucket has paid for it
        if wait > 0:
            time.sleep(wait)

    def chunk_size(self) -> int:
        return max(1024, min(CHUNK, int(self.rate / 20)))


class FaultState:
    """Active faults of one endpoint. Thread-safe."""

    def __init__(self, flavor: str) -> None:
        self.flavor = flavor  # "s3" or "oss": default error codes
        self._lock = threading.Lock()
        self._error: dict | None = None
        self._throttle: TokenBucket | None = None
        self._throttle_spec: dict | None = None
        self._quota: dict | None = None
        self._late: dict | None = None
        self.counters = {"errors_injected": 0, "resets_injected": 0, "quota_rejections": 0, "late_requests": 0}

    # -- control ---------------------------------------------------------------------------
    def apply(self, spec: dict, *, current_bytes: Callable[[], int] | None = None) -> dict:
        if not isinstance(spec, dict):
            raise FaultSpecError("fault must be a JSON object")
        kind = spec.get("kind")
        with self._lock:
            if kind in ("error", "reset"):
                status = int(spec.get("status", 503))
                if kind == "error" and not 300 <= status <= 599:
                    raise FaultSpecError("status must be 300..599")
                count = int(spec.get("count", 1))
                methods = spec.get("methods")
                if methods is not None:
                    methods = [str(m).upper() for m in methods]
                code, message = default_code(self.flavor, status)
                self._error = {"kind": kind, "status": status, "count": count,
                               "code": str(spec.get("code", code)),
                               "message": str(spec.get("message", message)),
                               "methods": methods, "skip": int(spec.get("skip", 0))}
            elif kind == "throttle":
                rate = float(spec.get("bytes_per_second", 0))
                if rate <= 0:
                    raise FaultSpecError("bytes_per_second must be > 0")
                self._throttle = TokenBucket(rate)
                self._throttle_spec = {"kind": "throttle", "bytes_per_second": rate}
            elif kind == "quota":
                limit = int(spec.get("bytes", -1))
                if limit < 0:
                    raise FaultSpecError("bytes must be >= 0")
                self._quota = {"kind": "quota", "bytes": limit, "used_at_start": 0, "written": 0}
            elif kind == "late":
                count, seconds = int(spec.get("count", 1)), float(spec.get("seconds", 3600))
                if seconds <= 0:
                    raise FaultSpecError("seconds must be > 0")
                self._late = {"kind": "late", "count": count, "seconds": seconds}
            elif kind == "clear":
                what = spec.get("what")
                if what in (None, "all", "error", "reset"):
                    self._error = None
                if what in (None, "all", "throttle"):
                    self._throttle = None
                    self._throttle_spec = None
                if what in (None, "all", "quota"):
                    self._quota = None
                if what in (None, "all", "late"):
                    self._late = None
            else:
                raise FaultSpecError(f"unknown fault kind {kind!r} (error, reset, throttle, quota, late, clear)")
        if kind == "quota" and current_bytes is not None:
            used = int(current_bytes())
            with self._lock:
                if self._quota is not None:
                    self._quota["used_at_start"] = used
        return self.snapshot()

    def snapshot(self) -> dict:
        with self._lock:
            active = []
            if self._error:
                active.append(dict(self._error))
            if self._throttle_spec:
                active.append(dict(self._throttle_spec))
            if self._late:
                active.append(dict(self._late))
            if self._quota:
                q = dict(self._quota)
                q["used"] = q["used_at_start"] + q["written"]
                active.append(q)
            return {"flavor": self.flavor, "active": active, "counters": dict(self.counters)}

    # -- data path -------------------------------------------------------------------------
    def now_for_presigned(self) -> float:
        """The time a presigned request is judged at: now, or later while a ``late`` fault lasts
        (consumes one count)."""
        with self._lock:
            e = self._late
            if not e or e["count"] == 0:
                return time.time()
            if e["count"] > 0:
                e["count"] -= 1
            self.counters["late_requests"] += 1
            if e["count"] == 0:
                self._late = None
            return time.time() + e["seconds"]

    def take_error(self, method: str) -> dict | None:
        """The error/reset to inject for this request, if any (consumes one count)."""
        with self._lock:
            e = self._error
            if not e or e["count"] == 0:
                return None
            if e["methods"] and method.upper() not in e["methods"]:
                return None
            if e["skip"] > 0:
                e["skip"] -= 1
                return None
            if e["count"] > 0:
                e["count"] -= 1
            self.counters["resets_injected" if e["kind"] == "reset" else "errors_injected"] += 1
            out = dict(e)
            if e["count"] == 0:
                self._error = None
            return out

    @property
    def throttle(self) -> TokenBucket | None:
        return self._throttle

    def quota_room(self, used_now: int | None = None) -> int | None:
        """Bytes that may still be written, or None without a quota.

        ``used_now``: the store's own exact count of stored bytes (the OSS server knows it);
        without it, bytes stored when the quota was set plus bytes written since are used.
        """
        with self._lock:
            q = self._quota
            if q is None:
                return None
            used = used_now if used_now is not None else q["used_at_start"] + q["written"]
            return q["bytes"] - used

    def quota_rejected(self) -> None:
        with self._lock:
            self.counters["quota_rejections"] += 1

    def note_written(self, n: int) -> None:
        with self._lock:
            if self._quota is not None:
                self._quota["written"] += n


# -- HTTP helpers shared by the OSS server and the proxy ----------------------------------

class BodyReader:
    """Reads a request body (Content-Length or chunked) in pieces, throttled if asked."""

    def __init__(self, rfile, headers, state: FaultState | None) -> None:
        self.rfile = rfile
        self.state = state
        te = (headers.get("Transfer-Encoding") or "").lower()
        self.chunked = "chunked" in te
        cl = headers.get("Content-Length")
        self.length: int | None = None if self.chunked else int(cl or 0)
        self.remaining = self.length if self.length is not None else 0
        self._chunk_left = 0
        self.done = (self.length == 0)
        self.consumed = 0

    def _raw(self, n: int) -> bytes:
        if self.chunked:
            if self._chunk_left == 0:
                line = self.rfile.readline(65537)
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while True:  # trailers
                        t = self.rfile.readline(65537)
                        if t in (b"\r\n", b"\n", b""):
                            break
                    self.done = True
                    return b""
                self._chunk_left = size
            data = self.rfile.read(min(n, self._chunk_left))
            if not data:
                raise ConnectionError("client closed the connection mid-body")
            self._chunk_left -= len(data)
            if self._chunk_left == 0:
                self.rfile.readline(3)  # CRLF after the chunk
            return data
        if self.remaining <= 0:
            self.done = True
            return b""
        data = self.rfile.read(min(n, self.remaining))
        if not data:
            raise ConnectionError("client closed the connection mid-body")
        self.remaining -= len(data)
        if self.remaining == 0:
            self.done = True
        return data

    def read(self, n: int = CHUNK) -> bytes:
        if self.done:
            return b""
        tb = self.state.throttle if self.state else None
        if tb is not None:
            n = min(n, tb.chunk_size())
        data = self._raw(n)
        if tb is not None and data:
            tb.consume(len(data))
        self.consumed += len(data)
        return data

    def __iter__(self) -> Iterator[bytes]:
        while True:
            d = self.read()
            if not d:
                return
            yield d

    def drain(self) -> bool:
        """Discard the rest of the body; False if it is too large (close the connection)."""
        if self.done:
            return True
        if self.length is not None and self.remaining > DRAIN_LIMIT:
            return False
        total = 0
        while not self.done:
            d = self._raw(CHUNK)
            if not d:
                break
            total += len(d)
            if total > DRAIN_LIMIT:
                return False
        return True


def write_throttled(wfile, data: bytes, state: FaultState | None) -> None:
    tb = state.throttle if state else None
    if tb is None:
        wfile.write(data)
        return
    step = tb.chunk_size()
    for i in range(0, len(data), step):
        piece = data[i:i + step]
        tb.consume(len(piece))
        wfile.write(piece)
        wfile.flush()


def is_control_request(path: str, host: str | None, bucket: str | None = None) -> bool:
    """A ``/_sandbox/...`` request addressed to the endpoint itself (not to a bucket)."""
    if not path.startswith(CONTROL_PREFIX):
        return False
    return virtual_host_bucket(host, bucket) is None


def virtual_host_bucket(host: str | None, bucket: str | None = None) -> str | None:
    """The bucket named by a virtual-host-style ``Host`` header (``bucket.<name>[:port]``).

    None for IP addresses, ``localhost`` and names without a dot. With ``bucket`` given, only
    that bucket is recognised (so ``Host: oss.example.test`` + a path-style URL still works).
    """
    if not host or host.startswith("["):
        return None
    hostname = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    if hostname == "localhost" or "." not in hostname:
        return None
    labels = hostname.split(".")
    if len(labels) == 4 and all(x.isdigit() for x in labels):
        return None  # IPv4
    first = labels[0]
    if bucket is not None:
        return first if first == bucket else None
    return first


def handle_control(handler: BaseHTTPRequestHandler, state: FaultState,
                   current_bytes: Callable[[], int] | None = None,
                   extra_headers: dict[str, str] | None = None) -> None:
    """Answer a ``/_sandbox/...`` request on ``handler``."""
    path = urlsplit(handler.path).path
    body = BodyReader(handler.rfile, handler.headers, None)
    raw = b"".join(iter(body))
    status = 200
    if path.rstrip("/") != FAULT_PATH:
        status, out = 404, {"error": f"unknown control path {path} (only {FAULT_PATH})"}
    elif handler.command == "GET":
        out = state.snapshot()
    elif handler.command in ("POST", "PUT"):
        try:
            spec = json.loads(raw.decode() or "{}")
            out = state.apply(spec, current_bytes=current_bytes)
        except (ValueError, TypeError) as e:
            status, out = 400, {"error": str(e)}
    elif handler.command == "DELETE":
        out = state.apply({"kind": "clear"})
    else:
        status, out = 405, {"error": "use GET or POST"}
    data = json.dumps(out).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    for k, v in (extra_headers or {}).items():
        handler.send_header(k, v)
    handler.end_headers()
    handler.wfile.write(data)


# -- the reverse proxy ---------------------------------------------------------------------

_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer",
        "upgrade", "expect"}


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes
    server: "_ProxyHTTPServer"

    def log_message(self, fmt, *args):  # quiet
        if os.environ.get("BRSM_SANDBOX_HTTP_LOG"):
            super().log_message(fmt, *args)

    def _send_error_xml(self, status: int, code: str, message: str, body: BodyReader) -> None:
        rid = new_request_id()
        data = b"" if self.command == "HEAD" else error_xml(code, message, rid)
        if not body.drain():
            self.close_connection = True
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-amz-request-id", rid)
        if status == 503:
            self.send_header("Retry-After", "1")
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def _handle(self) -> None:
        state = self.server.state
        if is_control_request(self.path, self.headers.get("Host")):
            handle_control(self, state, self.server.current_bytes)
            return
        body = BodyReader(self.rfile, self.headers, state)
        if self.server.check_auth is not None:
            denied = self.server.check_auth(self.headers, self.path, self.command, state.now_for_presigned)
            if denied:
                self._send_error_xml(403, denied[0], denied[1], body)
                return
        fault = state.take_error(self.command)
        if fault is not None:
            if fault["kind"] == "reset":
                self.close_connection = True
                reset_connection(self.connection)
                return
            self._send_error_xml(fault["status"], fault["code"], fault["message"], body)
            return
        incoming = 0
        if self.command == "PUT" and "x-amz-copy-source" not in self.headers:
            incoming = int(self.headers.get("x-amz-decoded-content-length")
                           or self.headers.get("Content-Length") or 0)
            room = state.quota_room()
            if room is not None and incoming > room:
                state.quota_rejected()
                self._send_error_xml(507, "InsufficientStorage",
                                     f"Quota exceeded: {incoming} bytes do not fit, {max(room, 0)} left.",
                                     body)
                return
        self._forward(body, incoming)

    def _forward(self, body: BodyReader, incoming: int) -> None:
        host, port = self.server.upstream
        # one upstream connection per request: no stale keep-alive connections to recover from
        conn = http.client.HTTPConnection(host, port, timeout=300)
        try:
            self._forward_on(conn, body, incoming)
        finally:
            conn.close()

    def _forward_on(self, conn: http.client.HTTPConnection, body: BodyReader, incoming: int) -> None:
        state = self.server.state
        conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
        for k, v in self.headers.items():
            if k.lower() in _HOP:
                continue
            conn.putheader(k, v)
        if body.chunked:
            conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        if body.chunked:
            for piece in body:
                conn.send(b"%x\r\n" % len(piece) + piece + b"\r\n")
            conn.send(b"0\r\n\r\n")
        else:
            for piece in body:
                conn.send(piece)
        resp = conn.getresponse()
        if 200 <= resp.status < 300 and incoming:
            state.note_written(incoming)
        self.send_response_only(resp.status, resp.reason)
        length = resp.getheader("Content-Length")
        no_body = self.command == "HEAD" or resp.status in (204, 304) or 100 <= resp.status < 200
        for k, v in resp.getheaders():
            if k.lower() in _HOP:
                continue
            self.send_header(k, v)
        chunked_out = not no_body and length is None
        if chunked_out:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if no_body:
            resp.read()
        else:
            tb = state.throttle
            step = tb.chunk_size() if tb else CHUNK
            while True:
                piece = resp.read(step)
                if not piece:
                    break
                if tb:
                    tb.consume(len(piece))
                if chunked_out:
                    self.wfile.write(b"%x\r\n" % len(piece) + piece + b"\r\n")
                else:
                    self.wfile.write(piece)
            if chunked_out:
                self.wfile.write(b"0\r\n\r\n")

    def _safe(self) -> None:
        try:
            self._handle()
        except (ConnectionError, BrokenPipeError, socket.timeout):
            self.close_connection = True
        except Exception as e:  # keep serving; report as 502
            self.close_connection = True
            try:
                data = error_xml("BadGateway", f"sandbox proxy: {e}", new_request_id())
                self.send_response(502)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(data)
            except OSError:
                pass

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_OPTIONS = do_PATCH = _safe


def reset_connection(sock: socket.socket) -> None:
    """Close a connection with RST, no response."""
    try:
        import struct
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class _ProxyHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default 5 drops SYNs when many SDK threads connect at once
    allow_reuse_address = True
    state: FaultState
    upstream: tuple[str, int]
    current_bytes: Callable[[], int] | None
    check_auth: Callable | None

    def handle_error(self, request, client_address) -> None:
        import sys
        if isinstance(sys.exc_info()[1], (ConnectionError, socket.timeout)):
            return  # a client went away: not worth a traceback
        super().handle_error(request, client_address)


class FaultProxy(ServedInThread):
    """``FaultProxy(host, port, upstream_host, upstream_port, flavor)``; ``start()``/``stop()``.

    ``current_bytes``: called when a quota is set, returns the bytes already stored upstream.
    ``check_auth(headers, path, method, now)``: returns ``(code, message)`` to reject a request with 403, or None.
    """

    thread_name = "faultproxy"

    def __init__(self, host: str, port: int, upstream_host: str, upstream_port: int,
                 flavor: str = "s3", current_bytes: Callable[[], int] | None = None,
                 check_auth: Callable | None = None) -> None:
        self.state = FaultState(flavor)
        httpd = _ProxyHTTPServer((host, port), _ProxyHandler)
        httpd.state = self.state
        httpd.upstream = (upstream_host, upstream_port)
        httpd.current_bytes = current_bytes
        httpd.check_auth = check_auth
        super().__init__(httpd)


def url_quote_path(p: str) -> str:
    return quote(p, safe="/")
