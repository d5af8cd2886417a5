"""``Storage.put_many`` where a store has nothing to share between the objects of a group (S3, OSS,
the in-memory fake): each goes by the single-object ``put``, a few at a time. The local store has its
own (``local_group``): there the durability barrier is what a small file costs, and a group pays it
once."""
from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from brsm.concurrency import gather_bounded
from brsm.errors import StorageError
from brsm.ports import PutResult

from .keys import check_key

PUT_MANY_AT_ONCE = 8  # objects of one put_many in flight on a store without a group verb


def check_group(items: Sequence[tuple[str, bytes]]) -> None:
    """A put_many group is well formed: valid keys, each once (two byte strings for one key in one
    group would leave which one is stored to chance). Checked before anything is written."""
    seen: set[str] = set()
    for key, _data in items:
        check_key(key)
        if key in seen:
            raise StorageError(f"{key}: twice in one group of objects", permanent=True,
                               hint="a group names each key once; this is a bug in brsm")
        seen.add(key)


async def one_block(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def put_each(storage: Any, items: Sequence[tuple[str, bytes]]) -> list[PutResult]:
    """Every object by ``storage.put``, PUT_MANY_AT_ONCE at a time, results in order. The first
    failure stops the others and is raised once they have stopped."""
    check_group(items)
    return await gather_bounded(PUT_MANY_AT_ONCE, lambda kd: storage.put(kd[0], one_block(kd[1]), len(kd[1])), items)
