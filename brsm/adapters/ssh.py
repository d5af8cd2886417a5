"""HostPort / HostsPort over SSH (asyncssh): commands, file I/O through SFTP, service control.

One pooled connection per host, opened on first use and reused; one SFTP session per connection.
Host keys are always verified against the configured known_hosts file: an unknown or changed key
is an error with a hint, never accepted silently; ``accept_new_host_keys`` accepts (loudly, into
known_hosts) a key only for a host with no entry yet, never a changed one (``host_keys``).
Commands are argv sequences rendered with ``shlex.join`` (every argument quoted); the builders
live in ``remote_cmd``, the verbs workflows call (hash, fingerprint, is it down, ...) in ``ssh_verbs``,
the pipelined SFTP reads and writes in ``sftp_window``.
``run`` is this adapter's own exec, not part of ``HostPort``: no workflow writes a command.
"""
from __future__ import annotations

import asyncio
import contextlib
import posixpath
import shlex
from collections.abc import AsyncIterator, Callable, Mapping, Sequence

import asyncssh

from brsm.adapters import host_keys, remote_cmd, ssh_config
from brsm.adapters.sftp_window import read_pipelined, write_pipelined
from brsm.adapters.ssh_connect import open_connection
from brsm.adapters.ssh_errors import ssh_error
from brsm.adapters.ssh_exec import Ran, run_to_end
from brsm.adapters.ssh_helper import HelperProcess, direct_helper_source
from brsm.adapters.ssh_stream import SshStreams
from brsm.adapters.ssh_target import SshTarget
from brsm.adapters.ssh_verbs import SshVerbs
from brsm.concurrency import Overdue, bounded
from brsm.errors import PathRefused, RemoteError
from brsm.ports import DirStat, RemoteFile, RunResult
from brsm.retries import EXCLUSIVE_CREATE

__all__ = ["SshTarget", "SshHost", "SshHosts", "TMP_SUFFIX"]

TMP_SUFFIX = ".brsm-tmp"
# OpenSSH allows MaxSessions (default 10) channels per connection; the SFTP session takes one.
MAX_EXEC_SESSIONS = 8
STDERR_TAIL_LINES = 8


def _tail(text: str, n: int = STDERR_TAIL_LINES) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return "\n".join(lines[-n:])


