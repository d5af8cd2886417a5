"""The ``HostPort`` verbs over a ``FakeCluster``'s machine, as ``brsm.adapters.ssh_verbs`` holds them
over SSH: what workflows ask a host (hash these files, fingerprint these trees, is this daemon
down, copy this tree) answered from the machine's file tree and daemons.

Kept apart from ``FakeHost`` (brsm.fakes.hosts), which holds the file I/O and service control.
Each verb takes the ``verb_fail`` fault meant for it and fails the way its command failing on a
real host makes the SSH adapter's verb fail: raise, or answer "nothing".
"""
from __future__ import annotations

import asyncio
import fnmatch
import hashlib
import posixpath
import time
from collections.abc import Sequence

from brsm.errors import RemoteError
from brsm.fakes.cluster import FakeCluster
from brsm.fakes.faults import Fault
from brsm.fakes.machine import Machine
from brsm.fakes.nebula_service import nebula_service
from brsm.ports import DaemonProbe, DaemonSeen, HostCheck, PathKind, ProcessUnseen, RealPaths, TreeFingerprint


class FakeVerbs:
    """How a verb reaches the machine, and the verbs (``FakeHost`` builds on this, as ``SshHost`` on
    ``SshVerbs``). Reaching is here because every verb goes through it, FakeHost's file I/O too:
    ``_enter`` fails as SSH does when the host is down or unknown, ``_verb`` also takes the
    ``verb_fail`` fault meant for that verb, whose error ``_failed`` words as ``SshHost.run`` would."""

    c: FakeCluster
    name: str
    verbs: list[str]  # every verb asked, in order (FakeHost's)

    async def _enter(self, what: str) -> Machine:
        await asyncio.sleep(0)
        if self.c.faults.take("host_down", self.name) is not None:
            raise RemoteError(f"{self.name}: {what}: connection to {self.name}:22 refused", host=self.name,
                              hint="is sshd running on that host, and is the SSH port right?")
        if self.name not in self.c.machines:
            raise RemoteError(f"{self.name}: {what}: cannot reach {self.name}:22", host=self.name)
        return self.c.machine(self.name)

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
