import asyncio
import time

import pytest

from brsm.errors import UsageError
from brsm.workflows.limits import TokenBucket, parse_rate, parse_size
from brsm.workflows.transfer import Limits, run_bounded, run_lanes


def test_sizes_and_rates():
    assert parse_size("200MiB") == 200 * 2**20
    assert parse_size("1.5GiB") == int(1.5 * 2**30)
    assert parse_size("5000") == 5000
    assert parse_rate("100MiB/s") == 100 * 2**20
    assert parse_rate(None) is None
    for bad in ("", "MiB", "10 parsecs", "-1MiB"):
        with pytest.raises(UsageError):
            parse_size(bad)


async def test_token_bucket_caps_throughput():
    b = TokenBucket(1_000_000, burst=100_000)
    t0 = time.monotonic()
    for _ in range(40):
        await b.consume(10_000)  # 400 kB: 100 kB burst + 300 kB at 1 MB/s ≈ 0.3 s
    assert time.monotonic() - t0 >= 0.25


async def test_run_bounded_respects_per_host_and_global_limits():
    limits = Limits(concurrency=3, per_host=2)
    live: dict[str, int] = {}
    peak = {"global": 0}
    per_host_peak: dict[str, int] = {}
    done = []

    async def work(job):
        h = job[0]
        live[h] = live.get(h, 0) + 1
        per_host_peak[h] = max(per_host_peak.get(h, 0), live[h])
        peak["global"] = max(peak["global"], sum(live.values()))
        await asyncio.sleep(0.01)
        live[h] -= 1
        done.append(job)

    jobs = [(h, i) for h in "abcd" for i in range(6)]
    await run_bounded(jobs, lambda j: j[0], limits, work)
    assert sorted(done) == sorted(jobs)
    assert peak["global"] <= 3 and max(per_host_peak.values()) <= 2


async def test_run_bounded_stops_on_first_error():
    limits = Limits(concurrency=2, per_host=1)
    started = []

    async def work(job):
        started.append(job)
        if job == 1:
            raise RuntimeError("boom")
        await asyncio.sleep(0.01)

    with pytest.raises(RuntimeError, match="boom"):
        await run_bounded(list(range(50)), lambda j: "h", limits, work)
    assert len(started) < 50


async def _stream(items, pulled=None):
    for x in items:
        if pulled is not None:
            pulled.append(x)
        yield x


async def test_run_lanes_feeds_every_host_at_once_within_the_limits_never_reading_far_ahead():
    """The streamed form: each host's jobs from its own stream, every host busy at once (a list in key
    order is grouped by host: one stream for all would feed one host at a time), and a stream read
    only as fast as its workers take jobs."""
    limits = Limits(concurrency=3, per_host=2)
    live: dict[str, int] = {}
    peak = {"global": 0, "hosts": 0}
    per_host_peak: dict[str, int] = {}
    done = []
    pulled: dict[str, list] = {h: [] for h in "abcd"}

    async def work(job):
        h = job[0]
        live[h] = live.get(h, 0) + 1
        per_host_peak[h] = max(per_host_peak.get(h, 0), live[h])
        peak["global"] = max(peak["global"], sum(live.values()))
        peak["hosts"] = max(peak["hosts"], sum(1 for v in live.values() if v))
        assert len(pulled[h]) <= len([j for j in done if j[0] == h]) + 2  # no more pulled than in flight
        await asyncio.sleep(0.01)
        live[h] -= 1
        done.append(job)

    jobs = {h: [(h, i) for i in range(6)] for h in "abcd"}
    await run_lanes({h: _stream(js, pulled[h]) for h, js in jobs.items()}, limits, work)
    assert sorted(done) == sorted(j for js in jobs.values() for j in js)
    assert peak["global"] <= 3 and max(per_host_peak.values()) <= 2 and peak["hosts"] >= 2


async def test_run_lanes_stops_on_first_error():
    limits = Limits(concurrency=2, per_host=1)
    started = []

    async def work(job):
        started.append(job)
        if job == 1:
            raise RuntimeError("boom")
        await asyncio.sleep(0.01)

    with pytest.raises(RuntimeError, match="boom"):
        await run_lanes({"h": _stream(range(50))}, limits, work)
    assert len(started) < 50


async def test_a_new_bucket_starts_empty_so_a_short_run_keeps_to_the_limit():
    """A bucket that started full let a second's worth through at once: 40MiB/s gave 67 MiB/s on a short
    run. Half a second's worth of bytes must take about half a second, from the very start."""
    rate = 1_000_000
    b = TokenBucket(rate)
    t0 = time.monotonic()
    for _ in range(50):
        await b.consume(10_000)  # 500 kB at 1 MB/s
    assert time.monotonic() - t0 >= 0.45


def test_sizes_beyond_a_float_are_refused_not_an_overflow():
    for bad in ("9" * 400 + "MiB", "9" * 30, "2000000TiB"):
        with pytest.raises(UsageError):
            parse_rate(bad)


def test_progress_speed_is_in_the_flags_units():
    from brsm.console.progress import binary_rate

    assert binary_rate(40 * 2**20) == "40.0 MiB/s"
    assert binary_rate(512 * 2**10) == "512.0 KiB/s"
    assert "MB/s" not in binary_rate(67_000_000)
