"""The longer scripts the SSH adapter runs on hosts, and parsers of what they print: the restore's
proof (re-hash, fingerprint of a tree) and its one-exec "is it down?" check.

Each is a fixed ``bash -c`` text whose values (dirs, addresses, ports) are its positional arguments,
never spliced into it; ``SshHost.run`` quotes every argument. Pure: nothing here touches the network.
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

from brsm.ports import DaemonProbe, DaemonSeen, HostCheck, TreeFingerprint


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
