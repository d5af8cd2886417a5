"""What an object key and a listing prefix may be, checked before any backend sees one.

Every backend (S3, OSS, local, in-memory) maps keys under its URI's prefix; a key with an empty,
``.`` or ``..`` segment, or a leading ``/``, could name something outside that prefix on one
backend and not on another, so it is refused here, once, the same way for all of them.
"""
from __future__ import annotations

from brsm.errors import StorageError


def check_key(key: str) -> str:
    """A key is relative, '/'-separated, without empty, '.' or '..' segments."""
    if not key or key.startswith("/") or key.endswith("/"):
        raise StorageError(f"invalid object key {key!r}: must be relative and name an object", permanent=True)
    for seg in key.split("/"):
        if seg in ("", ".", ".."):
            raise StorageError(f"invalid object key {key!r}: empty, '.' or '..' segment", permanent=True)
    return key


def check_prefix(prefix: str) -> str:
    """A listing prefix: '' (everything) or a relative string (a key prefix, not necessarily a dir)."""
    if prefix.startswith("/") or any(s in (".", "..") for s in prefix.split("/")[:-1]) or "//" in prefix:
        raise StorageError(f"invalid prefix {prefix!r}", permanent=True)
    return prefix


def dir_prefix(prefix: str) -> str:
    """'' stays '', 'a/b' becomes 'a/b/'."""
    return prefix if prefix == "" or prefix.endswith("/") else prefix + "/"


def normalize_root_prefix(prefix: str) -> str:
    """The prefix from a URI: no leading '/', one trailing '/' unless empty."""
    p = prefix.strip("/")
    if any(s in ("", ".", "..") for s in p.split("/")) and p:
        raise StorageError(f"invalid storage prefix {prefix!r}", permanent=True)
    return p + "/" if p else ""
