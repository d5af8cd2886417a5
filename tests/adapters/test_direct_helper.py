"""Issue 16: the host helper, run as a host runs it (``python3 -c``, standard library only), moving a
file to and from the sandbox's S3 and OSS endpoints with nothing but per-part signed URLs."""
from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from brsm.adapters import direct_helper
from brsm.sandbox.s3_server import S3Server
from tests.sandbox_stores.conftest import BUCKET, KEY_ID, SECRET, boto3_client, oss_server  # noqa: F401

PART = 256 << 10
SOURCE = Path(direct_helper.__file__).read_text()


class Helper:
    def __init__(self) -> None:
        self.p = subprocess.Popen(["python3", "-c", SOURCE], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  text=True, bufsize=1)
        hello = self.read()
        assert hello["hello"] == direct_helper.VERSION

    def send(self, obj: dict) -> None:
        self.p.stdin.write(json.dumps(obj) + "\n")
        self.p.stdin.flush()

    def read(self) -> dict:
        line = self.p.stdout.readline()
        assert line, f"helper ended (rc {self.p.poll()})"
        return json.loads(line)

    def close(self) -> int:
        self.send({"op": "exit"})
        self.p.stdin.close()
        try:
            return self.p.wait(10)
        except subprocess.TimeoutExpired:
            self.p.kill()  # a helper that did not exit fails its test, and is not left running
            self.p.wait()
            raise


def _file(tmp_path: Path, size: int, seed: int = 1) -> Path:
    f = tmp_path / "src.sst"
    f.write_bytes(hashlib.sha256(str(seed).encode()).digest() * (size // 32) + b"x" * (size % 32))
    return f


class S3Signer:
    def __init__(self, endpoint: str, secret: str = SECRET) -> None:
        import boto3
        from botocore.config import Config

        self.c = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=KEY_ID, aws_secret_access_key=secret,
                              region_name="us-east-1", config=Config(signature_version="s3v4",
                                                                     s3={"addressing_style": "path"}))
        self.admin = boto3_client(endpoint)

    def start(self, key: str) -> str:
        return self.admin.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]

    def part_url(self, key: str, upload: str, n: int, md5: str, expires: int = 300) -> str:
        return self.c.generate_presigned_url("upload_part", Params={
            "Bucket": BUCKET, "Key": key, "UploadId": upload, "PartNumber": n, "ContentMD5": md5}, ExpiresIn=expires)

    def complete(self, key: str, upload: str, parts: list[tuple[int, str]]) -> None:
        self.admin.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload, MultipartUpload={
            "Parts": [{"PartNumber": n, "ETag": e} for n, e in parts]})

    def get_url(self, key: str, expires: int = 300) -> str:
        return self.c.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": key}, ExpiresIn=expires)

    def read(self, key: str) -> bytes:
        return self.admin.get_object(Bucket=BUCKET, Key=key)["Body"].read()


class OssSigner:
    def __init__(self, endpoint: str) -> None:
        import oss2

        self.b = oss2.Bucket(oss2.Auth(KEY_ID, SECRET), endpoint, BUCKET)

    def start(self, key: str) -> str:
        return self.b.init_multipart_upload(key).upload_id

    def part_url(self, key: str, upload: str, n: int, md5: str, expires: int = 300) -> str:
        return self.b.sign_url("PUT", key, expires, headers={"Content-MD5": md5,
                                                             "Content-Type": "application/octet-stream"},
                               params={"partNumber": str(n), "uploadId": upload})

    def complete(self, key: str, upload: str, parts: list[tuple[int, str]]) -> None:
        import oss2

        self.b.complete_multipart_upload(key, upload, [oss2.models.PartInfo(n, e) for n, e in parts])

    def get_url(self, key: str, expires: int = 300) -> str:
        return self.b.sign_url("GET", key, expires)

    def read(self, key: str) -> bytes:
        return self.b.get_object(key).read()


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    """As the sandbox runs it (`sandbox up`: parts as small as 64 KiB, so tests stay small)."""
    srv = S3Server("127.0.0.1", 0, tmp_path_factory.mktemp("s3"), BUCKET, KEY_ID, SECRET,
                   extra_args=["--min-part-size=65536"])
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(params=["s3", "oss"])
def signer(request):
    if request.param == "s3":
        return S3Signer(request.getfixturevalue("s3_server").endpoint)
    return OssSigner(request.getfixturevalue("oss_server").endpoint)


