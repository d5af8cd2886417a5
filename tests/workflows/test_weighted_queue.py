"""The feed's queue is bounded by files, not by items: a group of 1,024 files weighs 1,024."""
import asyncio

from brsm.workflows.backup.copy import files_in
from brsm.workflows.transfer import Limits, run_fed
from brsm.workflows.weighted_queue import WeightedQueue


async def test_put_waits_while_the_weight_would_pass_the_limit():
    q = WeightedQueue(10, files_in)
    await q.put([0] * 6)
    blocked = asyncio.ensure_future(q.put([0] * 5))
    await asyncio.sleep(0.01)
    assert not blocked.done() and q.held == 6  # 6 + 5 > 10
    assert await q.get() == [0] * 6
    await asyncio.wait_for(blocked, 1)
    assert q.held == 5


async def test_an_item_heavier_than_the_limit_goes_in_alone():
    q = WeightedQueue(3, files_in)
    await asyncio.wait_for(q.put([0] * 8), 1)  # empty queue: in, or a big group would deadlock the feed
    blocked = asyncio.ensure_future(q.put("one"))
    await asyncio.sleep(0.01)
    assert not blocked.done()
    await q.get()
    await asyncio.wait_for(blocked, 1)
    assert await q.get() == "one" and q.held == 0


async def test_a_feed_of_groups_runs_ahead_by_files_not_by_groups():
    """Each group of 100 files: with 250 files of room the feed is never more than 2 groups ahead of
    the workers (by items, 32 groups = 3,200 files could wait)."""
    pulled, started = [], []

    async def feed():
        for i in range(40):
            pulled.append(i)
            yield [i] * 100

    async def work(group):
        started.append(group[0])
        ahead = len(pulled) - len(started)
        assert ahead <= 2 + 1  # the queue's 2 groups and the one the feeder holds while it waits
        await asyncio.sleep(0.002)

    await run_fed({"h": feed()}, Limits(concurrency=2, per_host=1), work, depth=250, weight=files_in)
    assert sorted(started) == list(range(40))
