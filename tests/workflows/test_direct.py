"""The direct data path's decisions (brsm.workflows.direct), and its rule that no helper outlives the
step that started it, whatever ends the step: checked against an in-process helper, not SSH."""
from __future__ import annotations

import asyncio

import pytest

from brsm.errors import RemoteError, StorageError
from brsm.workflows import direct, direct_rules


@pytest.mark.parametrize("asked, signs, refusals, mode, why", [
    ("auto", True, [], "direct", "every host runs the helper"),
    ("direct", True, [], "direct", "every host runs the helper"),
    ("auto", True, ["h1: no python3"], "via-brsm", "h1: no python3; the bytes go through brsm"),
    ("auto", False, [], "via-brsm", "signs no URLs"),
    ("direct", False, [], "via-brsm", "signs no URLs"),
    ("via-brsm", True, [], "via-brsm", "--data-path via-brsm"),
])
def test_decide(asked, signs, refusals, mode, why):
    c = direct_rules.decide(asked, signs, refusals)
    assert c.mode == mode and why in c.why


@pytest.mark.parametrize("hello, refusal", [
    ({"hello": 1, "python": "3.6.8"}, None),
    ({"hello": 1, "python": "3.12.1"}, None),
    ({"hello": 1, "python": "3.5.2"}, "python3 is 3.5.2, the helper needs 3.6 or newer"),
    ({"hello": 1, "python": "2.7.18"}, "python3 is 2.7.18"),
    ({"hello": 1, "python": "three"}, "python3 says it is 'three'"),
    (None, "python3 did not run the helper"),
    ({"error": {"code": "X"}}, "python3 did not run the helper"),
])
def test_python_refusal(hello, refusal):
    got = direct_rules.python_refusal(hello)
    assert (got is None) if refusal is None else (got is not None and got.startswith(refusal))


class Helper:
    def __init__(self, hello):
        self.hello, self.closed = hello, 0

    async def send(self, msg):
        pass

    async def receive(self):
        if isinstance(self.hello, BaseException):
            raise self.hello
        if self.hello == "hang":
            await asyncio.sleep(3600)
        return self.hello

    async def close(self, *, at_once=False):
        self.closed += 1
        self.at_once = at_once
        return 0


class Host:
    name = "h1"

    def __init__(self, hello):
        self.helper = Helper(hello)

    async def start_helper(self):
        return self.helper


class NoUploads:
    def __init__(self, permanent: bool = True):
        self.permanent, self.calls = permanent, 0

    async def begin_upload(self, key):
        self.calls += 1
        raise StorageError("s3: 403 AccessDenied on create_multipart_upload" if self.permanent else "s3: 503 SlowDown",
                           permanent=self.permanent)


@pytest.mark.parametrize("hello", [RemoteError("h1: lost the direct-path helper", host="h1"),
                                   {"hello": 1, "python": "3.5.0"}])
async def test_a_helper_that_fails_its_greeting_is_closed(hello):
    host = Host(hello)
    why = await direct.probe_host(host, NoUploads())
    assert why and host.helper.closed == 1


async def test_a_helper_cancelled_while_greeting_is_closed():
    host = Host("hang")
    task = asyncio.ensure_future(direct.probe_host(host, NoUploads()))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert host.helper.closed == 1


async def test_a_store_that_refuses_the_probe_upload_still_closes_the_helper():
    host = Host({"hello": 1, "python": "3.11.0"})
    with pytest.raises(StorageError):
        await direct.probe_host(host, NoUploads())
    assert host.helper.closed == 1


async def test_a_busy_store_is_asked_again_by_the_storage_then_named():
    """Opening the probe's upload is brsm's own request: the storage's retry layer asks again (its
    attempts, not a second loop of the probe's), then the probe names the store's answer."""
    from brsm.adapters.storage.retry import RetryStorage
    from brsm.retries import STORE_REQUEST

    async def no_wait(_d):
        pass

    host, store = Host({"hello": 1, "python": "3.11.0"}), NoUploads(permanent=False)
    why = await direct.probe_host(host, RetryStorage(store, sleep=no_wait))
    assert store.calls == STORE_REQUEST.attempts and "503 SlowDown" in why and host.helper.closed == 1


