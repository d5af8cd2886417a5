"""Bounded concurrency, written once for every layer: workflows (hosts, checkpoints) and adapters (the
objects of a storage group) both need "at most N at a time, and nothing left running after a failure".
"""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any


async def gather_bounded(limit: int, work: Callable[[Any], Awaitable[Any]], items: Iterable[Any]) -> list[Any]:
    """``work(item)`` for every item, at most ``limit`` at a time, results in the items' order. The
    first failure cancels the others and is raised once they have stopped: nothing is left running
    behind a step that failed."""
    sem = asyncio.Semaphore(max(1, limit))

    async def one(item: Any) -> Any:
        async with sem:
            return await work(item)

    tasks = [asyncio.ensure_future(one(i)) for i in items]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
