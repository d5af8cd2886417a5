"""Which files a backup has sent: the one place that answers it, so keeping them in the journal's
SQLite (queried, not folded into memory) is a change of this class only.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from brsm.engine.state import ABSENT, Event

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


class CopiedFiles:
    """Files copied (their FileCopied, by storage key) and multipart uploads under way (by key:
    ``{"upload_id", "part_size", "parts": [{"n", "etag", "size"}]}``), as the journal says."""

    def __init__(self) -> None:
        self._copied: dict[str, FileCopied] = {}
        self._uploads: dict[str, dict[str, Any]] = {}

    def fold(self, e: FileCopied | PartUploaded) -> None:
        if isinstance(e, FileCopied):
            self._copied[e.key] = e
            self._uploads.pop(e.key, None)
        else:
            up = self._uploads.get(e.key)
            if up is None or up["upload_id"] != e.upload_id:
                up = self._uploads[e.key] = {"upload_id": e.upload_id, "part_size": e.part_size, "parts": []}
            up["parts"] = [p for p in up["parts"] if p["n"] != e.n] + [{"n": e.n, "etag": e.etag, "size": e.size}]

    def done(self, key: str) -> bool:
        return key in self._copied

    def get(self, key: str) -> FileCopied | None:
        return self._copied.get(key)

    def __iter__(self) -> Iterator[FileCopied]:
        return iter(self._copied.values())

    def __len__(self) -> int:
        return len(self._copied)

    def upload(self, key: str) -> dict[str, Any] | None:
        """The journaled multipart upload of ``key`` under way (not yet copied whole), or None."""
        return self._uploads.get(key)

    def uploads(self) -> Iterator[dict[str, Any]]:
        return iter(self._uploads.values())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CopiedFiles) and (self._copied, self._uploads) == (other._copied, other._uploads)

    def __repr__(self) -> str:
        return f"CopiedFiles({len(self._copied)} copied, {len(self._uploads)} under way)"
