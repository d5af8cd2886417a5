"""The BaseIndex contract, on the SQLite adapter (what brsm runs) and the in-memory fake (what the property
tests use): the same answers, and the scratch file gone when the index is closed."""
from __future__ import annotations

import os

import pytest

from brsm.adapters.base_index import SqliteBaseIndex
from brsm.fakes.base_index import MemoryBaseIndex
from brsm.ports import BaseFile, FileIdentity


def ident(ino: int, t: int = 100) -> FileIdentity:
    return FileIdentity(1, ino, t, t - 1, t + 1)


FILES = [
    BaseFile("B/data/h:1/data0/1/data/000001.sst", 10, "a" * 64, "h", ident(7)),
    BaseFile("B/data/h:1/data0/1/data/000002.sst", 10, "b" * 64, "h", ident(8)),
    BaseFile("B/data/g:1/data0/1/data/000001.sst", 10, "a" * 64, "g", ident(7)),  # another host, same inode number
    BaseFile("B/meta/__id__.sst", 30, "c" * 64, "m", None),  # no identity (an older brsm's manifest)
]


@pytest.fixture(params=["sqlite", "memory"])
def index(request, tmp_path):
    ix = SqliteBaseIndex(str(tmp_path)) if request.param == "sqlite" else MemoryBaseIndex()
    ix.add(FILES[:2])
    ix.add(FILES[2:])
    yield ix
    ix.close()


def test_sizes_are_those_some_base_file_has(index):
    assert index.sizes([10, 11, 30, 10]) == {10, 30}
    assert index.sizes([]) == set()
    assert index.sizes(list(range(2000))) == {10, 30}  # more than SQLite binds at once


def test_by_content_names_a_key_holding_those_bytes(index):
    got = index.by_content([(10, "a" * 64), (10, "b" * 64), (11, "a" * 64), (30, "d" * 64)])
    assert got == {(10, "a" * 64): "B/data/g:1/data0/1/data/000001.sst", (10, "b" * 64): FILES[1].key}


def test_by_inode_is_per_host(index):
    got = index.by_inode("h", [(1, 7), (1, 9)])
    assert got == {(1, 7): [FILES[0]]}
    assert index.by_inode("g", [(1, 7)]) == {(1, 7): [FILES[2]]}
    assert index.by_inode("m", [(1, 7)]) == {}


def test_the_scratch_file_goes_with_the_index(tmp_path):
    ix = SqliteBaseIndex(str(tmp_path))
    ix.add(FILES)
    made = [p for p in os.listdir(tmp_path) if p.startswith("brsm-base-")]
    assert len(made) == 1 and os.stat(tmp_path / made[0]).st_mode & 0o777 == 0o700
    assert ix.sizes([10]) == {10}
    ix.close()
    assert not any(p.startswith("brsm-base-") for p in os.listdir(tmp_path))


def test_files_come_before_the_first_lookup(tmp_path):
    ix = SqliteBaseIndex(str(tmp_path))
    try:
        ix.add(FILES[:1])
        ix.sizes([10])
        with pytest.raises(ValueError):
            ix.add(FILES[1:])
    finally:
        ix.close()
