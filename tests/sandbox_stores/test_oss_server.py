"""oss2 (unmodified) against the sandbox OSS endpoint."""
from __future__ import annotations

import hashlib
import os

import oss2
import pytest

from brsm.sandbox.oss_server import StoreProcess

from .conftest import BUCKET, KEY_ID, SECRET


def test_put_get_head_range(bucket):
    data = os.urandom(300_000)
    r = bucket.put_object("dir/obj one+two.bin", data, headers={"x-oss-meta-purpose": "t"})
    assert r.etag == hashlib.md5(data).hexdigest().upper()
    assert r.crc is not None  # and oss2 compared it with its own (enable_crc=True)
    got = bucket.get_object("dir/obj one+two.bin")
    assert got.read() == data  # oss2 checks the whole-object crc64 here
    assert got.server_crc == got.client_crc
    part = bucket.get_object("dir/obj one+two.bin", byte_range=(1000, 1999))
    assert part.status == 206
    assert part.content_range == f"bytes 1000-1999/{len(data)}"
    assert part.read() == data[1000:2000]
    tail = bucket.get_object("dir/obj one+two.bin", byte_range=(None, 10))
    assert tail.read() == data[-10:]
    head = bucket.head_object("dir/obj one+two.bin")
    assert head.content_length == len(data)
    assert head.object_type == "Normal"
    assert head.etag == r.etag
    assert head.headers["x-oss-meta-purpose"] == "t"
    assert head.last_modified > 0
    meta = bucket.get_object_meta("dir/obj one+two.bin")
    assert meta.content_length == len(data)
    assert bucket.object_exists("dir/obj one+two.bin")
    assert not bucket.object_exists("dir/nothing")


def test_get_to_file_and_unicode_key(bucket, tmp_path):
    key = "ünï/cødé key%20?&=.txt"
    bucket.put_object(key, b"abc")
    bucket.get_object_to_file(key, str(tmp_path / "f"))
    assert (tmp_path / "f").read_bytes() == b"abc"
    assert key in [o.key for o in oss2.ObjectIteratorV2(bucket, prefix="ünï/")]
    bucket.delete_object(key)


def test_resumable_upload_download_20mib(bucket, tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(20 << 20))
    oss2.resumable_upload(bucket, "big/20mib", str(src),
                          store=oss2.ResumableStore(root=str(tmp_path)),
                          multipart_threshold=1 << 20, part_size=1 << 20, num_threads=4)
    head = bucket.head_object("big/20mib")
    assert head.object_type == "Multipart"
    assert head.content_length == 20 << 20
    dst = tmp_path / "dst.bin"
    oss2.resumable_download(bucket, "big/20mib", str(dst),
                            store=oss2.ResumableDownloadStore(root=str(tmp_path)),
                            multiget_threshold=1 << 20, part_size=2 << 20, num_threads=4)
    assert hashlib.sha256(dst.read_bytes()).digest() == hashlib.sha256(src.read_bytes()).digest()


def test_multipart_low_level(bucket):
    key = "mpu/low"
    up = bucket.init_multipart_upload(key).upload_id
    assert up in [u.upload_id for u in oss2.MultipartUploadIterator(bucket, prefix="mpu/")]
    p1, p2 = os.urandom(200_000), os.urandom(5_000)
    r1 = bucket.upload_part(key, up, 1, p1)
    r2 = bucket.upload_part(key, up, 2, p2)
    parts = list(oss2.PartIterator(bucket, key, up))
    assert [(p.part_number, p.size) for p in parts] == [(1, len(p1)), (2, len(p2))]
    with pytest.raises(oss2.exceptions.ServerError) as ei:  # oss2 has no InvalidPart class
        bucket.complete_multipart_upload(key, up, [oss2.models.PartInfo(1, "0" * 32)])
    assert (ei.value.status, ei.value.code) == (400, "InvalidPart")
    done = bucket.complete_multipart_upload(key, up, [oss2.models.PartInfo(1, r1.etag, size=len(p1), part_crc=r1.crc),
                                                      oss2.models.PartInfo(2, r2.etag, size=len(p2), part_crc=r2.crc)])
    assert done.crc is not None  # compared by oss2 with the crc it combined from the parts
    assert bucket.get_object(key).read() == p1 + p2
    # abort
    up2 = bucket.init_multipart_upload(key).upload_id
    bucket.upload_part(key, up2, 1, b"x" * 10)
    bucket.abort_multipart_upload(key, up2)
    with pytest.raises(oss2.exceptions.NoSuchUpload):
        bucket.upload_part(key, up2, 2, b"y")


