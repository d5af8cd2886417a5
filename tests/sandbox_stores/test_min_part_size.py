"""The S3 stand-in keeps S3's 5 MiB part minimum unless started with --min-part-size (the sweep
uses small parts so its small files span several)."""
from __future__ import annotations

import botocore.exceptions
import pytest

from brsm.sandbox.s3_server import S3Server

from .conftest import BUCKET, KEY_ID, SECRET, boto3_client


def _two_part_upload(endpoint: str, key: str, first: int) -> None:
    s3 = boto3_client(endpoint)
    up = s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    done = []
    for n, data in enumerate((b"a" * first, b"b"), 1):
        r = s3.upload_part(Bucket=BUCKET, Key=key, UploadId=up, PartNumber=n, Body=data)
        done.append({"PartNumber": n, "ETag": r["ETag"]})
    s3.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=up, MultipartUpload={"Parts": done})
    assert s3.head_object(Bucket=BUCKET, Key=key)["ContentLength"] == first + 1


def test_default_refuses_a_small_part(s3_endpoint):
    with pytest.raises(botocore.exceptions.ClientError) as ei:
        _two_part_upload(s3_endpoint, "small/parts", 64 << 10)
    assert ei.value.response["Error"]["Code"] == "EntityTooSmall"


def test_min_part_size_option_allows_small_parts(tmp_path):
    srv = S3Server("127.0.0.1", 0, tmp_path, BUCKET, KEY_ID, SECRET, extra_args=["--min-part-size=65536"])
    srv.start()
    try:
        _two_part_upload(srv.endpoint, "small/parts", 64 << 10)
        with pytest.raises(botocore.exceptions.ClientError) as ei:  # below the lowered minimum: refused
            _two_part_upload(srv.endpoint, "smaller/parts", (64 << 10) - 1)
        assert ei.value.response["Error"]["Code"] == "EntityTooSmall"
    finally:
        srv.stop()
