"""Incremental backups by content: a file whose bytes the base backup already holds is copied inside
the storage (``Storage.copy``), never sent from its host; every other file goes as in a full backup.

**Identity is content.** RocksDB reuses file numbers after a restore, so ``000123.sst`` can hold
other bytes than the base's ``000123.sst``: a file is reused only when its (size, SHA-256) is the
base's, and the SHA-256 is computed on its host, from its own disk (``HostPort.hash_files``).

**Hash only what is new.** The base's manifest records each file's identity on its host
(``FileIdentity``: device, inode, birth time, mtime, ctime) beside its SHA-256: it is the hash cache,
and it travels with the backups, so a brsm on another machine has it too. A file whose identity is
the one a base file had (``same_file``) is that file, unchanged: its hash is the base's, read
from nothing. Only a file of a size the base has and no identity match is hashed on its host; a file
of a size the base lacks cannot be found by content and is sent without being hashed first.

Why ctime is not compared: a checkpoint hard-links the live SSTs and dropping the snapshot unlinks
them, and each changes the inode's ctime, so tonight's ctime is never last night's (measured on
ext4: ``ln`` moves it). What ctime guards against, an inode number reused by a new file, the birth
time catches instead (a new inode is born anew). Where the host cannot tell a birth time, both
sides must agree on ctime too: correct, but no file is found unchanged across a snapshot.
"""
from __future__ import annotations

from collections.abc import Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from brsm.concurrency import gather_bounded
from brsm.errors import BrsmError, ObjectNotFound, OperationFailed, PreflightFailed
from brsm.ports import BaseFile, BaseIndex, FileIdentity, Storage
from brsm.workflows import manifest
from brsm.workflows.layout import bad_backup_name, manifest_key
from brsm.workflows.transfer import FileJob

REUSE_FROM = 16 << 10  # smaller files are sent: a copy request costs about what sending their bytes does
LOAD_BATCH = 5000  # base files added to the index at once
COPIES_AT_ONCE = 8  # copies inside the storage in flight for one batch
BATCH_FILES = 64  # files of one reuse or hash batch at most
HASH_BATCH_BYTES = 1 << 30  # bytes one hash batch reads on its host at most
HEADERS_AT_ONCE = 8  # manifests read at once while looking for the newest base


def same_file(was: BaseFile, size: int, now: FileIdentity | None) -> bool:
    """Whether a host file (``size``, identity ``now``) is the very file a base entry was read from,
    unchanged, so that its SHA-256 is the base's (pure). Device, inode, size and mtime must agree; so
    must the birth time where both sides know it, else the ctime (see the module's doc).

    >>> w = BaseFile("B/k", 5, "a" * 64, "h", FileIdentity(1, 7, 100, 50, 120))
    >>> same_file(w, 5, FileIdentity(1, 7, 100, 50, 999))   # a link made since: only ctime moved
    True
    >>> same_file(w, 5, FileIdentity(1, 7, 101, 50, 999)), same_file(w, 5, FileIdentity(1, 7, 100, 51, 120))
    (False, False)
    >>> same_file(w, 6, FileIdentity(1, 7, 100, 50, 120)), same_file(w, 5, None)
    (False, False)
    >>> nb = BaseFile("B/k", 5, "a" * 64, "h", FileIdentity(1, 7, 100, None, 120))
    >>> same_file(nb, 5, FileIdentity(1, 7, 100, None, 120)), same_file(nb, 5, FileIdentity(1, 7, 100, None, 121))
    (True, False)
    """
    a = was.ident
    if a is None or now is None or was.size != size:
        return False
    if (a.dev, a.ino, a.mtime_ns) != (now.dev, now.ino, now.mtime_ns):
        return False
    if a.btime_ns is not None and now.btime_ns is not None:
        return a.btime_ns == now.btime_ns
    return a.btime_ns is None and now.btime_ns is None and a.ctime_ns == now.ctime_ns


def base_entry(f: dict[str, Any]) -> BaseFile:
    return BaseFile(f["key"], f["size"], f["sha256"], f.get("host") or "", FileIdentity.from_list(f.get("ident")))