async def test_one_503_on_the_probe_does_not_decide_the_data_path():
    from brsm.console.progress import NullProgress

    c, host, store = _fake_world()
    store.inject_fault("upload_part", count=1)
    choice = await direct.choose("auto", [host], store, NullProgress())
    assert choice.mode == "direct", choice.why
    assert store.uploads == {}, "the probe's upload aborted"


class Counting:
    """A host whose every helper start is counted."""
    name = "h1"

    def __init__(self):
        self.helpers: list[Helper] = []

    async def start_helper(self):
        self.helpers.append(Helper({"hello": 1, "python": "3.11.0"}))
        return self.helpers[-1]


async def test_a_helper_whose_file_finished_is_lent_again_and_closed_with_the_pool():
    host, pool = Counting(), direct.Helpers()
    for _ in range(5):
        async with pool.lend(host) as h:
            assert h is host.helpers[0]
    assert len(host.helpers) == 1 and host.helpers[0].closed == 0
    await pool.close()
    assert host.helpers[0].closed == 1


async def test_a_helper_whose_file_failed_is_closed_not_lent_again():
    host, pool = Counting(), direct.Helpers()
    with pytest.raises(StorageError):
        async with pool.lend(host):
            raise StorageError("503")
    assert host.helpers[0].closed == 1 and host.helpers[0].at_once, "a file given up on: stopped mid-request"
    async with pool.lend(host) as h:
        assert h is host.helpers[1]
    await pool.close()
    assert [h.closed for h in host.helpers] == [1, 1] and not host.helpers[1].at_once, "an idle one told to exit"


async def test_the_pool_keeps_at_most_its_share_of_a_hosts_sessions():
    host, pool = Counting(), direct.Helpers()
    n = direct.KEEP_PER_HOST + 3
    gate = asyncio.Event()

    async def one():
        async with pool.lend(host):
            await gate.wait()

    tasks = [asyncio.ensure_future(one()) for _ in range(n)]
    await asyncio.sleep(0.01)
    gate.set()
    await asyncio.gather(*tasks)
    assert len(host.helpers) == n
    assert sum(h.closed for h in host.helpers) == n - direct.KEEP_PER_HOST, "the extra ones closed at once"
    await pool.close()
    assert all(h.closed == 1 for h in host.helpers)


async def test_a_cancelled_worker_closes_its_helper():
    host, pool = Counting(), direct.Helpers()

    async def one():
        async with pool.lend(host):
            await asyncio.sleep(3600)

    t = asyncio.ensure_future(one())
    await asyncio.sleep(0.01)
    t.cancel()
    with pytest.raises(asyncio.CancelledError):
        await t
    assert host.helpers[0].closed == 1
    await pool.close()
    assert host.helpers[0].closed == 1


@pytest.mark.parametrize("err, said", [
    ({"status": 0, "code": "ConnectionRefusedError"}, "cannot reach the store: ConnectionRefusedError"),
    ({"status": 0, "code": ""}, "cannot reach the store: no answer"),
    ({"status": 403, "code": "AccessDenied", "message": "Request has expired"},
     "the store refused its signed probe: 403 AccessDenied (Request has expired); is this machine's clock right?"),
    ({"status": 403, "code": "SignatureDoesNotMatch", "message": "The request signature we calculated does not match"},
     "the store refused its signed probe: 403 SignatureDoesNotMatch (The request signature we calculated does not match)"),
])
def test_probe_refusal(err, said):
    assert direct_rules.probe_refusal(err) == said


def test_the_helper_keeps_only_the_code_and_message_of_a_store_error():
    from brsm.adapters.direct_helper import error_of
    body = (b"<?xml version='1.0'?><Error><Code>SignatureDoesNotMatch</Code><Message>The request signature we "
            b"calculated does not match</Message><StringToSign>AWS4-HMAC-SHA256...</StringToSign><CanonicalRequest>"
            b"PUT /b/k X-Amz-Credential=AKIDEXAMPLE%2F20261203</CanonicalRequest></Error>")
    err = error_of(403, body)
    assert err == {"status": 403, "code": "SignatureDoesNotMatch",
                   "message": "The request signature we calculated does not match"}
    assert error_of(502, b"<html>Bad Gateway</html>") == {"status": 502, "code": "", "message": "<html>Bad Gateway</html>"}