def _put(h: Helper, signer, key: str, path: Path, *, skip: int = 0, upload: str | None = None,
         spoil: int | None = None) -> tuple[str, list[tuple[int, str]], dict, list[dict]]:
    upload = upload or signer.start(key)
    h.send({"op": "put", "path": str(path), "size": path.stat().st_size, "part_size": PART, "skip": skip})
    parts, errors = [], []
    while True:
        m = h.read()
        if "want" in m:
            url = signer.part_url(key, upload, m["n"], m["md5"])
            if spoil == m["n"]:
                spoil = None
                url = url[:-3] + ("AAA" if not url.endswith("AAA") else "BBB")
            h.send({"url": url})
        elif "part" in m:
            parts.append((m["part"], m["etag"]))
        elif "error" in m:
            errors.append(m)
            assert "Signature=" not in json.dumps(m) and "X-Amz-Signature" not in json.dumps(m)
        elif "file" in m:
            return upload, parts, m, errors


def test_put_sends_every_part_and_reports_the_whole_files_sha256(tmp_path, signer):
    src = _file(tmp_path, 3 * PART + 1000)
    h = Helper()
    try:
        upload, parts, done, errors = _put(h, signer, "d/put.sst", src, spoil=2)
    finally:
        assert h.close() == 0
    assert [n for n, _ in parts] == [1, 2, 3, 4]
    assert len(errors) == 1 and errors[0]["n"] == 2 and errors[0]["error"]["status"] == 403  # a bad URL: asked again
    assert done["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    signer.complete("d/put.sst", upload, parts)
    assert signer.read("d/put.sst") == src.read_bytes()


def test_a_resumed_put_hashes_the_stored_parts_without_sending_them(tmp_path, signer):
    src = _file(tmp_path, 3 * PART, seed=2)
    h = Helper()
    try:
        upload, first, _, _ = _put(h, signer, "d/resume.sst", src)
        _, rest, done, _ = _put(h, signer, "d/resume.sst", src, skip=2, upload=upload)
    finally:
        h.close()
    assert [n for n, _ in rest] == [3]
    assert done["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    signer.complete("d/resume.sst", upload, first[:2] + rest)
    assert signer.read("d/resume.sst") == src.read_bytes()


def test_get_writes_a_checked_file_by_ranges(tmp_path, signer):
    data = _file(tmp_path, 2 * PART + 77, seed=3).read_bytes()
    up = signer.start("d/get.sst")
    parts = []
    h = Helper()
    try:
        for n, i in enumerate(range(0, len(data), PART), 1):
            chunk = data[i:i + PART]
            md5 = base64.b64encode(hashlib.md5(chunk).digest()).decode()
            import urllib.request

            r = urllib.request.urlopen(urllib.request.Request(signer.part_url("d/get.sst", up, n, md5), data=chunk,
                                       method="PUT", headers={"Content-MD5": md5,
                                                              "Content-Type": "application/octet-stream"}))
            parts.append((n, r.headers["ETag"]))
        signer.complete("d/get.sst", up, parts)
        dest = tmp_path / "out" / "got.sst"
        for want, ok in ((hashlib.sha256(data).hexdigest(), True), ("0" * 64, False)):
            h.send({"op": "get", "path": str(dest), "size": len(data), "sha256": want, "part_size": PART})
            while True:
                m = h.read()
                if "want" in m:
                    h.send({"url": signer.get_url("d/get.sst")})
                elif "file" in m or m.get("fatal"):
                    break
            assert ("file" in m) == ok, m
        assert dest.read_bytes() == data, "the checked file stays; the bad download never replaced it"
        assert not any(p.name.endswith(".brsm-tmp") for p in dest.parent.iterdir())
    finally:
        h.close()


def test_the_helper_dies_with_its_input_in_the_middle_of_a_part(tmp_path):
    src = _file(tmp_path, 2 * PART, seed=4)
    h = Helper()
    h.send({"op": "put", "path": str(src), "size": src.stat().st_size, "part_size": PART})
    assert "want" in h.read()
    t0 = time.monotonic()
    h.p.stdin.close()  # brsm killed: its SSH channel, the helper's stdin, is gone
    assert h.p.wait(5) == 3
    assert time.monotonic() - t0 < 2


def test_the_helper_runs_on_the_oldest_python_the_issue_names():
    """Python 3.6: no walrus, no dataclasses, no f-strings' `=`: compile it with 3.6's grammar."""
    import ast

    tree = ast.parse(SOURCE, feature_version=(3, 6))
    assert tree.body
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.JoinedStr)], "f-strings: keep the helper plain"
    assert os.path.basename(direct_helper.__file__) == "direct_helper.py"
    assert signal  # the helper needs no signal handling: end of input is its signal