class SshHost(SshVerbs, SshStreams):
    """One cluster machine (implements ``brsm.ports.HostPort``)."""

    def __init__(self, target: SshTarget, *,
                 on_host_key_accepted: Callable[[host_keys.AcceptedKey], None] | None = None) -> None:
        self.target = target
        self.name = target.name
        self._on_accept = on_host_key_accepted
        self._host_key: host_keys.HostKeyCheck | None = None  # the last connection attempt's
        self._conn: asyncssh.SSHClientConnection | None = None
        self._sftp: asyncssh.SFTPClient | None = None
        self._jumps: list[asyncssh.SSHClientConnection] = []  # ProxyJump hops, first dialled first
        self.route: ssh_config.Route | None = None
        self._lock = asyncio.Lock()
        self._sessions = asyncio.Semaphore(MAX_EXEC_SESSIONS)

    def __repr__(self) -> str:
        return f"SshHost({self.name!r} via {self.target.where})"

    # -- connection ----------------------------------------------------------------------------
    def _error(self, what: str, exc: BaseException, ep: ssh_config.Endpoint | None = None) -> RemoteError:
        """Translate an asyncssh/OS error into a RemoteError naming the host and what to check."""
        if ep is None and self.route is not None:
            ep = self.route.target
        return ssh_error(self.target, ep, self._host_key, what, exc)

    def _dead(self) -> bool:
        return self._conn is None or self._conn.is_closed()

    def _take(self) -> list[asyncssh.SSHClientConnection]:
        """The connection and the jump hosts it goes through, innermost first, forgotten by this host."""
        conn, self._conn, self._sftp = self._conn, None, None
        jumps, self._jumps = self._jumps, []
        return ([conn] if conn is not None else []) + list(reversed(jumps))

    def _drop(self) -> None:
        for c in self._take():
            c.abort()

    async def _connection(self) -> asyncssh.SSHClientConnection:
        if not self._dead():
            return self._conn  # type: ignore[return-value]
        async with self._lock:
            if not self._dead():
                return self._conn  # type: ignore[return-value]
            self._drop()
            t = self.target
            try:
                r = ssh_config.route(t.host, port=t.port, user=t.user, identity=t.identity, config=t.ssh_config)
            except (ValueError, OSError) as exc:
                raise RemoteError(f"{self.name}: cannot use the OpenSSH config for {t.host}: {exc}", host=self.name,
                                  hint="fix ~/.ssh/config (or the file [ssh] config names), or set config = \"\" "
                                       "in [ssh] to ignore it") from exc
            self.route = r
            tunnel = None
            for hop in r.jumps:  # each jump host verified against known_hosts like any other host
                tunnel = await self._open(hop, tunnel, f"connect to jump host {hop.where}")
                self._jumps.append(tunnel)
            self._conn = await self._open(r.target, tunnel, "connect")
            return self._conn

    async def _open(self, ep: ssh_config.Endpoint, tunnel: asyncssh.SSHClientConnection | None,
                    what: str) -> asyncssh.SSHClientConnection:
        """One SSH connection to ``ep`` (through ``tunnel`` when given), its host key checked."""
        t = self.target
        self._host_key = host_keys.HostKeyCheck(ep.host, ep.port, t.known_hosts, accept_new=t.accept_new_host_keys,
                                                on_accept=self._on_accept)
        return await open_connection(t, ep, tunnel, self._host_key, lambda exc: self._error(what, exc, ep))

    async def _sftp_client(self) -> asyncssh.SFTPClient:
        conn = await self._connection()
        if self._sftp is not None:
            return self._sftp
        async with self._lock:
            if self._sftp is None:
                try:
                    self._sftp = await conn.start_sftp_client()
                except (asyncssh.Error, OSError) as exc:
                    self._drop()
                    raise self._error("start SFTP", exc) from exc
            return self._sftp

    async def close(self) -> None:
        """Each connection closed and waited for (5 s at most, then aborted), the innermost first: a
        jump host's tunnel outlives the connection through it."""
        for c in self._take():
            c.close()
            try:
                await bounded(c.wait_closed(), 5)
            except (Overdue, OSError, asyncssh.Error):
                c.abort()

    async def _guard(self, what: str, coro):
        """Run an SFTP/exec coroutine, translating errors; a dropped connection is forgotten."""
        try:
            return await coro
        except RemoteError:
            raise
        except (asyncssh.Error, OSError, asyncio.TimeoutError) as exc:
            raise self._translate(what, exc) from exc

    def _translate(self, what: str, exc: BaseException) -> RemoteError:
        if self._dead() or isinstance(exc, (asyncssh.ConnectionLost, asyncssh.SFTPConnectionLost,
                                            asyncssh.DisconnectError)):
            self._drop()
        return self._error(what, exc)

    # -- commands ------------------------------------------------------------------------------
    async def _exec(self, argv: Sequence[str], timeout: float | None, encoding: str | None):
        argv = [str(a) for a in argv]
        if not argv:
            raise ValueError("empty argv")
        cmd = shlex.join(argv)
        conn = await self._connection()
        async with self._sessions:
            ran = await self._guard(f"run {argv[0]}", run_to_end(conn, cmd, timeout=timeout, encoding=encoding))
        if ran is None:
            raise RemoteError(f"{self.name}: `{cmd}` did not finish within {timeout}s", host=self.name,
                              hint="the host is overloaded or the command hung there (its channel was closed)")
        return ran

    @staticmethod
    def _status(proc: Ran) -> int:
        if proc.exit_status is not None and proc.exit_status >= 0:
            return proc.exit_status
        return 128 + 9 if proc.exit_signal else 255

    async def start_helper(self) -> "HelperProcess":
        """The direct data path's helper (brsm.adapters.direct_helper), run by the host's own python3:
        one SSH channel, held until the helper is closed; it ends with the channel."""
        conn = await self._connection()
        await self._sessions.acquire()
        try:
            proc = await self._guard("start the direct-path helper", conn.create_process(
                shlex.join(["python3", "-c", direct_helper_source()]), encoding="utf-8"))
        except BaseException:
            self._sessions.release()
            raise
        return HelperProcess(self.name, proc, self._sessions.release)

    async def run(self, argv: Sequence[str], *, check: bool = True, timeout: float | None = None) -> RunResult:
        proc = await self._exec(argv, timeout, "utf-8")
        res = RunResult(self._status(proc), proc.stdout or "", proc.stderr or "")
        if check and res.exit_status != 0:
            signal = f" (killed by {proc.exit_signal[0]})" if proc.exit_signal else ""
            tail = _tail(res.stderr) or _tail(res.stdout)
            raise RemoteError(f"{self.name}: `{shlex.join(argv)}` exited with status {res.exit_status}{signal}"
                              + (f":\n{tail}" if tail else ""), host=self.name)
        return res

    # -- files ---------------------------------------------------------------------------------
    async def exists(self, path: str) -> bool:
        sftp = await self._sftp_client()
        return await self._guard(f"stat {path}", sftp.exists(path))

    async def walk(self, path: str) -> list[RemoteFile]:
        """Every regular file under ``path`` (recursive), with sizes: one ``find`` run, not SFTP stats."""
        argv = remote_cmd.find_files_argv(path)
        proc = await self._exec(argv, None, None)
        if self._status(proc) != 0:
            err = (proc.stderr or b"").decode("utf-8", "replace")
            raise RemoteError(f"{self.name}: cannot list {path}: {_tail(err) or 'find failed'}", host=self.name)
        return sorted((RemoteFile(p, s) for p, s in remote_cmd.parse_find_files(proc.stdout or b"")),
                      key=lambda f: f.path)

    async def open_read(self, path: str, *, offset: int = 0, block_size: int = 1 << 20) -> AsyncIterator[bytes]:
        """Yield the file from ``offset`` in chunks of at most ``block_size`` bytes, reads pipelined
        (see sftp_window.read_pipelined), up to the size it had when opened (checkpoints are static)."""
        sftp = await self._sftp_client()
        f = await self._guard(f"open {path}", sftp.open(path, "rb"))
        try:
            async with contextlib.aclosing(read_pipelined(f, path, host=self.name, offset=offset,
                                                          block_size=block_size, guard=self._guard)) as chunks:
                async for chunk in chunks:
                    yield chunk
        finally:
            try:
                await f.close()
            except (asyncssh.Error, OSError):
                pass

    async def write_file(self, path: str, chunks: AsyncIterator[bytes], *, mode: int = 0o644) -> int:
        """Write to ``path + '.brsm-tmp'`` (writes pipelined, see sftp_window.write_pipelined), then
        rename over ``path``: readers never see a partial file. If ``chunks`` raises, the temp file is
        removed and the exception propagates unchanged.

        The temp file is created exclusively (O_CREAT|O_EXCL, which never follows a symlink): whatever
        sits at that name was not made by this write, so writing through it could put the backup's
        bytes (and a chmod) into any file a link points at (see :meth:`_create_tmp`)."""
        sftp = await self._sftp_client()
        tmp = path + TMP_SUFFIX
        f = await self._create_tmp(sftp, tmp, mode)
        ok = False
        try:
            written = await write_pipelined(f, tmp, chunks, guard=self._guard)
            await self._guard(f"chmod {tmp}", f.chmod(mode))
            await self._guard(f"close {tmp}", f.close())
            await self._replace(sftp, tmp, path)
            ok = True
            return written
        finally:
            if not ok:
                aclose = getattr(chunks, "aclose", None)
                if aclose is not None:  # release the source (e.g. a storage download) at once
                    try:
                        await aclose()
                    except Exception:  # noqa: BLE001 - the first error is the one to report
                        pass
                try:
                    await f.close()
                except (asyncssh.Error, OSError):
                    pass
                if not self._dead():
                    try:
                        await sftp.remove(tmp)
                    except (asyncssh.Error, OSError):
                        pass

    async def _create_tmp(self, sftp: asyncssh.SFTPClient, tmp: str, mode: int) -> asyncssh.SFTPClientFile:
        """``tmp`` created exclusively. A name already taken is looked at with lstat: a regular file
        (a temp an interrupted write left) is removed and the create tried once more; anything else
        (a symlink, a directory, a FIFO) is refused and left as it is. A missing parent is made. The
        tries are ``retries.EXCLUSIVE_CREATE``'s."""
        attrs = asyncssh.SFTPAttrs(permissions=mode & 0o777)
        for attempt in range(EXCLUSIVE_CREATE.attempts):
            try:
                return await sftp.open(tmp, "xb", attrs)
            except (asyncssh.SFTPNoSuchFile, asyncssh.SFTPFailure, asyncssh.SFTPFileAlreadyExists) as exc:
                try:
                    st = await sftp.lstat(tmp)
                except asyncssh.SFTPNoSuchFile:
                    if attempt == 0 and isinstance(exc, asyncssh.SFTPNoSuchFile):
                        await self.makedirs(posixpath.dirname(tmp))
                        continue
                    raise self._translate(f"create {tmp}", exc) from exc
                except (asyncssh.Error, OSError) as exc2:
                    raise self._translate(f"lstat {tmp}", exc2) from exc2
                kind = remote_cmd.file_kind(st.permissions)
                if kind != "regular file" or attempt == EXCLUSIVE_CREATE.attempts - 1:
                    raise RemoteError(
                        f"{self.name}: refusing to write {tmp}: a {kind} brsm did not create is in the way",
                        host=self.name,
                        hint="something other than brsm put it there: look at it, remove it, then run the "
                             "command again (brsm never writes through a name it did not just create)") from exc
                await self._guard(f"remove the stale {tmp}", sftp.remove(tmp))  # unlink: never follows a link
            except (asyncssh.Error, OSError) as exc:
                raise self._translate(f"create {tmp}", exc) from exc
        raise AssertionError("unreachable")

    async def _replace(self, sftp: asyncssh.SFTPClient, src: str, dst: str) -> None:
        try:
            await sftp.posix_rename(src, dst)
        except asyncssh.SFTPOpUnsupported:
            await self.run(remote_cmd.mv_argv(src, dst))
        except (asyncssh.Error, OSError) as exc:
            raise self._translate(f"rename {src} -> {dst}", exc) from exc

    async def rename(self, src: str, dst: str) -> None:
        remote_cmd.checked_path(src)
        remote_cmd.checked_path(dst)
        await self._replace(await self._sftp_client(), src, dst)

    async def makedirs(self, path: str) -> None:
        path = remote_cmd.checked_path(path, what="makedirs of")
        sftp = await self._sftp_client()
        await self._guard(f"makedirs {path}", sftp.makedirs(path, exist_ok=True))

    async def remove_tree(self, path: str) -> None:
        await self.run(remote_cmd.rm_rf_argv(path))

    async def lstat_dir(self, path: str) -> DirStat | None:
        """``path`` and every component above it looked at with lstat, in one command (see
        remote_cmd.parse_lstat_dir): None when missing; a RemoteError when one is not a directory."""
        r = await self.run(remote_cmd.lstat_dir_argv(path), check=False, timeout=60)
        try:
            return remote_cmd.parse_lstat_dir(r.stdout, path)
        except ValueError as e:
            raise PathRefused(f"{self.name}: refusing {path}: {e}", host=self.name,
                              hint="brsm works only in directories it made, reached through real directories; "
                                   "look at what put that there") from e

    async def make_dir(self, path: str) -> DirStat:
        """Create exactly ``path`` (mkdir(2): never an existing name, never through a link at it), its
        parent's components checked with lstat first and the result's after."""
        path = remote_cmd.checked_path(path, what="mkdir of")
        if await self.lstat_dir(path) is not None:  # (its components above are checked on the way)
            raise RemoteError(f"{self.name}: cannot create {path}: it exists already", host=self.name,
                              hint="a name already there was not made by brsm in this operation: look at it, "
                                   "remove it, then run the command again")
        r = await self.run(remote_cmd.make_dir_argv(path), check=False, timeout=60)
        if r.exit_status != 0:
            raise RemoteError(f"{self.name}: cannot create {path}: {_tail(r.stderr) or 'mkdir failed'}",
                              host=self.name,
                              hint="a name already there was not made by brsm in this operation: look at it, "
                                   "remove it, then run the command again")
        made = await self.lstat_dir(path)
        if made is None:
            raise RemoteError(f"{self.name}: {path} vanished right after brsm created it", host=self.name)
        return made

    async def free_bytes(self, path: str) -> int:
        sftp = await self._sftp_client()
        try:
            st = await sftp.statvfs(path)
            return int(st.bavail) * int(st.frsize or st.bsize)
        except asyncssh.SFTPOpUnsupported:
            return remote_cmd.parse_df((await self.run(remote_cmd.df_argv(path))).stdout)
        except (asyncssh.Error, OSError) as exc:
            raise self._translate(f"statvfs {path}", exc) from exc

    async def service(self, action: str, name: str, *, install_dir: str | None = None) -> RunResult:
        """Run nebula.service; its output and exit status are the caller's to read (never raised)."""
        argv = remote_cmd.service_argv(install_dir or self.target.install_dir, action, name)
        return await self.run(argv, check=False, timeout=300)


