"""A cancellation lost in a library (Python 3.11's ``asyncio.wait_for`` returns the result when the
cancel lands as the awaited thing ends) must not keep a stopped run going. Seen in CI: a SIGTERM
during a backup's copy; one copy worker lost it, went back to its queue, and the run waited for it
for ever with the cluster lease held."""
import asyncio

import pytest

from brsm.concurrency import Overdue, bounded
from brsm.workflows.transfer import Limits, run_fed, run_lanes
from brsm.workflows.weighted_queue import QueueClosed, WeightedQueue


async def loses_its_cancellation(_job) -> None:
    """A job whose library swallows the cancel and returns, as 3.11's wait_for can."""
    try:
        await asyncio.sleep(0.05)
    except asyncio.CancelledError:
        await asyncio.sleep(0.01)


def numbers(pulled: list[int], n: int = 1000):
    async def feed():
        for i in range(n):
            pulled.append(i)
            yield i
    return feed()


async def stopped_after(coro, seconds: float = 0.2) -> tuple[bool, float]:
    t = asyncio.ensure_future(coro)
    await asyncio.sleep(seconds)
    t.cancel()
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    done, _ = await asyncio.wait({t}, timeout=5)
    return bool(done), loop.time() - t0


async def test_run_fed_ends_when_its_workers_lose_the_cancellation():
    pulled: list[int] = []
    ended, took = await stopped_after(run_fed({"h": numbers(pulled)}, Limits(concurrency=2, per_host=2),
                                              loses_its_cancellation))
    assert ended and took < 3.0, "a worker that lost its cancel waited for ever on its queue"
    assert len(pulled) < 100  # the feed stopped too


async def test_run_lanes_takes_no_next_job_once_stopped():
    pulled: list[int] = []
    coro = run_lanes({"h": numbers(pulled)}, Limits(concurrency=2, per_host=2), loses_its_cancellation)
    t = asyncio.ensure_future(coro)
    await asyncio.sleep(0.2)
    t.cancel()
    at = len(pulled)
    done, _ = await asyncio.wait({t}, timeout=5)
    assert done and len(pulled) <= at + 2, (at, len(pulled))  # before: it went on through all 1,000


async def test_a_closed_queue_sends_its_waiters_home():
    full, empty = WeightedQueue(1), WeightedQueue(1)
    await full.put("a")
    putter, getter = asyncio.ensure_future(full.put("b")), asyncio.ensure_future(empty.get())
    await asyncio.sleep(0.01)
    assert not putter.done() and not getter.done()  # a full queue, an empty one: both wait
    await full.close()
    await empty.close()
    for waiting in (putter, getter):
        with pytest.raises(QueueClosed):
            await waiting
    with pytest.raises(QueueClosed):
        await full.get()  # what was queued is dropped: the run is ending


async def test_bounded_keeps_a_cancellation_that_lands_as_the_work_ends():
    """The race wait_for loses: the awaited future is done, the outer task cancelled in the same
    loop iteration. ``bounded`` raises CancelledError; the work's result is not returned."""
    loop = asyncio.get_running_loop()
    fut = loop.create_future()

    async def waiter():
        return await bounded(fut, 10)

    t = asyncio.ensure_future(waiter())
    await asyncio.sleep(0)  # the waiter is parked on fut
    fut.set_result("done")
    t.cancel()  # same iteration: the waiter wakes with both
    with pytest.raises(asyncio.CancelledError):
        await t


async def test_asyncio_wait_for_loses_that_cancellation_on_this_python():
    """Why ``bounded`` exists: the same race with ``asyncio.wait_for`` (3.11) returns the result.
    On a Python whose wait_for keeps it (3.12 and later) the test says so and passes."""
    import sys
    loop = asyncio.get_running_loop()
    fut = loop.create_future()

    async def waiter():
        return await asyncio.wait_for(fut, 10)

    t = asyncio.ensure_future(waiter())
    await asyncio.sleep(0)
    fut.set_result("done")
    t.cancel()
    try:
        got = await t
    except asyncio.CancelledError:
        assert sys.version_info >= (3, 12), "3.11's wait_for kept the cancellation: the reason for bounded is gone"
    else:
        assert got == "done" and sys.version_info < (3, 12)


async def test_bounded_says_overdue_and_passes_other_timeouts_through():
    with pytest.raises(Overdue):
        await bounded(asyncio.sleep(1), 0.01)

    async def socket_timeout():
        raise TimeoutError("a socket's own timeout")  # an OSError: not Overdue

    with pytest.raises(TimeoutError):
        await bounded(socket_timeout(), 5)
    assert await bounded(asyncio.sleep(0, "x"), None) == "x"
