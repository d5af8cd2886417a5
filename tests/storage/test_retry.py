"""The retry wrapper: rides over transient faults, gives up on permanent ones at once.

Unit tests use the in-memory fake's fault injection; the s3/oss tests use the sandbox stores'
fault control (HTTP 503 / connection resets injected by the server, seen through the real SDKs).
"""
from __future__ import annotations

import hashlib
import os

import pytest

from brsm.adapters.storage.memory import MemoryStorage
from brsm.adapters.storage.retry import RetryStorage
from brsm.errors import ObjectNotFound, StorageError
from brsm.ports import UploadState

from .conftest import PART
from .test_contract import sha, stream


class Sleeps(list):
    async def __call__(self, d: float) -> None:
        self.append(d)


def wrap(inner, **kw) -> tuple[RetryStorage, Sleeps]:
    sleeps = Sleeps()
    return RetryStorage(inner, sleep=sleeps, **kw), sleeps


def mem(**kw) -> MemoryStorage:
    return MemoryStorage(part_size=PART, multipart_threshold=2 * PART, **kw)


@pytest.mark.parametrize("verb", ["stat", "list", "list_dirs", "put_bytes", "delete", "delete_prefix",
                                  "get", "abort_uploads"])
async def test_rides_over_transient_faults(verb):
    m = mem()
    await m.put_bytes("a/b", b"hello")
    r, sleeps = wrap(m, attempts=5, base_delay=0.1, max_delay=0.3)
    m.inject_fault(verb, count=3)
    call = {"stat": lambda: r.stat("a/b"), "list": lambda: r.list(""), "list_dirs": lambda: r.list_dirs(""),
            "put_bytes": lambda: r.put_bytes("a/c", b"x"), "delete": lambda: r.delete("a/b"),
            "delete_prefix": lambda: r.delete_prefix("zzz/"), "get": lambda: r.get_bytes("a/b"),
            "abort_uploads": lambda: r.abort_uploads("")}[verb]
    await call()
    assert r.retries == 3 and len(sleeps) == 3
    # capped exponential backoff with jitter in the upper half: 0.1, 0.2, 0.3 (cap)
    for d, full in zip(sleeps, [0.1, 0.2, 0.3]):
        assert full / 2 <= d <= full
    assert m.faults[verb].count == 0


async def test_gives_up_on_permanent_errors_at_once():
    m = mem()
    r, sleeps = wrap(m)
    m.inject_fault("stat", count=1, permanent=True)
    with pytest.raises(StorageError) as ei:
        await r.stat("x")
    assert ei.value.permanent and r.retries == 0 and sleeps == []
    with pytest.raises(ObjectNotFound):  # a missing object is permanent too
        await r.stat("x")
    assert r.retries == 0


async def test_gives_up_after_the_attempts():
    m = mem()
    r, sleeps = wrap(m, attempts=4)
    m.inject_fault("list", count=-1)
    with pytest.raises(StorageError) as ei:
        await r.list("")
    assert not ei.value.permanent and r.retries == 3 and len(sleeps) == 3
    # one retry layer: spent, it is final; the file-level loop does not retry it again
    from brsm.workflows.transfer import _transient
    assert not ei.value.resend and not _transient(ei.value)
    again = StorageError("the bytes must come again from their source")
    again.resend = True
    assert _transient(again)


async def test_small_put_is_replayed_after_the_stream_was_consumed():
    m = mem()
    r, _ = wrap(m)
    m.inject_fault("put_object", count=2)  # fails after the adapter read the whole stream
    data = os.urandom(100_000)
    res = await r.put("k", stream(data), len(data))
    assert res.sha256 == sha(data) and r.retries == 2
    assert await m.get_bytes("k") == data


async def test_big_put_retried_only_before_the_stream_is_touched():
    m = mem()
    r, _ = wrap(m, replay_limit=PART)
    data = os.urandom(4 * PART)
    m.inject_fault("put", count=1)  # before any byte is read: retried
    assert (await r.put("k", stream(data), len(data))).sha256 == sha(data)
    assert r.retries == 1
    # a part fails after bytes were consumed: the caller gets the error and resumes with the state
    m.inject_fault("upload_part", count=1, skip=2)
    state = UploadState()
    with pytest.raises(StorageError) as ei:
        await r.put("k2", stream(data), len(data), state=state)
    assert not ei.value.permanent and r.retries == 1
    assert ei.value.resend  # the caller, who can reopen the source, retries it (the transfer loop)
    landed = {p["n"] for p in state.parts}
    assert {1, 2} <= landed and 3 not in landed
    m.requests.clear()
    assert (await r.put("k2", stream(data), len(data), state=state)).sha256 == sha(data)
    assert m.requests["upload_part"] == 4 - len(landed)  # only the missing parts were sent
    assert await m.get_bytes("k2") == data


