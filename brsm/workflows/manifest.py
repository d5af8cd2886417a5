"""A brsm backup's manifest, written and read as a stream: its format, writer, reader and checks.

Format 2 (this brsm writes it) is two objects:

* ``<NAME>/brsm-manifest-files.jsonl``: one JSON object per line, one line per file
  (``{"host","key","path","sha256","size"}``), in strictly increasing key order;
* ``<NAME>/brsm-manifest.json``: the header, written last (the backup's commit marker, as before):
  everything but the files, and ``file_list`` = {key, count, bytes, sha256, total_bytes} of the
  object above, so a truncated, reordered or altered file list is found when it is read.

Why two objects rather than one JSON-lines object: the header keeps the name and shape an older brsm
reads (a JSON object with ``format``), so an older brsm says "format 2" instead of "not JSON", and its
gc still sees a finished backup (``brsm-manifest.json`` present) instead of an abandoned one to delete.
The header is small (``show`` reads counts and bytes from it alone); the file list is never held whole:
the writer streams it into storage twice-generated from an iterator of files in key order (no local
spool: the store confirms the SHA-256 of what it received), the reader yields one checked file at a time.

Format 1 (brsm before this one: the whole manifest one JSON object with a ``files`` list) still reads:
those exist only up to today's sizes, and are read whole as before.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from brsm.errors import StorageError
from brsm.ports import FileIdentity, Storage
from brsm.workflows.layout import MANIFEST, bad_backup_name, MANIFEST_FILES, manifest_files_key, manifest_key, meta_file_key

FORMAT = 2
READS = (1, 2)
MAX_FILE_BYTES = 1 << 44  # 16 TiB: a bigger "file" is no checkpoint file
MAX_LINE_BYTES = 64 << 10  # a key (<= 1 KiB on S3) and a host path (<= 4 KiB): a longer line is hostile
MAX_HEADER_BYTES = 64 << 20  # format 2's header holds no files: far below this
_CHUNK = 1 << 20
_HEX = frozenset("0123456789abcdef")
FILE_FIELDS = ("host", "key", "path", "sha256", "size")
# written only when known: the host file's identity (FileIdentity.as_list, the next incremental's hash
# cache) and the backup an object was copied from inside the storage (an older brsm ignores both)
OPTIONAL_FIELDS = ("ident", "reused_from")


# -- checks ------------------------------------------------------------------------------------------
def key_outside(name: str, key: str) -> bool:
    """A key a manifest must not name: not under ``<NAME>/``, with an empty, ``.`` or ``..`` segment
    (which a restore would resolve outside its data path), or with a control character (a NUL, a
    newline: no checkpoint file has one, and a path with one is a trap for every tool downstream)."""
    parts = key.split("/")
    return (parts[0] != name or len(parts) < 3 or any(seg in ("", ".", "..") for seg in parts)
            or any(ord(c) < 0x20 or ord(c) == 0x7f for c in key))


OUTSIDE, IMPOSSIBLE_SIZE = "outside", "impossible size"


def unsafe_entry(name: str, f: Mapping[str, Any]) -> str | None:
    """Why a manifest's file entry must not be acted on: its key leads outside the backup's data
    (a restore would write there), or its size is no checkpoint file's. None when it is sound.

    >>> unsafe_entry("B", {"key": "B/data/../../etc/passwd", "size": 1})
    'outside'
    >>> unsafe_entry("B", {"key": "B/meta/a", "size": -1}), unsafe_entry("B", {"key": "B/meta/a", "size": 0})
    ('impossible size', None)
    """
    key, size = f.get("key"), f.get("size")
    if (not isinstance(key, str) or key_outside(name, key)
            or key in (manifest_key(name), meta_file_key(name), manifest_files_key(name))):
        return OUTSIDE
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_FILE_BYTES:
        return IMPOSSIBLE_SIZE
    return None


def is_sha256(v: Any) -> bool:
    return isinstance(v, str) and len(v) == 64 and set(v) <= _HEX


def entry_problem(name: str, f: Any, where: str) -> str | None:
    """What is wrong with one file entry of a manifest read from storage (None: it is sound)."""
    if not (isinstance(f, dict) and isinstance(f.get("key"), str) and isinstance(f.get("size"), int)
            and is_sha256(f.get("sha256"))):
        return f"{where} lacks key, size or sha256"
    unsafe = unsafe_entry(name, f)
    if unsafe == OUTSIDE:
        return f"{where} key {f['key']!r} is outside the backup's data"
    if unsafe == IMPOSSIBLE_SIZE:
        return f"{where} ({f['key']!r}) claims an impossible size {f['size']}"
    if f.get("ident") is not None and FileIdentity.from_list(f["ident"]) is None:
        return f"{where} ({f['key']!r}) has an ident that is not a file identity"
    if f.get("reused_from") is not None and (not isinstance(f["reused_from"], str) or bad_backup_name(f["reused_from"])):
        return f"{where} ({f['key']!r}) names no backup it was reused from"
    return None


# -- the header ---------------------------------------------------------------------------------------
class NewerFormat(ValueError):
    """A manifest written by a newer brsm: not damaged, only unreadable here."""


def format_problem(fmt: Any) -> str | None:
    """The one message for a manifest of a format this brsm cannot read (None: it can).

    >>> format_problem(3)
    "brsm-manifest.json has format 3, newer than this brsm reads (1, 2): read this backup with a newer brsm"
    """
    if fmt in READS:
        return None
    if isinstance(fmt, int) and not isinstance(fmt, bool) and fmt > FORMAT:
        return (f"{MANIFEST} has format {fmt}, newer than this brsm reads ({', '.join(map(str, READS))}): "
                "read this backup with a newer brsm")
    return f"{MANIFEST} has format {fmt!r}, not one brsm writes ({', '.join(map(str, READS))})"


def parse_header(raw: bytes, name: str) -> dict[str, Any]:
    """``brsm-manifest.json`` as a dict, checked for the fields readers rely on; ValueError says what is
    wrong. Format 1 carries its whole file list (checked here, entry by entry); format 2 names its file
    list object, read with ``files``."""
    try:
        m = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{MANIFEST} is not JSON: {e}") from e
    if not isinstance(m, dict):
        raise ValueError(f"{MANIFEST} is not a JSON object")
    wrong = format_problem(m.get("format"))
    if wrong:
        fmt = m.get("format")
        newer = isinstance(fmt, int) and not isinstance(fmt, bool) and fmt > FORMAT
        raise (NewerFormat if newer else ValueError)(wrong)
    if m.get("backup_name") != name:
        raise ValueError(f"{MANIFEST} names backup {m.get('backup_name')!r}, not {name!r}")
    if not isinstance(m.get("create_time_ms"), int):
        raise ValueError(f"{MANIFEST} has no create_time_ms")
    if m["format"] == 1:
        files = m.get("files")
        if not isinstance(files, list):
            raise ValueError(f"{MANIFEST} has no file list")
        for i, f in enumerate(files):
            bad = entry_problem(name, f, f"{MANIFEST}: files[{i}]")
            if bad:
                raise ValueError(bad)
    else:
        fl = m.get("file_list")
        if not (isinstance(fl, dict) and fl.get("key") == manifest_files_key(name) and is_sha256(fl.get("sha256"))
                and all(_count(fl.get(k)) for k in ("count", "bytes", "total_bytes"))):
            raise ValueError(f"{MANIFEST}: file_list does not name {MANIFEST_FILES} with its count, bytes, "
                             "total_bytes and sha256")
        if "files" in m:
            raise ValueError(f"{MANIFEST} of format 2 carries a files list")
    if not isinstance(m.get("spaces", {}), dict):
        raise ValueError(f"{MANIFEST}: spaces is not an object")
    topo = m.get("topology")
    storage = topo.get("storage") if isinstance(topo, dict) else None
    if not (isinstance(storage, list) and all(
            isinstance(s, dict) and isinstance(s.get("addr"), str) and isinstance(s.get("data_paths"), list)
            for s in storage)):
        raise ValueError(f"{MANIFEST} has no topology of the storage hosts it was taken from")
    if "meta_sha256" in m and not is_sha256(m["meta_sha256"]):
        raise ValueError(f"{MANIFEST}: meta_sha256 is not a SHA-256")
    return m


def _count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def file_count(m: Mapping[str, Any]) -> int:
    """How many files a (parsed) manifest lists, without reading its file list."""
    return m["file_list"]["count"] if "file_list" in m else len(m["files"])


def total_bytes(m: Mapping[str, Any]) -> int:
    """Their bytes, without reading the file list."""
    return m["file_list"]["total_bytes"] if "file_list" in m else sum(f["size"] for f in m["files"])


def encode_header(header: Mapping[str, Any]) -> bytes:
    return json.dumps(header, sort_keys=True, indent=1).encode()


# -- the file list ------------------------------------------------------------------------------------
def file_line(f: Mapping[str, Any]) -> bytes:
    """One file's line: compact, keys sorted, ASCII only (a newline in a value is escaped, never raw)."""
    d = {k: f.get(k) for k in FILE_FIELDS}
    d.update({k: f[k] for k in OPTIONAL_FIELDS if f.get(k) is not None})
    return json.dumps(d, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode() + b"\n"


@dataclass
class Tally:
    """What a file list adds up to, as it goes by: the count, the bytes of its files, the bytes and
    SHA-256 of the list itself, and the last key (the next must be greater)."""

    count: int = 0
    total_bytes: int = 0
    bytes: int = 0
    last_key: str | None = None

    def __post_init__(self) -> None:
        self._h = hashlib.sha256()

    def add(self, line: bytes, f: Mapping[str, Any], where: str) -> None:
        if self.last_key is not None and not f["key"] > self.last_key:
            raise ValueError(f"{where} ({f['key']!r}) is not after {self.last_key!r}: the file list is out of "
                             "key order or lists a file twice")
        self.last_key = f["key"]
        self.count += 1
        self.total_bytes += f["size"]
        self.bytes += len(line)
        self._h.update(line)

    @property
    def sha256(self) -> str:
        return self._h.hexdigest()

    def as_file_list(self, key: str) -> dict[str, Any]:
        return {"key": key, "count": self.count, "bytes": self.bytes, "sha256": self.sha256,
                "total_bytes": self.total_bytes}


FileSource = Callable[[], Iterable[Mapping[str, Any]]]  # a fresh iterator of files in key order, each call


def tally(name: str, files: FileSource) -> Tally:
    """The file list's tally, each entry checked as a reader will check it (a manifest brsm could not
    read back is refused when it is written, not discovered at restore time)."""
    t = Tally()
    for i, f in enumerate(files()):
        line = file_line(f)
        bad = entry_problem(name, f, f"file {i}") or (
            f"file {i} ({f['key']!r}) makes a line over {MAX_LINE_BYTES} bytes" if len(line) > MAX_LINE_BYTES else None)
        if bad:
            raise ValueError(bad)
        t.add(line, f, f"file {i}")
    return t


class FileListBytes:
    """The file list's bytes as a ByteSource (``Storage.put``): made again from ``files`` each time it
    is opened, never held whole; ``open(offset)`` skips what a resumed upload already has."""

    def __init__(self, files: FileSource, chunk: int = _CHUNK) -> None:
        self._files, self._chunk = files, chunk

    async def open(self, offset: int = 0) -> AsyncIterator[bytes]:
        buf = bytearray()
        skip = offset
        for f in self._files():
            line = file_line(f)
            if skip >= len(line):
                skip -= len(line)
                continue
            buf += line[skip:]
            skip = 0
            if len(buf) >= self._chunk:
                yield bytes(buf)
                buf.clear()
        if buf:
            yield bytes(buf)


async def write(storage: Storage, name: str, header: Mapping[str, Any], files: FileSource) -> dict[str, Any]:
    """Write a format-2 manifest: the file list (streamed), then the header, last. ``files`` gives the
    files in key order, afresh on each call (it is walked twice: to tally, then to send). Returns the
    header written."""
    try:
        t = tally(name, files)
    except ValueError as e:
        raise StorageError(f"backup {name}: its manifest cannot be written: {e}",
                           hint="report this: a copied file's key or size is not one brsm can restore") from e
    key = manifest_files_key(name)
    got = await storage.put(key, FileListBytes(files), t.bytes)
    if got.size != t.bytes or got.sha256 != t.sha256:
        raise StorageError(f"backup {name}: {MANIFEST_FILES} was stored as {got.size} bytes {got.sha256[:12]}…, "
                           f"expected {t.bytes} bytes {t.sha256[:12]}…", hint="resume the backup to write it again")
    out = {**header, "format": FORMAT, "file_list": t.as_file_list(key)}
    out.pop("files", None)
    await storage.put_bytes(manifest_key(name), encode_header(out))
    return out


async def parse_lines(name: str, chunks: AsyncIterator[bytes], want: Mapping[str, Any]) -> AsyncIterator[dict[str, Any]]:
    """The files of a format-2 file list, one checked entry at a time, from its bytes. ``want`` is the
    header's ``file_list``: when the bytes end, their count, size and SHA-256 must be its; a line that
    is not a sound entry, out of key order, or over MAX_LINE_BYTES raises ValueError where it is."""
    t = Tally()
    buf = bytearray()
    n = 0

    def one(line: bytes) -> dict[str, Any]:
        where = f"{MANIFEST_FILES} line {n}"
        try:
            f = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{where} is not JSON: {e}") from e
        bad = entry_problem(name, f, where)
        if bad:
            raise ValueError(bad)
        t.add(line + b"\n", f, where)
        if t.bytes > want["bytes"] or t.count > want["count"]:
            raise ValueError(f"{MANIFEST_FILES} is longer than its header says ({want['count']} files, "
                             f"{want['bytes']} bytes): altered")
        return f

    async for block in chunks:
        buf += block
        while True:
            i = buf.find(b"\n")
            if i < 0:
                break
            n += 1
            if i > MAX_LINE_BYTES:
                raise ValueError(f"{MANIFEST_FILES} line {n} is over {MAX_LINE_BYTES} bytes: not a file entry")
            line = bytes(buf[:i])
            del buf[:i + 1]
            yield one(line)
        if len(buf) > MAX_LINE_BYTES:
            raise ValueError(f"{MANIFEST_FILES} line {n + 1} is over {MAX_LINE_BYTES} bytes: not a file entry")
    if buf:
        raise ValueError(f"{MANIFEST_FILES} ends inside line {n + 1}: truncated")
    got = t.as_file_list(want["key"])
    if any(got[k] != want[k] for k in ("count", "bytes", "sha256", "total_bytes")):
        raise ValueError(f"{MANIFEST_FILES} does not match its header (header: {want['count']} files, "
                         f"{want['bytes']} bytes, sha256 {want['sha256'][:12]}…; read: {got['count']} files, "
                         f"{got['bytes']} bytes, sha256 {got['sha256'][:12]}…): truncated or altered")


async def files(storage: Storage, name: str, m: Mapping[str, Any]) -> AsyncIterator[dict[str, Any]]:
    """Every file of a parsed manifest, in key order (format 1: from its list; format 2: streamed from
    storage and checked line by line, its tally against the header at the end). ValueError when the
    file list is unsound; ObjectNotFound when it is gone."""
    if "file_list" not in m:
        for f in sorted(m["files"], key=lambda f: f["key"]):  # brsm wrote them sorted; an edited one may not be
            yield f
        return
    want = m["file_list"]
    # closed, with the read of the store under it, when the reader stops early (a listing read beside
    # it failed): not left to the garbage collector
    async with aclosing(storage.get(want["key"])) as chunks, aclosing(parse_lines(name, chunks, want)) as entries:
        async for f in entries:
            yield f
