"""The fake hosts' listing and reading verbs (``walk``, ``walk_pages``, ``count_files``,
``read_files``): what each means on a machine's in-memory tree, mixed into ``FakeHost``."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

from brsm.errors import RemoteError
from brsm.ports import FileIdentity, FileRead, FileTally, RemoteFile

if TYPE_CHECKING:
    from brsm.fakes.machine import Machine


class FakeListings:
    """Needs the host's ``_verb``, ``_dropped``, ``m``, ``c`` and ``name`` (``FakeHost``)."""

    name: str
    c: Any
    m: "Machine"

    async def walk(self, path: str) -> list[RemoteFile]:
        return await self._listed("walk", path)

    async def walk_pages(self, path: str, *, page: int = 1000, timeout: float = 120) -> AsyncIterator[list[RemoteFile]]:
        """What ``walk`` lists, ``page`` files at a time (sorted here; a real host lists in its own
        order). A host that goes down while it lists drops the listing."""
        files = [f.path for f in await self._listed("walk_pages", path)]
        m = self.m
        for i in range(0, len(files), max(1, page)):
            await asyncio.sleep(0)
            if self.c.faults.peek("host_down", self.name):
                raise self._dropped(f"list {path}")
            yield [self._listed_file(p) for p in files[i:i + max(1, page)]]

    def _listed_file(self, path: str) -> RemoteFile:
        ino, born = self.m.file_ident(path)
        return RemoteFile(path, len(self.m.files[path]), FileIdentity(1, ino, born, born, born))

    async def count_files(self, path: str, *, timeout: float = 120) -> FileTally:
        files = await self._listed("count_files", path)
        return FileTally(len(files), sum(f.size for f in files))

    async def _listed(self, verb: str, path: str) -> list[RemoteFile]:
        m, f = await self._verb(verb, f"list {path}")
        if f is not None:
            raise RemoteError(f"{self.name}: cannot list {path}: {f.params.get('stderr', 'injected failure')}",
                              host=self.name)
        if not m.exists(path):
            raise RemoteError(f"{self.name}: cannot list {path}: find: '{path}': No such file or directory",
                              host=self.name)
        files = [m.norm(path)] if m.norm(path) in m.files else m.under(path)
        return sorted((RemoteFile(p, len(m.files[p])) for p in files), key=lambda x: x.path)

    async def read_files(self, paths: Sequence[str], *, timeout: float = 300) -> list[FileRead]:
        """Each file's bytes as they are now; a ``verb_fail`` fault fails the whole read (every file
        answered with the problem), as the command failing does on a real host."""
        m, f = await self._verb("read_files", "read files")
        if f is not None:
            why = f"the read failed: {f.params.get('stderr', 'injected failure')}"
            return [FileRead(p, None, why) for p in paths]
        out = []
        for p in paths:
            data = m.files.get(m.norm(p)) if p == m.norm(p) else None
            out.append(FileRead(p, data) if data is not None else
                       FileRead(p, None, "not a regular file" if m.is_dir(p) else "no such file"))
        return out