# -- choosing the base (the preflight) -------------------------------------------------------------------
@dataclass(frozen=True)
class BaseChoice:
    """The base an incremental backup reuses from (journaled: a resume uses the same), or none and why."""

    name: str | None
    why: str
    file_list_sha256: str | None = None
    files: int = 0
    bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "why": self.why, "file_list_sha256": self.file_list_sha256,
                "files": self.files, "bytes": self.bytes}


async def _header(storage: Storage, name: str) -> dict[str, Any] | None:
    """A backup's parsed manifest header; None when it has none that reads (not a complete brsm backup)."""
    try:
        raw = await storage.get_bytes(manifest_key(name))
        return manifest.parse_header(raw, name)
    except (ObjectNotFound, ValueError):
        return None


def _chosen(name: str, m: dict[str, Any], why: str) -> BaseChoice:
    fl = m.get("file_list")
    return BaseChoice(name, why, fl["sha256"] if fl else None, manifest.file_count(m), manifest.total_bytes(m))


def storage_addrs(topo: Any) -> set[str]:
    """The storaged addresses a (manifest's or preflight's) topology lists (pure).

    >>> sorted(storage_addrs({"storage": [{"addr": "h:9779"}, {"addr": "g:9779"}]})), storage_addrs(None)
    (['g:9779', 'h:9779'], set())
    """
    storage = topo.get("storage") if isinstance(topo, dict) else None
    return {s["addr"] for s in storage or () if isinstance(s, dict) and isinstance(s.get("addr"), str)}


async def choose_base(storage: Storage, *, named: str | None, newest: bool, topo: dict[str, Any]) -> BaseChoice | None:
    """``--incremental-from NAME``: that backup, which must be a complete brsm backup (its manifest
    says the SHA-256 of every file); ``--incremental``: the newest complete brsm backup in this storage
    taken from one of this cluster's storaged, or none (a full backup, said in one line). None when
    neither was asked."""
    if named:
        why = bad_backup_name(named)
        if why:
            raise PreflightFailed(f"--incremental-from: {why}", hint="`brsm show --storage URI` lists the backups")
        m = await _header(storage, named)
        if m is None:
            raise PreflightFailed(f"--incremental-from: {named} is not a complete brsm backup in this storage (no "
                                  "manifest that reads): its files' SHA-256 are not known",
                                  hint="name a backup `brsm show` lists as complete and made by brsm, or use "
                                       "--incremental to take the newest")
        return _chosen(named, m, "named by --incremental-from")
    if not newest:
        return None
    mine = storage_addrs(topo)
    names = [d.rstrip("/") for d in await storage.list_dirs("") if d.startswith("BACKUP")]
    headers = await gather_bounded(HEADERS_AT_ONCE, lambda n: _header(storage, n), names)
    ours = [(m["create_time_ms"], n, m) for n, m in zip(names, headers)
            if m is not None and storage_addrs(m.get("topology")) & mine]
    if not ours:
        return BaseChoice(None, "no complete brsm backup of this cluster in this storage: a full backup")
    _, name, m = max(ours, key=lambda t: (t[0], t[1]))
    return _chosen(name, m, "the newest complete backup of this cluster in this storage")


