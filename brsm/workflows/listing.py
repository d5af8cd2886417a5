"""What a backup should hold, set against what storage lists, both streamed in key order.

A backup's data objects number as many as the cluster's files (a million and more): neither the
listing nor the list of files expected is ever held whole. Both come in strictly increasing key
order (``Storage.iter_objects`` promises it; a manifest's file list and the backup's ledger are kept
so), so one pass side by side, like a merge, pairs each key with its two sizes holding one entry of each.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from contextlib import aclosing
from typing import Any, TypeVar

from brsm.errors import ObjectNotFound
from brsm.ports import Storage

T = TypeVar("T")


async def _aiter(items: Iterable[T] | AsyncIterable[T]) -> AsyncIterator[T]:
    """``items`` as an async iterator; one left early (the listing failed) is closed, not left to
    the garbage collector (a stream of a file list holds a read of the store open)."""
    if not hasattr(items, "__aiter__"):
        for x in items:  # type: ignore[union-attr]
            yield x
        return
    it = aiter(items)  # type: ignore[arg-type]
    try:
        async for x in it:
            yield x
    finally:
        if hasattr(it, "aclose"):
            await it.aclose()


async def side_by_side(storage: Storage, prefix: str, expected: Iterable[T] | AsyncIterable[T], *,
                       key: Any = lambda e: e["key"]) -> AsyncIterator[tuple[str, T | None, int | None]]:
    """(key, expected entry or None, listed size or None) for every key either side has, in key
    order: None on the left is an object nothing expected, on the right one expected and not listed.
    ValueError when ``expected`` is not in strictly increasing key order (pairs would be missed)."""
    last: str | None = None
    async with aclosing(storage.iter_objects(prefix)) as listing, aclosing(_aiter(expected)) as wanted:
        cur = await anext(listing, None)
        async for e in wanted:
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


async def any_object(storage: Storage, prefix: str) -> bool:
    """Whether any object's key starts with ``prefix``: the first page of one object, not a listing."""
    async with aclosing(storage.iter_objects(prefix, page=1)) as objs:
        return await anext(objs, None) is not None


async def object_sizes(storage: Storage, keys: Iterable[str]) -> dict[str, int]:
    """The size of each of ``keys`` that is there, looked up by name (a few marker objects: no listing)."""
    async def one(key: str) -> tuple[str, int | None]:
        try:
            return key, (await storage.stat(key)).size
        except ObjectNotFound:
            return key, None
    return {k: size for k, size in await asyncio.gather(*(one(k) for k in sorted(set(keys)))) if size is not None}


async def tally_objects(storage: Storage, prefix: str) -> tuple[int, int]:
    """(count, bytes) of the objects under ``prefix``, streamed: no listing held."""
    n = total = 0
    async for o in storage.iter_objects(prefix):
        n, total = n + 1, total + o.size
    return n, total
