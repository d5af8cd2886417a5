"""Fault injection seen through the SDKs: errors for N requests then recovery, throttle, quota."""
from __future__ import annotations

import os
import time

import aioboto3
import botocore.exceptions
import oss2
import pytest

from brsm.sandbox import store_faults

from .conftest import BUCKET, KEY_ID, SECRET, boto3_client


# -- OSS ------------------------------------------------------------------------------------

def test_oss_503_for_n_requests_then_recovery(bucket, oss_server):
    bucket.put_object("f/k", b"v")
    store_faults.inject(oss_server.endpoint, kind="error", status=503, count=2)
    for _ in range(2):  # oss2 does not retry server errors
        with pytest.raises(oss2.exceptions.ServerError) as ei:
            bucket.get_object("f/k")
        assert (ei.value.status, ei.value.code) == (503, "ServiceUnavailable")
        assert ei.value.request_id
    assert bucket.get_object("f/k").read() == b"v"
    st = store_faults.status(oss_server.endpoint)
    assert st["active"] == [] and st["counters"]["errors_injected"] >= 2


def test_oss_error_only_for_some_methods_and_custom_code(bucket, oss_server):
    bucket.put_object("f/m", b"v")
    store_faults.inject(oss_server.endpoint, kind="error", status=500, count=1, methods=["PUT"])
    assert bucket.get_object("f/m").read() == b"v"  # GET passes
    with pytest.raises(oss2.exceptions.ServerError) as ei:
        bucket.put_object("f/m", b"w")
    assert (ei.value.status, ei.value.code) == (500, "InternalError")
    bucket.put_object("f/m", b"w")


def test_oss_reset_on_post_is_a_request_error(bucket, oss_server):
    store_faults.inject(oss_server.endpoint, kind="reset", count=1, methods=["POST"])
    with pytest.raises(oss2.exceptions.RequestError):
        bucket.init_multipart_upload("f/reset")
    bucket.init_multipart_upload("f/reset")  # next one works
    assert store_faults.status(oss_server.endpoint)["counters"]["resets_injected"] == 1


def test_oss_throttle_slows_a_download(bucket, oss_server):
    data = os.urandom(1 << 20)
    bucket.put_object("f/throttled", data)
    rate = 1 << 20
    store_faults.inject(oss_server.endpoint, kind="throttle", bytes_per_second=rate)
    t0 = time.monotonic()
    assert bucket.get_object("f/throttled").read() == data
    elapsed = time.monotonic() - t0
    assert elapsed >= len(data) / rate * 0.8
    store_faults.clear(oss_server.endpoint, what="throttle")
    t0 = time.monotonic()
    bucket.get_object("f/throttled").read()
    assert time.monotonic() - t0 < elapsed / 4


def test_oss_quota_makes_a_write_fail(bucket, oss_server):
    used = oss_server.store.stored_bytes()
    store_faults.inject(oss_server.endpoint, kind="quota", bytes=used + 1000)
    bucket.put_object("f/q-small", b"x" * 600)  # fits
    with pytest.raises(oss2.exceptions.ServerError) as ei:
        bucket.put_object("f/q-big", b"x" * 600)
    assert (ei.value.status, ei.value.code) == (507, "InsufficientStorage")
    with pytest.raises(oss2.exceptions.NoSuchKey):
        bucket.get_object("f/q-big")
    bucket.delete_object("f/q-small")  # frees room
    bucket.put_object("f/q-big", b"x" * 600)


def test_oss_bad_fault_spec_is_refused(oss_server):
    with pytest.raises(store_faults.StoreFaultError):
        store_faults._call(oss_server.endpoint, {"kind": "nonsense"}, 5)
    with pytest.raises(store_faults.StoreFaultError):
        store_faults.inject(oss_server.endpoint, kind="throttle", bytes_per_second=0)


# -- S3 -------------------------------------------------------------------------------------

def test_s3_503_no_retries_then_recovery(s3_endpoint):
    s3 = boto3_client(s3_endpoint, attempts=1)
    s3.put_object(Bucket=BUCKET, Key="f/k", Body=b"v")
    store_faults.inject(s3_endpoint, kind="error", status=503, count=2)
    for _ in range(2):
        with pytest.raises(botocore.exceptions.ClientError) as ei:
            s3.get_object(Bucket=BUCKET, Key="f/k")
        assert ei.value.response["Error"]["Code"] == "SlowDown"
        assert ei.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    assert s3.get_object(Bucket=BUCKET, Key="f/k")["Body"].read() == b"v"


