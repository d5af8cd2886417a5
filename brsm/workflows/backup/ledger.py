"""Which files a backup has sent: the one place that answers it, so keeping them in the journal's
SQLite (queried, not folded into memory) is a change of this class only.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from brsm.engine.last_by_key import LastByKey
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
    ident: list = ABSENT  # the host file's FileIdentity.as_list() when the walk saw it
    reused_from: str = ABSENT  # the base backup whose object was copied inside the storage (nothing sent)


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


class CopiedFiles(LastByKey[FileCopied], Ledger):
    """Files copied (their FileCopied, by storage key) and multipart uploads under way (by key:
    ``{"upload_id", "part_size", "parts": [{"n", "etag", "size"}]}``), as the journal says: the last
    FileCopied of a key wins, a FileCopied ends the key's upload, and a part of another upload_id
    starts the key's upload over. Iteration is in key order.

    Bound to the journal (what a run and a resume use), every answer is a query on the operation's
    events (indexed by key: a lookup is O(log n)), and nothing per file is kept; unbound (a fold of
    events handed in), the events are folded into dicts."""

    TYPES: ClassVar[tuple[str, ...]] = (FILE_COPIED, PART_UPLOADED)

    def __init__(self) -> None:
        super().__init__(FileCopied, "key")
        self._uploads: dict[str, dict[str, Any]] = {}  # unbound only
        self._parts: Any = None  # journal.keyed.Keyed of PartUploaded by key, once bound
        self._any_parts = False  # bound: whether the journal may hold a PartUploaded of the operation

    def bind(self, journal: Any, op_id: int) -> None:
        if self._uploads:
            raise ValueError("a ledger is bound to the journal before any of its events is folded")
        super().bind(journal, op_id)
        self._parts = journal.keyed(PART_UPLOADED, "key")
        self._any_parts = self._parts.any(op_id)

    def fold(self, e: FileCopied | PartUploaded) -> None:  # type: ignore[override]
        if isinstance(e, FileCopied):
            super().fold(e)
            self._uploads.pop(e.key, None)
        elif self.bound:
            self._any_parts = True  # already in the journal
        else:
            up = self._uploads.get(e.key)
            if up is None or up["upload_id"] != e.upload_id:
                up = self._uploads[e.key] = {"upload_id": e.upload_id, "part_size": e.part_size, "parts": []}
            up["parts"] = [p for p in up["parts"] if p["n"] != e.n] + [{"n": e.n, "etag": e.etag, "size": e.size}]

    def totals(self) -> tuple[int, int]:
        """(files copied, their bytes), without a FileCopied per file in memory."""
        return self.total("size")

    def upload(self, key: str) -> dict[str, Any] | None:
        """The journaled multipart upload of ``key`` under way (not yet copied whole), or None."""
        if not self.bound:
            return self._uploads.get(key)
        if not self._any_parts:
            return None
        parts = self._parts.all(self._op, key)
        if not parts:
            return None
        last = self.last_seq(key)
        up: dict[str, Any] | None = None
        for e in parts:
            if last is not None and e.seq < last:
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
        return f"CopiedFiles({len(self)} copied, {len(self._uploads)} under way)"
