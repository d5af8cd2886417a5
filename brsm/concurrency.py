"""Bounded concurrency and bounded waits, written once for every layer: workflows (hosts, checkpoints)
and adapters (the objects of a storage group, a remote command) both need "at most N at a time, and
nothing left running after a failure", and waits that end.

Every wait with a time bound goes through ``bounded``, never ``asyncio.wait_for``: on Python 3.11
``wait_for`` returns the result when a cancellation arrives in the instant the awaited thing ends,
and the cancellation is lost; a run told to stop by a signal then went on (seen in CI).
"""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

T = TypeVar("T")


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


class Overdue(Exception):
    """What was awaited did not finish within its bound (unlike TimeoutError, not an OSError: a
    socket's own timeout is not mistaken for it)."""


async def bounded(aw: Awaitable[T], timeout: float | None) -> T:
    """``await aw`` within ``timeout`` seconds (None: no bound), else Overdue; ``asyncio.wait_for``
    without its lost cancellation."""
    bound = asyncio.timeout(timeout)
    try:
        async with bound:
            return await aw
    except TimeoutError:
        if bound.expired():
            raise Overdue(f"not done within {timeout}s") from None
        raise
