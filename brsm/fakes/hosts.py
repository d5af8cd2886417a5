"""HostsPort / HostPort over a ``FakeCluster``'s in-memory machines.

Each verb does what it means on the machine's file tree and daemons: no command text is built or
parsed here. Nebula's ``scripts/nebula.service`` behaves as that script does (status always exits 0,
start of a running daemon exits 1, start/stop return before the daemon listens/exits). Its service
control shares no code with the SSH adapter's. Errors look like SshHost's: ``RemoteError`` naming
the host, with the exit status or what dropped. The ``verb_fail`` fault makes one verb fail the way
its command failing on a real host makes the SSH adapter's verb fail (raise, or answer "nothing").
Here: file I/O and service control; reaching the machine and the verbs workflows ask (hash,
fingerprint, is it down, copy) are in ``host_verbs``, as the SSH adapter's verbs are in ``ssh_verbs``.
"""
from __future__ import annotations

import asyncio
import posixpath
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from brsm.adapters import remote_cmd
from brsm.adapters.ssh import TMP_SUFFIX
from brsm.errors import PathRefused, RemoteError
from brsm.fakes.cluster import FakeCluster
from brsm.fakes.host_verbs import FakeVerbs
from brsm.fakes.listing import FakeListings
from brsm.fakes.machine import Machine
from brsm.fakes.nebula_service import SERVICE_ACTIONS, SERVICE_NAMES, nebula_service
from brsm.ports import DirStat, RunResult

if TYPE_CHECKING:
    from brsm.fakes.helper import FakeHelper