# -- the base during COPIED ------------------------------------------------------------------------------
class Base:
    """The base's files in an index (by content, and by each host file's identity), for one COPIED run."""

    def __init__(self, name: str, index: BaseIndex) -> None:
        self.name, self.index = name, index

    @classmethod
    async def load(cls, storage: Storage, name: str, file_list_sha256: str | None,
                   index: BaseIndex) -> "tuple[Base | None, str]":
        """The base as journaled, streamed from its manifest into ``index``; (None, why) when its manifest
        is gone or is not the one the backup started from: then every file is sent."""
        m = await _header(storage, name)
        if m is None:
            index.close()
            return None, f"base {name} has no manifest that reads any more"
        fl = m.get("file_list")
        if (fl["sha256"] if fl else None) != file_list_sha256:
            index.close()
            return None, f"base {name}'s manifest changed since this backup started"
        batch: list[BaseFile] = []
        try:
            async with aclosing(manifest.files(storage, name, m)) as files:
                async for f in files:
                    batch.append(base_entry(f))
                    if len(batch) >= LOAD_BATCH:
                        index.add(batch)
                        batch = []
            index.add(batch)
        except (ObjectNotFound, ValueError) as e:
            index.close()
            return None, f"base {name}'s file list cannot be read ({e})"
        except OperationFailed as e:  # the list unreadable after the store's retries, or BRSM_HOME full: no reuse
            index.close()
            return None, f"base {name}'s files could not be read or indexed ({e.message})"
        except BaseException:
            index.close()
            raise
        return cls(name, index), ""

    def close(self) -> None:
        self.index.close()

    def known(self, host: str, jobs: Sequence[FileJob]) -> dict[str, BaseFile]:
        """Of ``jobs`` (one host's), those that are a base file unchanged: job key -> that base file."""
        with_ident = [j for j in jobs if j.ident is not None and j.size >= REUSE_FROM]
        if not with_ident:
            return {}
        found = self.index.by_inode(host, [(j.ident.dev, j.ident.ino) for j in with_ident])
        out = {}
        for j in with_ident:
            for b in found.get((j.ident.dev, j.ident.ino), ()):
                if same_file(b, j.size, j.ident):
                    out[j.key] = b
                    break
        return out

    def worth_hashing(self, jobs: Sequence[FileJob]) -> list[FileJob]:
        """Of ``jobs``, those that could be found by content: of a size some base file has."""
        sizes = self.index.sizes([j.size for j in jobs if j.size >= REUSE_FROM])
        return [j for j in jobs if j.size >= REUSE_FROM and j.size in sizes]

    def by_content(self, pairs: Sequence[tuple[int, str]]) -> dict[tuple[int, str], str]:
        return self.index.by_content(pairs)


@dataclass(frozen=True)
class Reuse:
    """A file whose bytes the base holds at ``src``: copied inside the storage."""

    job: FileJob
    src: str
    sha256: str


class ReuseBatch(list):
    """Reuse items of one host, copied together (the feed's item; a list of FileJob is a send group)."""


class HashBatch(list):
    """FileJobs of one host to hash there first; each then reused or sent."""


def batches(jobs: Sequence[FileJob], most_bytes: int = HASH_BATCH_BYTES, most_files: int = BATCH_FILES) -> list[list[FileJob]]:
    """``jobs`` cut into batches of at most ``most_files`` files and ``most_bytes`` bytes (a bigger
    file alone) (pure).

    >>> [len(b) for b in batches([FileJob("h", str(i), 10, str(i)) for i in range(5)], 25, 64)]
    [2, 2, 1]
    """
    out: list[list[FileJob]] = []
    cur: list[FileJob] = []
    size = 0
    for j in jobs:
        if cur and (len(cur) >= most_files or size + j.size > most_bytes):
            out.append(cur)
            cur, size = [], 0
        cur.append(j)
        size += j.size
    if cur:
        out.append(cur)
    return out


async def copy_all(storage: Storage, items: Sequence[Reuse]) -> list[tuple[Reuse, bool]]:
    """Each item's base object copied to its key; False where the base object is gone or is not the
    size the base's manifest says (the file is then sent instead: never a backup that points at nothing)."""
    async def one(r: Reuse) -> bool:
        try:
            got = await storage.copy(r.src, r.job.key)
        except ObjectNotFound:
            return False
        except BrsmError as e:
            if getattr(e, "permanent", False):
                return False
            raise
        return got.size == r.job.size

    oks = await gather_bounded(COPIES_AT_ONCE, one, items)
    return list(zip(items, oks))


def describe(choice: dict[str, Any] | None) -> str:
    """One line for the progress: what this backup reuses from (pure).

    >>> describe({"name": "BACKUP_1", "why": "named by --incremental-from", "files": 3, "bytes": 10})
    'incremental from BACKUP_1 (named by --incremental-from; 3 files): only content it lacks is sent'
    >>> describe({"name": None, "why": "no complete brsm backup of this cluster in this storage: a full backup"})
    'no complete brsm backup of this cluster in this storage: a full backup'
    """
    if not choice or not choice.get("name"):
        return (choice or {}).get("why", "")
    return f"incremental from {choice['name']} ({choice['why']}; {choice['files']} files): only content it lacks is sent"

