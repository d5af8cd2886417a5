"""Pure builders of the argv tuples the SSH adapter runs on cluster hosts, and parsers of what they print.

Nothing here touches the network: each builder returns a tuple of strings that ``SshHost.run``
renders with ``shlex.join`` (every argument quoted); a script is always a fixed ``bash -c`` text
whose values are its positional arguments, never spliced into it. These are the adapter's alone:
workflows ask ``HostPort`` verbs, and the in-process fake implements their meaning without them.
"""
from __future__ import annotations

import posixpath

import hashlib
import re
from collections.abc import Sequence

from brsm.errors import RemoteError
from brsm.ports import DaemonProbe, DaemonSeen, DirStat, HostCheck, PathKind, TreeFingerprint

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


# -- hashes and fingerprints ---------------------------------------------------------------------
def sha256sum_argv(paths: Sequence[str]) -> tuple[str, ...]:
    return ("sha256sum", "--", *paths)


def parse_sha256sum(stdout: str) -> dict[str, str]:
    """``sha256sum`` output → ``{path: hex}`` (lines it cannot read are skipped).

    >>> parse_sha256sum("ab" * 32 + "  /d/x.sst\\n")
    {'/d/x.sst': 'abababababababababababababababababababababababababababababababab'}
    """
    out = {}
    for line in stdout.splitlines():
        digest, sep, path = line.partition("  ")
        if sep and len(digest) == 64 and not digest.startswith("\\"):
            out[path] = digest
    return out


# `bash -c SCRIPT NAME DIR...`: the dirs are positional arguments of the fixed script, never spliced
# into it. A missing dir prints its header and nothing else; `ingest` (restoreMeta's copies) is skipped.
# Format 1 (journals written before format 2): regular files only, by path, size, mtime and inode.
FINGERPRINT_SCRIPT_V1 = ('for d in "$@"; do printf "== %s\\n" "$d"; if [ -d "$d" ]; then '
                         'find "$d" -path "$d/ingest" -prune -o -type f -printf "%P\\t%s\\t%T@\\t%i\\n" | LC_ALL=C sort; '
                         'else echo absent; fi; done')
# Format 2: every entry below the dir whatever its type (a symlink, FIFO or dir added is seen), with
# its ctime, which utime cannot set back (a byte flipped with the mtime put back is seen). The dir
# itself is not listed (the swap's rename changes its own ctime, never its entries'); a dir that is
# itself a symlink says so, and is refused (it would list nothing, before and after alike).
FINGERPRINT_SCRIPT = ('for d in "$@"; do printf "== %s\\n" "$d"; if [ -L "$d" ]; then echo symlink; '
                      'elif [ -d "$d" ]; then find "$d" -mindepth 1 -path "$d/ingest" -prune -o '
                      '-printf "%P\\t%y\\t%s\\t%T@\\t%C@\\t%i\\n" | LC_ALL=C sort; '
                      'else echo absent; fi; done')
FINGERPRINT_SCRIPTS = {1: FINGERPRINT_SCRIPT_V1, 2: FINGERPRINT_SCRIPT}
FINGERPRINT_NAME = "brsm-fingerprint"


def fingerprint_argv(dirs: Sequence[str], fmt: int) -> tuple[str, ...]:
    if fmt not in FINGERPRINT_SCRIPTS:
        raise ValueError(f"unknown fingerprint format {fmt!r}")
    return ("bash", "-c", FINGERPRINT_SCRIPTS[fmt], FINGERPRINT_NAME, *dirs)


def parse_fingerprints(stdout: str) -> dict[str, TreeFingerprint]:
    """What the fingerprint script printed → ``{dir: TreeFingerprint}``: the SHA-256 of the dir's
    sorted listing (the lines joined by newlines: journals hold these digests, so this never changes).

    >>> fp = parse_fingerprints("== /a\\nx\\t3\\t1.5\\t9\\n== /b\\nabsent\\n== /c\\nsymlink\\n")
    >>> sorted(fp), fp["/b"], fp["/c"].symlink, len(fp["/a"].digest)
    (['/a', '/b', '/c'], TreeFingerprint(digest=None, symlink=False), True, 64)
    """
    listing: dict[str, list[str] | None] = {}
    links: set[str] = set()
    cur = None
    for line in stdout.splitlines():
        if line.startswith("== "):
            cur = line[3:]
            listing[cur] = []
        elif cur is not None and line == "absent" and listing[cur] == []:
            listing[cur] = None
        elif cur is not None and line == "symlink" and listing[cur] == []:
            links.add(cur)
        elif cur is not None and listing[cur] is not None:
            listing[cur].append(line)
    return {d: TreeFingerprint(None if lines is None or d in links else
                               hashlib.sha256("\n".join(lines).encode()).hexdigest(), symlink=d in links)
            for d, lines in listing.items()}


