"""A backup's expected files set against the store's listing, both streamed in key order."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from brsm.adapters.storage.memory import MemoryStorage
from brsm.errors import StorageError
from brsm.workflows import listing
from brsm.workflows.backup import finish
from brsm.workflows.backup.ledger import FileCopied


async def _store(objects: dict[str, int]) -> MemoryStorage:
    st = MemoryStorage(list_page_size=2)  # pages of 2: the merge crosses page boundaries
    for k, n in objects.items():
        await st.put_bytes(k, b"x" * n)
    return st


async def test_side_by_side_pairs_every_key_once_in_order():
    st = await _store({"B/a": 1, "B/b-x": 2, "B/b/1": 3, "B/c": 4, "B/e": 5, "C/z": 6})
    want = [{"key": "B/b-x", "size": 2}, {"key": "B/b/0", "size": 9}, {"key": "B/c", "size": 1}, {"key": "B/d", "size": 1}]
    got = [(k, e and e["size"], have) async for k, e, have in listing.side_by_side(st, "B/", want)]
    assert got == [("B/a", None, 1), ("B/b-x", 2, 2), ("B/b/0", 9, None), ("B/b/1", None, 3), ("B/c", 1, 4),
                   ("B/d", 1, None), ("B/e", None, 5)]
    assert [k async for k, _, _ in listing.side_by_side(st, "B/", [])] == ["B/a", "B/b-x", "B/b/1", "B/c", "B/e"]


async def test_side_by_side_refuses_expected_keys_out_of_order():
    st = await _store({"B/a": 1})
    with pytest.raises(ValueError, match="out of key order"):
        [x async for x in listing.side_by_side(st, "B/", [{"key": "B/c"}, {"key": "B/b"}])]


async def test_helpers_look_without_holding_a_listing():
    st = await _store({"B/a": 1, "B/b": 2, "BB/c": 3})
    assert await listing.any_object(st, "B/") and not await listing.any_object(st, "C/")
    assert await listing.tally_objects(st, "B/") == (2, 3)
    assert await listing.object_sizes(st, ["B/b", "B/nope", "BB/c"]) == {"B/b": 2, "BB/c": 3}


def _copied(key: str, size: int) -> FileCopied:
    return FileCopied(key=key, size=size, sha256="0" * 64, host="h", path="/p")


@pytest.mark.parametrize("damage", ["deleted", "cut"])
async def test_uploaded_refuses_a_copied_file_the_store_lacks(damage):
    """UPLOADED writes no manifest over a copied file gone or changed since: the listing and the
    ledger, streamed side by side, disagree on it."""
    name = "BACKUP_2026_01_01_00_00_00"
    files = [_copied(f"{name}/data/h:1/data0/1/data/{i:03d}.sst", 3) for i in range(7)]
    st = await _store({f.key: 3 for f in files} | {f"{name}/brsm-in-progress": 1})
    victim = files[4].key
    if damage == "deleted":
        await st.delete(victim)
    else:
        await st.put_bytes(victim, b"xy")
    ctx = SimpleNamespace(ports=SimpleNamespace(storage=st), op_id=7, data=SimpleNamespace(name=name, files=files))
    with pytest.raises(StorageError, match=f"1 copied file\\(s\\) are missing or changed in storage, e.g. {victim}"):
        await finish.uploaded(ctx)
    assert not await listing.any_object(st, f"{name}/brsm-manifest")  # nothing written


async def test_a_listing_that_fails_midway_closes_the_expected_stream_at_once():
    """The file list read beside a listing that fails is closed then, with the read of the store
    under it: not left suspended for the garbage collector to finish in a task of its own."""
    from contextlib import aclosing
    st = await _store({"B/a": 1, "B/b": 1, "B/c": 1})
    st.inject_fault("list", count=-1, permanent=True, skip=1)  # the second page fails
    closed = []

    async def expected():
        try:
            for k in ("B/a", "B/b", "B/c"):
                yield {"key": k}
        finally:
            closed.append(True)
    with pytest.raises(StorageError):
        async with aclosing(listing.side_by_side(st, "B/", expected())) as pairs:
            async for _ in pairs:
                pass
    assert closed == [True]
