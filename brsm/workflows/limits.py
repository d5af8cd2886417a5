"""Bandwidth and concurrency limits shared by every transfer of one run."""
from __future__ import annotations

import asyncio
import re
import time

from brsm.errors import UsageError

_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2, "mb": 1000**2, "mib": 1024**2,
          "g": 1000**3, "gb": 1000**3, "gib": 1024**3}


MAX_SIZE = 1 << 50  # a PiB: beyond it a number is a typo (and 400 digits would overflow a float)


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d{1,20}(?:\.\d{1,9})?)\s*([a-zA-Z]*)\s*", text or "")
    if not m or m.group(2).lower() not in _UNITS:
        raise UsageError(f"not a size: {text!r}", hint="write it like 200MiB, 1GiB or 5000000")
    n = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if n > MAX_SIZE:
        raise UsageError(f"{text!r} is more than a PiB", hint="write it like 200MiB, 1GiB or 5000000")
    return n


def parse_rate(text: str | None) -> int | None:
    """``100MiB/s`` → bytes per second; None or empty → unlimited."""
    if not text:
        return None
    body = text[:-2] if text.lower().endswith("/s") else text
    rate = parse_size(body)
    if rate <= 0:
        raise UsageError(f"--rate-limit must be positive, not {text!r}", hint="e.g. --rate-limit 100MiB/s")
    return rate


class TokenBucket:
    """One bucket for the whole run, so --rate-limit caps the sum over all hosts and files.

    It starts empty: a bucket that starts full lets a second's worth through at once, so a run of a
    few seconds went at up to twice the limit (40MiB/s gave 67 MiB/s). Empty, the bytes through by
    any moment t are at most rate × t plus the one block in flight. After an idle spell it refills
    to ``burst`` (a second's worth by default), as any token bucket does."""

    def __init__(self, rate: int | None, burst: int | None = None) -> None:
        self.rate = rate
        self.capacity = burst or (rate or 0)
        self.tokens = 0.0
        self.stamp = time.monotonic()
        self._lock = asyncio.Lock()

    async def consume(self, n: int) -> None:
        if not self.rate:
            return
        async with self._lock:
            while True:
                now = time.monotonic()
                self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
                self.stamp = now
                if self.tokens >= min(n, self.capacity):
                    self.tokens -= n  # may go negative for a large block: later callers wait it out
                    return
                await asyncio.sleep((min(n, self.capacity) - self.tokens) / self.rate)