def test_upload_part_copy(bucket):
    """OSS's UploadPartCopy as documented (help.aliyun.com, UploadPartCopy) and as oss2's
    ``Bucket.upload_part_copy`` sends it: PUT ?partNumber&uploadId with ``x-oss-copy-source`` and an
    inclusive ``x-oss-copy-source-range: bytes=a-b``; the part's ETag (the MD5 of its bytes) in the
    reply's header, which oss2 reads; a missing source is 404 NoSuchKey. (A range outside the source
    the sandbox refuses with 400; whether OSS refuses it or copies the whole object, brsm never sends
    one: its ranges come from the source's size, ``copy_within.byte_ranges``.)"""
    src = os.urandom(300_000)
    bucket.put_object("mpc/src", src)
    up = bucket.init_multipart_upload("mpc/dst").upload_id
    r1 = bucket.upload_part_copy(BUCKET, "mpc/src", (0, 199_999), "mpc/dst", up, 1)
    r2 = bucket.upload_part_copy(BUCKET, "mpc/src", (200_000, 299_999), "mpc/dst", up, 2)
    assert r1.etag.strip('"').lower() == hashlib.md5(src[:200_000]).hexdigest()
    parts = list(oss2.PartIterator(bucket, "mpc/dst", up))
    assert [(p.part_number, p.size) for p in parts] == [(1, 200_000), (2, 100_000)]
    bucket.complete_multipart_upload("mpc/dst", up, [oss2.models.PartInfo(1, r1.etag, size=200_000, part_crc=r1.crc),
                                                     oss2.models.PartInfo(2, r2.etag, size=100_000, part_crc=r2.crc)])
    assert bucket.get_object("mpc/dst").read() == src
    up2 = bucket.init_multipart_upload("mpc/bad").upload_id
    with pytest.raises(oss2.exceptions.NoSuchKey):
        bucket.upload_part_copy(BUCKET, "mpc/none", (0, 9), "mpc/bad", up2, 1)


def test_list_prefix_pagination_delimiter(bucket):
    keys = [f"lst/a/{i:03d}" for i in range(7)] + ["lst/b/x", "lst/b/y", "lst/c", "lst/d/e/f"]
    for k in keys:
        bucket.put_object(k, k.encode())
    page = bucket.list_objects_v2(prefix="lst/a/", max_keys=3)
    assert [o.key for o in page.object_list] == keys[:3] and page.is_truncated
    page2 = bucket.list_objects_v2(prefix="lst/a/", max_keys=3,
                                   continuation_token=page.next_continuation_token)
    assert [o.key for o in page2.object_list] == keys[3:6]
    assert [o.key for o in oss2.ObjectIteratorV2(bucket, prefix="lst/", max_keys=2)] == sorted(keys)
    assert [o.key for o in oss2.ObjectIterator(bucket, prefix="lst/", max_keys=4)] == sorted(keys)
    top = list(oss2.ObjectIteratorV2(bucket, prefix="lst/", delimiter="/", max_keys=1))
    assert [(o.key, o.is_prefix()) for o in top] == [
        ("lst/a/", True), ("lst/b/", True), ("lst/c", False), ("lst/d/", True)]
    after = bucket.list_objects_v2(prefix="lst/", start_after="lst/b/y")
    assert [o.key for o in after.object_list] == ["lst/c", "lst/d/e/f"]
    sizes = {o.key: o.size for o in oss2.ObjectIteratorV2(bucket, prefix="lst/b/")}
    assert sizes == {"lst/b/x": 7, "lst/b/y": 7}