def test_s3_503_absorbed_by_sdk_retries_and_counted(s3_endpoint):
    s3 = boto3_client(s3_endpoint, attempts=3)
    s3.put_object(Bucket=BUCKET, Key="f/r", Body=b"r")
    before = store_faults.status(s3_endpoint)["counters"]["errors_injected"]
    store_faults.inject(s3_endpoint, kind="error", status=503, count=2)
    r = s3.get_object(Bucket=BUCKET, Key="f/r")
    assert r["Body"].read() == b"r"
    assert r["ResponseMetadata"]["RetryAttempts"] == 2
    assert store_faults.status(s3_endpoint)["counters"]["errors_injected"] == before + 2


async def test_aioboto3_sees_503(s3_endpoint):
    from aiobotocore.config import AioConfig
    store_faults.inject(s3_endpoint, kind="error", status=503, count=1)
    async with aioboto3.Session().client(
            "s3", endpoint_url=s3_endpoint, aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET,
            region_name="us-east-1", config=AioConfig(retries={"total_max_attempts": 1})) as s3:
        with pytest.raises(botocore.exceptions.ClientError) as ei:
            await s3.list_objects_v2(Bucket=BUCKET)
        assert ei.value.response["Error"]["Code"] == "SlowDown"
        await s3.list_objects_v2(Bucket=BUCKET)


def test_s3_throttle_slows_an_upload(s3_endpoint):
    s3 = boto3_client(s3_endpoint)
    data = os.urandom(1 << 20)
    rate = 1 << 20
    store_faults.inject(s3_endpoint, kind="throttle", bytes_per_second=rate)
    t0 = time.monotonic()
    s3.put_object(Bucket=BUCKET, Key="f/throttled", Body=data)
    elapsed = time.monotonic() - t0
    assert elapsed >= len(data) / rate * 0.8
    store_faults.clear(s3_endpoint)
    assert s3.get_object(Bucket=BUCKET, Key="f/throttled")["Body"].read() == data


def test_s3_quota_makes_a_write_fail(s3_endpoint):
    s3 = boto3_client(s3_endpoint)
    st = store_faults.inject(s3_endpoint, kind="quota", bytes=0)
    used = st["active"][0]["used"]
    store_faults.inject(s3_endpoint, kind="quota", bytes=used + 1000)
    s3.put_object(Bucket=BUCKET, Key="f/q-small", Body=b"x" * 600)
    with pytest.raises(botocore.exceptions.ClientError) as ei:
        s3.put_object(Bucket=BUCKET, Key="f/q-big", Body=b"x" * 600)
    assert ei.value.response["Error"]["Code"] == "InsufficientStorage"
    assert ei.value.response["ResponseMetadata"]["HTTPStatusCode"] == 507
    assert store_faults.status(s3_endpoint)["counters"]["quota_rejections"] == 1
    store_faults.clear(s3_endpoint)
    s3.put_object(Bucket=BUCKET, Key="f/q-big", Body=b"x" * 600)


def test_control_path_not_confused_with_keys(s3_endpoint):
    s3 = boto3_client(s3_endpoint)
    s3.put_object(Bucket=BUCKET, Key="_sandbox/fault", Body=b"data")
    assert s3.get_object(Bucket=BUCKET, Key="_sandbox/fault")["Body"].read() == b"data"
    assert store_faults.status(s3_endpoint)["flavor"] == "s3"


def test_s3_reset_then_recovery(s3_endpoint):
    s3 = boto3_client(s3_endpoint, attempts=1)
    store_faults.inject(s3_endpoint, kind="reset", count=1)
    with pytest.raises(botocore.exceptions.BotoCoreError):
        s3.list_objects_v2(Bucket=BUCKET)
    s3.list_objects_v2(Bucket=BUCKET)
    assert store_faults.status(s3_endpoint)["counters"]["resets_injected"] >= 1


def test_s3_throttle_slows_a_download(s3_endpoint):
    s3 = boto3_client(s3_endpoint)
    data = os.urandom(1 << 20)
    s3.put_object(Bucket=BUCKET, Key="f/throttled-get", Body=data)
    rate = 1 << 20
    store_faults.inject(s3_endpoint, kind="throttle", bytes_per_second=rate)
    t0 = time.monotonic()
    assert s3.get_object(Bucket=BUCKET, Key="f/throttled-get")["Body"].read() == data
    assert time.monotonic() - t0 >= len(data) / rate * 0.8