class FlakyGet(MemoryStorage):
    """get() breaks once after the first block."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.broke = False
        self.offsets: list[int] = []

    async def get(self, key, *, offset=0, length=None):
        self.offsets.append(offset)
        async for b in super().get(key, offset=offset, length=length):
            yield b
            if not self.broke:
                self.broke = True
                raise StorageError("connection reset mid-stream")


@pytest.mark.parametrize("offset,length", [(0, None), (1000, 150_000)])
async def test_get_resumes_mid_stream_from_where_it_stopped(offset, length):
    m = FlakyGet(block_size=64 * 1024)
    data = os.urandom(300_000)
    await m.put_bytes("k", data)
    r, _ = wrap(m)
    got = b"".join([b async for b in r.get("k", offset=offset, length=length)])
    assert got == data[offset:None if length is None else offset + length]
    assert m.offsets == [offset, offset + 64 * 1024]  # the retry asked for the rest only


async def test_memory_quota_is_permanent():
    m = mem(quota=250_000)
    await m.put("a", stream(b"x" * 200_000), 200_000)
    r, _ = wrap(m)
    with pytest.raises(StorageError) as ei:
        await r.put("b", stream(b"y" * 60_000), 60_000)
    assert ei.value.permanent and "quota" in ei.value.message and r.retries == 0
    await r.put("a", stream(b"z" * 240_000), 240_000)  # replacing an object frees its bytes
    assert m.stored_bytes() == 240_000


# -- against the sandbox object stores --------------------------------------------------------



@pytest.mark.parametrize("op", ["stat", "put_bytes", "put", "put_multipart", "get_bytes", "list", "delete"])
async def test_store_503_twice_is_ridden_over(remote, op):
    from brsm.sandbox import store_faults
    st = remote.open(retry=True, retry_options={"base_delay": 0.01, "attempts": 4})
    small, big = os.urandom(5000), os.urandom(3 * PART)
    await st.put_bytes("obj", small)
    before = store_faults.status(remote.endpoint)["counters"]["errors_injected"]
    store_faults.inject(remote.endpoint, kind="error", status=503, count=2)
    if op == "stat":
        assert (await st.stat("obj")).size == len(small)
    elif op == "put_bytes":
        await st.put_bytes("obj2", small)
    elif op == "put":
        assert (await st.put("obj3", stream(small), len(small))).sha256 == sha(small)
    elif op == "put_multipart":  # within the replay limit: the whole multipart put is replayed
        assert (await st.put("obj4", stream(big), len(big))).sha256 == sha(big)
    elif op == "get_bytes":
        assert await st.get_bytes("obj") == small
    elif op == "list":
        assert [o.key for o in await st.list("")] == ["obj"]
    elif op == "delete":
        await st.delete("obj")
    after = store_faults.status(remote.endpoint)["counters"]["errors_injected"]
    assert after - before == 2 and st.retries == 2
    if op == "delete":
        assert await st.list("") == []
    elif op.startswith("put"):
        assert len(await st.list("")) == 2


async def test_store_503_is_transient_without_the_wrapper(remote):
    from brsm.sandbox import store_faults
    st = remote.open()
    await st.put_bytes("obj", b"1")
    store_faults.inject(remote.endpoint, kind="error", status=503, count=1)
    with pytest.raises(StorageError) as ei:
        await st.stat("obj")
    assert not ei.value.permanent and "503" in ei.value.message
    # connection resets (forever: HTTP clients silently redo a request once on a dropped
    # keep-alive connection) are transient as well
    store_faults.inject(remote.endpoint, kind="reset", count=-1)
    with pytest.raises(StorageError) as ei:
        await st.get_bytes("obj")
    assert not ei.value.permanent


async def test_store_errors_forever_give_up(remote):
    from brsm.sandbox import store_faults
    st = remote.open(retry=True, retry_options={"base_delay": 0.001, "attempts": 3})
    store_faults.inject(remote.endpoint, kind="error", status=500, count=-1)
    with pytest.raises(StorageError) as ei:
        await st.list("")
    assert not ei.value.permanent and st.retries == 2


async def test_store_quota_is_permanent(remote):
    from brsm.sandbox import store_faults
    st = remote.open(retry=True, retry_options={"base_delay": 0.001})
    store_faults.inject(remote.endpoint, kind="quota", bytes=0)
    with pytest.raises(StorageError) as ei:
        await st.put_bytes("q", os.urandom(10_000))
    assert ei.value.permanent and st.retries == 0 and ei.value.hint


async def test_store_part_failure_then_resume(remote):
    """A multipart put beyond the replay limit: the failed part's error reaches the caller, the
    journaled state resumes, and the part that had landed is not sent again."""
    from brsm.sandbox import store_faults
    st = remote.open(retry=True, retry_options={"base_delay": 0.001, "replay_limit": 0})
    data = os.urandom(4 * PART)
    state = UploadState()
    st.inner.part_concurrency = 1
    store_faults.inject(remote.endpoint, kind="error", status=503, count=-1, methods=["PUT"], skip=2)
    with pytest.raises(StorageError) as ei:
        await st.put("mp", stream(data), len(data), state=state)
    assert not ei.value.permanent and [p["n"] for p in state.parts] == [1, 2]
    store_faults.clear(remote.endpoint)
    st.inner.requests.clear()
    assert (await st.put("mp", stream(data), len(data), state=state)).sha256 == hashlib.sha256(data).hexdigest()
    assert st.inner.requests["upload_part"] == 2
    assert await st.get_bytes("mp") == data


def test_the_wrapper_implements_every_verb_of_the_port_itself():
    """No verb reaches the backend unretried through attribute forwarding: each is a method of the
    wrapper (restic checks this at compile time; a verb added to the port and not here fails)."""
    from brsm.ports import Storage

    verbs = {n for n in vars(Storage) if not n.startswith("_")} - {"uri"}
    assert verbs and {n for n in verbs if n not in vars(RetryStorage)} == set()
    assert not hasattr(RetryStorage, "__getattr__")


@pytest.mark.parametrize("fault", ["create_upload", "list_parts", "complete_upload", "abort_upload"])
async def test_the_direct_paths_upload_verbs_ride_over_transient_faults(fault):
    m = mem()
    r, sleeps = wrap(m)
    m.inject_fault(fault, count=2)
    up = await r.begin_upload("d/k")
    assert await r.uploaded_parts("d/k", up) == {}
    await r.finish_upload("d/k", up, [])
    up2 = await r.begin_upload("d/k2")
    await r.abort_upload("d/k2", up2)
    assert r.retries == 2 and len(sleeps) == 2
    assert m.objects[m.full_key("d/k")] == b"" and m.uploads == {}


async def test_an_upload_the_store_dropped_is_not_asked_for_again():
    """Finishing an upload that is gone cannot succeed on a second try: raised at once, marked for
    the caller to send the file again."""
    m = mem()
    r, sleeps = wrap(m)
    up = await r.begin_upload("d/k")
    await m.abort_uploads("")
    with pytest.raises(StorageError) as ei:
        await r.finish_upload("d/k", up, [])
    assert ei.value.resend and not ei.value.permanent and r.retries == 0 and sleeps == []


def test_the_retry_rules_keep_their_waits():
    """The waits users saw before the rules moved to brsm.retries: 0.5 s then 1 s between tries of a
    file or a probe, 0.4 s doubling to a 5 s cap between tries of a part a host sends."""
    import doctest

    from brsm import retries as rules

    assert doctest.testmod(rules).failed == 0
    assert [rules.WHOLE_FILE.delay(n) for n in (1, 2)] == [0.5, 1.0]
    assert [rules.PROBE.delay(n) for n in (1, 2)] == [0.5, 1.0]
    assert [rules.HOST_PART.delay(n) for n in range(1, 6)] == [0.4, 0.8, 1.6, 3.2, 5.0]
    assert (rules.WHOLE_FILE.attempts, rules.PROBE.attempts, rules.HOST_PART.attempts,
            rules.STORE_REQUEST.attempts) == (3, 3, 5, 5)


async def test_put_many_is_retried_whole_with_its_bytes():
    """The group's bytes are in memory: a transient failure midway (after two objects were stored)
    sends the whole group again; a permanent one is raised at once."""
    m = mem()
    r, sleeps = wrap(m, attempts=5, base_delay=0.1, max_delay=0.3)
    items = [(f"g/{i}", os.urandom(100 + i)) for i in range(5)]
    m.inject_fault("put", count=1, skip=2)
    res = await r.put_many(items)
    assert [x.sha256 for x in res] == [sha(d) for _k, d in items]
    assert r.retries == 1 and len(sleeps) == 1
    assert {k: m.objects[k] for k, _d in items} == dict(items)
    m.inject_fault("put_many", count=2)
    await r.put_many(items)
    assert r.retries == 3
    m.inject_fault("put_many", count=1, permanent=True)
    with pytest.raises(StorageError):
        await r.put_many(items)
    assert r.retries == 3


async def test_a_listing_page_that_fails_is_asked_again_after_the_last_key_given():
    m = mem(list_page_size=3)
    keys = [f"B/data/{i:03d}" for i in range(10)]
    for k in keys:
        await m.put_bytes(k, b"x")
    r, sleeps = wrap(m, attempts=3, base_delay=0.1, max_delay=0.3)
    m.inject_fault("list", count=2, skip=2)  # the 3rd and 4th page requests fail: twice in a row
    got = [o.key async for o in r.iter_objects("B/", page=3)]
    assert got == keys, "each key once, in order: the retry resumed after the last key yielded"
    assert r.retries == 2 and m.requests["list_objects"] == 4  # 10 keys: 4 pages answered
    m.inject_fault("list", count=-1, skip=1)  # fails for good from the 2nd page: given up, not cut short
    with pytest.raises(StorageError):
        [o.key async for o in r.iter_objects("B/", page=3)]


async def test_a_listing_out_of_key_order_is_refused():
    from brsm.ports import ObjectInfo

    class Jumbled(MemoryStorage):
        async def iter_objects(self, prefix, *, page=1000, after=""):
            for k in ("b", "a"):
                yield ObjectInfo(k, 1)
    r, _ = wrap(Jumbled())
    with pytest.raises(StorageError, match="out of key order") as ei:
        [o async for o in r.iter_objects("")]
    assert ei.value.permanent