# -- direct.upload / download end to end on the fakes: a FakeHost's helper and the memory store ----
def _fake_world(part_size: int = 1000):
    from brsm.adapters.storage.memory import MemoryStorage
    from brsm.fakes.cluster import FakeCluster
    from brsm.fakes.hosts import FakeHosts

    c = FakeCluster(metas=1, storages=1, data_paths=1)
    c.signed_http = MemoryStorage.signed_request
    name = sorted(c.machines)[-1]
    store = MemoryStorage("memory://b", part_size=part_size, multipart_threshold=part_size, signs_urls=True)
    return c, FakeHosts(c).host(name), store


async def test_a_file_goes_up_and_comes_back_through_the_fake_helper_and_resumes_after_its_parts():
    import hashlib
    import os as _os

    from brsm.console.progress import NullProgress
    from brsm.ports import UploadState

    c, host, store = _fake_world()
    data = _os.urandom(4500)
    host.m.put("/data/f.sst", data)
    seen: list[UploadState] = []
    store.inject_fault("upload_part", count=1, permanent=True, skip=2)  # part 3 refused once: asked for again
    moved = await direct.upload("b/f.sst", "/data/f.sst", len(data), host, store, NullProgress(),
                                state=UploadState(), on_part=seen.append)
    assert moved.sha256 == hashlib.sha256(data).hexdigest() and store.objects[store.full_key("b/f.sst")] == data
    assert [p["n"] for p in seen[-1].parts] == [1, 2, 3, 4, 5]
    # a resume with parts 1-2 journaled (and stored) sends parts 3-5 only, and hashes the whole file
    from brsm.adapters.storage.memory import MemoryStorage
    up = await store.begin_upload("b/g.sst")
    parts = []
    for n in (1, 2):
        chunk = data[(n - 1) * 1000:n * 1000]
        url = await store.part_url("b/g.sst", up, n, direct._b64md5(chunk), 60)
        status, body = MemoryStorage.signed_request(url, "PUT", chunk)
        assert status == 200
        parts.append({"n": n, "etag": body["etag"], "size": 1000})
    before = store.requests["upload_part"]
    again = await direct.upload("b/g.sst", "/data/f.sst", len(data), host, store, NullProgress(),
                                state=UploadState(up, parts, 1000), on_part=seen.append)
    assert again.sha256 == moved.sha256 and store.requests["upload_part"] - before == 3
    assert store.objects[store.full_key("b/g.sst")] == data
    await direct.download("b/f.sst", moved.sha256, len(data), host, store, NullProgress(), "/restore/f.sst")
    assert host.m.files["/restore/f.sst"] == data and "/restore/f.sst.brsm-tmp" not in host.m.files
    from brsm.errors import VerificationFailed

    with pytest.raises(VerificationFailed, match="this backup is damaged: file b/f.sst") as e:
        await direct.download("b/f.sst", "0" * 64, len(data), host, store, NullProgress(), "/restore/x.sst")
    assert e.value.exit_code == 6 and "brsm show --storage" in e.value.hint  # as on the path through brsm
    assert not [f for f in host.m.files if f.startswith("/restore/x.sst")], "a file that does not match is removed"


async def test_the_memory_store_refuses_signed_requests_as_a_store_would():
    import base64
    import hashlib

    from brsm.adapters.storage.memory import MemoryStorage

    _c, _host, store = _fake_world()
    up = await store.begin_upload("k")
    md5 = base64.b64encode(hashlib.md5(b"abc").digest()).decode()
    url = await store.part_url("k", up, 1, md5, 60)
    assert MemoryStorage.signed_request(url, "PUT", b"abd")[0] == 400, "a body other than the signed MD5"
    assert MemoryStorage.signed_request(url, "GET")[0] == 403, "signed for PUT"
    late = await store.part_url("k", up, 1, md5, -1)
    assert MemoryStorage.signed_request(late, "PUT", b"abc") == (403, {"code": "AccessDenied",
                                                                        "message": "Request has expired"})
    assert MemoryStorage.signed_request(url, "PUT", b"abc")[0] == 200


