"""Properties of the shared put/resume logic (BaseStorage), on the in-memory backend."""
from __future__ import annotations

import asyncio
import hashlib
import math

from hypothesis import given, settings, strategies as st

from brsm.adapters.storage.memory import MemoryStorage
from brsm.adapters.storage.retry import RetryStorage
from brsm.ports import UploadState


class Broke(Exception):
    pass


async def chunks(data: bytes, sizes: list[int], fail_at: int | None = None, sent: list[int] | None = None):
    i = k = 0
    while i < len(data):
        if fail_at is not None and i >= fail_at:
            raise Broke()
        n = sizes[k % len(sizes)]
        yield data[i:i + n]
        i += n
        k += 1
        if sent is not None:
            sent[0] = min(i, len(data))
    if fail_at is not None and fail_at <= len(data):
        raise Broke()


@settings(max_examples=60, deadline=None)
@given(size=st.integers(0, 5000), part=st.integers(64, 700), threshold=st.integers(0, 1500),
       sizes=st.lists(st.integers(1, 900), min_size=1, max_size=5), conc=st.integers(1, 4),
       cut=st.floats(0, 1), seed=st.binary(min_size=8, max_size=8))
def test_interrupted_put_resumes_to_the_same_object(size, part, threshold, sizes, conc, cut, seed):
    data = (hashlib.sha256(seed).digest() * (size // 32 + 1))[:size]

    async def run() -> None:
        m = MemoryStorage(part_size=part, multipart_threshold=threshold, part_concurrency=conc)
        state = UploadState()
        journaled: list[list[int]] = []
        fail_at = int(size * cut)
        sent = [0]
        try:
            await m.put("k", chunks(data, sizes, fail_at, sent), size, state=state,
                        on_part=lambda s: journaled.append([p["n"] for p in s.parts]))
        except Broke:
            pass
        multipart = size > threshold
        if multipart:
            # every part wholly received before the failure landed and was journaled
            landed = [p["n"] for p in state.parts]
            assert landed == list(range(1, sent[0] // part + 1))
            assert all(p["size"] == part for p in state.parts)
            assert len(journaled) == len(landed)
        else:
            assert state == UploadState()
        before = len(state.parts)
        had_upload = state.upload_id is not None
        m.requests.clear()
        res = await m.put("k", chunks(data, sizes), size, state=state)
        assert res.size == size and res.sha256 == hashlib.sha256(data).hexdigest()
        assert await m.get_bytes("k") == data
        assert m.uploads == {}
        if multipart:
            assert m.requests["upload_part"] == math.ceil(size / part) - before
            assert m.requests["create_upload"] == (0 if had_upload else 1)

    asyncio.run(run())


@settings(max_examples=40, deadline=None)
@given(faults=st.lists(st.sampled_from(["put_object", "create_upload", "upload_part", "list_parts",
                                        "complete_upload", "put"]), max_size=3),
       size=st.integers(0, 3000))
def test_retry_wrapper_over_transient_faults_always_stores_the_bytes(faults, size):
    data = bytes(range(256)) * (size // 256 + 1)
    data = data[:size]

    async def run() -> None:
        m = MemoryStorage(part_size=500, multipart_threshold=1000)
        for f in faults:
            m.inject_fault(f, count=1)

        async def no_sleep(_d: float) -> None:
            return None
        r = RetryStorage(m, attempts=len(faults) + 2, sleep=no_sleep)
        res = await r.put("k", chunks(data, [333]), size, state=UploadState())
        assert res.sha256 == hashlib.sha256(data).hexdigest()
        assert await m.get_bytes("k") == data and m.uploads == {}

    asyncio.run(run())
