"""The local store's listing: a directory tree walked in the order of its keys, never held whole.

A directory sorts as its name followed by '/' (every key in it begins so), so walking each
directory's sorted entries, and recursing into a directory where it sorts, yields exactly the keys'
order: by code point, which is the byte order of their UTF-8, the order S3 and OSS list in
('a-x' < 'a.x' < 'a/b' < 'a0'). What is held is the names of the directories on the current path.
Symlinks and temp files are no objects; a directory deleted meanwhile holds none.
"""
from __future__ import annotations

import os
import stat
from collections.abc import Iterator

from brsm.ports import ObjectInfo

from .local_write import TMP_MARK


def walk_in_key_order(path: str, rel: str, prefix: str, after: str) -> Iterator[ObjectInfo]:
    """The regular files under the directory ``path`` (whose keys begin ``rel``) with keys starting
    ``prefix`` and sorting after ``after``, in key order."""
    try:
        with os.scandir(path) as it:  # names only, a directory's marked by a trailing '/'
            entries = [e.name + "/" if e.is_dir(follow_symlinks=False) else e.name
                       for e in it if not e.name.startswith(TMP_MARK)]
    except (FileNotFoundError, NotADirectoryError):
        return
    entries.sort()
    for entry in entries:
        k = rel + entry
        if entry.endswith("/"):  # a directory: every key in it begins with k
            if not (k.startswith(prefix) or prefix.startswith(k)) or (after > k and not after.startswith(k)):
                continue
            yield from walk_in_key_order(os.path.join(path, entry[:-1]), k, prefix, after)
        elif k.startswith(prefix) and k > after:
            try:
                st = os.lstat(os.path.join(path, entry))
            except FileNotFoundError:
                continue  # deleted meanwhile
            if stat.S_ISREG(st.st_mode):  # a symlink is not an object (see LocalStorage._open_object)
                yield ObjectInfo(k, st.st_size)


def has_object(d: str) -> bool:
    """Whether the directory holds an object anywhere below it (a temp file is none)."""
    for _dirpath, _dirs, files in os.walk(d):
        if any(not f.startswith(TMP_MARK) for f in files):
            return True
    return False
