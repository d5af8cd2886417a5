"""The direct data path's decisions (brsm.workflows.direct), and its rule that no helper outlives the
step that started it, whatever ends the step: checked against an in-process helper, not SSH."""
from __future__ import annotations

import asyncio

import pytest

from brsm.errors import RemoteError, StorageError
from brsm.workflows import direct


@pytest.mark.parametrize("asked, signs, refusals, mode, why", [
    ("auto", True, [], "direct", "every host runs the helper"),
    ("direct", True, [], "direct", "every host runs the helper"),
    ("auto", True, ["h1: no python3"], "via-brsm", "h1: no python3; the bytes go through brsm"),
    ("auto", False, [], "via-brsm", "signs no URLs"),
    ("direct", False, [], "via-brsm", "signs no URLs"),
    ("via-brsm", True, [], "via-brsm", "--data-path via-brsm"),
])
def test_decide(asked, signs, refusals, mode, why):
    c = direct.decide(asked, signs, refusals)
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
    got = direct.python_refusal(hello)
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

    async def close(self):
        self.closed += 1
        return 0


class Host:
    name = "h1"

    def __init__(self, hello):
        self.helper = Helper(hello)

    async def start_helper(self):
        return self.helper


class NoUploads:
    signs_urls = True

    async def begin_upload(self, key):
        raise StorageError("s3: 403 AccessDenied on create_multipart_upload")


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
    assert host.helpers[0].closed == 1
    async with pool.lend(host) as h:
        assert h is host.helpers[1]
    await pool.close()
    assert [h.closed for h in host.helpers] == [1, 1]


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
    assert direct.probe_refusal(err) == said


def test_the_helper_keeps_only_the_code_and_message_of_a_store_error():
    from brsm.adapters.direct_helper import error_of
    body = (b"<?xml version='1.0'?><Error><Code>SignatureDoesNotMatch</Code><Message>The request signature we "
            b"calculated does not match</Message><StringToSign>AWS4-HMAC-SHA256...</StringToSign><CanonicalRequest>"
            b"PUT /b/k X-Amz-Credential=AKIDEXAMPLE%2F20261203</CanonicalRequest></Error>")
    err = error_of(403, body)
    assert err == {"status": 403, "code": "SignatureDoesNotMatch",
                   "message": "The request signature we calculated does not match"}
    assert error_of(502, b"<html>Bad Gateway</html>") == {"status": 502, "code": "", "message": "<html>Bad Gateway</html>"}
