"""What a backup should hold, set against what storage lists, both streamed in key order.

A backup's data objects number as many as the cluster's files (a million and more): neither the
listing nor the list of files expected is ever held whole. Both come in strictly increasing key
order (``Storage.iter_objects`` promises it; a manifest's file list and the backup's ledger are kept
so), so one pass side by side, like a merge, pairs each key with its two sizes holding one entry of each.
"""
from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable
from contextlib import aclosing
from typing import Any, TypeVar

from brsm.ports import Storage

T = TypeVar("T")


async def _aiter(items: Iterable[T] | AsyncIterable[T]) -> AsyncIterator[T]:
    if hasattr(items, "__aiter__"):
        async for x in items:  # type: ignore[union-attr]
            yield x
    else:
        for x in items:  # type: ignore[union-attr]
            yield x


async def side_by_side(storage: Storage, prefix: str, expected: Iterable[T] | AsyncIterable[T], *,
                       key: Any = lambda e: e["key"]) -> AsyncIterator[tuple[str, T | None, int | None]]:
    """(key, expected entry or None, listed size or None) for every key either side has, in key
    order: None on the left is an object nothing expected, on the right one expected and not listed.
    ValueError when ``expected`` is not in strictly increasing key order (pairs would be missed)."""
    last: str | None = None
    async with aclosing(storage.iter_objects(prefix)) as listing:
        cur = await anext(listing, None)
        async for e in _aiter(expected):
            k = key(e)
            if last is not None and not k > last:
                raise ValueError(f"{k!r} is not after {last!r}: the files expected are out of key order")
            last = k
            while cur is not None and cur.key < k:
                yield cur.key, None, cur.size
                cur = await anext(listing, None)
            if cur is not None and cur.key == k:
                yield k, e, cur.size
                cur = await anext(listing, None)
            else:
                yield k, e, None
        while cur is not None:
            yield cur.key, None, cur.size
            cur = await anext(listing, None)