def test_delete_and_batch_delete(bucket):
    for i in range(5):
        bucket.put_object(f"del/{i}", b"z")
    bucket.delete_object("del/0")
    bucket.delete_object("del/never-existed")  # OSS: 204 either way
    res = bucket.batch_delete_objects(["del/1", "del/2", "del/3"])
    assert sorted(res.deleted_keys) == ["del/1", "del/2", "del/3"]
    assert [o.key for o in oss2.ObjectIteratorV2(bucket, prefix="del/")] == ["del/4"]


def test_errors(bucket, oss_server):
    with pytest.raises(oss2.exceptions.NoSuchKey) as ei:
        bucket.get_object("no/such/key")
    assert ei.value.status == 404 and ei.value.request_id
    with pytest.raises(oss2.exceptions.NotFound):
        bucket.head_object("no/such/key")
    bad_id = oss2.Bucket(oss2.Auth("UNKNOWNID", SECRET), oss_server.endpoint, BUCKET)
    with pytest.raises(oss2.exceptions.ServerError) as ei:
        bad_id.get_object("x")
    assert (ei.value.status, ei.value.code) == (403, "InvalidAccessKeyId")
    bad_secret = oss2.Bucket(oss2.Auth(KEY_ID, "wrong"), oss_server.endpoint, BUCKET)
    with pytest.raises(oss2.exceptions.ServerError) as ei:
        bad_secret.put_object("x", b"1")
    assert (ei.value.status, ei.value.code) == (403, "SignatureDoesNotMatch")
    other = oss2.Bucket(oss2.Auth(KEY_ID, SECRET), oss_server.endpoint, "other-bucket")
    with pytest.raises(oss2.exceptions.NoSuchBucket):
        other.get_object("x")


def test_auth_v4(oss_server):
    b4 = oss2.Bucket(oss2.AuthV4(KEY_ID, SECRET), oss_server.endpoint, BUCKET, region="cn-sandbox")
    b4.put_object("v4/k ey", b"v4 data")
    assert b4.get_object("v4/k ey").read() == b"v4 data"
    assert [o.key for o in oss2.ObjectIteratorV2(b4, prefix="v4/")] == ["v4/k ey"]
    bad = oss2.Bucket(oss2.AuthV4(KEY_ID, "nope"), oss_server.endpoint, BUCKET, region="cn-sandbox")
    with pytest.raises(oss2.exceptions.ServerError) as ei:
        bad.get_object("v4/k ey")
    assert ei.value.code == "SignatureDoesNotMatch"


def test_reserved_control_prefix_is_an_ordinary_key_in_a_bucket(bucket):
    bucket.put_object("_sandbox/fault", b"just data")
    assert bucket.get_object("_sandbox/fault").read() == b"just data"


def test_cli_process(tmp_path):
    pid_file = tmp_path / "oss.pid"
    proc = StoreProcess("brsm.sandbox.oss_server", "127.0.0.1", 0, tmp_path / "d", BUCKET,
                        KEY_ID, SECRET, extra_args=[f"--pid_file={pid_file}"])
    proc.start()
    try:
        assert int(pid_file.read_text()) == proc.proc.pid
        b = oss2.Bucket(oss2.Auth(KEY_ID, SECRET), proc.endpoint, BUCKET)
        b.put_object("k", b"v")
        assert b.get_object("k").read() == b"v"
    finally:
        p = proc.proc
        proc.stop()
    assert p.returncode == 0  # SIGTERM = clean stop
    assert not pid_file.exists()
    # objects are files: a new process on the same data dir serves them again
    with StoreProcess("brsm.sandbox.oss_server", "127.0.0.1", 0, tmp_path / "d", BUCKET,
                      KEY_ID, SECRET) as again:
        b = oss2.Bucket(oss2.Auth(KEY_ID, SECRET), again.endpoint, BUCKET)
        assert b.get_object("k").read() == b"v"


