"""Which files a backup has sent: the one place that answers it, so keeping them in the journal's
SQLite (queried, not folded into memory) is a change of this class only.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

FILE_COPIED = "FileCopied"  # {key, host, path, size, sha256}: the object is in storage, whole
PART_UPLOADED = "PartUploaded"  # {key, upload_id, part_size, n, etag, size}: a part of an upload under way


class CopiedFiles:
    """Files copied (their FileCopied payloads, by storage key) and multipart uploads under way (by key:
    ``{"upload_id", "part_size", "parts": [{"n", "etag", "size"}]}``), as the journal says."""

    def __init__(self) -> None:
        self._copied: dict[str, dict[str, Any]] = {}
        self._uploads: dict[str, dict[str, Any]] = {}

    def fold(self, type_: str, d: dict[str, Any]) -> None:
        if type_ == FILE_COPIED:
            self._copied[d["key"]] = d
            self._uploads.pop(d["key"], None)
        elif type_ == PART_UPLOADED:
            up = self._uploads.get(d["key"])
            if up is None or up["upload_id"] != d["upload_id"]:
                up = self._uploads[d["key"]] = {"upload_id": d["upload_id"], "part_size": d["part_size"], "parts": []}
            up["parts"] = [p for p in up["parts"] if p["n"] != d["n"]] + [{"n": d["n"], "etag": d["etag"], "size": d["size"]}]

    def done(self, key: str) -> bool:
        return key in self._copied

    def get(self, key: str) -> dict[str, Any] | None:
        """The FileCopied payload of ``key``, or None."""
        return self._copied.get(key)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Every copied file's FileCopied payload."""
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
