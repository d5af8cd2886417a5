"""The ``HostPort`` verbs whose answer is too big to hold: a listing read in pages as ``find`` prints
it, a count of it, and many small files in one ``tar`` read (mixed into ``SshHost``).

Each runs one command (``remote_cmd``) on its own SSH channel; every wait for the host's next bytes
has a timeout, and a consumer that stops early closes the channel (the remote ``find`` ends on its
next write). What the command wrote to stderr is kept (its tail) for the error it ends with.
"""
from __future__ import annotations

import asyncio
import shlex
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import asyncssh

from brsm.adapters import remote_cmd, remote_tar
from brsm.adapters.ssh_exec import run_to_end
from brsm.concurrency import Overdue, bounded
from brsm.errors import RemoteError
from brsm.ports import FileRead, FileTally, RemoteFile

READ_BYTES = 1 << 16
STDERR_KEEP = 4096


def _tail(text: str, n: int = 8) -> str:
    return "\n".join([ln for ln in text.strip().splitlines() if ln.strip()][-n:])


class SshStreams:
    """Needs ``SshHost``'s connection, its session semaphore and its error translation."""

    name: str
    _sessions: asyncio.Semaphore

    _connection: Callable[[], Awaitable[asyncssh.SSHClientConnection]]  # SshHost's pooled connection
    _translate: Callable[[str, BaseException], RemoteError]  # SshHost's: an asyncssh error in words

    async def _records(self, argv: Sequence[str], sep: bytes, timeout: float, what: str) -> AsyncIterator[list[bytes]]:
        """The command's stdout split at ``sep``, as each read brings records (a list per read)."""
        cmd = shlex.join(argv)
        conn = await self._connection()
        async with self._sessions:
            try:
                proc = await conn.create_process(cmd, encoding=None, stdin=asyncssh.DEVNULL)
            except (asyncssh.Error, OSError) as exc:
                raise self._translate(what, exc) from exc
            err = bytearray()

            async def drain_stderr() -> None:
                while chunk := await proc.stderr.read(READ_BYTES):
                    err.extend(chunk)
                    del err[:-STDERR_KEEP]

            errs = asyncio.ensure_future(drain_stderr())
            done = False
            try:
                buf = b""
                while True:
                    try:
                        chunk = await bounded(proc.stdout.read(READ_BYTES), timeout)
                    except Overdue:
                        raise RemoteError(f"{self.name}: {what}: `{cmd}` sent nothing for {timeout}s", host=self.name,
                                          hint="the host is overloaded or a mount hangs there") from None
                    except (asyncssh.Error, OSError) as exc:
                        raise self._translate(what, exc) from exc
                    if not chunk:
                        break
                    buf += chunk
                    *recs, buf = buf.split(sep)
                    if recs:
                        yield recs
                try:
                    await bounded(proc.wait_closed(), timeout)
                    await bounded(errs, timeout)
                except Overdue:
                    raise RemoteError(f"{self.name}: {what}: `{cmd}` did not end within {timeout}s",
                                      host=self.name) from None
                done = True
                status = proc.exit_status
                if status != 0 or buf:
                    why = _tail(err.decode("utf-8", "replace")) or (f"exit status {status}" if status != 0
                                                                    else "its output ended mid-record")
                    raise RemoteError(f"{self.name}: {what}: {why}", host=self.name)
            finally:
                if not done:
                    proc.close()  # the remote command ends on its next write
                    errs.cancel()
                    await asyncio.gather(errs, return_exceptions=True)

    async def walk_pages(self, path: str, *, page: int = 1000, timeout: float = 120) -> AsyncIterator[list[RemoteFile]]:
        out: list[RemoteFile] = []
        async for recs in self._records(remote_cmd.walk_argv(path), b"\0", timeout, f"cannot list {path}"):
            for rec in recs:
                try:
                    out.append(remote_cmd.parse_walk_record(rec.decode("utf-8", "surrogateescape")))
                except ValueError as e:
                    raise RemoteError(f"{self.name}: cannot list {path}: {e}", host=self.name) from None
                if len(out) >= page:
                    yield out
                    out = []
        if out:
            yield out

    async def count_files(self, path: str, *, timeout: float = 120) -> FileTally:
        files = total = 0
        async for recs in self._records(remote_cmd.find_sizes_argv(path), b"\n", timeout, f"cannot list {path}"):
            files += len(recs)
            total += sum(int(r) for r in recs)
        return FileTally(files, total)

    async def read_files(self, paths: Sequence[str], *, timeout: float = 300) -> list[FileRead]:
        """One ``tar`` of ``paths`` (fed on stdin), parsed by ``remote_tar``. A tar that did not exit 0
        (a file missing, one that changed while read: GNU tar pads a file that shrank with zeros) is
        trusted for none of them: every path gets its problem, and is read again alone."""
        if not paths:
            return []
        cmd = shlex.join(remote_cmd.tar_files_argv())
        conn = await self._connection()
        async with self._sessions:
            try:
                proc = await run_to_end(conn, cmd, input=remote_tar.paths_input(paths), encoding=None, timeout=timeout)
            except (asyncssh.Error, OSError) as exc:
                raise self._translate(f"read {len(paths)} files", exc) from exc
        if proc is None:
            raise RemoteError(f"{self.name}: `{cmd}` did not finish within {timeout}s", host=self.name,
                              hint="the host is overloaded or a mount hangs there")
        if proc.exit_status != 0:
            why = _tail((proc.stderr or b"").decode("utf-8", "replace"), 2) or f"exit status {proc.exit_status}"
            return [FileRead(p, None, f"tar: {why}") for p in paths]
        return remote_tar.parse_tar_members(proc.stdout or b"", paths)
