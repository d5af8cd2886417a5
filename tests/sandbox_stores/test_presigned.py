"""Issue 16: the sandbox's S3 and OSS endpoints accept presigned / signed URLs only as the real
services do — signature checked, expiry enforced — since the direct data path hands hosts nothing but
such URLs. S3: SigV4 query signing (AWS "Authenticating Requests: Using Query Parameters", the
algorithm botocore's ``generate_presigned_url`` implements); OSS: the V1 signed URL (``Expires``,
``OSSAccessKeyId``, ``Signature`` query parameters, oss2's ``Bucket.sign_url``)."""
from __future__ import annotations

import time
import urllib.error
import urllib.request

import pytest

from brsm.sandbox import store_faults

from .conftest import BUCKET, KEY_ID, SECRET, boto3_client


OCTETS = {"Content-Type": "application/octet-stream"}  # what a host sends (urllib's default is a form)


def _send(url: str, method: str = "GET", data: bytes | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=data, method=method, headers=OCTETS if data is not None else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _s3(endpoint: str, secret: str = SECRET):
    import boto3
    from botocore.config import Config
    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=KEY_ID, aws_secret_access_key=secret,
                        region_name="us-east-1", config=Config(signature_version="s3v4",
                                                               s3={"addressing_style": "path"}))


def test_s3_presigned_put_and_get_work(s3_endpoint):
    c = _s3(s3_endpoint)
    put = c.generate_presigned_url("put_object", Params={"Bucket": BUCKET, "Key": "p/a b+c.sst"}, ExpiresIn=300)
    assert _send(put, "PUT", b"hello")[0] == 200
    get = c.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": "p/a b+c.sst"}, ExpiresIn=300)
    assert _send(get) == (200, b"hello")


def test_s3_presigned_upload_part_works(s3_endpoint):
    c, admin = _s3(s3_endpoint), boto3_client(s3_endpoint)
    up = admin.create_multipart_upload(Bucket=BUCKET, Key="p/mp")["UploadId"]
    url = c.generate_presigned_url("upload_part", Params={"Bucket": BUCKET, "Key": "p/mp", "UploadId": up,
                                                          "PartNumber": 1}, ExpiresIn=300)
    assert _send(url, "PUT", b"x" * 1000)[0] == 200
    parts = admin.list_parts(Bucket=BUCKET, Key="p/mp", UploadId=up)["Parts"]
    assert [(p["PartNumber"], p["Size"]) for p in parts] == [(1, 1000)]
    admin.abort_multipart_upload(Bucket=BUCKET, Key="p/mp", UploadId=up)


@pytest.mark.parametrize("how", ["signature", "key", "expires", "secret"])
def test_s3_a_tampered_presigned_url_is_refused(s3_endpoint, how):
    c = _s3(s3_endpoint, secret="not-the-secret" if how == "secret" else SECRET)
    url = c.generate_presigned_url("put_object", Params={"Bucket": BUCKET, "Key": "p/t"}, ExpiresIn=300)
    if how == "signature":
        i = url.index("X-Amz-Signature=") + len("X-Amz-Signature=")
        url = url[:i] + ("0" if url[i] != "0" else "1") + url[i + 1:]
    elif how == "key":
        url = url.replace("/p/t?", "/p/other?")
    elif how == "expires":
        url = url.replace("X-Amz-Expires=300", "X-Amz-Expires=600")
    status, body = _send(url, "PUT", b"evil")
    assert status == 403 and b"SignatureDoesNotMatch" in body, body


def test_s3_an_expired_presigned_url_is_refused(s3_endpoint):
    c = _s3(s3_endpoint)
    url = c.generate_presigned_url("put_object", Params={"Bucket": BUCKET, "Key": "p/e"}, ExpiresIn=1)
    time.sleep(2.1)
    status, body = _send(url, "PUT", b"late")
    assert status == 403 and b"AccessDenied" in body and b"Request has expired" in body, body


def test_oss_signed_urls_are_checked(bucket):
    put = bucket.sign_url("PUT", "p/o", 300, headers=OCTETS)  # OSS signs the Content-Type
    assert _send(put, "PUT", b"oss")[0] == 200
    assert _send(bucket.sign_url("GET", "p/o", 300)) == (200, b"oss")
    bad = put.replace("Signature=", "Signature=A")
    status, body = _send(bad, "PUT", b"evil")
    assert status == 403 and b"SignatureDoesNotMatch" in body, body
    late = bucket.sign_url("PUT", "p/o", 1, headers=OCTETS)
    time.sleep(2.1)
    status, body = _send(late, "PUT", b"late")
    assert status == 403 and b"AccessDenied" in body and b"expired" in body.lower(), body
    assert _send(bucket.sign_url("GET", "p/o", 300)) == (200, b"oss"), "nothing was overwritten"


def test_s3_a_late_fault_makes_the_next_presigned_request_expired(s3_endpoint):
    """The ``late`` fault (issue 16's "a URL that expires"): the store's own expiry check refuses the
    next presigned request as if it came an hour later; header-signed requests do not count."""
    c = _s3(s3_endpoint)
    store_faults.inject(s3_endpoint, kind="late", count=1)
    c.put_object(Bucket=BUCKET, Key="p/h", Body=b"header-signed")  # not counted, not refused
    url = c.generate_presigned_url("put_object", Params={"Bucket": BUCKET, "Key": "p/l"}, ExpiresIn=300)
    status, body = _send(url, "PUT", b"late")
    assert status == 403 and b"Request has expired" in body, body
    assert _send(url, "PUT", b"in time")[0] == 200, "the fault was used up: the same URL is valid again"
    assert store_faults.status(s3_endpoint)["counters"]["late_requests"] == 1


def test_oss_a_late_fault_makes_the_next_signed_url_expired(bucket, oss_server):
    store_faults.inject(oss_server.endpoint, kind="late", count=1, seconds=301)
    put = bucket.sign_url("PUT", "p/l", 300, headers=OCTETS)
    status, body = _send(put, "PUT", b"late")
    assert status == 403 and b"expired" in body.lower(), body
    assert _send(put, "PUT", b"in time")[0] == 200
    assert store_faults.status(oss_server.endpoint)["counters"]["late_requests"] == 1
