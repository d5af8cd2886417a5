"""Pure builders of the argv tuples the SSH adapter runs on cluster hosts, and parsers of what they print.

Nothing here touches the network: each builder returns a tuple of strings that ``SshHost.run``
renders with ``shlex.join`` (every argument quoted); a script is always a fixed ``bash -c`` text
whose values are its positional arguments, never spliced into it (the longer scripts, the proof's
and the is-it-down check's, are in ``remote_scripts``). These are the adapter's alone:
workflows ask ``HostPort`` verbs, and the in-process fake implements their meaning without them.
"""
from __future__ import annotations

import posixpath

from collections.abc import Sequence

from brsm.errors import RemoteError
from brsm.ports import DirStat, FileIdentity, PathKind, RemoteFile

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


def file_kind(st_mode: int | None) -> str:
    """What an lstat's mode says a name is, in words ("regular file", "symbolic link", ...).

    >>> file_kind(0o100644), file_kind(0o120777), file_kind(0o040755), file_kind(None)
    ('regular file', 'symbolic link', 'directory', 'unknown file')
    """
    import stat

    if st_mode is None:
        return "unknown file"
    for test, word in ((stat.S_ISREG, "regular file"), (stat.S_ISLNK, "symbolic link"), (stat.S_ISDIR, "directory"),
                       (stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device")):
        if test(st_mode):
            return word
    return "unknown file"


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


def find_files_argv(path: str) -> tuple[str, ...]:
    """Every regular file under ``path`` as ``<size> <path>\\0`` records (names may hold spaces or newlines)."""
    return ("find", checked_path(path, what="find in"), "-type", "f", "-printf", "%s %p\\0")


# `bash -c SCRIPT NAME DIR`: every regular file under DIR as ``<size> <dev> <ino> <mtime> <btime> <ctime>
# <path>\0`` (times in s.ns; a birth time the file system does not keep prints 0 or -). The C locale
# keeps the decimal point a point; pipefail makes a failed find (or a file gone before its stat) fail it.
WALK_SCRIPT = ('export LC_ALL=C; set -o pipefail; find "$1" -type f -print0 | '
               "xargs -0 -r stat --printf '%s %d %i %.9Y %.9W %.9Z %n\\0' --")


def walk_argv(path: str) -> tuple[str, ...]:
    """Every regular file under ``path`` with its identity (``parse_walk_record``)."""
    return ("bash", "-c", WALK_SCRIPT, "brsm-walk", checked_path(path, what="find in"))


def ns_time(text: str) -> int | None:
    """``stat``'s ``%.9Y`` (seconds with nine decimals) as integer ns; None when it is not one (pure).

    >>> ns_time("1796687892.021227571"), ns_time("12.5"), ns_time("-"), ns_time("1.x")
    (1796687892021227571, 12500000000, None, None)
    """
    sec, _, frac = text.partition(".")
    if len(frac) == 9 and sec.isdigit() and frac.isdigit():  # what stat prints: the fast path
        return int(sec) * 1_000_000_000 + int(frac)
    if not (sec.isdigit() and (frac == "" or frac.isdigit())):
        return None
    return int(sec) * 1_000_000_000 + int((frac + "000000000")[:9])


def parse_walk_record(rec: str) -> RemoteFile:
    """One record of ``walk_argv``'s output (pure). A time ``stat`` could not give leaves the identity
    out (the file is still listed, and only loses its hash's reuse); a birth time of 0 is unknown.

    >>> parse_walk_record("3 65024 7 10.5 9.25 11.0 /d/a b").ident
    FileIdentity(dev=65024, ino=7, mtime_ns=10500000000, btime_ns=9250000000, ctime_ns=11000000000)
    >>> parse_walk_record("3 65024 7 10.5 0 11.0 /d/x").ident.btime_ns is None
    True
    """
    fields = rec.split(" ", 6)
    if len(fields) != 7 or not fields[0].isdigit():
        raise ValueError(f"not a walk record: {rec[:200]!r}")
    size, dev, ino, m, b, c, path = fields
    mt, ct = ns_time(m), ns_time(c)
    if mt is None or ct is None or not (dev.isdigit() and ino.isdigit()):
        return RemoteFile(path, int(size))
    return RemoteFile(path, int(size), FileIdentity(int(dev), int(ino), mt, ns_time(b) or None, ct))


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


def make_dir_argv(path: str) -> tuple[str, ...]:
    """Create exactly ``path``: mkdir(2) fails on any name already there (a symlink included, which it
    never follows), unlike ``mkdir -p``; the parent must exist."""
    return ("mkdir", "--", checked_path(path, what="mkdir of"))


def components(path: str) -> list[str]:
    """Every path from the first component down to ``path`` itself.

    >>> components("/d/a b/c")
    ['/d', '/d/a b', '/d/a b/c']
    """
    parts = checked_path(path, what="lstat of").strip("/").split("/")
    return ["/" + "/".join(parts[:i + 1]) for i in range(len(parts))]


# `bash -c SCRIPT NAME COMPONENT...`: our uid, then each component's lstat (stat without -L) as
# "uid dev inode type", stopping at the first missing one; then "entry" if the last is not empty.
LSTAT_SCRIPT = ('id -u; for p in "$@"; do stat -c "%u %d %i %F" -- "$p" 2>/dev/null || { echo missing; exit 0; }; '
                'done; find "$p" -mindepth 1 -maxdepth 1 -printf "entry\\n" -quit')


def lstat_dir_argv(path: str) -> tuple[str, ...]:
    return ("bash", "-c", LSTAT_SCRIPT, "brsm-lstat", *components(path))


def parse_lstat_dir(stdout: str, path: str) -> DirStat | None:
    """What :data:`LSTAT_SCRIPT` printed for ``path`` → its DirStat, or None when it (or a component
    above it) does not exist. Raises ValueError naming the first component that is not a directory:
    a symbolic link is accepted above the path only when root owns it (no one else can have made it,
    and root can do anything anyway); the path itself must be a directory, never a link to one.

    >>> parse_lstat_dir("1000\\n0 2049 2 directory\\n1000 2049 77 directory\\n", "/d/x")
    DirStat(dev=2049, ino=77, mine=True, empty=True)
    >>> parse_lstat_dir("1000\\n0 2049 2 directory\\nmissing\\n", "/d/x") is None
    True
    >>> parse_lstat_dir("1000\\n0 2049 2 directory\\n1000 2049 77 symbolic link\\n", "/d/x")
    Traceback (most recent call last):
    ...
    ValueError: /d/x is a symbolic link, not a directory
    """
    lines = [ln for ln in stdout.splitlines() if ln.strip()]
    if not lines:
        raise ValueError("the host printed nothing for lstat")
    me, rest = int(lines[0]), lines[1:]
    comps = components(path)
    last: tuple[int, int, int] | None = None
    for i, comp in enumerate(comps):
        line = rest[i] if i < len(rest) else "missing"
        if line == "missing":
            return None
        uid, dev, ino, kind = line.split(" ", 3)
        final = i == len(comps) - 1
        if kind != "directory":
            if kind == "symbolic link" and not final and int(uid) == 0:
                continue
            owner = " not owned by root" if kind == "symbolic link" and not final else ""
            raise ValueError(f"{comp} is a {kind}{owner}, not a directory")
        last = (int(uid), int(dev), int(ino))
    assert last is not None
    uid, dev, ino = last
    return DirStat(dev=dev, ino=ino, mine=uid == me, empty="entry" not in rest[len(comps):])


# -- small looks ---------------------------------------------------------------------------------
LOGIN_ARGV = ("true",)
CLOCK_ARGV = ("date", "+%s.%N")


def cat_argv(path: str) -> tuple[str, ...]:
    return ("cat", "--", path)


def parse_cmdline(raw: str) -> tuple[str, ...]:
    """``/proc/<pid>/cmdline`` (each argument NUL-terminated) → argv.

    >>> parse_cmdline("/n/bin/nebula-storaged\\x00--flagfile\\x00etc/s.conf\\x00")
    ('/n/bin/nebula-storaged', '--flagfile', 'etc/s.conf')
    """
    parts = raw.split("\0")
    return tuple(parts[:-1] if parts and parts[-1] == "" else parts)


def path_kind_argv(path: str) -> tuple[str, ...]:
    """GNU stat of the name itself (lstat: a link is not followed, a FIFO is not opened), in the C
    locale: its "No such file or directory" is what tells an absent name from a failed look."""
    return ("env", "LC_ALL=C", "stat", "--printf=%F", "--", path)


def parse_path_kind(exit_status: int, out: str, err: str, path: str) -> PathKind:
    """"file", "none" or "other" from ``stat --printf=%F``'s answer; anything else (a failure that is not
    "No such file or directory") raises: a look that failed must never pass for "nothing there",
    and a `test` that failed for any reason did (exit 1 reads as false).

    >>> parse_path_kind(0, "regular file", "", "/l"), parse_path_kind(0, "fifo", "", "/l")
    ('file', 'other')
    >>> parse_path_kind(1, "", "stat: cannot statx '/l': No such file or directory", "/l")
    'none'
    """
    if exit_status == 0:
        return "file" if out.strip() in ("regular file", "regular empty file") else "other"
    if "No such file or directory" in err:
        return "none"
    raise RemoteError(f"could not look at {path}: stat exited with status {exit_status}: "
                      f"{(err or out).strip()[:200] or 'no message'}",
                      hint="check the host (permissions, a hung mount), then run brsm again")


def parse_clock(text: str) -> float:
    """``date +%s.%N`` output; a ``date`` without ``%N`` (busybox) prints ``1767000000.N``.

    >>> parse_clock("1767000000.250000000\\n"), parse_clock("1767000000.N")
    (1767000000.25, 1767000000.0)
    """
    head, _, frac = text.strip().partition(".")
    if not head.isdigit():
        raise ValueError(f"not a clock reading: {text.strip()[:40]!r}")
    return float(head) + (float("0." + frac) if frac.isdigit() else 0.0)


def claim_dir_argv(path: str) -> tuple[str, ...]:
    """mkdir(2) without -p: it fails when the name exists, which makes it an atomic claim."""
    return ("mkdir", path)


def device_ids_argv(paths: Sequence[str]) -> tuple[str, ...]:
    """The device number of each path's file system, links followed: one number per line."""
    return ("stat", "-L", "-c", "%d", "--", *paths)


def parse_device_ids(stdout: str, n: int) -> tuple[int, ...] | None:
    """``n`` numbers, or None when the host printed anything else.

    >>> parse_device_ids("2049\\n2050\\n", 2), parse_device_ids("2049\\n", 2)
    ((2049, 2050), None)
    """
    words = stdout.split()
    if len(words) != n or not all(w.isdigit() for w in words):
        return None
    return tuple(int(w) for w in words)


def realpath_argv(paths: Sequence[str]) -> tuple[str, ...]:
    return ("realpath", "-e", "--", *paths)


def list_named_argv(path: str, patterns: Sequence[str], *, dirs_only: bool = False) -> tuple[str, ...]:
    """The entries directly in ``path`` named like one of ``patterns``, one full path per line.

    >>> list_named_argv("/d", ["a_*", "b_*"], dirs_only=True)
    ('find', '/d', '-mindepth', '1', '-maxdepth', '1', '-type', 'd', '(', '-name', 'a_*', '-o', '-name', 'b_*', ')')
    """
    names: list[str] = []
    for p in patterns:
        names += [*(["-o"] if names else []), "-name", p]
    return ("find", path, "-mindepth", "1", "-maxdepth", "1", *(("-type", "d") if dirs_only else ()),
            "(", *names, ")")


def copy_tree_argv(src: str, dst: str) -> tuple[str, ...]:
    return ("cp", "-a", src, dst)


def copy_into_argv(files: Sequence[str], dest_dir: str) -> tuple[str, ...]:
    return ("cp", "-t", dest_dir, "--", *files)


def find_sizes_argv(path: str) -> tuple[str, ...]:
    """The size of every regular file under ``path``, one per line (what ``find_files_argv`` lists,
    without the names: a count needs no list)."""
    return ("find", checked_path(path, what="find in"), "-type", "f", "-printf", "%s\\n")


def tar_files_argv() -> tuple[str, ...]:
    """A tar (GNU format) of the files whose NUL-separated absolute paths come on stdin, each under
    exactly the name given (``--absolute-names``), a directory never descended into, a file with
    several names stored whole each time (``--hard-dereference``), a symlink stored as a link (never
    followed). The paths travel on stdin, so no name is ever part of the command line."""
    return ("tar", "--create", "--file=-", "--format=gnu", "--absolute-names", "--no-recursion",
            "--hard-dereference", "--null", "--files-from=-")
