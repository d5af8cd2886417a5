"""HostsPort / HostPort over a ``FakeCluster``'s in-memory machines.

``run`` understands the argv shapes built by ``brsm.adapters.remote_cmd`` (df, mv, rm -rf, mkdir,
find), Nebula's ``scripts/nebula.service`` as that script behaves (status always exits 0, start of a
running daemon exits 1, start/stop return before the daemon listens/exits), a TCP port probe
(``timeout N bash -c 'exec 3<>/dev/tcp/$1/$2' NAME ADDRESS PORT``) and a few plain commands (true,
false, echo, printf, test -e/-d/-f, cat, mkdir without -p, sleep); anything else exits 127 "command
not found", as a shell would. Its service control shares no code with the SSH adapter's.
Errors look like SshHost's: ``RemoteError`` naming the host, with the exit status or what dropped.
"""
from __future__ import annotations

import asyncio
import hashlib
import posixpath
import re
import shlex
import time
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING

from brsm.adapters import remote_cmd
from brsm.adapters.ssh import TMP_SUFFIX
from brsm.errors import PathRefused, RemoteError
from brsm.fakes.cluster import FakeCluster, Machine
from brsm.ports import DirStat, RemoteFile, RunResult

if TYPE_CHECKING:
    from brsm.fakes.helper import FakeHelper


def _printf(fmt: str, args: list[str]) -> str:
    """The subset of printf(1) brsm and its tests use: %s, %%, \\n \\t \\0 \\\\, format reused for all args."""
    def once(items: list[str]) -> tuple[str, int]:
        out, i, used = [], 0, 0
        while i < len(fmt):
            ch = fmt[i]
            if ch == "%" and i + 1 < len(fmt):
                nxt = fmt[i + 1]
                if nxt == "s":
                    out.append(items[used] if used < len(items) else "")
                    used += 1
                elif nxt == "%":
                    out.append("%")
                else:
                    out.append(ch + nxt)
                i += 2
            elif ch == "\\" and i + 1 < len(fmt):
                out.append({"n": "\n", "t": "\t", "0": "\0", "\\": "\\"}.get(fmt[i + 1], "\\" + fmt[i + 1]))
                i += 2
            else:
                out.append(ch)
                i += 1
        return "".join(out), used

    text, used = once(args)
    if used == 0:
        return text
    rest = args[used:]
    while rest:
        more, used = once(rest)
        text += more
        rest = rest[used:]
    return text


