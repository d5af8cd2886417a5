"""Fixtures: one OSS endpoint (in-process) and one S3 endpoint (moto + fault proxy, child
process) per test module; both stopped at teardown."""
from __future__ import annotations

import pytest

from brsm.sandbox import store_faults
from brsm.sandbox.oss_server import OssServer
from brsm.sandbox.s3_server import S3Server

BUCKET = "sandbox-bkt"
KEY_ID = "SANDBOXKEYID"
SECRET = "sandbox-secret-0123456789"


@pytest.fixture(scope="module")
def oss_server(tmp_path_factory):
    srv = OssServer("127.0.0.1", 0, tmp_path_factory.mktemp("oss"), BUCKET, KEY_ID, SECRET)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def bucket(oss_server):
    import oss2
    store_faults.clear(oss_server.endpoint)
    yield oss2.Bucket(oss2.Auth(KEY_ID, SECRET), oss_server.endpoint, BUCKET, enable_crc=True)
    store_faults.clear(oss_server.endpoint)


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    srv = S3Server("127.0.0.1", 0, tmp_path_factory.mktemp("s3"), BUCKET, KEY_ID, SECRET)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def s3_endpoint(s3_server):
    store_faults.clear(s3_server.endpoint)
    yield s3_server.endpoint
    store_faults.clear(s3_server.endpoint)


def boto3_client(endpoint: str, attempts: int = 1, key_id: str = KEY_ID):
    import boto3
    from botocore.config import Config
    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=key_id,
                        aws_secret_access_key=SECRET, region_name="us-east-1",
                        config=Config(retries={"total_max_attempts": attempts, "mode": "standard"}))
