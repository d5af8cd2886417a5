"""Downtime measured from outside: every metad, storaged and graphd port polled during a restore.

Used by the staged-restore tests and by scripts/bench; it knows nothing of brsm, only the sandbox's
addresses, so it sees what a client of the cluster would see.
"""
from __future__ import annotations

import socket
import threading
import time

from brsm.sandbox import cluster

SERVICES = ("metad", "storaged", "graphd")


def service_addrs(root: str) -> list[tuple[str, int]]:
    out = []
    for h in cluster.status(root)["hosts"]:
        for svc, s in h["services"].items():
            if svc in SERVICES:
                host, port = s["address"].rsplit(":", 1)
                out.append((host, int(port)))
    return sorted(out)


def _open(addr: tuple[str, int]) -> bool:
    try:
        with socket.create_connection(addr, timeout=0.2):
            return True
    except OSError:
        return False


class PortWatch:
    """Polls every address every ``interval`` seconds in a thread; ``samples`` holds (monotonic time,
    addresses that did not accept a connection)."""

    def __init__(self, addrs: list[tuple[str, int]], interval: float = 0.05) -> None:
        self.addrs, self.interval = addrs, interval
        self.samples: list[tuple[float, tuple[tuple[str, int], ...]]] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            t = time.monotonic()
            self.samples.append((t, tuple(a for a in self.addrs if not _open(a))))
            self._stop.wait(self.interval)

    def __enter__(self) -> "PortWatch":
        self._t.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._t.join()

    def windows(self) -> list[tuple[float, float]]:
        """(start, end) of every stretch in which some port was closed: from the first sample that saw
        one closed to the first sample after it that saw all open."""
        out, began = [], None
        for t, down in self.samples:
            if down and began is None:
                began = t
            elif not down and began is not None:
                out.append((began, t))
                began = None
        if began is not None:
            out.append((began, self.samples[-1][0]))
        return out

    def longest(self) -> float:
        return max((b - a for a, b in self.windows()), default=0.0)

    def all_up_between(self, t0: float, t1: float) -> bool:
        return all(not down for t, down in self.samples if t0 <= t <= t1)