class FakeHost:
    """One machine of a ``FakeCluster`` (implements ``brsm.ports.HostPort``)."""

    def __init__(self, cluster: FakeCluster, name: str) -> None:
        self.c = cluster
        self.name = name
        self.commands: list[tuple[str, ...]] = []
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

    # -- commands ------------------------------------------------------------------------------
    async def run(self, argv: Sequence[str], *, check: bool = True, timeout: float | None = None) -> RunResult:
        argv = tuple(str(a) for a in argv)
        if not argv:
            raise ValueError("empty argv")
        m = await self._enter(f"run {argv[0]}")
        self.commands.append(argv)
        f = self.c.faults.take("run_fail", self.name, lambda f: f.params.get("argv0") in (None, argv[0]))
        if f is not None:
            res = RunResult(int(f.params.get("exit", 1)), "", str(f.params.get("stderr", "injected failure")))
        else:
            try:
                res = await asyncio.wait_for(self._exec(m, argv), timeout)
            except asyncio.TimeoutError:
                raise RemoteError(f"{self.name}: `{shlex.join(argv)}` did not finish within {timeout}s",
                                  host=self.name, hint="the command is still running on the host or hung there") from None
        if check and res.exit_status != 0:
            tail = "\n".join((res.stderr or res.stdout).strip().splitlines()[-8:])
            raise RemoteError(f"{self.name}: `{shlex.join(argv)}` exited with status {res.exit_status}"
                              + (f":\n{tail}" if tail else ""), host=self.name)
        return res

    async def _exec(self, m: Machine, argv: tuple[str, ...]) -> RunResult:
        cmd, args = argv[0], list(argv[1:])
        ok = RunResult(0, "", "")

        def err(msg: str, code: int = 1) -> RunResult:
            return RunResult(code, "", f"{cmd}: {msg}\n")

        def opts(allowed: set[str]) -> tuple[set[str], list[str]]:
            seen, rest = set(), list(args)
            while rest and rest[0].startswith("-") and rest[0] != "-":
                o = rest.pop(0)
                if o == "--":
                    break
                if o not in allowed:
                    return {"?" + o}, rest
                seen.add(o)
            return seen, rest

        if cmd == "true":
            return ok
        if cmd == "false":
            return RunResult(1, "", "")
        if cmd == "echo":
            return RunResult(0, " ".join(args) + "\n", "")
        if cmd == "printf":
            return RunResult(0, _printf(args[0], args[1:]) if args else "", "")
        if cmd == "date" and args == ["+%s.%N"]:
            return RunResult(0, f"{time.time() + m.clock_offset:.9f}\n", "")
        if cmd == "sleep":
            await asyncio.sleep(float(args[0]))
            return ok
        if cmd == "cat":
            out = []
            for p in (args[1:] if args[:1] == ["--"] else args):  # "--" ends the options, as in coreutils
                proc = re.fullmatch(r"/proc/(\d+)/cmdline", p)
                if proc and m.cmdline(int(proc[1])) is not None:
                    out.append(m.cmdline(int(proc[1])).decode())
                    continue
                if m.norm(p) not in m.files:
                    return err(f"{p}: No such file or directory")
                out.append(m.files[m.norm(p)].decode("utf-8", "replace"))
            return RunResult(0, "".join(out), "")
        if cmd == "stat" and len(args) == 3 and args[:2] == ["--printf=%F", "--"]:
            p = args[2]
            if not m.exists(p):
                return RunResult(1, "", f"stat: cannot statx '{p}': No such file or directory")
            return RunResult(0, "regular file" if m.norm(p) in m.files else "directory", "")
        if cmd == "test" and len(args) == 2:
            flag, p = args
            hit = {"-e": m.exists(p), "-d": m.is_dir(p), "-f": m.norm(p) in m.files}.get(flag)
            return RunResult(0 if hit else 1, "", "")
        if cmd == "mkdir":
            seen, paths = opts({"-p"})
            if any(s.startswith("?") for s in seen) or not paths:
                return err("invalid option or missing operand")
            for p in paths:
                if not p.startswith("/"):
                    return err(f"{p}: relative paths are not supported by the fake")
                if "-p" not in seen:
                    if m.exists(p):
                        return err(f"cannot create directory '{p}': File exists")
                    if not m.is_dir(posixpath.dirname(m.norm(p))):
                        return err(f"cannot create directory '{p}': No such file or directory")
                try:
                    if m.norm(p) in m.files:
                        return err(f"cannot create directory '{p}': File exists")
                    m.mkdirs(p)
                except NotADirectoryError:
                    return err(f"cannot create directory '{p}': Not a directory")
            return ok
        if cmd == "rm":
            seen, paths = opts({"-rf", "-r", "-f", "-fr", "--one-file-system"})
            if any(s.startswith("?") for s in seen) or not paths:
                return err("invalid option or missing operand")
            for p in paths:
                remote_cmd.checked_path(p, what="rm -rf of")  # the fake refuses "/" as loudly as the builder
                if m.is_dir(p) and not ({"-rf", "-r", "-fr"} & seen):
                    return err(f"cannot remove '{p}': Is a directory")
                m.remove_tree(p)
            return ok
        if cmd == "mv":
            seen, paths = opts({"-T", "-f"})
            if any(s.startswith("?") for s in seen) or len(paths) != 2:
                return err("invalid option or wrong number of operands")
            src, dst = paths
            try:
                m.move(src, dst)
            except FileNotFoundError:
                return err(f"cannot stat '{src}': No such file or directory")
            except (FileExistsError, IsADirectoryError):
                return err(f"cannot move '{src}' to '{dst}': Directory not empty")
            except OSError as e:
                return err(str(e))
            return ok
        if cmd == "realpath":
            seen, paths = opts({"-e"})
            if any(x.startswith("?") for x in seen) or not paths:
                return err("invalid option or missing operand")
            missing = [p for p in paths if not m.exists(p)]
            if missing:
                return RunResult(1, "".join(m.norm(p) + "\n" for p in paths if m.exists(p)),
                                 "".join(f"realpath: {p}: No such file or directory\n" for p in missing))
            return RunResult(0, "".join(m.norm(p) + "\n" for p in paths), "")
        if cmd == "cp" and len(args) >= 4 and args[0] == "-t" and args[2] == "--":
            dest, srcs = args[1], args[3:]
            if not m.is_dir(dest):
                return err(f"target '{dest}': No such file or directory")
            for src in srcs:
                if m.norm(src) not in m.files:
                    return err(f"cannot stat '{src}': No such file or directory")
                m.put(posixpath.join(dest, posixpath.basename(src)), m.files[m.norm(src)])
            return ok
        if cmd == "cp" and len(args) == 3 and args[0] == "-a":
            src, dst = m.norm(args[1]), m.norm(args[2])
            if not m.exists(src):
                return err(f"cannot stat '{args[1]}': No such file or directory")
            if m.exists(dst):
                return err(f"'{args[2]}' exists (the fake copies into new paths only)")
            if src in m.files:
                m.put(dst, m.files[src])
                return ok
            m.mkdirs(dst)
            for d in [d for d in m.dirs if d.startswith(src + "/")]:
                m.mkdirs(dst + d[len(src):])
            for f in m.under(src):
                m.put(dst + f[len(src):], m.files[f])
            return ok
        if cmd == "df":
            path = args[-1]
            if not m.exists(path):
                return err(f"{path}: No such file or directory")
            free = 0 if self.c.faults.peek("disk_full", self.name) else m.free()
            return RunResult(0, f"    Avail\n{free}\n", "")
        if cmd == "find" and len(args) == 5 and args[1:4] == ["-type", "f", "-printf"]:
            root = args[0]
            if not m.exists(root):
                return err(f"'{root}': No such file or directory")
            files = [root] if m.norm(root) in m.files else m.under(root)
            fmt = args[4]
            # Escapes belong to the format only: a file named "\\0" must come out as itself.
            fmt = fmt.replace("\\0", "\0").replace("\\n", "\n")
            out = "".join(fmt.replace("%s", str(len(m.files[f]))).replace("%p", f) for f in files)
            return RunResult(0, out, "")
        if cmd == "sha256sum" and args[:1] == ["--"]:
            lines, missing = [], []
            for f in args[1:]:
                if m.norm(f) in m.files:
                    lines.append(f"{hashlib.sha256(m.files[m.norm(f)]).hexdigest()}  {f}\n")
                else:
                    missing.append(f"sha256sum: {f}: No such file or directory\n")
            return RunResult(1 if missing else 0, "".join(lines), "".join(missing))
        if cmd == "find" and args[:1] == ["/proc"]:  # processes using a dir: the fake's daemons hold no files
            return ok
        if cmd == "env" and len(args) >= 2 and args[0] == "LC_ALL=C":  # the fake speaks only the C locale
            return await self._exec(m, tuple(args[1:]))
        if cmd == "timeout" and len(args) >= 2:  # timeout SECONDS COMMAND...: the fake never runs that long
            return await self._exec(m, tuple(args[1:]))
        if cmd == "bash" and len(args) >= 4 and args[0] == "-c" and args[2] == "brsm-host-check":
            return await self._host_check(m, args[3:])
        if cmd == "bash" and len(args) >= 2 and args[0] == "-c" and 'find "$d"' in args[1]:
            return self._fingerprint(m, args[1], args[3:])
        if cmd == "bash" and len(args) == 5 and args[0] == "-c" and "/dev/tcp/$1/$2" in args[1]:
            return self._port_probe(args[3], args[4])
        if cmd.endswith("/scripts/nebula.service"):
            return self._service(m, cmd, args)
        return RunResult(127, "", f"bash: {cmd}: command not found\n")

    async def _host_check(self, m: Machine, args: list[str]) -> RunResult:
        """The restore's one-exec "is it down?": per (svc, install, address, port) the status text and
        the port probe's verdict, then the processes using the data dirs (none: the fake's daemons
        hold no files)."""
        n, rest, out = int(args[0]), args[1:], []
        for i in range(n):
            svc, inst, addr, port = rest[4 * i:4 * i + 4]
            out.append(f"== status {svc}")
            r = self._service(m, f"{inst}/scripts/nebula.service", ["status", svc])
            out.append((r.stdout + r.stderr).rstrip("\n"))
            out.append(f"== port {svc} {'open' if self._port_probe(addr, port).exit_status == 0 else 'closed'}")
        out.append("== users")
        if rest[4 * n:]:
            out.append((await self._exec(m, tuple(rest[4 * n:]))).stdout.rstrip("\n"))
        return RunResult(0, "\n".join(x for x in out if x) + "\n", "")

    @staticmethod
    def _fingerprint(m: Machine, script: str, dirs: list[str]) -> RunResult:
        """The restore's fingerprint script: per dir a ``== DIR`` header, then one sorted line per file
        below it (and, for format 2, which lists every entry by type, per dir), ``ingest/`` skipped,
        or ``absent``. The fake has no mtimes, ctimes or inodes: a file's line carries the content's
        SHA-256 instead, so any write changes it as a real ctime would. It has no links either."""
        out = []
        for d in dirs:
            out.append(f"== {d}")
            if not m.is_dir(d):
                out.append("absent")
                continue
            pre = m.norm(d).rstrip("/") + "/"
            rels = sorted(f[len(pre):] for f in m.under(d))
            lines = [f"{r}\tf\t{len(m.files[pre + r])}\t{hashlib.sha256(m.files[pre + r]).hexdigest()}"
                     for r in rels if not r.startswith("ingest/")]
            # every entry, not only files (format 2 lists each by type): the fake's only other kind is a dir
            if "%y" in script:
                lines += [f"{x[len(pre):]}\td" for x in m.dirs if x.startswith(pre) and x[len(pre):] != "ingest"
                          and not x[len(pre):].startswith("ingest/")]
            out += sorted(lines)
        return RunResult(0, "\n".join(out) + "\n", "")

    def _port_probe(self, address: str, port: str) -> RunResult:
        """``bash -c 'exec 3<>/dev/tcp/$1/$2' NAME ADDRESS PORT``: connect to a service port."""
        m = self.c.machines.get(address)
        svc = next((s for s, p in (m.services.items() if m else ()) if str(p) == port), None)
        if m is None or svc is None or self.c.faults.peek("host_down", address):
            return RunResult(1, "", f"bash: connect: Connection refused\nbash: /dev/tcp/{address}/{port}: Connection refused\n")
        _running, listening = self.c.observe(address, svc)
        if listening:
            return RunResult(0, "", "")
        return RunResult(1, "", f"bash: connect: Connection refused\nbash: /dev/tcp/{address}/{port}: Connection refused\n")

    def _service(self, m: Machine, script: str, args: list[str]) -> RunResult:
        """Nebula's scripts/nebula.service as it behaves: ``status`` always exits 0 and only its text
        tells; ``start`` of a running daemon is an error (exit 1, and ``all`` stops there); ``start``
        and ``stop`` return before the daemon listens or exits; ``restart`` = stop, wait, start."""
        if m.norm(script) not in m.files:
            return RunResult(127, "", f"bash: {script}: No such file or directory\n")
        actions = ("start", "stop", "restart", "kill", "status")
        if len(args) != 2 or args[0] not in actions or args[1] not in ("metad", "graphd", "storaged", "all"):
            return RunResult(1, "Usage: nebula.service [-v] [-c /path/to/config] "
                                "<start|stop|restart|status|kill> <metad|graphd|storaged|all>\n", "")
        action, target = args
        svcs = [s for s in ("metad", "graphd", "storaged") if s in m.services] if target == "all" else [target]
        out: list[str] = []

        def done(rc: int = 0, err: str = "") -> RunResult:
            return RunResult(rc, "".join(o + "\n" for o in out), err)

        for s in svcs:
            if s not in m.services:
                return done(1, f"[ERROR] {m.install_dir}/etc/nebula-{s}.conf not found\n")
            if action == "status":
                running, listening = self.c.observe(m.name, s)
                if running:
                    if s == "storaged" and not listening:
                        out.append("[WARN] nebula-storaged after v3.0.0 will not start service until it is added to cluster.")
                        out.append("[WARN] See Manage Storage hosts:ADD HOSTS in https://docs.nebula-graph.io/")
                    out.append(f"[INFO] nebula-{s}(fake): Running as {m.pids[s]}, Listening on {m.services[s]}")
                else:
                    out.append(f"[INFO] nebula-{s}(fake): Exited")
                continue
            if action in ("stop", "restart"):
                out.append(f"[INFO] Stopping nebula-{s}...")
                self.c.stop_service(m.name, s)
                out.append("[INFO] Done")
            if action == "kill":
                out.append(f"[INFO] Force killing nebula-{s}...")
                self.c.stop_service(m.name, s, kill=True)
                out.append("[INFO] Done")
            if action == "restart":
                self.c.stop_service(m.name, s, kill=True)  # it waits up to 5 s for the exit: long enough here
            if action in ("start", "restart"):
                pid = self.c.start_service(m.name, s)
                if pid is not None:
                    return done(1, f"[ERROR] nebula-{s} already running: {pid}\n")
                out.append(f"[INFO] Starting nebula-{s}...")
                out.append("[INFO] Done")
        return done()

    # -- files ---------------------------------------------------------------------------------
    async def exists(self, path: str) -> bool:
        m = await self._enter(f"stat {path}")
        return m.exists(path)

    async def walk(self, path: str) -> list[RemoteFile]:
        res = await self.run(remote_cmd.find_files_argv(path), check=False)
        if res.exit_status != 0:
            raise RemoteError(f"{self.name}: cannot list {path}: {res.stderr.strip() or 'find failed'}", host=self.name)
        return sorted((RemoteFile(p, s) for p, s in remote_cmd.parse_find_files(res.stdout)), key=lambda f: f.path)

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
        await self.run(remote_cmd.rm_rf_argv(path))

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
        return remote_cmd.parse_df((await self.run(remote_cmd.df_argv(path))).stdout)

    async def service(self, action: str, name: str, *, install_dir: str | None = None) -> RunResult:
        """Run nebula.service; never raises on its exit status (HostPort's contract)."""
        if action not in ("start", "stop", "restart", "kill", "status"):
            raise ValueError(f"unknown service action {action!r}")
        if name not in ("metad", "storaged", "graphd", "all"):
            raise ValueError(f"unknown service {name!r}")
        script = posixpath.join(install_dir or self.c.install_dir, "scripts", "nebula.service")
        return await self.run((script, action, name), check=False)

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
