"""Whether the storaged that runs has the flags brsm reads from its flagfile.

brsm takes storaged's WAL dirs (``--wal_path``, ``--rocksdb_wal_dir``), data paths, disk reserve and
cluster id path from ``<install>/etc/nebula-storaged.conf``, and a restore starts storaged again
through ``nebula.service``, which passes that flagfile and nothing else. A storaged started some other
way (``nebula.service -c other.conf``, a unit file, a flag added on its command line) may run with
other values: brsm would set aside and restore WALs where that daemon does not keep them, and the
restart would silently change where it keeps them. So the running daemon's command line
(``/proc/<pid>/cmdline``, pid from ``nebula.service status``) is read as gflags reads it: flags in
order, each ``--flagfile`` read where it stands, a later setting winning. Where it cannot be read,
or a flag brsm reads differs from the flagfile, the run stops and says which and why; a storaged
that does not run starts with the flagfile, so the flagfile is its truth.
"""
from __future__ import annotations

import posixpath
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

# the flags of storaged that brsm reads (brsm.workflows.topology): each must be what the daemon has
WATCHED = ("data_path", "wal_path", "rocksdb_wal_dir", "minimum_reserved_bytes", "cluster_id_path")
_PATHS = {"wal_path", "rocksdb_wal_dir", "cluster_id_path"}
# unset means these (MetaClient.cpp, DiskManager.cpp; the others default to "")
DEFAULTS = {"cluster_id_path": "cluster.id", "minimum_reserved_bytes": str(1 << 30)}


class CannotTell(Exception):
    """Why the running daemon's flags cannot be known (the message completes "cannot tell …: ")."""


@dataclass(frozen=True)
class Setting:
    value: str
    source: str  # "its command line", or the flagfile that set it


def flag_args(argv: Sequence[str]) -> list[tuple[str, str]]:
    """The ``(flag, value)`` pairs of a command line that matter here (``flagfile`` and :data:`WATCHED`),
    in order, as gflags takes them: ``-f=v``, ``--f=v`` or ``--f v`` (these flags all take a value), up
    to a lone ``--``; other arguments are skipped.

    >>> flag_args(["nebula-storaged", "--flagfile", "a.conf", "-v=2", "x", "--wal_path=/w", "--", "--data_path=/d"])
    [('flagfile', 'a.conf'), ('wal_path', '/w')]
    """
    out: list[tuple[str, str]] = []
    i = 1
    while i < len(argv):
        a = argv[i]
        i += 1
        if a == "--":
            break
        if not a.startswith("-") or a == "-":
            continue
        name, eq, value = a.lstrip("-").partition("=")
        if name != "flagfile" and name not in WATCHED:
            continue
        if not eq:
            if i >= len(argv):
                continue
            value = argv[i]
            i += 1
        out.append((name, value))
    return out


def absolute(path: str, root: str) -> str:
    return posixpath.normpath(path if posixpath.isabs(path) else posixpath.join(root, path))


async def running_settings(argv: Sequence[str], root: str, read: Callable[[str], Awaitable[str | None]],
                           parse: Callable[[str], dict[str, str]]) -> dict[str, Setting]:
    """The :data:`WATCHED` flags a daemon started with ``argv`` in ``root`` (its working directory) has:
    each flagfile read where it stands (``read`` gives a file's text, None when it cannot; gflags
    takes a comma-separated list), then later settings win. Raises :class:`CannotTell`."""
    out: dict[str, Setting] = {}
    for name, value in flag_args(argv):
        if name != "flagfile":
            out[name] = Setting(value.strip(), "its command line")
            continue
        for f in (x.strip() for x in value.split(",") if x.strip()):
            path = absolute(f, root)
            text = await read(path)
            if text is None:
                raise CannotTell(f"its flagfile {path} is missing or unreadable")
            flags = parse(text)
            if "flagfile" in flags:
                raise CannotTell(f"its flagfile {path} names another flagfile ({flags['flagfile']}), which brsm "
                                 "does not follow")
            out.update({k: Setting(v, path) for k, v in flags.items() if k in WATCHED})
    return out


def _norm(flag: str, value: str, root: str) -> str:
    """A flag's value as the daemon uses it: paths made absolute against its working dir, data paths
    as their list, numbers as numbers; unset and empty alike.

    >>> _norm("data_path", "data/a, /b/", "/n"), _norm("wal_path", "", "/n"), _norm("minimum_reserved_bytes", " 08", "/n")
    ('/n/data/a,/b', '', '8')
    """
    value = value.strip() or DEFAULTS.get(flag, "")
    if not value:
        return ""
    if flag == "data_path":
        return ",".join(absolute(p.strip(), root) for p in value.split(",") if p.strip())
    if flag in _PATHS:
        return absolute(value, root)
    return str(int(value)) if re.fullmatch(r"\d+", value) else value


def drift(running: dict[str, Setting], flagfile: dict[str, str], root: str) -> list[tuple[str, Setting, str]]:
    """Each watched flag whose running value differs from the flagfile's: (flag, running, flagfile's).

    >>> drift({"wal_path": Setting("/w", "its command line")}, {"wal_path": "/n/w"}, "/n")
    [('wal_path', Setting(value='/w', source='its command line'), '/n/w')]
    >>> drift({"wal_path": Setting("w", "/n/etc/s.conf")}, {"wal_path": "/n/w"}, "/n")
    []
    """
    out = []
    for flag in WATCHED:
        run = running.get(flag, Setting("", "the default (not set)"))
        want = flagfile.get(flag, "")
        if _norm(flag, run.value, root) != _norm(flag, want, root):
            out.append((flag, run, want))
    return out


def drift_refusal(addr: str, pid: int, flagfile_path: str, found: list[tuple[str, Setting, str]]) -> str:
    """One line naming every flag that differs, and why brsm stops on it."""
    each = "; ".join(f"--{f}={run.value!r} from {run.source}, the flagfile {want!r}" for f, run, want in found)
    return (f"storaged {addr} (pid {pid}) does not run with the flags of {flagfile_path}: {each}. brsm reads "
            "where storaged keeps its WALs and data from that flagfile, and a restore starts storaged through "
            "nebula.service with that flagfile alone, so it cannot tell where this storaged's WALs belong")
