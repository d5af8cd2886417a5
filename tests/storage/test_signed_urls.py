"""S3 and OSS sign the URLs the direct data path hands to hosts (one per part, with the part's
Content-MD5; ranged GETs), and the sandbox endpoints accept exactly those. The round trip with
signed URLs alone, and the refusal of the stores that sign none, are in the contract suite
(test_contract.test_signed_urls_or_the_refusal); the helpers here send its requests."""
from __future__ import annotations

import asyncio
import base64
import hashlib
import urllib.error
import urllib.request

import pytest

from .conftest import SECRET


def _http(url: str, method: str = "GET", data: bytes | None = None, headers: dict | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _put_part(url: str, data: bytes) -> tuple[int, bytes, str]:
    md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
    req = urllib.request.Request(url, data=data, method="PUT", headers={
        "Content-MD5": md5, "Content-Type": "application/octet-stream"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status, r.read(), r.headers["ETag"]


async def send_part(url: str, data: bytes) -> str:
    """PUT one part with its signed URL alone, as a host's helper does; its ETag. The memory fake's
    URLs are answered in process (brsm.adapters.storage.memory.MemoryStorage.signed_request)."""
    if url.startswith("memory-signed://"):
        from brsm.adapters.storage.memory import MemoryStorage
        status, body = MemoryStorage.signed_request(url, "PUT", data)
        assert status == 200, body
        return body["etag"]
    status, _, etag = await asyncio.to_thread(_put_part, url, data)
    assert status == 200
    return etag.strip('"')


async def fetch(url: str, offset: int, length: int) -> bytes:
    """A ranged GET with a signed URL alone."""
    if url.startswith("memory-signed://"):
        from brsm.adapters.storage.memory import MemoryStorage
        status, body = MemoryStorage.signed_request(url, "GET", offset=offset, length=length)
        assert status == 206, body
        return body["data"]
    status, body = await asyncio.to_thread(_http, url, "GET", None,
                                           {"Range": f"bytes={offset}-{offset + length - 1}"})
    assert status == 206
    return body


async def test_a_signed_url_carries_no_secret(remote):
    st = remote.open(retry=True)
    up = await st.begin_upload("d/x.sst")
    assert SECRET not in await st.part_url("d/x.sst", up, 1, "bWQ1", 300)
    assert SECRET not in await st.get_url("d/x.sst", 300)
    await st.abort_upload("d/x.sst", up)


async def test_a_part_url_is_bound_to_its_content_md5(remote):
    st = remote.open()
    up = await st.begin_upload("d/md5.sst")
    good = b"a" * 1000
    url = await st.part_url("d/md5.sst", up, 1, base64.b64encode(hashlib.md5(good).digest()).decode(), 300)
    with pytest.raises(urllib.error.HTTPError) as ei:
        await asyncio.to_thread(_put_part, url, b"b" * 1000)  # other bytes, their own MD5: not what was signed
    assert ei.value.code in (400, 403)
    await st.abort_upload("d/md5.sst", up)
    assert await st.uploaded_parts("d/md5.sst", up) is None
