"""The sandbox S3 endpoint: moto's server behind our fault-injection proxy, in one process.

``python -m brsm.sandbox.s3_server --host 127.0.0.1 --port 0 --data DIR --bucket NAME
--access-key-id ID --access-key-secret SECRET [--port-file F] [--pid-file F] [--min-part-size N]``

* moto's ``ThreadedMotoServer`` listens on ``--host`` with an ephemeral port (internal);
* :class:`brsm.sandbox.faultproxy.FaultProxy` listens on ``--host:--port`` (the endpoint that
  clients use) and forwards to moto, adding the ``/_sandbox/fault`` control interface;
* the bucket is created at start (boto3, straight to moto);
* the proxy rejects requests whose SigV4 access key id is not ``--access-key-id``
  (403 ``InvalidAccessKeyId``), unsigned requests (403 ``AccessDenied``) and header-signed
  requests whose signature is not the one ``--access-key-secret`` gives (403
  ``SignatureDoesNotMatch``, as S3 does): moto itself does not verify signatures;
* ``--min-part-size`` lowers S3's 5 MiB minimum for every part but the last (moto's
  ``S3_UPLOAD_PART_MIN_SIZE``), so tests can make small files span several parts;
* moto keeps objects in memory, spilling big ones to temporary files: ``TMPDIR`` is pointed
  at ``DIR/tmp`` so they land under the data directory. Nothing survives a restart.

SIGTERM = clean stop. In-process (from tests): ``S3Server(host, port, data_dir, bucket,
key_id, key_secret).start()`` runs that process and ``stop()`` ends it.
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qs, urlsplit

from brsm.sandbox.faultproxy import FaultProxy
from brsm.sandbox.oss_server import StoreProcess, add_common_args, announce, parse_args, run_until_signal

_CRED_RE = re.compile(r"Credential=([^/,\s]+)/")


_SIGV4_RE = re.compile(r"AWS4-HMAC-SHA256\s+Credential=([^,\s]+),\s*SignedHeaders=([^,\s]+),\s*"
                       r"Signature=([0-9a-f]+)")


def sigv4_signature(secret: str, method: str, path: str, headers, signed: list[str], scope: str, *,
                    amz_date: str | None = None, payload: str | None = None) -> str:
    """The SigV4 signature S3 computes (AWS's algorithm, S3 flavour: the path as sent, query pairs
    sorted as sent, X-Amz-Signature left out). Header-signed: the date from x-amz-date and the payload
    hash from x-amz-content-sha256; presigned: both given (X-Amz-Date, UNSIGNED-PAYLOAD)."""
    import hashlib
    import hmac

    parts = urlsplit(path)
    pairs = sorted(p.partition("=")[::2] for p in parts.query.split("&") if p)
    query = "&".join(f"{k}={v}" for k, v in pairs if k != "X-Amz-Signature")
    canon_headers = "".join(f"{h}:{','.join(' '.join(v.split()) for v in headers.get_all(h, []))}\n"
                            for h in signed)
    payload = payload or headers.get("x-amz-content-sha256") or "UNSIGNED-PAYLOAD"
    canonical = "\n".join([method, parts.path or "/", query, canon_headers, ";".join(signed), payload])
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date or headers.get("x-amz-date", ""), scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + secret).encode()
    for part in scope.split("/"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


PRESIGN_MAX_EXPIRES = 604800  # seven days: S3 refuses a longer X-Amz-Expires
_MISMATCH = ("SignatureDoesNotMatch", "The request signature we calculated does not match the signature you "
             "provided. Check your key and signing method.")


def presigned_refusal(secret: str, method: str, path: str, headers, q: dict[str, list[str]],
                      now: float | None = None) -> tuple[str, str] | None:
    """S3's answer to a SigV4 presigned URL (query authentication), or None to let it through: the
    signature over method, path, the query without X-Amz-Signature, the signed headers and
    UNSIGNED-PAYLOAD must match, then X-Amz-Date + X-Amz-Expires must not have passed."""
    import calendar
    import hmac

    one = {k: v[0] for k, v in q.items()}
    try:
        signed_at = calendar.timegm(time.strptime(one["X-Amz-Date"], "%Y%m%dT%H%M%SZ"))
        expires = int(one["X-Amz-Expires"])
        scope = one["X-Amz-Credential"].split("/", 1)[1]
        signed = one["X-Amz-SignedHeaders"].split(";")
    except (KeyError, ValueError, IndexError):
        return ("AuthorizationQueryParametersError", "Query-string authentication version 4 requires the "
                "X-Amz-Algorithm, X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and "
                "X-Amz-Expires parameters.")
    if not 1 <= expires <= PRESIGN_MAX_EXPIRES:
        return ("AuthorizationQueryParametersError",
                "X-Amz-Expires must be less than a week (in seconds) that is 604800")
    want = sigv4_signature(secret, method, path, headers, signed, scope, amz_date=one["X-Amz-Date"],
                           payload="UNSIGNED-PAYLOAD")
    if not hmac.compare_digest(want, one.get("X-Amz-Signature", "")):
        return _MISMATCH
    if (time.time() if now is None else now) > signed_at + expires:
        return ("AccessDenied", "Request has expired")
    return None


def make_auth_check(key_id: str, secret: str | None = None):
    def check(headers, path: str = "", method: str | None = None,
              now: Callable[[], float] = time.time) -> tuple[str, str] | None:
        auth = headers.get("Authorization") or ""
        found = None
        m = _CRED_RE.search(auth)
        if m:
            found = m.group(1)
            sig = _SIGV4_RE.search(auth)
            if found == key_id and secret is not None and method is not None and sig:
                scope = sig.group(1).split("/", 1)[1]
                want = sigv4_signature(secret, method, path, headers, sig.group(2).split(";"), scope)
                if want != sig.group(3):
                    return _MISMATCH
        elif auth.startswith("AWS "):
            found = auth[4:].split(":", 1)[0]
        elif path:
            q = parse_qs(urlsplit(path).query)
            cred = (q.get("X-Amz-Credential") or q.get("AWSAccessKeyId") or [None])[0]
            if cred:
                found = cred.split("/", 1)[0]
            if found == key_id and secret is not None and method is not None and "X-Amz-Signature" in q:
                refused = presigned_refusal(secret, method, path, headers, q, now=now())
                if refused:
                    return refused
        if found is None:
            return ("AccessDenied", "Anonymous access is not allowed by the sandbox.")
        if found != key_id:
            return ("InvalidAccessKeyId",
                    "The AWS Access Key Id you provided does not exist in our records.")
        return None
    return check


class S3Server(StoreProcess):
    """The S3 endpoint as a child process: ``S3Server(host, port, data_dir, bucket, id, secret)``."""

    def __init__(self, host: str, port: int, data_dir, bucket: str, key_id: str, key_secret: str,
                 **kw) -> None:
        super().__init__("brsm.sandbox.s3_server", host, port, data_dir, bucket, key_id,
                         key_secret, **kw)


def _client(endpoint: str, key_id: str, secret: str):
    import boto3
    from botocore.config import Config
    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=key_id,
                        aws_secret_access_key=secret, region_name="us-east-1",
                        config=Config(retries={"total_max_attempts": 3, "mode": "standard"}))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m brsm.sandbox.s3_server",
                                 description="Sandbox S3 endpoint (moto behind a fault proxy)")
    add_common_args(ap)
    ap.add_argument("--min-part-size", "--min_part_size", type=int, default=None,
                    help="smallest part but the last a multipart upload may have (S3: 5 MiB)")
    args = parse_args(ap, argv)
    if args.min_part_size is not None:
        # read by moto when it is first imported (below); its spill-to-disk buffer keeps its usual size
        os.environ.setdefault("MOTO_S3_DEFAULT_KEY_BUFFER_SIZE", str(5 * 2**20 - 1024))
        os.environ["S3_UPLOAD_PART_MIN_SIZE"] = str(args.min_part_size)
    data = Path(args.data)
    (data / "tmp").mkdir(parents=True, exist_ok=True)
    os.environ["TMPDIR"] = str(data / "tmp")
    tempfile.tempdir = str(data / "tmp")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)

    from moto.server import ThreadedMotoServer
    moto = ThreadedMotoServer(ip_address=args.host, port=0, verbose=False)
    moto.start()
    mhost, mport = moto.get_host_and_port()
    s3 = _client(f"http://{mhost}:{mport}", args.access_key_id, args.access_key_secret)
    s3.create_bucket(Bucket=args.bucket)

    def current_bytes() -> int:
        total = 0
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=args.bucket):
            total += sum(o["Size"] for o in page.get("Contents", []))
        return total

    check = make_auth_check(args.access_key_id, args.access_key_secret)
    proxy = FaultProxy(args.host, args.port, mhost, mport, "s3", current_bytes=current_bytes,
                       check_auth=check)
    host, port = proxy.address
    announce(host, port, args)

    def stop() -> None:
        proxy.shutdown()

    try:
        run_until_signal(proxy.serve_forever, stop, args)
    finally:
        proxy.close()
        # moto runs in a daemon thread holding only memory and temp files: it ends with the
        # process (moto.stop() would cost its 0.5 s poll interval for nothing)
    return 0


if __name__ == "__main__":
    sys.exit(main())
