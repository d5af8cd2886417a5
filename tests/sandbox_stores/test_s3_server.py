"""aioboto3 and boto3 against the sandbox S3 endpoint (moto behind the fault proxy)."""
from __future__ import annotations

import hashlib
import os

import aioboto3
import botocore.exceptions
import pytest

from .conftest import BUCKET, KEY_ID, SECRET, boto3_client


def _session_client(endpoint: str, key_id: str = KEY_ID, secret: str = SECRET):
    return aioboto3.Session().client("s3", endpoint_url=endpoint, aws_access_key_id=key_id,
                                     aws_secret_access_key=secret, region_name="us-east-1")


async def test_aioboto3_multipart_get_list_delete(s3_endpoint):
    parts = [os.urandom(5 << 20) for _ in range(3)]
    async with _session_client(s3_endpoint) as s3:
        mpu = await s3.create_multipart_upload(Bucket=BUCKET, Key="mp/obj")
        done = []
        for n, data in enumerate(parts, 1):
            r = await s3.upload_part(Bucket=BUCKET, Key="mp/obj", UploadId=mpu["UploadId"],
                                     PartNumber=n, Body=data)
            done.append({"PartNumber": n, "ETag": r["ETag"]})
        await s3.complete_multipart_upload(Bucket=BUCKET, Key="mp/obj", UploadId=mpu["UploadId"],
                                           MultipartUpload={"Parts": done})
        obj = await s3.get_object(Bucket=BUCKET, Key="mp/obj")
        body = await obj["Body"].read()
        assert hashlib.sha256(body).digest() == hashlib.sha256(b"".join(parts)).digest()
        rng = await s3.get_object(Bucket=BUCKET, Key="mp/obj", Range="bytes=100-199")
        assert await rng["Body"].read() == parts[0][100:200]
        await s3.put_object(Bucket=BUCKET, Key="mp/small", Body=b"s")
        listed = await s3.list_objects_v2(Bucket=BUCKET, Prefix="mp/")
        assert sorted(o["Key"] for o in listed["Contents"]) == ["mp/obj", "mp/small"]
        assert {o["Key"]: o["Size"] for o in listed["Contents"]}["mp/obj"] == 15 << 20
        await s3.delete_object(Bucket=BUCKET, Key="mp/obj")
        await s3.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": "mp/small"}]})
        listed = await s3.list_objects_v2(Bucket=BUCKET, Prefix="mp/")
        assert listed.get("KeyCount", 0) == 0


async def test_aioboto3_unknown_key_id_rejected(s3_endpoint):
    async with _session_client(s3_endpoint, key_id="UNKNOWN") as s3:
        with pytest.raises(botocore.exceptions.ClientError) as ei:
            await s3.list_objects_v2(Bucket=BUCKET)
    assert ei.value.response["Error"]["Code"] == "InvalidAccessKeyId"


async def test_aioboto3_wrong_secret_is_a_signature_mismatch(s3_endpoint):
    """Like S3: the right key id with the wrong secret is refused (moto alone would take it)."""
    async with _session_client(s3_endpoint, secret=SECRET + "-wrong") as s3:
        for call in (s3.list_objects_v2(Bucket=BUCKET, Prefix="a b/?x"),
                     s3.put_object(Bucket=BUCKET, Key="sig/obj", Body=b"x")):
            with pytest.raises(botocore.exceptions.ClientError) as ei:
                await call
            assert ei.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    async with _session_client(s3_endpoint) as s3:  # the right secret, awkward keys and queries
        await s3.put_object(Bucket=BUCKET, Key="sig/a b+c=d&e", Body=b"x")
        listed = await s3.list_objects_v2(Bucket=BUCKET, Prefix="sig/a b+", MaxKeys=5)
        assert [o["Key"] for o in listed["Contents"]] == ["sig/a b+c=d&e"]
        await s3.delete_object(Bucket=BUCKET, Key="sig/a b+c=d&e")


def test_boto3_no_such_key(s3_endpoint):
    s3 = boto3_client(s3_endpoint)
    with pytest.raises(s3.exceptions.NoSuchKey):
        s3.get_object(Bucket=BUCKET, Key="does/not/exist")
