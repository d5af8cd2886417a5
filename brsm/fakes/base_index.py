"""``BaseIndex`` in memory, for the property tests of the incremental backup's logic (the real one is
brsm.adapters.base_index, on SQLite; nothing is shared with it)."""
from __future__ import annotations

from collections.abc import Sequence

from brsm.ports import BaseFile


class MemoryBaseIndex:
    def __init__(self) -> None:
        self.files: list[BaseFile] = []
        self.closed = False

    def add(self, files: Sequence[BaseFile]) -> None:
        self.files.extend(files)

    def sizes(self, sizes: Sequence[int]) -> set[int]:
        have = {f.size for f in self.files}
        return {s for s in sizes if s in have}

    def by_content(self, pairs: Sequence[tuple[int, str]]) -> dict[tuple[int, str], str]:
        out: dict[tuple[int, str], str] = {}
        for f in sorted(self.files, key=lambda f: f.key):
            if (f.size, f.sha256) in pairs:
                out.setdefault((f.size, f.sha256), f.key)
        return out

    def by_inode(self, host: str, inodes: Sequence[tuple[int, int]]) -> dict[tuple[int, int], list[BaseFile]]:
        out: dict[tuple[int, int], list[BaseFile]] = {}
        for f in sorted(self.files, key=lambda f: f.key):
            if f.host == host and f.ident is not None and (f.ident.dev, f.ident.ino) in inodes:
                out.setdefault((f.ident.dev, f.ident.ino), []).append(f)
        return out

    def close(self) -> None:
        self.closed = True
