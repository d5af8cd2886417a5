"""Failures a test injects into the fake cluster, by kind and target, for a count or until cleared."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Fault:
    kind: str
    target: str
    remaining: int | None  # None = until cleared
    params: dict[str, Any] = field(default_factory=dict)


class Faults:
    """Injected failures. ``add(kind, target, count=1, **params)``; ``count=None`` = until cleared.

    kinds (target):
      meta_code (rpc or "*"):   code=<ErrorCode>; for createBackup ``after_hosts=k`` fails only after k
                                storage hosts made their checkpoints (INVALID snapshot + dirs stay behind)
      leader_change (rpc/"*"):  the RPC answers E_LEADER_CHANGED once per count (FakeMeta follows, bounded)
      disconnect (host):        after_bytes=N: the SSH connection drops after N bytes of a read or write
      host_down (host):         every SSH operation (and meta RPC served there) fails: connection refused
      disk_full (host):         writes fail with "No space left on device"; free_bytes is 0
      verb_fail (host):         verb=<HostPort method>: that verb fails as it does when its command exits
                                with ``exit`` (default 1) and ``stderr`` on a real host (it raises, or
                                answers "nothing found" where the adapter's verb does)
    """

    KINDS = ("meta_code", "leader_change", "disconnect", "host_down", "disk_full", "verb_fail")

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self.fired: list[tuple[str, str]] = []

    def add(self, kind: str, target: str, count: int | None = 1, **params: Any) -> Fault:
        if kind not in self.KINDS:
            raise ValueError(f"unknown fault kind {kind!r} (one of {', '.join(self.KINDS)})")
        f = Fault(kind, target, count, params)
        self._faults.append(f)
        return f

    def clear(self, kind: str | None = None, target: str | None = None) -> None:
        self._faults = [f for f in self._faults
                        if not ((kind is None or f.kind == kind) and (target is None or f.target == target))]

    def peek(self, kind: str, target: str, pred=None) -> Fault | None:
        for f in self._faults:
            if f.kind == kind and f.target in (target, "*") and (pred is None or pred(f)):
                return f
        return None

    def take(self, kind: str, target: str, pred=None) -> Fault | None:
        f = self.peek(kind, target, pred)
        if f is not None:
            self.fired.append((kind, target))
            if f.remaining is not None:
                f.remaining -= 1
                if f.remaining <= 0:
                    self._faults.remove(f)
        return f

    def __len__(self) -> int:
        return len(self._faults)