@pytest.mark.parametrize("err, verdict", [
    ({"status": 0, "code": "ConnectionResetError"}, "retry"),
    ({"status": 503, "code": "SlowDown"}, "retry"),
    ({"status": 500, "code": "InternalError"}, "retry"),
    ({"status": 429}, "retry"),
    ({"status": 400, "code": "BadDigest"}, "retry"),
    ({"status": 403, "code": "AccessDenied", "message": "Request has expired"}, "retry"),
    ({"status": 403, "code": "AccessDenied", "message": "Request has expired."}, "retry"),  # OSS
    ({"status": 404, "code": "NoSuchUpload"}, "restart"),
    ({"status": 507, "code": "InsufficientStorage"}, "stop"),
    ({"status": 403, "code": "QuotaExceeded"}, "stop"),
    ({"status": 403, "code": "SignatureDoesNotMatch"}, "stop"),
    ({"status": 403, "code": "AccessDenied", "message": "Access Denied"}, "stop"),
    ({"status": 404, "code": "NoSuchBucket"}, "stop"),
])
def test_part_failure(err, verdict):
    assert direct_rules.part_failure(err) == verdict


async def test_a_full_store_stops_the_file_at_once_and_an_aborted_upload_starts_it_over():
    import os as _os

    from brsm.console.progress import NullProgress
    from brsm.ports import UploadState

    _c, host, store = _fake_world()
    data = _os.urandom(3000)
    host.m.put("/data/q.sst", data)
    store.quota = 1500
    with pytest.raises(StorageError) as e:
        await direct.upload("q", "/data/q.sst", len(data), host, store, NullProgress(), state=UploadState(),
                            on_part=lambda s: None)
    assert e.value.permanent and "full" in (e.value.hint or "")
    assert store.requests["upload_part"] == 2, "no part asked for again once the store said it is full"
    # an upload aborted under the file (another brsm's cleanup): the file fails retryably, and the next
    # attempt with the journaled state begins a new upload and sends every part
    store.quota = None
    latest = [UploadState()]

    def abort_after_first(s: UploadState) -> None:
        latest[0] = s
        store.uploads.clear()

    with pytest.raises(StorageError) as e:
        await direct.upload("q", "/data/q.sst", len(data), host, store, NullProgress(), state=UploadState(),
                            on_part=abort_after_first)
    assert not e.value.permanent and "NoSuchUpload" in e.value.message
    moved = await direct.upload("q", "/data/q.sst", len(data), host, store, NullProgress(), state=latest[0],
                                on_part=lambda s: None)
    assert store.objects[store.full_key("q")] == data and moved.size == len(data)


def test_brsm_scrubs_what_a_helper_reports_of_a_url():
    m = direct_rules.scrubbed({"error": {"status": 0, "message": "bad URL '/b/k?X-Amz-Signature=abc&Signature=def'"}, "n": 1})
    assert "abc" not in m["error"]["message"] and "def" not in m["error"]["message"]
    assert direct_rules.scrubbed(None) is None and direct_rules.scrubbed({"part": 1}) == {"part": 1}


def test_unremoved_probes():
    from types import SimpleNamespace as E

    from brsm.workflows.common import unremoved_probes
    evs = [E(type="ProbeWritten", data={"key": "a"}), E(type="ProbeRemoved", data={"key": "a"}),
           E(type="ProbeWritten", data={"key": "b", "upload": True}), E(type="ProbeWritten", data={"key": "c"})]
    assert unremoved_probes(evs) == ["b", "c"] and unremoved_probes(evs[:2]) == []


