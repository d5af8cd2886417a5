"""Reading the config file itself: only a regular file, of bounded size, in UTF-8, as TOML.

A path given by an operator may name /dev/zero, a FIFO or a directory; each is refused at once
rather than read forever or half-parsed.
"""
from __future__ import annotations

import os
import stat
import tomllib
from pathlib import Path
from typing import Any

from brsm.errors import UsageError

MAX_CONFIG_BYTES = 1 << 20


def file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"



def read_regular_file(p: Path, *, what: str, limit: int, hint: str) -> str:
    """The text of ``p`` if it is a regular file of at most ``limit`` bytes; else one UsageError at once.

    Opened with O_NONBLOCK (a FIFO would otherwise block the open until a writer came) and checked
    with fstat on that descriptor, so what is read is what was checked: /dev/zero, a FIFO or a
    directory is refused without reading a byte."""
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0))
    except OSError as e:
        raise UsageError(f"cannot read {what} {p}: {e.strerror or e}", hint=hint) from e
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UsageError(f"cannot read {what} {p}: it is {file_kind(st.st_mode)}, not a file", hint=hint)
        if st.st_size > limit:
            raise UsageError(f"cannot read {what} {p}: {st.st_size} bytes is too large for a {what} "
                             f"(at most {limit >> 10} KiB)", hint=hint)
        data = b""
        while len(data) <= limit:
            chunk = os.read(fd, limit + 1 - len(data))
            if not chunk:
                break
            data += chunk
    except OSError as e:
        raise UsageError(f"cannot read {what} {p}: {e.strerror or e}", hint=hint) from e
    finally:
        os.close(fd)
    if len(data) > limit:
        raise UsageError(f"cannot read {what} {p}: it grew past {limit >> 10} KiB while read", hint=hint)
    try:
        return data.decode()
    except UnicodeDecodeError as e:
        raise UsageError(f"cannot read {what} {p}: not UTF-8 text ({e.reason} at byte {e.start})", hint=hint) from e


def read_toml(p: Path) -> tuple[dict[str, Any], str]:
    text = read_regular_file(p, what="config", limit=MAX_CONFIG_BYTES, hint="check the path given to --config")
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"{p}: not valid TOML: {e}", hint="fix the syntax at the line named") from e


