"""A queue bounded by what its items weigh, not by how many there are.

A host's feed runs ahead of its workers by a bounded amount. Counting items was not that bound once
small files went in groups: 32 queued groups of 1,024 files held 32,768 jobs per host, so a backup's
memory still grew with the files of a 100,000-file cluster (measured: 80,000 jobs alive at the peak).
A group weighs its files; the feed may run ahead by files, whatever shape they come in.
"""
from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any


def one(_item: Any) -> int:
    return 1


class QueueClosed(Exception):
    """The queue was closed: its run is ending (see ``WeightedQueue.close``)."""


class WeightedQueue:
    """``put`` waits while the queued weight plus the item's would pass ``limit``; an item heavier than
    the limit alone still goes in when the queue is empty (a feed never deadlocks on a big group).

    ``close`` ends it: every ``put`` and ``get`` then raises QueueClosed, those waiting too. A run that
    stops cancels its feeders and workers, but a cancellation can be lost in a library (Python 3.11's
    ``wait_for``); a worker that lost it came back for its next item and waited for ever on a queue
    nobody fed, and the run with it. Closed, the queue sends it home."""

    def __init__(self, limit: int, weight: Callable[[Any], int] = one) -> None:
        self.limit, self.weight = max(1, limit), weight
        self.held = 0
        self.closed = False
        self._items: deque[tuple[Any, int]] = deque()
        self._changed = asyncio.Condition()

    async def put(self, item: Any) -> None:
        w = max(0, self.weight(item))
        async with self._changed:
            await self._changed.wait_for(lambda: self.closed or not self._items or self.held + w <= self.limit)
            if self.closed:
                raise QueueClosed()
            self._items.append((item, w))
            self.held += w
            self._changed.notify_all()

    async def get(self) -> Any:
        async with self._changed:
            await self._changed.wait_for(lambda: self.closed or bool(self._items))
            if self.closed:
                raise QueueClosed()
            item, w = self._items.popleft()
            self.held -= w
            self._changed.notify_all()
            return item

    async def close(self) -> None:
        async with self._changed:
            self.closed = True
            self._items.clear()
            self.held = 0
            self._changed.notify_all()
