"""Which files a backup has sent: the one place that answers it, so keeping them in the journal's
SQLite (queried, not folded into memory) is a change of this class only.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from brsm.engine.state import ABSENT, Event, Ledger

FILE_COPIED = "FileCopied"
PART_UPLOADED = "PartUploaded"


@dataclass(frozen=True)
class FileCopied(Event):
    """A file is in storage, whole, under ``key``."""

    TYPE: ClassVar[str] = FILE_COPIED
    key: str
    size: int
    host: str = ABSENT
    path: str = ABSENT
    sha256: str = ABSENT


@dataclass(frozen=True)
class PartUploaded(Event):
    """A part of a multipart upload under way (a hint: lost, the part is sent again)."""

    TYPE: ClassVar[str] = PART_UPLOADED
    key: str
    upload_id: str
    part_size: int
    n: int
    etag: str
    size: int


class CopiedFiles(Ledger):
    """Files copied (their FileCopied, by storage key) and multipart uploads under way (by key:
    ``{"upload_id", "part_size", "parts": [{"n", "etag", "size"}]}``), as the journal says: the last
    FileCopied of a key wins, a FileCopied ends the key's upload, and a part of another upload_id
    starts the key's upload over. Iteration is in key order.

    Bound to the journal (what a run and a resume use), every answer is a query on the operation's
    events (indexed by key: a lookup is O(log n)), and nothing per file is kept; unbound (a fold of
    events handed in), the events are folded into dicts."""

    TYPES: ClassVar[tuple[str, ...]] = (FILE_COPIED, PART_UPLOADED)

    def __init__(self) -> None:
        self._copied: dict[str, FileCopied] = {}
        self._uploads: dict[str, dict[str, Any]] = {}
        self._op: int | None = None
        self._copies: Any = None  # journal.keyed.Keyed of FileCopied by key, once bound
        self._parts: Any = None  # ... of PartUploaded by key
        # bound: whether the journal may hold a FileCopied / PartUploaded of the operation (a fresh
        # backup asks nothing of the journal for a file until one is journaled)
        self._any_copied = self._any_parts = False

    def bind(self, journal: Any, op_id: int) -> None:
        if self._copied or self._uploads:
            raise ValueError("a ledger is bound to the journal before any of its events is folded")
        self._op = op_id
        self._copies = journal.keyed(FILE_COPIED, "key")
        self._parts = journal.keyed(PART_UPLOADED, "key")
        self._any_copied = self._copies.any(op_id)
        self._any_parts = self._parts.any(op_id)

    @property
    def bound(self) -> bool:
        return self._op is not None

    def fold(self, e: FileCopied | PartUploaded) -> None:
        if self.bound:  # already in the journal: only note that the queries now have something to find
            if isinstance(e, FileCopied):
                self._any_copied = True
            else:
                self._any_parts = True
            return
        if isinstance(e, FileCopied):
            self._copied[e.key] = e
            self._uploads.pop(e.key, None)
        else:
            up = self._uploads.get(e.key)
            if up is None or up["upload_id"] != e.upload_id:
                up = self._uploads[e.key] = {"upload_id": e.upload_id, "part_size": e.part_size, "parts": []}
            up["parts"] = [p for p in up["parts"] if p["n"] != e.n] + [{"n": e.n, "etag": e.etag, "size": e.size}]

    def done(self, key: str) -> bool:
        if not self.bound:
            return key in self._copied
        return self._any_copied and self._copies.exists(self._op, key)

    def get(self, key: str) -> FileCopied | None:
        if not self.bound:
            return self._copied.get(key)
        if not self._any_copied:
            return None
        e = self._copies.last(self._op, key)
        return _as_copied(e.data) if e is not None else None

    def get_many(self, keys: Iterable[str]) -> dict[str, FileCopied]:
        """``get`` of many keys at once (a few hundred per query): the ones copied."""
        if not self.bound:
            return {k: c for k in keys if (c := self._copied.get(k)) is not None}
        if not self._any_copied:
            return {}
        return {k: _as_copied(e.data) for k, e in self._copies.last_many(self._op, keys).items()}

    def __iter__(self) -> Iterator[FileCopied]:
        if not self.bound:
            return iter([self._copied[k] for k in sorted(self._copied)])
        if not self._any_copied:
            return iter(())
        return (_as_copied(e.data) for e in self._copies.latest(self._op))

    def __len__(self) -> int:
        if not self.bound:
            return len(self._copied)
        return self._copies.count(self._op) if self._any_copied else 0

    def totals(self) -> tuple[int, int]:
        """(files copied, their bytes), without a FileCopied per file in memory."""
        if not self.bound:
            return len(self._copied), sum(int(c.size or 0) for c in self._copied.values())
        if not self._any_copied:
            return 0, 0
        n, size = self._copies.totals(self._op, "size")
        return n, int(size)

    def __bool__(self) -> bool:
        if not self.bound:
            return bool(self._copied)
        return self._any_copied and self._copies.any(self._op)

    def upload(self, key: str) -> dict[str, Any] | None:
        """The journaled multipart upload of ``key`` under way (not yet copied whole), or None."""
        if not self.bound:
            return self._uploads.get(key)
        if not self._any_parts:
            return None
        parts = self._parts.all(self._op, key)
        if not parts:
            return None
        last = self._copies.last(self._op, key) if self._any_copied else None
        up: dict[str, Any] | None = None
        for e in parts:
            if last is not None and e.seq < last.seq:
                continue  # an upload the file's FileCopied ended
            p = PartUploaded.from_data(e.data)
            if up is None or up["upload_id"] != p.upload_id:
                up = {"upload_id": p.upload_id, "part_size": p.part_size, "parts": []}
            up["parts"] = [q for q in up["parts"] if q["n"] != p.n] + [{"n": p.n, "etag": p.etag, "size": p.size}]
        return up

    def uploads(self) -> Iterator[dict[str, Any]]:
        """Every upload under way, in key order."""
        if not self.bound:
            return iter([self._uploads[k] for k in sorted(self._uploads)])
        if not self._any_parts:
            return iter(())
        return (up for e in self._parts.latest(self._op) if (up := self.upload(e.data["key"])) is not None)

    def _rows(self) -> tuple[list[FileCopied], list[tuple[str, dict[str, Any]]]]:
        """What the ledger says, whichever way it is kept (for equality)."""
        if not self.bound:
            return list(self), [(k, self._uploads[k]) for k in sorted(self._uploads)]
        keys = (e.data["key"] for e in self._parts.latest(self._op)) if self._any_parts else ()
        return list(self), [(k, up) for k in keys if (up := self.upload(k)) is not None]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CopiedFiles) and self._rows() == other._rows()

    def __repr__(self) -> str:
        if self.bound:
            return f"CopiedFiles(journal operation {self._op})"
        return f"CopiedFiles({len(self._copied)} copied, {len(self._uploads)} under way)"


def _as_copied(d: dict[str, Any]) -> FileCopied:
    return FileCopied.from_data(d)  # type: ignore[return-value]
