"""Content-MD5 of part-sized bodies is computed off the event loop (which carries every SSH packet)."""
from __future__ import annotations

import asyncio
import base64
import hashlib
import threading

import pytest

from brsm.adapters.storage import streams as base


@pytest.mark.parametrize("size", [0, 1, base.MD5_OFF_LOOP - 1, base.MD5_OFF_LOOP, 8 << 20])
def test_content_md5_is_the_base64_md5(size: int) -> None:
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    assert asyncio.run(base.content_md5(data)) == base64.b64encode(hashlib.md5(data).digest()).decode()


def test_large_bodies_are_hashed_in_a_worker_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[threading.Thread] = []
    real_md5 = hashlib.md5

    def spy(data: bytes = b"", **kw):
        threads.append(threading.current_thread())
        return real_md5(data, **kw)

    monkeypatch.setattr(base.hashlib, "md5", spy)

    async def main() -> tuple[threading.Thread, threading.Thread]:
        await base.content_md5(b"s" * 10)
        small = threads[-1]
        await base.content_md5(b"L" * (8 << 20))
        return small, threads[-1]

    small, large = asyncio.run(main())
    assert small is threading.main_thread()
    assert large is not threading.main_thread()
