"""Which parts a storaged removes on start (NebulaStore::loadPartFromDataPath, Nebula v3.8.0): a pure
decision, applied by brsm.sandbox.storaged."""
from __future__ import annotations

from collections.abc import Iterable


def unassigned(local: Iterable[int], assigned: Iterable[int]) -> list[int]:
    """The parts found on disk that meta no longer assigns to this host ("not in balancing and does
    not exist in meta any more"): removed.

    >>> unassigned([1, 2, 3, 4], [2, 4, 6])
    [1, 3]
    """
    keep = set(assigned)
    return sorted(p for p in set(local) if p not in keep)