async def test_a_host_that_stores_less_than_it_reports_gets_no_backup(monkeypatch):
    """A lying host: each part's URL asked for with the MD5 of what it really sends (one byte short of
    part 2), the full size and the true file's SHA-256 reported. The store accepted every PUT and the
    completion (ETags agree), so the backup took the host's word, with exit 0. Now the store's own
    account of the parts (their sizes, their ETags = the MD5s brsm signed) is checked: refused."""
    import hashlib

    from brsm.console.progress import NullProgress
    from brsm.fakes.helper import FakeHelper
    from brsm.ports import UploadState

    async def lying_put(self, cmd):
        data = self.host.m.files[cmd["path"]]
        size, part = int(cmd["size"]), int(cmd["part_size"])
        for n, pos in enumerate(range(0, size, part), start=1):
            chunk = data[pos:pos + part]
            sent = chunk[:-1] if n == 2 else chunk
            url = await self._url({"want": "url", "n": n, "size": len(chunk), "md5": direct._b64md5(sent)})
            status, body = self._http(url, "PUT", sent)
            assert status == 200, body
            self._out.put_nowait({"part": n, "etag": body["etag"], "size": len(chunk)})
        self._out.put_nowait({"file": cmd["path"], "size": size, "sha256": hashlib.sha256(data).hexdigest()})
        return True

    monkeypatch.setattr(FakeHelper, "_put", lying_put)
    c, host, store = _fake_world()
    data = bytes(range(256)) * 12
    host.m.put("/data/f.sst", data)
    with pytest.raises(StorageError, match="part 2: the store holds 999 bytes, the host reported 1000") as e:
        await direct.upload("b/f.sst", "/data/f.sst", len(data), host, store, NullProgress(),
                            state=UploadState(), on_part=lambda s: None)
    assert e.value.permanent
    assert store.full_key("b/f.sst") not in store.objects, "never completed"


# -- one retry rule per kind of work: the file-level loop does not multiply the storage's tries -----
async def _no_wait(_d):
    pass


async def test_a_store_request_is_tried_as_often_as_the_storage_says_not_times_the_file_tries():
    import os as _os

    from brsm.adapters.storage.retry import RetryStorage
    from brsm.console.progress import NullProgress
    from brsm.ports import UploadState
    from brsm.retries import STORE_REQUEST
    from brsm.workflows.transfer import whole_file

    _c, host, mem = _fake_world()
    store = RetryStorage(mem, sleep=_no_wait)
    data = _os.urandom(2500)
    host.m.put("/data/r.sst", data)
    mem.inject_fault("complete_upload", count=-1)  # a store that never finishes an upload
    with pytest.raises(StorageError) as e:
        await whole_file("copying", lambda: direct.upload("r", "/data/r.sst", len(data), host, store, NullProgress(),
                                                          state=UploadState(), on_part=lambda s: None))
    assert not e.value.permanent and not e.value.resend
    assert store.retries == STORE_REQUEST.attempts - 1, "5 tries of the request, not 3 x 5"
    assert mem.requests["upload_part"] == 3 and mem.requests["create_upload"] == 1, "the file went once"


async def test_an_upload_the_store_dropped_sends_the_file_again():
    import os as _os

    from brsm.adapters.storage.retry import RetryStorage
    from brsm.console.progress import NullProgress
    from brsm.ports import UploadState
    from brsm.workflows.transfer import whole_file

    _c, host, mem = _fake_world()
    store = RetryStorage(mem, sleep=_no_wait)
    data = _os.urandom(2500)
    host.m.put("/data/d.sst", data)
    latest = [UploadState()]
    dropped = []

    def drop_once(s: UploadState) -> None:
        latest[0] = s
        if not dropped:
            dropped.append(s.upload_id)
            mem.uploads.clear()  # another brsm's cleanup aborted it under this file

    moved = await whole_file("copying", lambda: direct.upload("d", "/data/d.sst", len(data), host, store,
                                                              NullProgress(), state=latest[0], on_part=drop_once))
    assert mem.objects[mem.full_key("d")] == data and moved.size == len(data)
    assert mem.requests["create_upload"] == 2, "a new upload for the second try"


def test_the_rules_doctests():
    import doctest

    assert doctest.testmod(direct_rules).failed == 0
