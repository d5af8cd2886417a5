"""The ``HostPort`` verbs over SSH: each one command from ``remote_cmd`` or ``remote_scripts``, run and read here.

Workflows ask a host what they need (hash these files, fingerprint these trees, is this daemon
down) and get typed answers; which command answers it, how it is quoted and what its output looks
like stays in this module, ``remote_cmd`` and ``remote_scripts``. ``SshHost`` mixes this in: ``run`` is its exec (argv
rendered with ``shlex.join``, every argument quoted).
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from brsm.adapters import remote_cmd, remote_scripts
from brsm.errors import RemoteError
from brsm.ports import DaemonProbe, HostCheck, PathKind, ProcessUnseen, RealPaths, RunResult, TreeFingerprint


class SshVerbs:
    """The verbs, on top of ``run``. Each keeps the command and the timeout brsm has always used."""

    name: str
    run: Callable[..., Awaitable[RunResult]]  # SshHost.run(argv, *, check=True, timeout=None)

    async def check_login(self, *, timeout: float = 30) -> None:
        await self.run(remote_cmd.LOGIN_ARGV, timeout=timeout)

    async def read_text(self, path: str, *, timeout: float = 30) -> str | None:
        r = await self.run(remote_cmd.cat_argv(path), check=False, timeout=timeout)
        return r.stdout if r.exit_status == 0 else None

    async def process_argv(self, pid: int, *, timeout: float = 30) -> tuple[str, ...] | ProcessUnseen:
        r = await self.run(remote_cmd.cat_argv(f"/proc/{int(pid)}/cmdline"), check=False, timeout=timeout)
        if r.exit_status != 0 or not r.stdout:
            return ProcessUnseen((r.stderr or "empty").strip()[:200])
        return remote_cmd.parse_cmdline(r.stdout)

    async def path_kind(self, path: str, *, timeout: float) -> PathKind:
        r = await self.run(remote_cmd.path_kind_argv(path), check=False, timeout=timeout)
        return remote_cmd.parse_path_kind(r.exit_status, r.stdout, r.stderr, path)

    async def claim_dir(self, path: str, *, timeout: float) -> bool:
        r = await self.run(remote_cmd.claim_dir_argv(path), check=False, timeout=timeout)
        return r.exit_status == 0

    async def clock(self, *, timeout: float) -> float:
        r = await self.run(remote_cmd.CLOCK_ARGV, check=False, timeout=timeout)
        try:
            return remote_cmd.parse_clock(r.stdout)
        except ValueError:
            raise RemoteError(f"could not read the clock of {self.name} (`date +%s.%N` printed "
                              f"{r.stdout.strip()[:60]!r})", host=self.name,
                              hint="brsm judges its lease by the metad host's clock; check that `date` runs there"
                              ) from None

    async def device_ids(self, paths: Sequence[str], *, timeout: float = 30) -> tuple[int, ...] | None:
        r = await self.run(remote_cmd.device_ids_argv(paths), check=False, timeout=timeout)
        return remote_cmd.parse_device_ids(r.stdout, len(paths)) if r.exit_status == 0 else None

    async def real_paths(self, paths: Sequence[str], *, timeout: float = 30) -> RealPaths:
        r = await self.run(remote_cmd.realpath_argv(paths), check=False, timeout=timeout)
        lines = r.stdout.splitlines()
        if r.exit_status != 0 or len(lines) != len(paths):
            return RealPaths(None, (r.stderr or "").strip())
        return RealPaths(tuple(lines))

    async def list_named(self, path: str, patterns: Sequence[str], *, dirs_only: bool = False,
                         timeout: float | None = None) -> list[str]:
        r = await self.run(remote_cmd.list_named_argv(path, patterns, dirs_only=dirs_only), check=False,
                           timeout=timeout)
        return [line.strip() for line in r.stdout.splitlines() if line.strip()]

    async def hash_files(self, paths: Sequence[str], *, timeout: float = 3600) -> dict[str, str]:
        if not paths:
            return {}  # sha256sum without a path would hash its (empty) input
        r = await self.run(remote_scripts.sha256sum_argv(paths), check=False, timeout=timeout)
        return remote_scripts.parse_sha256sum(r.stdout)

    async def fingerprint_trees(self, dirs: Sequence[str], *, fmt: int,
                                timeout: float = 3600) -> dict[str, TreeFingerprint]:
        if not dirs:
            return {}
        r = await self.run(remote_scripts.fingerprint_argv(dirs, fmt), timeout=timeout)
        return remote_scripts.parse_fingerprints(r.stdout)

    async def check_daemons(self, daemons: Sequence[DaemonProbe], dirs: Sequence[str], *,
                            timeout: float = 60) -> HostCheck:
        r = await self.run(remote_scripts.host_check_argv(daemons, dirs), check=False, timeout=timeout)
        return remote_scripts.parse_host_check(r.stdout)

    async def copy_tree(self, src: str, dst: str) -> None:
        await self.run(remote_cmd.copy_tree_argv(src, dst))

    async def copy_into(self, files: Sequence[str], dest_dir: str) -> None:
        await self.run(remote_cmd.copy_into_argv(files, dest_dir))
