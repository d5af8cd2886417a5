"""The local directory as storage, when someone else wrote into it: symlinks are not objects, and a
rolled-back backup leaves no empty directory tree behind."""
from __future__ import annotations

import os

import pytest

from brsm.adapters.storage import open_storage
from brsm.errors import ObjectNotFound, StorageError


@pytest.fixture
async def local(tmp_path):
    (tmp_path / "store").mkdir()
    st = open_storage(f"local://{tmp_path}/store")
    try:
        yield st
    finally:
        await st.close()


async def test_a_symlinked_file_is_not_an_object(local, tmp_path):
    secret = tmp_path / "secret"
    secret.write_bytes(b"s" * 100)
    await local.put_bytes("B/data/a", b"a" * 100)
    (tmp_path / "store" / "B" / "data" / "link").symlink_to(secret)
    assert [o.key for o in await local.list("B/")] == ["B/data/a"]
    with pytest.raises(ObjectNotFound):
        await local.stat("B/data/link")
    with pytest.raises(StorageError, match="symlink: refused") as ei:
        await local.get_bytes("B/data/link")
    assert ei.value.permanent and "tampered" in ei.value.hint


async def test_a_symlinked_directory_leads_nowhere(local, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "f").write_bytes(b"x" * 10)
    (tmp_path / "store" / "B").mkdir()
    (tmp_path / "store" / "B" / "data").symlink_to(outside, target_is_directory=True)
    assert await local.list("B/") == []
    with pytest.raises(ObjectNotFound):
        await local.stat("B/data/f")
    with pytest.raises(StorageError, match="symlink: refused"):
        await local.get_bytes("B/data/f")
    await local.delete_prefix("B/")
    assert (outside / "f").read_bytes() == b"x" * 10, "nothing is deleted through a link"


async def test_delete_prefix_removes_the_empty_directories_too(local, tmp_path):
    await local.put_bytes("B/data/h/data0/1/x", b"x")
    for d in ("B/data/h/data0/1/wal/9", "B/data/h/data1/2", "B/meta"):
        os.makedirs(tmp_path / "store" / d)  # made for files a failed copy never wrote
    await local.put_bytes("C/keep", b"k")
    assert await local.delete_prefix("B/") == 1
    assert sorted(os.listdir(tmp_path / "store")) == ["C"]
    assert await local.get_bytes("C/keep") == b"k"


@pytest.fixture
def planted(tmp_path):
    """``BACKUP_2020_01_01_00_00_00`` in the storage root is a symlink to a directory outside it,
    laid out like a backup (issue 13: `cleanup` followed it and deleted the files there)."""
    outside = tmp_path / "victim"
    (outside / "data").mkdir(parents=True)
    for rel in ("brsm-manifest.json", "BACKUP_2020_01_01_00_00_00.meta", "data/x", "data/.brsm-tmp.y"):
        (outside / rel).write_bytes(b"precious")
    name = "BACKUP_2020_01_01_00_00_00"
    (tmp_path / "store" / name).symlink_to(outside, target_is_directory=True)
    return name, outside


def _all_files(d):
    return sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file())


async def test_a_top_level_symlink_named_like_a_backup_is_neither_listed_nor_deleted_through(local, planted):
    name, outside = planted
    before = _all_files(outside)
    assert await local.list(f"{name}/") == []
    assert await local.list("") == []
    assert await local.list_dirs("") == []
    for key in (f"{name}/brsm-manifest.json", f"{name}/{name}.meta", f"{name}/data/x"):
        await local.delete(key)  # refused quietly: no object there
        with pytest.raises(ObjectNotFound):
            await local.stat(key)
    assert await local.delete_prefix(f"{name}/") == 0
    assert await local.abort_uploads(f"{name}/") == 0
    assert await local.abort_uploads("") == 0
    assert _all_files(outside) == before, "nothing outside the storage root was deleted"
    assert (local.inner.root / name).is_symlink(), "the planted link itself is left for its owner to judge"


async def test_a_copy_follows_no_symlink_at_either_end(local, tmp_path):
    """A symlink planted as the base's object is no object to copy (the incremental backup sends the
    file instead); one planted at the new key is replaced, the file it points at untouched."""
    secret = tmp_path / "secret"
    secret.write_bytes(b"s" * 100)
    (tmp_path / "store" / "base").mkdir()
    (tmp_path / "store" / "base" / "f").symlink_to(secret)
    with pytest.raises(ObjectNotFound):
        await local.copy("base/f", "next/f")
    await local.put_bytes("base/g", b"g" * 10)
    (tmp_path / "store" / "next").mkdir(exist_ok=True)
    (tmp_path / "store" / "next" / "g").symlink_to(secret)
    await local.copy("base/g", "next/g")
    assert not (tmp_path / "store" / "next" / "g").is_symlink()
    assert await local.get_bytes("next/g") == b"g" * 10 and secret.read_bytes() == b"s" * 100
    assert not [p for p in (tmp_path / "store").rglob("*") if ".brsm-tmp." in p.name]


async def test_a_copy_where_the_file_system_refuses_links_copies_the_bytes(local, tmp_path, monkeypatch):
    import errno

    from brsm.adapters.storage import local_copy

    def no_links(*_a, **_k):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(local_copy.os, "link", no_links)
    await local.put_bytes("base/h", b"h" * 1000)
    await local.copy("base/h", "next/h")
    a, b = (os.stat(tmp_path / "store" / k) for k in ("base/h", "next/h"))
    assert a.st_ino != b.st_ino and await local.get_bytes("next/h") == b"h" * 1000
