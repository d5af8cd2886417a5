"""HostsPort / HostPort over a ``FakeCluster``'s in-memory machines.

Each verb does what it means on the machine's file tree and daemons: no command text is built or
parsed here. Nebula's ``scripts/nebula.service`` behaves as that script does (status always exits 0,
start of a running daemon exits 1, start/stop return before the daemon listens/exits). Its service
control shares no code with the SSH adapter's. Errors look like SshHost's: ``RemoteError`` naming
the host, with the exit status or what dropped. The ``verb_fail`` fault makes one verb fail the way
its command failing on a real host makes the SSH adapter's verb fail (raise, or answer "nothing").
"""
from __future__ import annotations

import asyncio
import fnmatch
import hashlib
import posixpath
import time
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING

from brsm.adapters import remote_cmd
from brsm.adapters.ssh import TMP_SUFFIX
from brsm.errors import PathRefused, RemoteError
from brsm.fakes.cluster import FakeCluster
from brsm.fakes.faults import Fault
from brsm.fakes.listing import FakeListings
from brsm.fakes.machine import Machine
from brsm.fakes.nebula_service import SERVICE_ACTIONS, SERVICE_NAMES, nebula_service
from brsm.ports import (DaemonProbe, DaemonSeen, DirStat, HostCheck, PathKind, ProcessUnseen, RealPaths, RunResult,
                        TreeFingerprint)

if TYPE_CHECKING:
    from brsm.fakes.helper import FakeHelper



