"""The Storage contract, run against every backend (see conftest: local, s3, oss, memory)."""
from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator

import pytest

from brsm.adapters.storage.probe import PROBE_PREFIX
from brsm.adapters.storage.retry import RetryStorage
from brsm.errors import ObjectNotFound, StorageError
from brsm.ports import ObjectInfo, PutResult, Storage, UploadState

from .conftest import PART, THRESHOLD

MULTIPART = 3 * PART + 12345  # above the threshold: 4 parts on s3/oss/memory


async def stream(data: bytes, step: int = 50_000) -> AsyncIterator[bytes]:
    """Irregular chunk sizes on purpose: the adapters re-block."""
    i, k = 0, 0
    while i < len(data):
        n = step + (k % 3) * 7919
        yield data[i:i + n]
        i += n
        k += 1


class SourceBroke(Exception):
    pass


async def broken_stream(data: bytes, fail_at: int, step: int = PART) -> AsyncIterator[bytes]:
    for i in range(0, len(data), step):
        if i >= fail_at:
            raise SourceBroke(f"source failed at {i}")
        yield data[i:i + step]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_is_a_storage(storage):
    assert isinstance(storage, Storage)


@pytest.mark.parametrize("size", [0, 1, (1 << 20) + 1, MULTIPART], ids=["0", "1", "1MiB+1", "multipart"])
async def test_round_trip(backend, storage, size):
    data = os.urandom(size)
    res = await storage.put("dir/obj.bin", stream(data), size)
    assert res == PutResult(size=size, sha256=sha(data))
    assert await storage.stat("dir/obj.bin") == ObjectInfo("dir/obj.bin", size)
    assert await storage.get_bytes("dir/obj.bin") == data
    blocks = [b async for b in storage.get("dir/obj.bin")]
    assert b"".join(blocks) == data
    assert all(len(b) > 0 for b in blocks)
    if backend.name != "local" and size > THRESHOLD:
        assert storage.requests["upload_part"] == -(-size // PART)  # really went multipart
        assert storage.requests["complete_upload"] == 1


async def test_put_bytes_overwrites_atomically(storage):
    await storage.put_bytes("m/B.meta", b"first")
    await storage.put_bytes("m/B.meta", b"second, longer")
    assert await storage.get_bytes("m/B.meta") == b"second, longer"
    assert [o.key for o in await storage.list("m/")] == ["m/B.meta"]


async def test_range_get(storage):
    data = os.urandom(300_001)
    await storage.put("r", stream(data), len(data))

    async def rng(offset, length=None):
        return b"".join([b async for b in storage.get("r", offset=offset, length=length)])

    assert await rng(0) == data
    assert await rng(1000, 5000) == data[1000:6000]
    assert await rng(299_990) == data[299_990:]
    assert await rng(299_990, 100) == data[299_990:]  # clipped at the end
    assert await rng(5, 0) == b""
    assert await rng(len(data)) == b""  # at the end: nothing, not an error
    assert await rng(len(data) + 10, 4) == b""
    with pytest.raises(ObjectNotFound):
        async for _ in storage.get("nope", offset=10, length=10):
            pass


async def test_missing_objects(storage):
    with pytest.raises(ObjectNotFound) as ei:
        await storage.stat("no/such/key")
    assert ei.value.key == "no/such/key" and ei.value.permanent
    with pytest.raises(ObjectNotFound):
        await storage.get_bytes("no/such/key")
    with pytest.raises(ObjectNotFound):
        async for _ in storage.get("no/such/key"):
            pass
    await storage.put_bytes("no/such", b"x")  # a prefix of the key, not the key
    with pytest.raises(ObjectNotFound):
        await storage.stat("no/such/key")


async def test_list_is_recursive_sorted_and_paged(backend, storage):
    keys = sorted([f"B1/data/f{i:02d}" for i in range(20)] + ["B1/B1.meta", "B1/meta/a.sst", "B1x/z", "B2/q", "top"])
    for i, k in enumerate(keys):
        await storage.put_bytes(k, b"x" * i)
    got = await storage.list("")
    assert [o.key for o in got] == keys
    assert {o.key: o.size for o in got} == {k: i for i, k in enumerate(keys)}
    assert [o.key for o in await storage.list("B1/")] == [k for k in keys if k.startswith("B1/")]
    assert [o.key for o in await storage.list("B1")] == [k for k in keys if k.startswith("B1")]
    assert [o.key for o in await storage.list("B1/data/f1")] == [f"B1/data/f1{i}" for i in range(10)]
    assert await storage.list("nothing/") == []
    if backend.remote:
        # 25 keys with a page size of 7: the adapter must have followed 4 pages (the memory and
        # local backends have no pages to follow)
        storage.requests.clear()
        await storage.list("")
        assert storage.requests["list_objects"] >= 4


# keys whose order a directory walk gets wrong unless a directory sorts as "name/": '-' and '.' come
# before '/', '0' after it; and non-ASCII keys (UTF-8 byte order is code point order)
ORDER_KEYS = ["a-x", "a.x", "a/b/c", "a/b-c", "a/b/d/e", "a/bc", "a/x", "a0", "a1/y", "b", "sp ace/k",
              "z/ä", "z/é/1", "z/ü", "z/€", "z/\U0001f600", "zz"]


async def _keys(storage, prefix: str, **kw) -> list[str]:
    return [o.key async for o in storage.iter_objects(prefix, **kw)]


async def test_iter_objects_yields_key_order_page_by_page(backend, storage):
    for i, k in enumerate(ORDER_KEYS):
        await storage.put_bytes(k, b"x" * i)
    want = sorted(ORDER_KEYS)
    assert want == sorted(ORDER_KEYS, key=lambda k: k.encode())  # str order is UTF-8 byte order
    storage.requests.clear()
    got = [o async for o in storage.iter_objects("", page=3)]
    assert [o.key for o in got] == want
    assert {o.key: o.size for o in got} == {k: i for i, k in enumerate(ORDER_KEYS)}
    assert storage.requests["list_objects"] >= -(-len(want) // 3)  # a page of 3 at a time
    for prefix in ("a/", "a", "a-", "a/b", "a/b/", "a0", "z/", "z/é", "zz", "nothing/", "a/b/d/e"):
        assert await _keys(storage, prefix, page=2) == [k for k in want if k.startswith(prefix)], prefix
    # resumed after a key (what the retry wrapper does): exactly the keys after it
    for after in ("", "a-x", "a/b-c", "a/b/", "a0", "z/ä", "z/ü0", "zzz"):
        assert await _keys(storage, "", page=4, after=after) == [k for k in want if k > after], after
    assert await _keys(storage, "z/", page=2, after="z/é/1") == ["z/ü", "z/€", "z/\U0001f600"]
    assert await _keys(storage, "", page=1000) == want  # one page
    # the retry wrapper yields the same
    assert await _keys(RetryStorage(storage), "a", page=2) == [k for k in want if k.startswith("a")]


async def test_iter_objects_of_an_empty_store_and_prefix(storage):
    assert await _keys(storage, "") == []
    await storage.put_bytes("d/k", b"1")
    assert await _keys(storage, "e/") == [] and await _keys(storage, "d/k/") == []
    assert await _keys(storage, "d/k") == ["d/k"]


async def test_list_dirs(backend, storage):
    for k in ["B1/B1.meta", "B1/data/x", "B2/B2.meta", "B3/deep/er/x", "loose.txt", "B1x/y"]:
        await storage.put_bytes(k, b"1")
    assert await storage.list_dirs("") == ["B1", "B1x", "B2", "B3"]
    assert await storage.list_dirs("B1") == ["data"]
    assert await storage.list_dirs("B1/") == ["data"]
    assert await storage.list_dirs("B3/") == ["deep"]
    assert await storage.list_dirs("B2/") == []
    assert await storage.list_dirs("none/") == []
    for i in range(10):  # more subdirectories than one page
        await storage.put_bytes(f"many/d{i}/x", b"1")
    assert await storage.list_dirs("many") == [f"d{i}" for i in range(10)]


async def test_delete_and_delete_prefix(storage):
    for k in ["a/1", "a/2", "a/sub/3", "ab/4", "b/5"]:
        await storage.put_bytes(k, b"data")
    await storage.delete("a/1")
    await storage.delete("a/1")  # missing is fine
    await storage.delete("never/was")
    with pytest.raises(ObjectNotFound):
        await storage.stat("a/1")
    assert await storage.delete_prefix("a/") == 2
    assert [o.key for o in await storage.list("")] == ["ab/4", "b/5"]
    assert await storage.list_dirs("") == ["ab", "b"]
    assert await storage.delete_prefix("a/") == 0
    assert await storage.delete_prefix("") == 2
    assert await storage.list("") == []


@pytest.mark.parametrize("size", [1000, MULTIPART], ids=["single", "multipart"])
@pytest.mark.parametrize("declared", [-1, +1], ids=["short", "long"])
async def test_put_of_wrong_size_fails(backend, storage, size, declared):
    data = os.urandom(size)
    state = UploadState()
    with pytest.raises(StorageError) as ei:
        await storage.put("w", stream(data), size + declared, state=state)
    assert ei.value.permanent
    with pytest.raises(ObjectNotFound):
        await storage.stat("w")
    assert await storage.list("") == []
    assert state.upload_id is None  # nothing to resume: the parts held other bytes than declared
    assert await storage.abort_uploads("") == 0  # and no upload was left behind


async def test_resume_multipart_after_interruption(backend, storage):
    data = os.urandom(6 * PART + 777)  # 7 parts
    total = 7
    state = UploadState()
    journal: list[list[int]] = []

    def on_part(st: UploadState) -> None:
        assert st is state
        journal.append([p["n"] for p in st.parts])

    with pytest.raises(SourceBroke):
        await storage.put("big", broken_stream(data, fail_at=2 * PART + PART // 2, step=PART // 2),
                          len(data), state=state, on_part=on_part)
    with pytest.raises(ObjectNotFound):
        await storage.stat("big")
    if backend.name == "local":
        # local ignores the state (no parts to keep: a local write restarts from 0)
        assert state == UploadState() and journal == []
        res = await storage.put("big", stream(data), len(data), state=state, on_part=on_part)
        assert res.sha256 == sha(data) and await storage.get_bytes("big") == data
        return
    assert len(journal) == 2 and journal[-1] == [1, 2]  # parts may land out of order
    upload_id = state.upload_id
    first_two = [dict(p) for p in state.parts]
    assert upload_id and [p["n"] for p in first_two] == [1, 2] and all(p["size"] == PART for p in first_two)

    if backend.remote:  # the server itself checks that only the 5 missing parts are sent again
        from brsm.sandbox import store_faults
        store_faults.inject(backend.endpoint, kind="error", status=400, code="ReuploadedPart",
                            methods=["PUT"], skip=total - 2, count=-1)
    storage.requests.clear()
    res = await storage.put("big", stream(data), len(data), state=state, on_part=on_part)
    assert res == PutResult(len(data), sha(data))
    assert storage.requests["upload_part"] == total - 2
    assert storage.requests["create_upload"] == 0
    assert state.upload_id == upload_id
    for before, after in zip(first_two, state.parts[:2]):
        assert (after["n"], after["etag"], after["size"]) == (before["n"], before["etag"], before["size"])
    assert [p["n"] for p in state.parts] == list(range(1, total + 1))
    assert journal[-1] == list(range(1, total + 1)) and len(journal) == total
    if backend.remote:
        from brsm.sandbox import store_faults
        store_faults.clear(backend.endpoint)
    assert await storage.get_bytes("big") == data
    assert await storage.abort_uploads("") == 0  # completed: nothing pending


async def test_resume_with_a_changed_source_resends_the_changed_part(remote):  # local storage has no parts
    storage = remote.open()
    data = os.urandom(5 * PART)
    state = UploadState()
    with pytest.raises(SourceBroke):
        await storage.put("chg", broken_stream(data, fail_at=3 * PART), len(data), state=state)
    assert len(state.parts) == 3
    changed = data[:10] + b"!" * 10 + data[20:]  # part 1 differs, same size
    storage.requests.clear()
    res = await storage.put("chg", stream(changed), len(changed), state=state)
    assert res.sha256 == sha(changed)
    assert storage.requests["upload_part"] == 3  # parts 1, 4, 5
    assert await storage.get_bytes("chg") == changed


async def test_resume_of_a_vanished_upload_starts_over(remote):  # local storage has no parts
    storage = remote.open()
    data = os.urandom(3 * PART)
    state = UploadState(upload_id="NOSUCHUPLOAD0123", parts=[{"n": 1, "etag": "00" * 16, "size": PART}],
                        part_size=PART)
    res = await storage.put("v", stream(data), len(data), state=state)
    assert res.sha256 == sha(data)
    assert state.upload_id != "NOSUCHUPLOAD0123"
    assert storage.requests["upload_part"] == 3
    assert await storage.get_bytes("v") == data


async def test_abort_uploads(backend, storage, tmp_path):
    data = os.urandom(4 * PART)
    states = {}
    for k in ["x/one", "x/two", "y/three"]:
        states[k] = UploadState()
        with pytest.raises(SourceBroke):
            await storage.put(k, broken_stream(data, fail_at=2 * PART), len(data), state=states[k])
    if backend.name == "local":  # a failed local put cleans up; a crash leaves temp files
        from brsm.adapters.storage.local import TMP_MARK
        root = storage.root
        for k in ["x/one", "x/two", "y/three"]:
            d = root / k.rsplit("/", 1)[0]
            d.mkdir(parents=True, exist_ok=True)
            (d / f"{TMP_MARK}{k.rsplit('/', 1)[1]}.crash").write_bytes(b"half")
        assert await storage.list("") == []
    assert await storage.abort_uploads("x/") == 2
    assert await storage.abort_uploads("x/") == 0
    assert await storage.abort_uploads("") == 1
    if backend.name != "local":
        storage.requests.clear()
        res = await storage.put("x/one", stream(data), len(data), state=states["x/one"])
        assert res.sha256 == sha(data)
        assert storage.requests["upload_part"] == 4  # the aborted upload could not be resumed


async def test_probe_leaves_nothing(storage):
    await storage.probe()
    assert await storage.list("") == []
    assert not any(o.key.startswith(PROBE_PREFIX) for o in await storage.list(""))


@pytest.mark.parametrize("key", ["/abs", "a//b", "a/../b", "", "dir/", "./x"])
async def test_bad_keys_are_refused(storage, key):
    with pytest.raises(StorageError) as ei:
        await storage.put_bytes(key, b"x")
    assert ei.value.permanent


async def test_keys_with_odd_characters(storage):
    keys = ["data/127.0.0.21:9779/data0/1/data/000012.sst", "sp ace/ünïcode+plus%41"]
    for k in keys:
        await storage.put_bytes(k, k.encode())
    assert sorted(o.key for o in await storage.list("")) == sorted(keys)
    for k in keys:
        assert await storage.get_bytes(k) == k.encode()


async def test_abandoned_get_releases_the_object(backend, storage):
    """A reader that stops early (async generator closed) frees the connection/file; the storage
    keeps working (the s3/oss connection pools are not leaked)."""
    from contextlib import aclosing
    data = os.urandom(1 << 20)
    await storage.put("g", stream(data), len(data))
    for _ in range(40):  # more than a connection pool holds
        async with aclosing(storage.get("g")) as blocks:
            async for b in blocks:
                assert b == data[:len(b)]
                break
    assert await storage.get_bytes("g") == data


async def test_upload_aborted_under_a_put(remote, request):
    """abort_uploads (another process's cleanup) while a put is under way: the put fails with a
    transient error and a new put with the same state starts over."""
    storage = remote.open()  # local storage has no uploads to abort
    data = os.urandom(5 * PART)
    storage.part_concurrency = 1

    async def aborting() -> AsyncIterator[bytes]:
        for i in range(0, len(data), PART):
            if i == 3 * PART:
                assert await storage.abort_uploads("") == 1
            yield data[i:i + PART]

    state = UploadState()
    with pytest.raises(StorageError) as ei:
        await storage.put("ab", aborting(), len(data), state=state)
    assert not ei.value.permanent
    old = state.upload_id
    storage.requests.clear()
    for attempt in range(3):  # moto answers an occasional 500 on complete under load: transient, retried
        try:
            res = await storage.put("ab", stream(data), len(data), state=state)
            break
        except StorageError as e:
            if e.permanent or attempt == 2:
                # seen once in CI (3 x 500 on CompleteMultipartUpload), never reproduced: keep the
                # server's side of it with the failure
                srv = request.getfixturevalue(f"{remote.name}_server") if remote.name in ("s3", "oss") else None
                log = srv.log_path.read_text(errors="replace")[-4000:] if srv is not None else ""
                raise AssertionError(f"{e}\n--- {remote.name} server log (tail) ---\n{log}") from e
    assert res.sha256 == sha(data)
    assert state.upload_id != old and storage.requests["upload_part"] == 5
    assert await storage.get_bytes("ab") == data


# -- the whole port: capabilities, and the direct data path's upload and signing verbs -------------
EXPECTED = {  # backend -> (multipart, signs_urls, min_part_size)
    "local": (False, False, 0),
    "s3": (True, True, 5 << 20),
    "oss": (True, True, 100 << 10),
    "memory": (True, False, 1),
}


def test_the_retry_wrapper_is_a_storage_too(backend):
    assert isinstance(backend.open(retry=True), Storage)


def test_properties_say_what_the_store_can_do(backend, storage):
    props = storage.properties()
    multipart, signs, min_part = EXPECTED[backend.name]
    assert (props.multipart, props.signs_urls, props.min_part_size) == (multipart, signs, min_part)
    assert props.part_size == (PART if multipart else 0)
    assert props.max_parts == (10_000 if multipart else 0)
    assert props.server_side_copy  # every store copies inside itself (Storage.copy)
    assert backend.open(retry=True).properties() == props, "the retry wrapper says the same"


async def _cut_upload(storage, key: str, data: bytes, parts: int) -> UploadState:
    """An upload with its first ``parts`` parts stored and then abandoned (the source broke)."""
    state = UploadState()
    with pytest.raises(SourceBroke):
        await storage.put(key, broken_stream(data, fail_at=parts * PART), len(data), state=state)
    assert [p["n"] for p in state.parts] == list(range(1, parts + 1))
    return state


async def test_an_upload_whose_parts_someone_else_sent_is_listed_finished_or_aborted(backend, storage):
    if not storage.properties().multipart:
        for call in (lambda: storage.begin_upload("u"), lambda: storage.uploaded_parts("u", "x"),
                     lambda: storage.finish_upload("u", "x", []), lambda: storage.abort_upload("u", "x")):
            with pytest.raises(NotImplementedError):
                await call()
        return
    data = os.urandom(4 * PART)
    state = await _cut_upload(storage, "u/one", data, 2)
    listed = await storage.uploaded_parts("u/one", state.upload_id)
    assert sorted(listed) == [1, 2]
    for p in state.parts:
        assert listed[p["n"]]["etag"].strip('"').lower() == p["etag"].strip('"').lower()
        assert listed[p["n"]]["size"] == p["size"] == PART
    await storage.finish_upload("u/one", state.upload_id, state.parts)
    assert await storage.get_bytes("u/one") == data[:2 * PART]
    assert await storage.abort_uploads("") == 0, "a finished upload is pending no more"

    up = await storage.begin_upload("u/two")
    assert up and await storage.uploaded_parts("u/two", up) == {}
    await storage.abort_upload("u/two", up)
    assert await storage.uploaded_parts("u/two", up) is None, "an aborted upload is gone"
    await storage.abort_upload("u/two", up)  # gone already: fine
    with pytest.raises(ObjectNotFound):
        await storage.stat("u/two")


async def test_a_finish_of_a_dropped_upload_asks_for_the_bytes_again(backend, storage):
    """The store lost the upload (aborted under us): finishing it cannot work, and the error says
    that only sending the file again can (``resend``), not asking the same again."""
    if not storage.properties().multipart:  # nothing to drop: the store refuses every upload verb
        with pytest.raises(NotImplementedError):
            await storage.finish_upload("gone", "upload", [])
        return
    data = os.urandom(3 * PART)
    state = await _cut_upload(storage, "gone", data, 1)
    assert await storage.abort_uploads("") == 1
    with pytest.raises(StorageError) as ei:
        await storage.finish_upload("gone", state.upload_id, state.parts)
    assert not ei.value.permanent
    if backend.name != "s3":  # moto fails with a 500 there, where S3 answers 404 NoSuchUpload
        assert ei.value.resend


async def test_signed_urls_or_the_refusal(backend, storage):
    """A store that signs URLs hands out one per part (bound to its Content-MD5) and one for ranged
    GETs, and a holder of those alone uploads and reads; one that signs none refuses to."""
    if not storage.properties().signs_urls:
        with pytest.raises(NotImplementedError):
            await storage.get_url("x", 60)
        with pytest.raises(NotImplementedError):
            await storage.part_url("x", "upload", 1, "bWQ1", 60)
        if backend.name != "memory":
            return
        storage = backend.open(signs_urls=True)  # the fake signs when a test asks it to
        assert storage.properties().signs_urls
    import base64

    from .test_signed_urls import fetch, send_part
    chunks = [bytes([i]) * PART for i in (1, 2)] + [b"tail"]
    up = await storage.begin_upload("s/x.sst")
    parts = []
    for n, data in enumerate(chunks, 1):
        url = await storage.part_url("s/x.sst", up, n, base64.b64encode(hashlib.md5(data).digest()).decode(), 300)
        parts.append({"n": n, "etag": await send_part(url, data), "size": len(data)})
    assert sorted(await storage.uploaded_parts("s/x.sst", up)) == [1, 2, 3]
    await storage.finish_upload("s/x.sst", up, parts)
    assert await storage.get_bytes("s/x.sst") == b"".join(chunks)
    assert await fetch(await storage.get_url("s/x.sst", 300), PART, 4) == bytes([2]) * 4


# -- put_many: a group of small objects whose bytes are in memory -----------------------------------
GROUP_KEYS = ["g/a", "g/ab/c", "g/a.b/c/d", "g/a-b/c", "top"]  # a key a string prefix of others' dirs


def _group() -> list[tuple[str, bytes]]:
    sizes = [0, 1, 4096, 70_001, 300]
    return [(k, os.urandom(n)) for k, n in zip(GROUP_KEYS, sizes)]


async def test_put_many_round_trip(storage):
    items = _group()
    res = await storage.put_many(items)
    assert res == [PutResult(size=len(d), sha256=sha(d)) for _k, d in items]
    assert [o.key for o in await storage.list("")] == sorted(GROUP_KEYS)
    for k, d in items:
        assert await storage.get_bytes(k) == d
        assert await storage.stat(k) == ObjectInfo(k, len(d))
    again = [(k, d[::-1] + b"!") for k, d in items]  # a put overwrites, in a group too
    assert await storage.put_many(again) == [PutResult(len(d), sha(d)) for _k, d in again]
    assert [await storage.get_bytes(k) for k, _d in again] == [d for _k, d in again]
    assert await storage.put_many([]) == []
    assert await storage.abort_uploads("") == 0


async def test_put_many_through_the_retry_wrapper(backend):
    storage = backend.open(retry=True)
    items = _group()
    assert await storage.put_many(items) == [PutResult(len(d), sha(d)) for _k, d in items]
    assert [await storage.get_bytes(k) for k, _d in items] == [d for _k, d in items]


@pytest.mark.parametrize("items", [[("ok", b"1"), ("../up", b"2")], [("k", b"1"), ("k", b"2")]],
                         ids=["bad-key", "key-twice"])
async def test_put_many_refuses_a_bad_group_before_writing_anything(storage, items):
    with pytest.raises(StorageError) as ei:
        await storage.put_many(items)
    assert ei.value.permanent
    assert await storage.list("") == []


async def test_a_put_many_failing_midway_leaves_no_half_object(backend, storage, tmp_path):
    """The third object cannot be stored: the call fails; what is visible is whole (the objects before
    it may be there), nothing is half-written, and no temp file or upload is left over."""
    items = [(f"m/{i}", os.urandom(1000 + i)) for i in range(6)]
    if backend.name == "local":
        os.makedirs(tmp_path / "store" / backend.prefix / "m" / "2" / "sub")  # a directory where the key goes
    elif backend.name == "memory":
        storage.inject_fault("put", count=-1, permanent=True, skip=2)
    else:
        from brsm.sandbox import store_faults
        store_faults.inject(backend.endpoint, kind="error", status=400, code="InvalidRequest",
                            methods=["PUT"], skip=2, count=-1)
    with pytest.raises(StorageError):
        await storage.put_many(items)
    if backend.remote:
        from brsm.sandbox import store_faults
        store_faults.clear(backend.endpoint)
    want = dict(items)
    seen = await storage.list("m/")
    assert len(seen) < len(items)
    for o in seen:
        assert await storage.get_bytes(o.key) == want[o.key], o.key
    assert await storage.abort_uploads("") == 0
    if backend.name == "local":
        from brsm.adapters.storage.local import TMP_MARK
        left = [f for _d, _s, fs in os.walk(tmp_path / "store") for f in fs if f.startswith(TMP_MARK)]
        assert left == [], "the temp files of the objects not renamed are removed"
        assert [o.key for o in seen] == ["m/0", "m/1"]  # renamed in order: those before it, whole


# -- copy inside the store (an incremental backup reuses a base's object: issue 26) -----------------
@pytest.mark.parametrize("size", [0, 1, MULTIPART], ids=["0", "1", "multipart"])
async def test_copy_makes_a_whole_object_of_its_own(backend, storage, size):
    """The copy is there under its key with the source's bytes; the source is untouched, and the
    copy outlives it (each backup holds its own)."""
    data = os.urandom(size)
    await storage.put("base/f.sst", stream(data), size)
    puts = storage.requests["put_object"] + storage.requests["upload_part"]
    info = await storage.copy("base/f.sst", "next/f.sst")
    assert info == ObjectInfo("next/f.sst", size)
    assert await storage.get_bytes("next/f.sst") == data
    await storage.delete("base/f.sst")
    assert await storage.get_bytes("next/f.sst") == data
    assert [o.key for o in await storage.list("next/")] == ["next/f.sst"]
    assert storage.requests["copy_object"] == 1
    assert storage.requests["put_object"] + storage.requests["upload_part"] == puts, "no byte went through brsm"


async def test_copy_overwrites_what_is_at_its_key(storage):
    await storage.put_bytes("a", b"the base's bytes")
    await storage.put_bytes("b", b"something older, longer too")
    await storage.copy("a", "b")
    assert await storage.get_bytes("b") == b"the base's bytes"


async def test_copy_of_what_is_not_there_is_object_not_found(backend, storage):
    with pytest.raises(ObjectNotFound):
        await storage.copy("gone", "b")
    with pytest.raises(ObjectNotFound):
        await backend.open(retry=True).copy("gone", "b")  # not retried as if it could come back
    assert await storage.list("b") == []


async def test_a_big_object_is_copied_in_byte_ranges(backend, storage):
    """Above copy_one_request (5 GiB on S3 and OSS; lowered here) the store copies parts, each a
    range of the source, and the object is whole; local storage makes a hard link whatever the size."""
    storage.copy_one_request = PART
    data = os.urandom(MULTIPART)
    await storage.put("big", stream(data), len(data))
    await storage.copy("big", "big-copy")
    assert await storage.get_bytes("big-copy") == data
    if backend.name == "local":
        same = [os.stat(storage.root / storage.full_key(k)) for k in ("big", "big-copy")]
        assert same[0].st_ino == same[1].st_ino and same[0].st_nlink == 2
        return
    assert storage.requests["upload_part_copy"] == -(-len(data) // PART)
    assert storage.requests["copy_object"] == 0 and storage.requests["complete_upload"] == 2
