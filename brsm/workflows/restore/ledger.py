"""Which files a restore has downloaded and checked: the one place that answers it, so keeping them
in the journal's SQLite (queried, not folded into memory) is a change of this class only.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

# {key, host, dest, size, sha256}: a file downloaded and checked (into the staging dir, or in place offline)
FILE_RESTORED = "FileRestored"


class RestoredFiles:
    """Every FileRestored payload, by destination path (the last one journaled for a path wins)."""

    def __init__(self) -> None:
        self._by_dest: dict[str, dict[str, Any]] = {}

    def fold(self, d: dict[str, Any]) -> None:
        self._by_dest[d["dest"]] = d

    def done(self, dest: str) -> bool:
        return dest in self._by_dest

    def get(self, dest: str) -> dict[str, Any] | None:
        return self._by_dest.get(dest)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self._by_dest.values())

    def __len__(self) -> int:
        return len(self._by_dest)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RestoredFiles) and self._by_dest == other._by_dest

    def __repr__(self) -> str:
        return f"RestoredFiles({len(self._by_dest)})"