class FakeHost(FakeListings):
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

    async def _enter(self, what: str) -> Machine:
        await asyncio.sleep(0)
        if self.c.faults.take("host_down", self.name) is not None:
            raise RemoteError(f"{self.name}: {what}: connection to {self.name}:22 refused", host=self.name,
                              hint="is sshd running on that host, and is the SSH port right?")
        if self.name not in self.c.machines:
            raise RemoteError(f"{self.name}: {what}: cannot reach {self.name}:22", host=self.name)
        return self.m

    def _dropped(self, what: str) -> RemoteError:
        return RemoteError(f"{self.name}: {what}: SSH connection to {self.name}:22 dropped (fault)", host=self.name,
                           hint="the host or its sshd went away; retry (the connection is reopened)")

    async def _verb(self, verb: str, what: str) -> tuple[Machine, Fault | None]:
        """The machine (raising as SSH would when it cannot be reached) and the ``verb_fail`` fault
        this call takes, if any."""
        m = await self._enter(what)
        self.verbs.append(verb)
        return m, self.c.faults.take("verb_fail", self.name, lambda f: f.params.get("verb") in (None, verb))

    def _failed(self, what: str, f: Fault) -> RemoteError:
        stderr = str(f.params.get("stderr", "injected failure"))
        return RemoteError(f"{self.name}: `{what}` exited with status {int(f.params.get('exit', 1))}:\n{stderr}",
                           host=self.name)

    # -- looks -----------------------------------------------------------------------------------
    async def check_login(self, *, timeout: float = 30) -> None:
        _m, f = await self._verb("check_login", "run true")
        if f is not None:
            raise self._failed("true", f)

    async def read_text(self, path: str, *, timeout: float = 30) -> str | None:
        m, f = await self._verb("read_text", f"read {path}")
        data = m.files.get(m.norm(path))
        return None if f is not None or data is None else data.decode("utf-8", "replace")

    async def process_argv(self, pid: int, *, timeout: float = 30) -> tuple[str, ...] | ProcessUnseen:
        m, f = await self._verb("process_argv", f"read /proc/{pid}/cmdline")
        raw = None if f is not None else m.cmdline(int(pid))
        if raw is None:
            return ProcessUnseen(f"cat: /proc/{pid}/cmdline: No such file or directory")
        return tuple(a.decode() for a in raw.split(b"\0")[:-1])

    async def path_kind(self, path: str, *, timeout: float) -> PathKind:
        m, f = await self._verb("path_kind", f"stat {path}")
        above = posixpath.dirname(m.norm(path))
        while f is None and above != "/":
            if above in m.files:  # ENOTDIR: the look failed, which is not "nothing there"
                f = Fault("verb_fail", self.name, 1, {"stderr": f"stat: cannot statx '{path}': Not a directory"})
            above = posixpath.dirname(above)
        if f is not None:
            raise RemoteError(f"could not look at {path}: stat exited with status {int(f.params.get('exit', 1))}: "
                              f"{str(f.params.get('stderr', 'injected failure'))[:200]}",
                              hint="check the host (permissions, a hung mount), then run brsm again")
        if m.norm(path) in m.files:
            return "file"
        return "other" if m.is_dir(path) else "none"

    async def claim_dir(self, path: str, *, timeout: float) -> bool:
        m, f = await self._verb("claim_dir", f"mkdir {path}")
        if f is not None or not path.startswith("/") or m.exists(path):
            return False
        if not m.is_dir(posixpath.dirname(m.norm(path))):
            return False
        m.mkdirs(path)
        return True

    async def clock(self, *, timeout: float) -> float:
        m, f = await self._verb("clock", "date")
        if f is not None:
            raise RemoteError(f"could not read the clock of {self.name} (`date +%s.%N` printed ''", host=self.name,
                              hint="brsm judges its lease by the metad host's clock; check that `date` runs there")
        return time.time() + m.clock_offset

    async def device_ids(self, paths: Sequence[str], *, timeout: float = 30) -> tuple[int, ...] | None:
        """The fake has one file system per machine."""
        m, f = await self._verb("device_ids", "stat")
        if f is not None or not all(m.exists(p) for p in paths):
            return None
        return tuple(1 for _ in paths)

    async def real_paths(self, paths: Sequence[str], *, timeout: float = 30) -> RealPaths:
        """The fake has no links: a path that exists is its own real path."""
        m, f = await self._verb("real_paths", "realpath")
        if f is not None:
            return RealPaths(None, str(f.params.get("stderr", "injected failure")))
        missing = [p for p in paths if not m.exists(p)]
        if missing:
            return RealPaths(None, "\n".join(f"realpath: {p}: No such file or directory" for p in missing))
        return RealPaths(tuple(m.norm(p) for p in paths))

    async def list_named(self, path: str, patterns: Sequence[str], *, dirs_only: bool = False,
                         timeout: float | None = None) -> list[str]:
        m, f = await self._verb("list_named", f"list {path}")
        if f is not None or not m.is_dir(path):
            return []
        pre = m.norm(path).rstrip("/") + "/"
        names = {x[len(pre):].split("/")[0] for x in (*m.files, *m.dirs) if x.startswith(pre)}
        out = []
        for n in sorted(names):
            full = pre + n
            if dirs_only and not m.is_dir(full):
                continue
            if any(fnmatch.fnmatchcase(n, p) for p in patterns):
                out.append(full)
        return out

    async def hash_files(self, paths: Sequence[str], *, timeout: float = 3600) -> dict[str, str]:
        m, f = await self._verb("hash_files", "sha256sum")
        if f is not None:
            return {}
        return {p: hashlib.sha256(m.files[m.norm(p)]).hexdigest() for p in paths if m.norm(p) in m.files}

    async def fingerprint_trees(self, dirs: Sequence[str], *, fmt: int,
                                timeout: float = 3600) -> dict[str, TreeFingerprint]:
        """One sorted line per file below each dir (and, for format 2, which lists every entry by type,
        per dir), ``ingest/`` left out. The fake has no mtimes, ctimes or inodes: a file's line carries
        the content's SHA-256 instead, so any write changes it as a real ctime would. It has no links
        either."""
        if fmt not in (1, 2):
            raise ValueError(f"unknown fingerprint format {fmt!r}")
        m, f = await self._verb("fingerprint_trees", "fingerprint")
        if f is not None:
            raise self._failed("fingerprint", f)
        out = {}
        for d in dirs:
            if not m.is_dir(d):
                out[d] = TreeFingerprint(None)
                continue
            pre = m.norm(d).rstrip("/") + "/"
            rels = sorted(x[len(pre):] for x in m.under(d))
            lines = [f"{r}\tf\t{len(m.files[pre + r])}\t{hashlib.sha256(m.files[pre + r]).hexdigest()}"
                     for r in rels if not r.startswith("ingest/")]
            if fmt == 2:  # every entry, not only files: the fake's only other kind is a dir
                lines += [f"{x[len(pre):]}\td" for x in m.dirs if x.startswith(pre) and x[len(pre):] != "ingest"
                          and not x[len(pre):].startswith("ingest/")]
            out[d] = TreeFingerprint(hashlib.sha256("\n".join(sorted(lines)).encode()).hexdigest())
        return out

    async def check_daemons(self, daemons: Sequence[DaemonProbe], dirs: Sequence[str], *,
                            timeout: float = 60) -> HostCheck:
        """Each daemon's status text and port, and the pids of the machine's ``holders`` of a path in
        one of ``dirs`` (the fake's daemons hold no files of their own)."""
        m, f = await self._verb("check_daemons", "check")
        if f is not None:
            return HostCheck({})
        seen = {}
        for d in daemons:
            r = nebula_service(self.c, m, d.install_dir, "status", d.service)
            seen[d.service] = DaemonSeen((r.stdout + r.stderr).rstrip("\n"), self._port_open(d.address, d.port))
        pres = [m.norm(x).rstrip("/") for x in dirs]
        users = {pid for path, pid in m.holders.items()
                 if any(m.norm(path) == p or m.norm(path).startswith(p + "/") for p in pres)}
        return HostCheck(seen, tuple(sorted(users)))

    def _port_open(self, address: str, port: int) -> bool:
        """Whether a connection to ``address:port`` is accepted: a daemon of that machine listens there."""
        m = self.c.machines.get(address)
        svc = next((s for s, p in (m.services.items() if m else ()) if int(p) == int(port)), None)
        if m is None or svc is None or self.c.faults.peek("host_down", address):
            return False
        _running, listening = self.c.observe(address, svc)
        return listening

    # -- changes ---------------------------------------------------------------------------------
    async def copy_tree(self, src: str, dst: str) -> None:
        m, f = await self._verb("copy_tree", f"cp -a {src} {dst}")
        if f is not None:
            raise self._failed(f"cp -a {src} {dst}", f)
        s, d = m.norm(src), m.norm(dst)
        if not m.exists(s):
            raise RemoteError(f"{self.name}: cp: cannot stat '{src}': No such file or directory", host=self.name)
        if m.exists(d):
            raise RemoteError(f"{self.name}: cp: '{dst}' exists (the fake copies into new paths only)", host=self.name)
        if s in m.files:
            m.put(d, m.files[s])
            return
        m.mkdirs(d)
        for x in [x for x in m.dirs if x.startswith(s + "/")]:
            m.mkdirs(d + x[len(s):])
        for x in m.under(s):
            m.put(d + x[len(s):], m.files[x])

    async def copy_into(self, files: Sequence[str], dest_dir: str) -> None:
        m, f = await self._verb("copy_into", f"cp -t {dest_dir}")
        if f is not None:
            raise self._failed(f"cp -t {dest_dir}", f)
        if not m.is_dir(dest_dir):
            raise RemoteError(f"{self.name}: cp: target '{dest_dir}': No such file or directory", host=self.name)
        for src in files:
            if m.norm(src) not in m.files:
                raise RemoteError(f"{self.name}: cp: cannot stat '{src}': No such file or directory", host=self.name)
            m.put(posixpath.join(dest_dir, posixpath.basename(src)), m.files[m.norm(src)])

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
