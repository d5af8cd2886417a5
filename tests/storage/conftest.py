"""One contract suite, four backends: ``storage`` is parametrized over local, s3 (moto behind
the sandbox fault proxy, a child process on a loopback address), oss (the sandbox OSS server,
in-process thread) and memory. Servers are started once per session and stopped at teardown;
every test works under its own random prefix, so tests never see each other's objects."""
from __future__ import annotations

import os
import uuid

import pytest

from brsm.adapters.storage import open_storage

BUCKET = "brsm-contract"
KEY_ID = "CONTRACTKEYID"
SECRET = "contract-secret-do-not-leak-42"
PART = 128 * 1024          # >= the OSS minimum part (100 KiB); moto's minimum is lowered below
THRESHOLD = 256 * 1024
PAGE = 7                   # list page size: 25 keys need 4 pages
BACKENDS = ["local", "s3", "oss", "memory"]
TEST_OPTIONS = dict(part_size=PART, multipart_threshold=THRESHOLD, list_page_size=PAGE, block_size=64 * 1024)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    from brsm.sandbox.s3_server import S3Server
    saved = os.environ.get("S3_UPLOAD_PART_MIN_SIZE")
    os.environ["S3_UPLOAD_PART_MIN_SIZE"] = str(64 * 1024)  # read by moto in the child process
    srv = S3Server("127.0.0.1", 0, tmp_path_factory.mktemp("s3"), BUCKET, KEY_ID, SECRET)
    try:
        srv.start()
    finally:
        if saved is None:
            os.environ.pop("S3_UPLOAD_PART_MIN_SIZE", None)
        else:
            os.environ["S3_UPLOAD_PART_MIN_SIZE"] = saved
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="session")
def oss_server(tmp_path_factory):
    from brsm.sandbox.oss_server import OssServer
    srv = OssServer("127.0.0.1", 0, tmp_path_factory.mktemp("oss"), BUCKET, KEY_ID, SECRET)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def cloud_env(monkeypatch, tmp_path):
    """Credentials for both SDKs from the environment (the standard chains), nothing else."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("OSS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("OSS_ACCESS_KEY_SECRET", SECRET)
    monkeypatch.delenv("OSS_SESSION_TOKEN", raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    return monkeypatch


class Backend:
    """How to open the backend under test (and reach its server, if any)."""

    def __init__(self, name: str, request, tmp_path) -> None:
        self.name = name
        self.prefix = f"t-{uuid.uuid4().hex[:10]}"
        self.endpoint: str | None = None
        self.server = None
        if name == "local":
            self.uri = f"local://{tmp_path}/store/{self.prefix}"
        elif name == "memory":
            self.uri = f"memory://{self.prefix}"
        else:
            self.server = request.getfixturevalue(f"{name}_server")
            self.endpoint = self.server.endpoint
            self.uri = f"{name}://{BUCKET}/{self.prefix}"
        self.opened: list = []

    @property
    def remote(self) -> bool:
        return self.name in ("s3", "oss")

    def open(self, *, retry: bool = False, retry_options: dict | None = None, **opts):
        kw = {"s3": {"s3_endpoint": self.endpoint}, "oss": {"oss_endpoint": self.endpoint}}.get(self.name, {})
        st = open_storage(self.uri, retry=retry, retry_options=retry_options, **kw, **(TEST_OPTIONS | opts))
        self.opened.append(st)
        return st


async def _opened(request, tmp_path):
    """A Backend for ``request.param``; at teardown every storage it opened closed, its faults cleared."""
    b = Backend(request.param, request, tmp_path)
    try:
        yield b
    finally:
        for s in b.opened:
            await s.close()
        if b.remote:
            from brsm.sandbox import store_faults
            store_faults.clear(b.endpoint)


@pytest.fixture(params=BACKENDS)
async def backend(request, tmp_path, cloud_env):
    async for b in _opened(request, tmp_path):
        yield b


@pytest.fixture
def storage(backend):
    return backend.open()


@pytest.fixture(params=["s3", "oss"])
async def remote(request, tmp_path, cloud_env):
    """The two object stores only."""
    async for b in _opened(request, tmp_path):
        yield b
