"""Part buffers of all puts share one byte budget: files in flight do not multiply memory."""
from __future__ import annotations

import asyncio
import hashlib
import os

import pytest

from brsm.adapters.storage.memory import MemoryStorage
from brsm.errors import StorageError

PART = 64 * 1024


async def stream(data: bytes, step: int = 8192):
    for i in range(0, len(data), step):
        await asyncio.sleep(0)
        yield data[i:i + step]


@pytest.mark.parametrize("budget_parts", [1, 3])
async def test_parts_held_at_once_stay_within_the_budget(budget_parts):
    st = MemoryStorage(part_size=PART, multipart_threshold=2 * PART, part_concurrency=4,
                       memory_budget=budget_parts * PART)
    held, peak = [0], [0]
    inner = st._mp_upload_part

    async def slow_part(full, upload_id, n, data):
        held[0] += len(data)
        peak[0] = max(peak[0], held[0])
        try:
            await asyncio.sleep(0.002)  # a slow store: without the budget every file's 4 parts pile up
            return await inner(full, upload_id, n, data)
        finally:
            held[0] -= len(data)
    st._mp_upload_part = slow_part
    files = {f"k{i}": os.urandom(6 * PART + i) for i in range(6)}
    small = {f"s{i}": os.urandom(PART + i) for i in range(4)}  # single requests draw on the same budget
    results = await asyncio.gather(*(st.put(k, stream(d), len(d)) for k, d in {**files, **small}.items()))
    assert [r.sha256 for r in results] == [hashlib.sha256(d).hexdigest() for d in {**files, **small}.values()]
    assert all(st.objects[k] == d for k, d in {**files, **small}.items())
    assert 0 < peak[0] <= budget_parts * PART
    assert st.budget.free == st.budget.limit  # everything given back


async def test_a_failed_part_gives_its_bytes_back():
    st = MemoryStorage(part_size=PART, multipart_threshold=2 * PART, memory_budget=2 * PART)
    st.inject_fault("upload_part", 1, permanent=True, skip=1)
    data = os.urandom(5 * PART)
    with pytest.raises(StorageError):
        await st.put("k", stream(data), len(data))
    assert st.budget.free == st.budget.limit
    assert (await st.put("k", stream(data), len(data))).sha256 == hashlib.sha256(data).hexdigest()
