"""open_storage: URI forms, the registry, and the errors for bad URIs."""
from __future__ import annotations

import pytest

from brsm.adapters.storage import open_storage, parse_uri
from brsm.adapters.storage.local import LocalStorage
from brsm.adapters.storage.memory import MemoryStorage
from brsm.adapters.storage.retry import RetryStorage
from brsm.errors import UsageError


def test_local(tmp_path):
    st = open_storage(f"local://{tmp_path}/backups/")
    assert isinstance(st, RetryStorage) and isinstance(st.inner, LocalStorage)
    assert st.inner.root == tmp_path / "backups" and st.uri == f"local://{tmp_path}/backups"
    bare = open_storage(f"local://{tmp_path}", retry=False)
    assert isinstance(bare, LocalStorage)


def test_s3(cloud_env):
    from brsm.adapters.storage.s3 import S3Storage
    st = open_storage("s3://bkt/some/prefix/", s3_endpoint="http://127.0.0.1:9000", s3_region="eu-west-1",
                      retry=False, part_size=5 << 20)
    assert isinstance(st, S3Storage)
    assert (st.bucket, st.prefix, st.endpoint, st.region, st.part_size) == \
        ("bkt", "some/prefix/", "http://127.0.0.1:9000", "eu-west-1", 5 << 20)
    assert st.full_key("B/x.sst") == "some/prefix/B/x.sst"
    assert open_storage("s3://bkt", retry=False).prefix == ""


def test_oss(cloud_env):
    from brsm.adapters.storage.oss import OssStorage
    st = open_storage("oss://bkt/p", oss_endpoint="http://127.0.0.1:1", retry=False)
    assert isinstance(st, OssStorage) and st.prefix == "p/" and st.uri == "oss://bkt/p"


def test_memory():
    st = open_storage("memory://x/p", retry=False)
    assert isinstance(st, MemoryStorage) and st.prefix == "p/"


@pytest.mark.parametrize("uri", [
    "", "/abs/path", "backups", "ftp://host/x", "local://relative/path", "local:/abs", "local://",
    "local:///", "s3://", "s3:///prefix", "oss://", "s3://key:secret@bkt/p", "s3://bkt/a/../b",
    "s3://bkt/p?x=1", "file:///tmp/x",
])
def test_bad_uris(uri):
    with pytest.raises(UsageError) as ei:
        open_storage(uri)
    for form in ("local:///", "s3://bucket/prefix", "oss://bucket/prefix"):
        assert form in ei.value.hint
    assert ei.value.exit_code == 2


def test_parse_uri():
    assert parse_uri("S3://b/p/q") == ("s3", "b", "/p/q")
    assert parse_uri("local:///a/b") == ("local", "", "/a/b")


def test_backends_are_imported_lazily():
    import subprocess
    import sys
    code = ("import sys, brsm.adapters.storage as s; s.open_storage('memory://m');"
            "print(any(m in sys.modules for m in ('aioboto3', 'oss2', 'brsm.adapters.storage.s3',"
            " 'brsm.adapters.storage.oss')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_wrapped_storage_is_a_storage(tmp_path):
    from brsm.ports import Storage
    assert isinstance(open_storage(f"local://{tmp_path}"), Storage)
    assert isinstance(open_storage("memory://m"), Storage)
