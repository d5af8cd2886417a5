"""Which files a restore has downloaded and checked: the one place that answers it, so keeping them
in the journal's SQLite (queried, not folded into memory) is a change of this class only.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

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


class RestoredFiles(Ledger):
    """Every FileRestored, by destination path (the last one journaled for a path wins), iterated in
    path order. Bound to the journal, answered by queries on the operation's events (indexed by dest),
    nothing per file kept; unbound (a fold of events handed in), folded into a dict."""

    TYPES: ClassVar[tuple[str, ...]] = (FILE_RESTORED,)

    def __init__(self) -> None:
        self._by_dest: dict[str, FileRestored] = {}
        self._op: int | None = None
        self._q: Any = None  # journal.keyed.Keyed of FileRestored by dest, once bound
        self._any = False  # bound: whether the journal may hold one of the operation's

    def bind(self, journal: Any, op_id: int) -> None:
        if self._by_dest:
            raise ValueError("a ledger is bound to the journal before any of its events is folded")
        self._op = op_id
        self._q = journal.keyed(FILE_RESTORED, "dest")
        self._any = self._q.any(op_id)

    @property
    def bound(self) -> bool:
        return self._op is not None

    def fold(self, e: FileRestored) -> None:
        if self.bound:
            self._any = True  # already in the journal
        else:
            self._by_dest[e.dest] = e

    def done(self, dest: str) -> bool:
        if not self.bound:
            return dest in self._by_dest
        return self._any and self._q.exists(self._op, dest)

    def get(self, dest: str) -> FileRestored | None:
        if not self.bound:
            return self._by_dest.get(dest)
        if not self._any:
            return None
        e = self._q.last(self._op, dest)
        return _as_restored(e.data) if e is not None else None

    def get_many(self, dests: Iterable[str]) -> dict[str, FileRestored]:
        """``get`` of many paths at once (a few hundred per query): the ones restored."""
        if not self.bound:
            return {d: r for d in dests if (r := self._by_dest.get(d)) is not None}
        if not self._any:
            return {}
        return {d: _as_restored(e.data) for d, e in self._q.last_many(self._op, dests).items()}

    def __iter__(self) -> Iterator[FileRestored]:
        if not self.bound:
            return iter([self._by_dest[d] for d in sorted(self._by_dest)])
        if not self._any:
            return iter(())
        return (_as_restored(e.data) for e in self._q.latest(self._op))

    def __len__(self) -> int:
        if not self.bound:
            return len(self._by_dest)
        return self._q.count(self._op) if self._any else 0

    def __bool__(self) -> bool:
        if not self.bound:
            return bool(self._by_dest)
        return self._any and self._q.any(self._op)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RestoredFiles) and list(self) == list(other)

    def __repr__(self) -> str:
        if self.bound:
            return f"RestoredFiles(journal operation {self._op})"
        return f"RestoredFiles({len(self._by_dest)})"


def _as_restored(d: dict[str, Any]) -> FileRestored:
    return FileRestored.from_data(d)  # type: ignore[return-value]