class FakeHost(FakeVerbs, FakeListings):
    """One machine of a ``FakeCluster`` (implements ``brsm.ports.HostPort``)."""

    def __init__(self, cluster: FakeCluster, name: str) -> None:
        self.c = cluster
        self.name = name
        self.verbs: list[str] = []  # every verb asked, in order
        self.closed = False
        self.helpers: list = []  # every helper started, for close()

    @property
    def m(self) -> Machine:
        return self.c.machine(self.name)

    def __repr__(self) -> str:
        return f"FakeHost({self.name!r})"

    # -- files ---------------------------------------------------------------------------------
    async def exists(self, path: str) -> bool:
        m = await self._enter(f"stat {path}")
        return m.exists(path)

    async def open_read(self, path: str, *, offset: int = 0, block_size: int = 1 << 20) -> AsyncIterator[bytes]:
        m = await self._enter(f"open {path}")
        data = m.files.get(m.norm(path))
        if data is None:
            raise RemoteError(f"{self.name}: open {path}: No such file", host=self.name)
        drop = self.c.faults.take("disconnect", self.name)
        limit = int(drop.params.get("after_bytes", 0)) if drop else None
        pos = offset
        while pos < len(data):
            await asyncio.sleep(0)
            if self.c.faults.peek("host_down", self.name):
                raise self._dropped(f"read {path}")
            end = min(pos + block_size, len(data))
            if limit is not None and end - offset > limit:
                if limit > pos - offset:
                    yield data[pos:offset + limit]
                raise self._dropped(f"read {path}")
            yield data[pos:end]
            pos = end

    async def write_file(self, path: str, chunks: AsyncIterator[bytes], *, mode: int = 0o644) -> int:
        m = await self._enter(f"create {path + TMP_SUFFIX}")
        tmp = m.norm(path + TMP_SUFFIX)
        drop = self.c.faults.take("disconnect", self.name)
        limit = int(drop.params.get("after_bytes", 0)) if drop else None
        written = 0
        buf = bytearray()
        ok = False
        if m.is_dir(tmp):  # the fake's only name that is not a regular file: never written through
            raise RemoteError(f"{self.name}: refusing to write {tmp}: a directory brsm did not create is in the way",
                              host=self.name, hint="remove it, then run the command again")
        m.put(tmp, b"", mode)  # a stale regular temp file is replaced, as SshHost removes it after lstat
        try:
            async for chunk in chunks:
                if self.c.faults.peek("host_down", self.name):
                    raise self._dropped(f"write {tmp}")
                if limit is not None and written + len(chunk) > limit:
                    raise self._dropped(f"write {tmp}")
                if self.c.faults.peek("disk_full", self.name) or len(chunk) > m.free():
                    self.c.faults.take("disk_full", self.name)
                    raise RemoteError(f"{self.name}: write {tmp}: No space left on device (fault)", host=self.name,
                                      hint="free space on that host's data path")
                buf += chunk
                written += len(chunk)
                m.files[tmp] = bytes(buf)  # a partial temp file is visible, the final name is not touched
            if m.is_dir(path):
                raise RemoteError(f"{self.name}: rename {tmp} -> {path}: Is a directory", host=self.name)
            m.files.pop(tmp)
            m.modes.pop(tmp, None)
            m.put(path, bytes(buf), mode)
            ok = True
            return written
        finally:
            if not ok and hasattr(chunks, "aclose"):
                try:
                    await chunks.aclose()
                except Exception:  # noqa: BLE001
                    pass
            if not ok and self.name in self.c.machines:
                m.files.pop(tmp, None)
                m.modes.pop(tmp, None)

    async def rename(self, src: str, dst: str) -> None:
        remote_cmd.checked_path(src)
        remote_cmd.checked_path(dst)
        m = await self._enter(f"rename {src} -> {dst}")
        try:
            m.move(src, dst)
        except FileNotFoundError:
            raise RemoteError(f"{self.name}: rename {src} -> {dst}: No such file", host=self.name) from None
        except OSError as e:
            raise RemoteError(f"{self.name}: rename {src} -> {dst}: {e.__class__.__name__}", host=self.name) from None

    async def makedirs(self, path: str) -> None:
        path = remote_cmd.checked_path(path, what="makedirs of")
        m = await self._enter(f"makedirs {path}")
        try:
            m.mkdirs(path)
        except NotADirectoryError:
            raise RemoteError(f"{self.name}: makedirs {path}: Not a directory", host=self.name) from None

    async def remove_tree(self, path: str) -> None:
        path = remote_cmd.checked_path(path, what="rm -rf of")  # refused as loudly as the adapter's
        m, f = await self._verb("remove_tree", f"rm {path}")
        if f is not None:
            raise self._failed(f"rm -rf {path}", f)
        m.remove_tree(path)

    async def lstat_dir(self, path: str) -> DirStat | None:
        """As SshHost's: None when missing, refused when a component is a file (the fake has no links)."""
        path = remote_cmd.checked_path(path, what="lstat of")
        m = await self._enter(f"lstat {path}")
        parts = path.strip("/").split("/")
        for i in range(len(parts)):
            comp = "/" + "/".join(parts[:i + 1])
            if comp in m.files:
                raise PathRefused(f"{self.name}: refusing {path}: {comp} is a regular file, not a directory",
                                  host=self.name, hint="look at what put that there")
            if not m.is_dir(comp):
                return None
        pre = path + "/"
        empty = not any(f.startswith(pre) for f in m.files) and not any(d.startswith(pre) for d in m.dirs)
        return DirStat(dev=1, ino=m.inode(path), mine=True, empty=empty)

    async def make_dir(self, path: str) -> DirStat:
        """Exactly ``path``, never an existing one; its parent must exist (mkdir(2))."""
        path = remote_cmd.checked_path(path, what="mkdir of")
        if await self.lstat_dir(path) is not None:
            raise RemoteError(f"{self.name}: cannot create {path}: it exists already", host=self.name,
                              hint="a name already there was not made by brsm in this operation: look at it, "
                                   "remove it, then run the command again")
        m = await self._enter(f"mkdir {path}")
        if m.exists(path) or not m.is_dir(posixpath.dirname(path)):
            raise RemoteError(f"{self.name}: cannot create {path}: mkdir: cannot create directory '{path}': "
                              + ("File exists" if m.exists(path) else "No such file or directory"), host=self.name)
        m.mkdirs(path)
        made = await self.lstat_dir(path)
        assert made is not None
        return made

    async def free_bytes(self, path: str) -> int:
        m, f = await self._verb("free_bytes", f"statvfs {path}")
        if f is not None:
            raise self._failed(f"df {path}", f)
        if not m.exists(path):
            raise RemoteError(f"{self.name}: statvfs {path}: No such file", host=self.name)
        return 0 if self.c.faults.peek("disk_full", self.name) else m.free()

    async def service(self, action: str, name: str, *, install_dir: str | None = None) -> RunResult:
        """Run nebula.service; never raises on its exit status (HostPort's contract)."""
        if action not in SERVICE_ACTIONS:
            raise ValueError(f"unknown service action {action!r}")
        if name not in SERVICE_NAMES:
            raise ValueError(f"unknown service {name!r}")
        m, f = await self._verb("service", f"nebula.service {action} {name}")
        if f is not None:
            return RunResult(int(f.params.get("exit", 1)), "", str(f.params.get("stderr", "injected failure")))
        return nebula_service(self.c, m, install_dir or self.c.install_dir, action, name)

    async def start_helper(self) -> "FakeHelper":
        """The direct data path's helper (brsm.fakes.helper); it ends with this host's connection."""
        from brsm.fakes.helper import FakeHelper

        await self._enter("start the direct-path helper")
        helper = FakeHelper(self)
        self.helpers.append(helper)
        return helper

    async def close(self) -> None:
        self.closed = True
        helpers, self.helpers = self.helpers, []
        for h in helpers:
            await h.close()


class FakeHosts:
    """Implements ``brsm.ports.HostsPort`` over a ``FakeCluster``."""

    def __init__(self, cluster: FakeCluster) -> None:
        self.c = cluster
        self._hosts: dict[str, FakeHost] = {}

    def host(self, name: str) -> FakeHost:
        if name not in self.c.machines:
            raise RemoteError(f"no SSH settings for host {name!r}", host=name,
                              hint=f"add it to the config's hosts (known: {', '.join(sorted(self.c.machines))})")
        h = self._hosts.get(name)
        if h is None:
            h = self._hosts[name] = FakeHost(self.c, name)
        return h

    async def close(self) -> None:
        for h in self._hosts.values():
            await h.close()
