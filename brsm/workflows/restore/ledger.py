"""Which files a restore has downloaded and checked: the one place that answers it, so keeping them
in the journal's SQLite (queried, not folded into memory) is a change of this class only.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

from brsm.engine.state import Event

FILE_RESTORED = "FileRestored"


@dataclass(frozen=True)
class FileRestored(Event):
    """A file downloaded and checked: into the staging dir, or in place offline."""

    TYPE: ClassVar[str] = FILE_RESTORED
    key: str
    host: str
    dest: str
    size: int
    sha256: str | None


class RestoredFiles:
    """Every FileRestored, by destination path (the last one journaled for a path wins)."""

    def __init__(self) -> None:
        self._by_dest: dict[str, FileRestored] = {}

    def fold(self, e: FileRestored) -> None:
        self._by_dest[e.dest] = e

    def done(self, dest: str) -> bool:
        return dest in self._by_dest

    def get(self, dest: str) -> FileRestored | None:
        return self._by_dest.get(dest)

    def __iter__(self) -> Iterator[FileRestored]:
        return iter(self._by_dest.values())

    def __len__(self) -> int:
        return len(self._by_dest)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RestoredFiles) and self._by_dest == other._by_dest

    def __repr__(self) -> str:
        return f"RestoredFiles({len(self._by_dest)})"
