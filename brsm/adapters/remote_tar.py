"""Reading the tar that ``remote_cmd.tar_files_argv`` prints: each requested path's bytes, or why not.

Pure: the SSH adapter runs the command and hands the bytes here. A member counts for a requested
path only when its name is exactly that path, it is a regular file, and its bytes arrived whole;
anything else (a member missing, renamed, a symlink or a directory in its place, a name twice, an
archive cut short) leaves that path with a problem, and the caller reads it again alone.
"""
from __future__ import annotations

import io
import tarfile
from collections.abc import Sequence

from brsm.ports import FileRead

ENCODING = "utf-8"  # names as find prints them and brsm decodes them (surrogateescape for other bytes)


def paths_input(paths: Sequence[str]) -> bytes:
    """The NUL-separated list tar reads on stdin.

    >>> paths_input(["/a b", "/c\\nd"])
    b'/a b\\x00/c\\nd\\x00'
    """
    return b"".join(p.encode(ENCODING, "surrogateescape") + b"\0" for p in paths)


def _kind(m: tarfile.TarInfo) -> str:
    for test, word in ((m.issym, "a symbolic link"), (m.islnk, "a hard link"), (m.isdir, "a directory"),
                       (m.isfifo, "a FIFO"), (m.ischr, "a character device"), (m.isblk, "a block device")):
        if test():
            return word
    return "not a regular file"


def parse_tar_members(data: bytes, paths: Sequence[str]) -> list[FileRead]:
    """One FileRead per requested path, in the order asked (pure).

    >>> import io, tarfile
    >>> buf = io.BytesIO()
    >>> with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as t:
    ...     info = tarfile.TarInfo("/d/a"); info.size = 2; t.addfile(info, io.BytesIO(b"hi"))
    >>> [(r.path, r.data, r.problem) for r in parse_tar_members(buf.getvalue(), ["/d/a", "/d/b"])]
    [('/d/a', b'hi', ''), ('/d/b', None, 'not in the archive')]
    """
    wanted = set(paths)
    got: dict[str, bytes] = {}
    problems: dict[str, str] = {}
    cut = ""
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r|", encoding=ENCODING, errors="surrogateescape") as tf:
            for m in tf:
                name = m.name
                if name not in wanted:
                    continue  # a name nobody asked for (renamed, or its trailing "/" form) reads as nothing
                if name in got or name in problems:
                    got.pop(name, None)
                    problems[name] = "in the archive twice"
                    continue
                if not m.isreg():
                    problems[name] = f"{_kind(m)}, not a regular file"
                    continue
                f = tf.extractfile(m)
                body = f.read() if f is not None else b""
                if len(body) != m.size:
                    problems[name] = "its bytes were cut short"
                    cut = "the archive ended early"
                    break
                got[name] = body
    except (tarfile.TarError, EOFError, OSError) as e:
        cut = f"the archive ended early ({type(e).__name__})"
    out = []
    for p in paths:
        if p in problems:
            out.append(FileRead(p, None, problems[p]))
        elif p in got:
            out.append(FileRead(p, got[p]))
        else:
            out.append(FileRead(p, None, cut or "not in the archive"))
    return out
