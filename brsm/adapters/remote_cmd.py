"""Pure builders of the argv tuples brsm runs on cluster hosts.

Nothing here touches the network: each function returns a tuple of strings that ``HostPort.run``
renders with ``shlex.join`` (every argument quoted). The in-process fake (``brsm.fakes.hosts``)
understands exactly these shapes, so a workflow that only builds argv here runs on both.
"""
from __future__ import annotations

import posixpath

from brsm.errors import RemoteError

SERVICES = ("metad", "storaged", "graphd", "all")
SERVICE_ACTIONS = ("start", "stop", "restart", "kill", "status")


def checked_path(path: str, *, what: str = "path") -> str:
    """An absolute, normalised path that is not "/" (nor "/." etc.): the guard for destructive verbs."""
    if not isinstance(path, str) or not path or "\0" in path:
        raise RemoteError(f"refusing {what} {path!r}: empty or not a string",
                          hint="this is a bug in brsm: a destructive command got no path")
    if not path.startswith("/"):
        raise RemoteError(f"refusing {what} {path!r}: not an absolute path",
                          hint="remote paths must be absolute")
    norm = posixpath.normpath(path)
    if norm.startswith("//"):
        norm = "/" + norm.lstrip("/")
    if norm == "/":
        raise RemoteError(f"refusing {what} {path!r}: that is the root directory",
                          hint="this is a bug in brsm: it must never remove or move '/'")
    return norm


def service_argv(install_dir: str, action: str, svc: str) -> tuple[str, ...]:
    """``<install>/scripts/nebula.service <action> <svc>`` (Nebula's own control script)."""
    if action not in SERVICE_ACTIONS:
        raise ValueError(f"unknown service action {action!r} (one of {', '.join(SERVICE_ACTIONS)})")
    if svc not in SERVICES:
        raise ValueError(f"unknown service {svc!r} (one of {', '.join(SERVICES)})")
    return (posixpath.join(checked_path(install_dir, what="install dir"), "scripts", "nebula.service"),
            action, svc)


def df_argv(path: str) -> tuple[str, ...]:
    """Free bytes of the file system holding ``path``: prints a header line, then one number."""
    return ("df", "-P", "-B1", "--output=avail", checked_path(path))


def parse_df(stdout: str) -> int:
    lines = [ln.strip() for ln in stdout.strip().splitlines() if ln.strip()]
    if not lines:
        raise ValueError("df printed nothing")
    return int(lines[-1].split()[-1])


def mv_argv(src: str, dst: str) -> tuple[str, ...]:
    """Rename (``-T``: dst is never treated as a directory to move into)."""
    return ("mv", "-T", "--", checked_path(src, what="mv source"), checked_path(dst, what="mv target"))


def rm_rf_argv(path: str) -> tuple[str, ...]:
    """Remove a tree. Refuses "/", empty and relative paths (raises ``RemoteError``)."""
    return ("rm", "-rf", "--one-file-system", "--", checked_path(path, what="rm -rf of"))


def mkdir_p_argv(path: str) -> tuple[str, ...]:
    return ("mkdir", "-p", "--", checked_path(path, what="mkdir of"))


def find_files_argv(path: str) -> tuple[str, ...]:
    """Every regular file under ``path`` as ``<size> <path>\\0`` records (names may hold spaces or newlines)."""
    return ("find", checked_path(path, what="find in"), "-type", "f", "-printf", "%s %p\\0")


def parse_find_files(stdout: bytes | str) -> list[tuple[str, int]]:
    """Parse the output of ``find_files_argv``: [(path, size)] in output order."""
    if isinstance(stdout, bytes):
        stdout = stdout.decode("utf-8", "surrogateescape")
    out: list[tuple[str, int]] = []
    for rec in stdout.split("\0"):
        if not rec:
            continue
        size, _, path = rec.partition(" ")
        out.append((path, int(size)))
    return out
