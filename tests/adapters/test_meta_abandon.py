"""A meta call whose awaiting task is cancelled (a bound passed, a signal) is abandoned at once: its
worker thread returns and the client is free for the calls a rollback makes next. Before, the thread
stayed blocked until metad answered (createBackup: up to 1800 s) holding the client's lock, so the
rollback's listSnapshots waited behind it, and the process could not exit (asyncio.run waits for
its worker threads)."""
from __future__ import annotations

import asyncio
import time

import pytest

from brsm.adapters.meta import ThriftMeta
from brsm.ports import HostAddr
from brsm.sandbox import control

pytestmark = pytest.mark.sandbox


@pytest.fixture(scope="module")
def cluster(meta_cluster):
    return meta_cluster


@pytest.fixture(autouse=True)
def _clear(cluster):
    yield
    control.clear_faults(cluster.meta.http)


async def test_a_cancelled_hung_call_frees_the_client_at_once(cluster):
    m = ThriftMeta([HostAddr(cluster.meta.ip, cluster.meta.port)], timeout=30)
    try:
        await m.list_spaces()  # a pooled connection exists
        control.set_fault(cluster.meta.http, rpc="createBackup", hang=True)
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(m.create_backup(None), 1.0)
        assert time.monotonic() - t0 < 4, "the abandoned call's thread did not return promptly"
        try:  # metad never got to make one; the call must not wait behind the abandoned one
            assert await asyncio.wait_for(m.list_snapshots(), 3.0) == []
        except TimeoutError:
            pytest.fail("the next call waited behind the abandoned one")
    finally:
        control.clear_faults(cluster.meta.http)
        await m.close()