# -- is it down? ----------------------------------------------------------------------------------
PORT_PROBE_SECONDS = 5
# the port probe inside HOST_CHECK_SCRIPT: `timeout N bash -c SCRIPT NAME ADDRESS PORT`, the address
# and port positional arguments of the fixed script, never spliced into it
PORT_PROBE_SCRIPT = 'exec 3<>"/dev/tcp/$1/$2"'
# "Is it down?" in one SSH exec per host: each daemon's `nebula.service status`, its port probe, and
# the processes using the data dirs (these checks run inside a restore's downtime, where every round
# trip counts). `bash -c SCRIPT NAME N (SVC INSTALL ADDRESS PORT)*N [FIND ARGV...]`: every value is a
# positional argument of the fixed script, never spliced into it.
HOST_CHECK_SCRIPT = (
    'n=$1; shift; '
    'for ((i = 0; i < n; i++)); do svc=$1; inst=$2; addr=$3; port=$4; shift 4; '
    'printf "== status %s\\n" "$svc"; "$inst/scripts/nebula.service" status "$svc" 2>&1; '
    'if timeout ' + str(PORT_PROBE_SECONDS) + ' bash -c \'' + PORT_PROBE_SCRIPT + '\' brsm-port-probe "$addr" "$port" '
    '2>/dev/null; then printf "== port %s open\\n" "$svc"; else printf "== port %s closed\\n" "$svc"; fi; done; '
    'printf "== users\\n"; if [ $# -gt 0 ]; then "$@" 2>/dev/null; fi; true')
HOST_CHECK_NAME = "brsm-host-check"


def _glob_escape(path: str) -> str:
    return re.sub(r"([\[\]*?\\])", r"\\\1", path.rstrip("/") or "/")


def dir_users_argv(dirs: Sequence[str]) -> tuple[str, ...]:
    """A command listing the processes whose working directory or an open file is in one of ``dirs``
    (``/proc/<pid>/cwd`` and ``/proc/<pid>/fd/*`` links, matched by ``find -lname``; no lsof needed):

    >>> dir_users_argv(["/data/s1"])[:6]
    ('find', '/proc', '-mindepth', '2', '-maxdepth', '3')
    >>> dir_users_argv(["/data/s1"])[-7:]
    ('(', '-lname', '/data/s1', '-o', '-lname', '/data/s1/*', ')')
    """
    match: list[str] = []
    for d in dirs:
        e = _glob_escape(d)
        match += [*(["-o"] if match else []), "-lname", e, "-o", "-lname", f"{e}/*"]
    return ("find", "/proc", "-mindepth", "2", "-maxdepth", "3", "(", "-path", "/proc/[0-9]*/cwd", "-o",
            "-path", "/proc/[0-9]*/fd/*", ")", "(", *match, ")")


def parse_dir_users(stdout: str) -> tuple[int, ...]:
    """``/proc/<pid>/fd/7`` lines (what :func:`dir_users_argv` prints) → the pids, sorted, once each.

    >>> parse_dir_users("/proc/42/fd/7\\n/proc/42/cwd\\n/proc/9/fd/3\\n")
    (9, 42)
    """
    pids = set()
    for line in stdout.splitlines():
        parts = line.strip().split("/")
        if len(parts) >= 3 and parts[1] == "proc" and parts[2].isdigit():
            pids.add(int(parts[2]))
    return tuple(sorted(pids))


def host_check_argv(daemons: Sequence[DaemonProbe], dirs: Sequence[str]) -> tuple[str, ...]:
    """The one command ``SshHost.check_daemons`` runs.

    >>> host_check_argv([DaemonProbe("storaged", "/n", "10.0.0.1", 9779)], [])[3:]
    ('brsm-host-check', '1', 'storaged', '/n', '10.0.0.1', '9779')
    """
    argv = ["bash", "-c", HOST_CHECK_SCRIPT, HOST_CHECK_NAME, str(len(daemons))]
    for d in daemons:
        argv += [d.service, d.install_dir, d.address, str(int(d.port))]
    if dirs:
        argv += dir_users_argv(dirs)
    return tuple(argv)


def parse_host_check(stdout: str) -> HostCheck:
    """What :data:`HOST_CHECK_SCRIPT` printed → each daemon's status text and port, and the pids using the dirs.

    >>> parse_host_check("== status metad\\n[INFO] nebula-metad(x): Exited\\n== port metad closed\\n"
    ...                  "== users\\n/proc/7/cwd\\n")
    HostCheck(daemons={'metad': DaemonSeen(status_text='[INFO] nebula-metad(x): Exited', port_open=False)}, dir_users=(7,))
    """
    daemons: dict[str, DaemonSeen] = {}
    section, text, users = "", [], []
    for line in stdout.splitlines():
        if line.startswith("== status "):
            section, text = "status", []
        elif line.startswith("== port "):
            name, _, state = line[len("== port "):].rpartition(" ")
            daemons[name] = DaemonSeen("\n".join(text), state == "open")
            section = "port"
        elif line == "== users":
            section = "users"
        elif section == "status":
            text.append(line)
        elif section == "users":
            users.append(line)
    return HostCheck(daemons, parse_dir_users("\n".join(users)))
