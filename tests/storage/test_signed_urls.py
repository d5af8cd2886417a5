"""Issue 16: S3 and OSS sign the URLs the direct data path hands to hosts (one per part, with the
part's Content-MD5; ranged GETs), and the sandbox endpoints accept exactly those. Local and memory
storage sign none: the direct path is not offered there."""
from __future__ import annotations

import asyncio
import base64
import hashlib
import urllib.error
import urllib.request

import pytest

from .conftest import SECRET, Backend


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




async def test_a_host_uploads_parts_and_reads_ranges_with_signed_urls_alone(remote):
    st = remote.open(retry=True)
    assert st.properties().signs_urls
    parts_data = [bytes([i]) * (128 * 1024) for i in (1, 2)] + [b"tail"]
    up = await st.begin_upload("d/x.sst")
    parts = []
    for n, data in enumerate(parts_data, 1):
        md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
        url = await st.part_url("d/x.sst", up, n, md5, 300)
        assert SECRET not in url
        status, _, etag = await asyncio.to_thread(_put_part, url, data)
        assert status == 200
        parts.append({"n": n, "etag": etag.strip('"'), "size": len(data)})
    assert sorted(await st.uploaded_parts("d/x.sst", up)) == [1, 2, 3]
    await st.finish_upload("d/x.sst", up, parts)
    whole = b"".join(parts_data)
    assert await st.get_bytes("d/x.sst") == whole
    url = await st.get_url("d/x.sst", 300)
    status, body = await asyncio.to_thread(_http, url, "GET", None, {"Range": "bytes=131072-131075"})
    assert (status, body) == (206, bytes([2]) * 4)


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


@pytest.mark.parametrize("name", ["local", "memory"])
async def test_local_and_memory_storage_sign_nothing(name, tmp_path, cloud_env, request):
    b = Backend(name, request, tmp_path)
    st = b.open(retry=True)
    try:
        assert not st.properties().signs_urls
        with pytest.raises(NotImplementedError):
            await st.get_url("x", 60)
    finally:
        await st.close()
