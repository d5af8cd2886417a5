"""Which files a restore has downloaded and checked: the one place that answers it, so keeping them
in the journal's SQLite (queried, not folded into memory) is a change of this class only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from brsm.engine.last_by_key import LastByKey
from brsm.engine.state import Event, Ledger

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


class RestoredFiles(LastByKey[FileRestored], Ledger):
    """Every FileRestored, by destination path (the last one journaled for a path wins), iterated in
    path order. Bound to the journal, answered by queries on the operation's events (indexed by dest),
    nothing per file kept; unbound (a fold of events handed in), folded into a dict."""

    TYPES: ClassVar[tuple[str, ...]] = (FILE_RESTORED,)

    def __init__(self) -> None:
        super().__init__(FileRestored, "dest")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RestoredFiles) and list(self) == list(other)

    def __repr__(self) -> str:
        return self.describe("RestoredFiles")