class SshHosts:
    """All hosts (implements ``brsm.ports.HostsPort``): ``host(name)`` returns the pooled ``SshHost``."""

    def __init__(self, config: Mapping[str, SshTarget], *,
                 on_host_key_accepted: Callable[[host_keys.AcceptedKey], None] | None = None) -> None:
        self._targets = dict(config)
        self._hosts: dict[str, SshHost] = {}
        self._on_accept = on_host_key_accepted
        self._accepted: list[host_keys.AcceptedKey] = []

    def _accepted_key(self, key: host_keys.AcceptedKey) -> None:
        self._accepted.append(key)
        if self._on_accept is not None:
            self._on_accept(key)

    def take_accepted_host_keys(self) -> list[dict]:
        """Host keys accepted on first contact since the last call (for the journal)."""
        out, self._accepted = [k.to_dict() for k in self._accepted], []
        return out

    def host(self, name: str) -> SshHost:
        h = self._hosts.get(name)
        if h is None:
            target = self._targets.get(name)
            if target is None:
                raise RemoteError(f"no SSH settings for host {name!r}", host=name,
                                  hint=f"add it to the config's hosts (known: {', '.join(sorted(self._targets))})")
            h = self._hosts[name] = SshHost(target, on_host_key_accepted=self._accepted_key)
        return h

    async def close(self) -> None:
        hosts, self._hosts = list(self._hosts.values()), {}
        await asyncio.gather(*(h.close() for h in hosts), return_exceptions=True)
