"""Error translation against the real SDKs: credentials, buckets, endpoints; never a secret in a message."""
from __future__ import annotations

import asyncio
import socket
import time

import pytest

from brsm.adapters.storage import open_storage
from brsm.errors import StorageError, UsageError

from .conftest import BUCKET, SECRET, Backend


def _no_secret(e: BaseException, *secrets: str) -> None:
    text = " ".join([str(e), repr(e), str(getattr(e, "hint", "")), str(e.__cause__ or "")])
    for s in secrets:
        assert s not in text




async def test_unknown_key_id_is_permanent_with_a_hint(remote, cloud_env):
    var = "AWS_ACCESS_KEY_ID" if remote.name == "s3" else "OSS_ACCESS_KEY_ID"
    cloud_env.setenv(var, "NOSUCHKEYID")
    st = remote.open(retry=True, retry_options={"base_delay": 0.001})
    with pytest.raises(StorageError) as ei:
        await st.stat("x")
    assert ei.value.permanent and st.retries == 0
    assert var in ei.value.hint
    _no_secret(ei.value, SECRET)
    with pytest.raises(StorageError) as ei:
        await st.probe()
    assert ei.value.permanent


async def test_oss_wrong_secret_names_the_secret_variable(request, tmp_path, cloud_env):
    b = Backend("oss", request, tmp_path)
    cloud_env.setenv("OSS_ACCESS_KEY_SECRET", "wrong-secret-value-7")
    st = b.open()
    with pytest.raises(StorageError) as ei:
        await st.put_bytes("x", b"1")
    assert ei.value.permanent and "OSS_ACCESS_KEY_SECRET" in ei.value.hint
    _no_secret(ei.value, "wrong-secret-value-7", SECRET)
    await st.close()


async def test_s3_without_any_credentials(request, tmp_path, cloud_env):
    b = Backend("s3", request, tmp_path)
    cloud_env.delenv("AWS_ACCESS_KEY_ID")
    cloud_env.delenv("AWS_SECRET_ACCESS_KEY")
    st = b.open()
    with pytest.raises(StorageError) as ei:
        await st.list("")
    assert ei.value.permanent and "AWS_ACCESS_KEY_ID" in ei.value.hint
    await st.close()


@pytest.mark.parametrize("missing", ["OSS_ACCESS_KEY_ID", "OSS_ACCESS_KEY_SECRET"])
def test_oss_credentials_missing_is_a_usage_error(cloud_env, missing):
    cloud_env.delenv(missing)
    with pytest.raises(UsageError) as ei:
        open_storage("oss://bkt/p", oss_endpoint="http://127.0.0.1:1")
    assert missing in ei.value.message and missing in ei.value.hint


def test_oss_endpoint_missing_is_a_usage_error(cloud_env):
    cloud_env.delenv("OSS_ENDPOINT", raising=False)
    with pytest.raises(UsageError) as ei:
        open_storage("oss://bkt/p")
    assert "--oss-endpoint" in ei.value.hint


async def test_missing_bucket_is_permanent(remote):
    uri = f"{remote.name}://no-such-bucket-{remote.prefix}/p"
    kw = {"s3_endpoint": remote.endpoint} if remote.name == "s3" else {"oss_endpoint": remote.endpoint}
    st = open_storage(uri, retry=False, **kw)
    remote.opened.append(st)
    with pytest.raises(StorageError) as ei:
        await st.put_bytes("x", b"1")
    assert ei.value.permanent and "does not exist" in ei.value.hint


async def test_unreachable_endpoint_is_transient(remote):
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    kw = {"s3_endpoint": endpoint} if remote.name == "s3" else {"oss_endpoint": endpoint}
    st = open_storage(f"{remote.name}://{BUCKET}/p", retry=False, **kw)
    remote.opened.append(st)
    with pytest.raises(StorageError) as ei:
        await st.stat("x")
    assert not ei.value.permanent


async def test_oss_calls_do_not_block_the_event_loop(request, tmp_path, cloud_env):
    """oss2 is synchronous: with the store throttled, a put and a get take ~0.4 s each, and a
    ticker on the event loop must keep ticking meanwhile."""
    from brsm.sandbox import store_faults
    b = Backend("oss", request, tmp_path)
    st = b.open()
    data = b"z" * 200_000
    gaps: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        last = time.monotonic()
        while not stop.is_set():
            await asyncio.sleep(0.005)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    store_faults.inject(b.endpoint, kind="throttle", bytes_per_second=500_000)
    t = asyncio.create_task(ticker())
    try:
        started = time.monotonic()
        await st.put("slow", _one(data), len(data))
        assert await st.get_bytes("slow") == data
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        await t
        store_faults.clear(b.endpoint)
        await st.close()
    assert elapsed > 0.5  # the throttle really applied
    assert max(gaps) < 0.2 and len(gaps) > 20  # a blocking call would stall it for ~0.4 s


async def _one(data: bytes):
    yield data


def test_one_decision_table_for_every_store():
    """S3 and OSS share classify_reply (the statuses are the same, only codes and hints differ)."""
    from brsm.adapters.storage.replies import ReplyRules, classify_reply
    from brsm.errors import ObjectNotFound

    r = ReplyRules("no bucket", {"BadKey": "check the key id"}, "check access", frozenset({"SlowDown"}))

    def c(status: int, code: str = "", **kw):
        e = classify_reply("msg", status, code, r, **kw)
        return type(e).__name__, e.permanent, e.hint

    assert c(404, "NoSuchKey", missing_key="k")[0] == ObjectNotFound.__name__
    assert c(404, "NoSuchUpload") == ("StorageError", False, None)
    assert c(404, "NoSuchBucket") == ("StorageError", True, "no bucket")
    assert c(403, "BadKey") == ("StorageError", True, "check the key id")
    assert c(403, "Other") == ("StorageError", True, "check access")
    assert c(507)[1:] == (True, "the storage is full: free space or raise its quota")
    assert c(400, "QuotaExceeded")[1] is True
    for transient in (c(500), c(503), c(429), c(408), c(0), c(400, "SlowDown")):
        assert transient == ("StorageError", False, None)
    assert c(400, "InvalidArgument") == ("StorageError", True, None)
