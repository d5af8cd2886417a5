"""The local store's put_many (brsm/adapters/storage/local_group.py): one durability barrier per
group instead of an fsync per file, and nothing written through a name brsm did not just create."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from brsm.adapters.storage import local_group, open_storage
from brsm.adapters.storage.local_write import TMP_MARK
from brsm.errors import StorageError


@pytest.fixture
async def local(tmp_path):
    (tmp_path / "store").mkdir()
    st = open_storage(f"local://{tmp_path}/store")
    try:
        yield st
    finally:
        await st.close()


def items(n: int, dirs: int = 2) -> list[tuple[str, bytes]]:
    return [(f"B/data/d{i % dirs}/f{i}", os.urandom(100 + i)) for i in range(n)]


def temps(root: Path) -> list[str]:
    return [f for _d, _s, fs in os.walk(root) for f in fs if f.startswith(TMP_MARK)]


@pytest.fixture
def syncs(monkeypatch):
    """Counts the fsyncs (of files and directories) and syncfs calls the group makes."""
    seen = {"fsync": 0, "syncfs": 0}
    real_fsync, real_syncfs = os.fsync, local_group.syncfs

    def fsync(fd):
        seen["fsync"] += 1
        real_fsync(fd)

    def syncfs(fd):
        seen["syncfs"] += 1
        return real_syncfs(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(local_group, "syncfs", syncfs)
    return seen


async def test_a_group_pays_one_barrier_not_one_per_file(local, syncs):
    if local_group._SYNCFS is None:
        pytest.skip("this C library has no syncfs: the per-file fallback is tested below")
    group = items(50, dirs=2)
    res = await local.put_many(group)
    assert [r.sha256 for r in res] == [hashlib.sha256(d).hexdigest() for _k, d in group]
    # one syncfs for the file system, then one fsync per distinct directory, not 2 per file
    assert syncs == {"syncfs": 1, "fsync": 2}
    assert [await local.get_bytes(k) for k, _d in group] == [d for _k, d in group]


async def test_without_syncfs_each_file_is_fsynced(local, syncs, monkeypatch):
    monkeypatch.setattr(local_group, "_SYNCFS", None)
    group = items(10, dirs=2)
    await local.put_many(group)
    assert syncs == {"syncfs": 0, "fsync": 10 + 2}
    assert [await local.get_bytes(k) for k, _d in group] == [d for _k, d in group]


async def test_a_syncfs_refused_at_run_time_falls_back_to_fsync_each(local, syncs, monkeypatch):
    monkeypatch.setattr(local_group, "_SYNCFS", lambda fd: -1)
    monkeypatch.setattr(local_group.ctypes, "get_errno", lambda: local_group.errno.ENOSYS)
    group = items(6, dirs=3)
    await local.put_many(group)
    assert syncs["fsync"] == 6 + 3
    assert [await local.get_bytes(k) for k, _d in group] == [d for _k, d in group]


async def test_a_failing_syncfs_fails_the_group_and_shows_nothing(local, tmp_path, monkeypatch):
    monkeypatch.setattr(local_group, "_SYNCFS", lambda fd: -1)
    monkeypatch.setattr(local_group.ctypes, "get_errno", lambda: local_group.errno.EIO)
    with pytest.raises(StorageError, match="Input/output error") as ei:
        await local.put_many(items(4))
    assert not ei.value.permanent
    assert await local.list("") == [] and temps(tmp_path / "store") == []


async def test_a_symlink_planted_at_a_temp_name_is_not_written_through(local, tmp_path, monkeypatch):
    """The temp file is created exclusively without following links: a link someone planted at the
    name brsm will use (here: the name forced) fails the group, and its target is untouched."""
    outside = tmp_path / "victim"
    outside.write_bytes(b"keep me")
    d = tmp_path / "store" / "B" / "data" / "d0"
    d.mkdir(parents=True)
    planted = d / f"{TMP_MARK}f0.planted"
    planted.symlink_to(outside)
    monkeypatch.setattr(local_group, "temp_for", lambda path: path.parent / f"{TMP_MARK}{path.name}.planted")
    with pytest.raises(StorageError) as ei:
        await local.put_many(items(3, dirs=1))
    assert ei.value.permanent  # EEXIST
    assert outside.read_bytes() == b"keep me"
    assert planted.is_symlink()  # not ours: left alone, never removed as if it were
    assert await local.list("") == []


async def test_a_symlinked_directory_out_of_the_storage_is_refused(local, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "store" / "B").mkdir()
    (tmp_path / "store" / "B" / "data").symlink_to(outside, target_is_directory=True)
    with pytest.raises(StorageError, match="out of the storage: refused") as ei:
        await local.put_many(items(4))
    assert ei.value.permanent and "tampered" in ei.value.hint
    assert list(outside.iterdir()) == [], "nothing made or written through the link"


async def test_a_symlink_at_a_key_is_replaced_never_followed(local, tmp_path):
    outside = tmp_path / "victim"
    outside.write_bytes(b"keep me")
    d = tmp_path / "store" / "B" / "data" / "d0"
    d.mkdir(parents=True)
    (d / "f0").symlink_to(outside)
    group = items(2, dirs=1)
    await local.put_many(group)
    assert outside.read_bytes() == b"keep me"
    assert not (d / "f0").is_symlink() and (d / "f0").read_bytes() == group[0][1]