def test_virtual_host_style(bucket, oss_server):
    # a host name endpoint makes oss2 use Host: <bucket>.<host>; route it to our port as a proxy
    port = oss_server.address[1]
    vb = oss2.Bucket(oss2.Auth(KEY_ID, SECRET), f"http://oss-sandbox.test:{port}", BUCKET,
                     proxies={"http": oss_server.endpoint})
    vb.put_object("vh/key", b"virtual")
    assert vb.get_object("vh/key").read() == b"virtual"
    assert bucket.get_object("vh/key").read() == b"virtual"  # same object, path style
    assert [o.key for o in oss2.ObjectIteratorV2(vb, prefix="vh/")] == ["vh/key"]
    vb.put_object("_sandbox/fault", b"a key, not the control path")
    assert vb.get_object("_sandbox/fault").read() == b"a key, not the control path"


def test_chunked_body_copy_and_preconditions(bucket):
    r = bucket.put_object("misc/gen", (b"%05d" % i for i in range(1000)))  # no length: chunked
    data = b"".join(b"%05d" % i for i in range(1000))
    assert bucket.get_object("misc/gen").read() == data
    bucket.copy_object(BUCKET, "misc/gen", "misc/copy")
    assert bucket.get_object("misc/copy").read() == data
    with pytest.raises(oss2.exceptions.PreconditionFailed):
        bucket.get_object("misc/gen", headers={"If-Match": '"0123"'})
    assert bucket.get_object("misc/gen", headers={"If-Match": f'"{r.etag}"'}).read() == data
    with pytest.raises(oss2.exceptions.ServerError) as ei:
        bucket.put_object("misc/gen", b"x", headers={"x-oss-forbid-overwrite": "true"})
    assert ei.value.status == 409


def test_resumable_upload_resumes_after_a_failed_part(bucket, oss_server, tmp_path):
    from brsm.sandbox import store_faults
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(6 << 20))
    store = oss2.ResumableStore(root=str(tmp_path / "rec"))
    store_faults.inject(oss_server.endpoint, kind="error", status=500, count=1,
                        methods=["PUT"], skip=3)
    with pytest.raises(oss2.exceptions.ServerError):
        oss2.resumable_upload(bucket, "resume/obj", str(src), store=store,
                              multipart_threshold=1 << 20, part_size=1 << 20, num_threads=1)
    pending = list(oss2.MultipartUploadIterator(bucket, prefix="resume/"))
    assert len(pending) == 1
    assert len(list(oss2.PartIterator(bucket, "resume/obj", pending[0].upload_id))) == 3
    oss2.resumable_upload(bucket, "resume/obj", str(src), store=store,
                          multipart_threshold=1 << 20, part_size=1 << 20, num_threads=1)
    assert bucket.get_object("resume/obj").read() == src.read_bytes()
    assert list(oss2.MultipartUploadIterator(bucket, prefix="resume/")) == []


def test_20mib_object_is_streamed_not_buffered(bucket, tmp_path):
    import tracemalloc
    src = tmp_path / "s.bin"
    src.write_bytes(os.urandom(20 << 20))
    tracemalloc.start()
    try:
        with open(src, "rb") as f:
            bucket.put_object("stream/20mib", f)  # server and client in this process
        bucket.get_object_to_file("stream/20mib", str(tmp_path / "d.bin"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"peak {peak} bytes: something buffered the whole object"
    assert (tmp_path / "d.bin").read_bytes() == src.read_bytes()


def test_presigned_url(bucket):
    import urllib.request
    bucket.put_object("signed/k", b"presigned")
    url = bucket.sign_url("GET", "signed/k", 60)
    with urllib.request.urlopen(url) as r:
        assert r.read() == b"presigned"
    tampered = url.replace("signed%2Fk", "signed%2Fother")
    assert tampered != url
    with pytest.raises(urllib.error.HTTPError) as ei:
        urllib.request.urlopen(tampered)
    assert ei.value.code == 403