def test_an_error_about_a_url_never_carries_its_signature(tmp_path):
    """http.client quotes the whole URL when it refuses one (a control character in it): the helper
    scrubs every error text of URL queries, so no signature comes back to brsm."""
    f = _file(tmp_path, 1000)
    h = Helper()
    try:
        h.send({"op": "put", "path": str(f), "size": 1000, "part_size": 1000})
        want = h.read()
        assert want["want"] == "url"
        h.send({"url": "http://127.0.0.1:9/b/k x?X-Amz-Signature=deadbeefsecret&X-Amz-Credential=AKID"})
        err = h.read()
        assert err["error"]["code"] == "InvalidURL", err  # refused before any connection: the text quotes the URL
        assert "error" in err and "deadbeef" not in json.dumps(err) and "AKID" not in json.dumps(err), err
        h.send({"op": "abort"})
    finally:
        assert h.close() == 0


def test_the_helper_scrubs_store_error_messages():
    body = b"<Error><Code>InvalidArgument</Code><Message>bad /b/k?X-Amz-Signature=abc</Message></Error>"
    assert "abc" not in direct_helper.error_of(400, body)["message"]


def test_a_helper_closed_in_the_middle_of_a_file_exits(tmp_path):
    """brsm cancels a file (SIGTERM, another file's failure) and closes the helper while the helper
    waits for a part's URL: the helper must end, not wait for a URL that never comes (after brsm's
    own wait it would be left running on the host)."""
    f = _file(tmp_path, 1000)
    h = Helper()
    h.send({"op": "put", "path": str(f), "size": 1000, "part_size": 500})
    assert h.read()["want"] == "url"
    t0 = time.monotonic()
    assert h.close() == 0
    assert time.monotonic() - t0 < 5


def test_get_never_writes_through_a_symlink_at_the_temp_name(tmp_path):
    """A symlink planted at ``<file>.brsm-tmp`` is refused before any byte is fetched (O_EXCL|O_NOFOLLOW),
    its target keeps its bytes and mode; a stale regular temp file is replaced."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    victim.chmod(0o600)
    dest = tmp_path / "got.sst"
    (tmp_path / ("got.sst" + direct_helper.TMP_SUFFIX)).symlink_to(victim)
    empty = hashlib.sha256(b"").hexdigest()
    h = Helper()
    try:
        h.send({"op": "get", "path": str(dest), "size": 0, "sha256": empty, "part_size": PART})
        m = h.read()
        assert m.get("fatal") and m["error"]["code"] == "NotOurs" and "symbolic link" in m["error"]["message"], m
        assert victim.read_bytes() == b"precious" and victim.stat().st_mode & 0o777 == 0o600 and not dest.exists()
        stale = tmp_path / "two.sst"
        (tmp_path / ("two.sst" + direct_helper.TMP_SUFFIX)).write_bytes(b"stale")
        h.send({"op": "get", "path": str(stale), "size": 0, "sha256": empty, "part_size": PART})
        m = h.read()
        assert m.get("file") == str(stale) and stale.read_bytes() == b"", m
        assert not (tmp_path / ("two.sst" + direct_helper.TMP_SUFFIX)).exists()
    finally:
        assert h.close() == 0
