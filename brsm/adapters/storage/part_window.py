"""The parts of one multipart upload in flight (``BaseStorage.put``): bounded, each recorded as it lands."""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from brsm.ports import UploadState


class PartWindow:
    """The parts of one upload in flight: at most ``part_concurrency`` at once, each recorded in the
    upload state (and journaled through ``on_part``) as it lands; the first failure stops new parts."""

    def __init__(self, storage: Any, full: str, state: UploadState,
                 on_part: Callable[[UploadState], Any] | None) -> None:
        self.storage, self.full, self.state, self.on_part = storage, full, state, on_part
        self.upload_id: str = state.upload_id  # type: ignore[assignment]
        self.sem = asyncio.Semaphore(storage.part_concurrency)
        self.tasks: set[asyncio.Task] = set()
        self.failed: list[BaseException] = []

    async def start(self, n: int, data: bytes, held: int) -> None:
        """Start sending part ``n`` (its ``held`` bytes of budget are released when it lands)."""
        await self.sem.acquire()
        self._reap()
        if self.failed:
            self.sem.release()
            await self.storage.budget.release(held)
            raise self.failed[0]
        self.tasks.add(asyncio.create_task(self._send(n, data, held)))

    async def _send(self, n: int, data: bytes, held: int) -> None:
        state = self.state
        try:
            info = await self.storage._mp_upload_part(self.full, self.upload_id, n, data)
            state.parts = [p for p in state.parts if p["n"] != n]
            state.parts.append({"n": n, "size": len(data), **info})
            state.parts.sort(key=lambda p: p["n"])
            if self.on_part is not None:
                self.on_part(state)
        finally:
            del data
            self.sem.release()
            await self.storage.budget.release(held)

    def _reap(self) -> None:
        for t in [t for t in self.tasks if t.done()]:
            self.tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                self.failed.append(t.exception())

    async def settle(self, *, cancel: bool) -> None:
        """After a failure: wait for the parts in flight (or cancel them)."""
        if cancel:
            for t in self.tasks:
                t.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)

    async def drain(self) -> None:
        """Wait for every part in flight; raise the first failure."""
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
            self._reap()
        if self.failed:
            raise self.failed[0]
