"""Issue 14: a lost lease stops the run, and a lease's expiry is judged by its host's clock."""
from __future__ import annotations

import asyncio
import doctest
import json
import time

import pytest

from brsm.errors import LockHeld
from brsm.fakes.cluster import FakeCluster
from brsm.fakes.hosts import FakeHosts
from brsm.workflows import lease as lease_mod
from brsm.workflows import lease_holder
from brsm.workflows.lease import Lease
from brsm.workflows.lease_holder import LeaseInfo, is_stale


def test_doctests():
    assert doctest.testmod(lease_mod).failed == 0
    assert doctest.testmod(lease_holder).failed == 0


def _one_host():
    c = FakeCluster(metas=1, storages=1)
    hosts = FakeHosts(c)
    name = c.meta_addrs[0].host
    return c, c.machines[name], hosts.host(name), f"{c.install_dir}/brsm.lease"


async def _holder(h, path) -> dict:
    buf = b""
    async for chunk in h.open_read(f"{path}/holder.json"):
        buf += chunk
    return json.loads(buf)


async def test_expiry_is_written_and_judged_in_the_lease_hosts_clock():
    """The metad host runs an hour ahead of this machine: the lease written there expires an hour
    later in our clock, and a lease that expired by the host's clock is stale although our clock says
    it has an hour to go."""
    c, m, h, path = _one_host()
    m.clock_offset = 3600.0
    ours = Lease([(h, path)], op_id=1, ref="j-1", kind="backup", who="a@b", ttl=300)
    await ours.acquire()
    await ours.stop_refresh()
    info = await _holder(h, path)
    assert info["expires"] == pytest.approx(time.time() + 3600 + 300, abs=5)
    # a holder from another machine whose expiry passed in the host's clock only
    theirs = LeaseInfo(7, "backup", "x@y", "elsewhere", 1, time.time() + 600, ref="k-7")
    assert not is_stale(theirs)  # by our clock
    assert is_stale(theirs, ours.now_on(h))  # by the host's: taken over
    await ours.release()


async def test_a_lease_whose_host_clock_says_fresh_is_not_taken_over():
    """This machine's clock runs an hour ahead (the host's is behind): a live holder's lease must not
    look expired to us."""
    c, m, h, path = _one_host()
    m.clock_offset = -3600.0
    theirs = Lease([(h, path)], op_id=7, ref="k-7", kind="backup", who="x@y", ttl=300)
    await theirs.acquire()
    await theirs.stop_refresh()
    # make it look as if written by another machine (so only expiry counts)
    info = await _holder(h, path)
    info["machine"] = "elsewhere"

    async def one():
        yield json.dumps(info).encode()
    await h.write_file(f"{path}/holder.json", one())
    ours = Lease([(h, path)], op_id=1, ref="j-1", kind="restore", who="a@b", ttl=300)
    with pytest.raises(LockHeld, match="operation 7"):
        await ours.acquire()


async def _lose(change, *, ttl=2.5):
    c, m, h, path = _one_host()
    lost = []
    ours = Lease([(h, path)], op_id=1, ref="j-1", kind="backup", who="a@b", ttl=ttl,
                 on_lost=lambda host, holder, why: lost.append((host, holder, why)))
    await ours.acquire()
    await change(c, m, h, path)
    for _ in range(100):
        if lost:
            break
        await asyncio.sleep(0.05)
    await ours.stop_refresh()
    return lost


async def test_a_lease_taken_over_is_reported_lost_with_its_new_holder():
    async def take(c, m, h, path):
        info = await _holder(h, path)
        info.update(op_id=9, ref="other-9", who="eve@there")

        async def one():
            yield json.dumps(info).encode()
        await h.write_file(f"{path}/holder.json", one())
    lost = await _lose(take)
    assert len(lost) == 1 and lost[0][1].owner == "other-9" and lost[0][2] == "taken over"


async def test_a_lease_removed_by_hand_is_reported_lost():
    async def remove(c, m, h, path):
        await h.remove_tree(path)
    lost = await _lose(remove)
    assert len(lost) == 1 and lost[0][1] is None and lost[0][2] == "removed"


async def test_a_lease_that_cannot_be_refreshed_is_lost_before_it_would_expire():
    """holder.json replaced by a directory: every refresh fails. The run is told before the lease's
    ttl has passed since the last good refresh (so nobody could have taken it over yet)."""
    t0 = []

    async def jam(c, m, h, path):
        t0.append(asyncio.get_running_loop().time())
        await h.remove_tree(f"{path}/holder.json")
        m.mkdirs(f"{path}/holder.json")
    lost = await _lose(jam, ttl=2.5)
    assert len(lost) == 1 and lost[0][2].startswith("not refreshed for")
    assert asyncio.get_running_loop().time() - t0[0] < 2.5


async def test_a_refresh_that_succeeds_keeps_the_lease():
    c, m, h, path = _one_host()
    lost = []
    ours = Lease([(h, path)], op_id=1, ref="j-1", kind="backup", who="a@b", ttl=1.0,
                 on_lost=lambda *a: lost.append(a))
    await ours.acquire()
    first = (await _holder(h, path))["expires"]
    await asyncio.sleep(0.7)
    assert (await _holder(h, path))["expires"] > first and not lost
    await ours.release()
