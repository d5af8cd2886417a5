"""What is in a backup storage: every ``BACKUP*`` entry, read and classified. Pure logic over a Storage.

States (``BackupEntry.state``):

* ``complete``   brsm: the manifest is readable, agrees with ``<NAME>.meta``, and every file it lists is
                 in storage with its size. nebula-br (no manifest): ``<NAME>.meta`` decodes, names this
                 backup, and its meta files and per-host data are there (nebula-br writes ``.meta`` last).
                 Such backups carry no checksums (``checksums = False``).
* ``incomplete`` neither a manifest nor a ``.meta``: a backup still being written, or abandoned (gc's job).
* ``broken``     a manifest or ``.meta`` that is unreadable or inconsistent, or files it lists are missing.
                 ``problems`` says why.

``.meta`` decoding is a Thrift matter, so the caller passes ``decode_meta`` (the CLI wires the codec in
``brsm.adapters.meta_codec``); workflows never import adapters.
"""
from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Callable, Iterable, Mapping
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from brsm.concurrency import gather_bounded
from brsm.errors import ObjectNotFound
from brsm.ports import Storage
from brsm.workflows import listing, manifest
from brsm.workflows.layout import in_progress_key, MANIFEST, manifest_files_key, manifest_key, meta_file_key
from brsm.workflows.maintenance import name_time

# Larger than any real one by far: a bigger manifest or .meta is hostile or garbage, and is refused
# before it is read into memory (a format-1 manifest is read whole; format 2's header holds no files).
# A file size above MAX_FILE_BYTES (16 TiB) is no checkpoint file.
MAX_MANIFEST_BYTES = 1 << 30
MAX_META_BYTES = 256 << 20
MAX_FILE_BYTES = manifest.MAX_FILE_BYTES

COMPLETE = "complete"
INCOMPLETE = "incomplete"
BROKEN = "broken"
BY_BRSM = "brsm"
BY_NEBULA_BR = "nebula-br"
BY_UNKNOWN = "unknown"


@dataclass(frozen=True)
class MetaFacts:
    """The facts of a ``<NAME>.meta`` (nebula-br's BackupMeta) that listing and checking need."""

    name: str
    create_time_ms: int
    spaces: Mapping[int, str]
    all_spaces: bool
    full: bool
    meta_files: tuple[str, ...]  # base names
    storage_hosts: tuple[str, ...]  # "host:port"
    # storage host "host:port" -> space ids it holds checkpoints of
    host_spaces: Mapping[str, tuple[int, ...]] = field(default_factory=dict)


# bytes of a .meta -> its facts; raises ValueError when the bytes are not a BackupMeta
MetaDecoder = Callable[[bytes], MetaFacts]


@dataclass
class BackupEntry:
    name: str
    state: str
    made_by: str
    checksums: bool = False
    created_ms: int | None = None
    created_from: str = "none"  # manifest | meta | name | none
    spaces: list[str] = field(default_factory=list)
    all_spaces: bool | None = None
    full: bool | None = None
    files: int = 0
    bytes: int = 0
    # what was read from the hosts to make it: all of ``bytes``, but for an incremental backup, whose
    # other files were copied inside the storage from ``incremental_from``
    bytes_sent: int = 0
    incremental_from: str | None = None
    problems: list[str] = field(default_factory=list)
    # not part of the public view: what was read, for verify
    manifest: dict[str, Any] | None = None
    meta: MetaFacts | None = None
    # the backup's own objects found (manifest, its file list, .meta, the in-progress marker): key -> size.
    # Its data objects are streamed past, never held: their number grows with the cluster's files.
    objects: dict[str, int] = field(default_factory=dict)
    structure: list[dict[str, Any]] | None = None  # a nebula-br backup: the parts its .meta names that are missing
    meta_sha256: str | None = None  # of the ``.meta`` bytes read
    file_check: FileCheck | None = None  # the manifest's files against the listing, when it could be read

    @property
    def created(self) -> str | None:
        return iso_utc(self.created_ms)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "state": self.state, "made_by": self.made_by, "checksums": self.checksums,
                "created": self.created, "created_ms": self.created_ms, "created_from": self.created_from,
                "spaces": self.spaces, "all_spaces": self.all_spaces, "full": self.full, "files": self.files,
                "bytes": self.bytes, "bytes_sent": self.bytes_sent, "incremental_from": self.incremental_from,
                "problems": self.problems}


def iso_utc(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- the manifest ---------------------------------------------------------------------------------
def too_big(what: str, size: int, limit: int) -> str | None:
    """The problem with reading a ``size``-byte ``what`` (None when it is plausible)."""
    if size > limit:
        return f"{what} is {size} bytes: implausibly large (over {limit >> 20} MiB), not read"
    return None


# the checks of a manifest live with its format (brsm.workflows.manifest); these names are kept for callers
key_outside = manifest.key_outside
unsafe_entry = manifest.unsafe_entry
OUTSIDE, IMPOSSIBLE_SIZE = manifest.OUTSIDE, manifest.IMPOSSIBLE_SIZE
parse_manifest = manifest.parse_header


def meta_hash_problem(m: dict[str, Any], meta_sha256: str | None, name: str) -> str | None:
    """The manifest records the SHA-256 of the ``.meta`` written with it (brsm 0.1+): a ``.meta``
    changed since is reported even when it still decodes (a flipped byte inside a path does)."""
    want = m.get("meta_sha256")
    if want is None or meta_sha256 is None or want == meta_sha256:
        return None
    return f"{name}.meta does not match the SHA-256 its manifest records: changed since the backup"


def meta_disagreements(m: dict[str, Any], facts: MetaFacts, name: str) -> list[str]:
    """Where the manifest and the ``.meta`` disagree (empty when they agree)."""
    out = []
    if facts.name != name:
        out.append(f"{name}.meta names backup {facts.name!r}")
    if facts.create_time_ms and m["create_time_ms"] != facts.create_time_ms:
        out.append(f"create time differs: manifest {m['create_time_ms']}, .meta {facts.create_time_ms}")
    try:
        mspaces = {int(k) for k in m.get("spaces", {})}
    except (TypeError, ValueError):
        mspaces = set()
    if mspaces != set(facts.spaces):
        out.append(f"spaces differ: manifest {sorted(mspaces)}, .meta {sorted(facts.spaces)}")
    if "all_spaces" in m and bool(m["all_spaces"]) != facts.all_spaces:
        out.append(f"all_spaces differs: manifest {bool(m['all_spaces'])}, .meta {facts.all_spaces}")
    if "storage_hosts" in m and sorted(m["storage_hosts"]) != sorted(facts.storage_hosts):
        out.append(f"storage hosts differ: manifest {sorted(m['storage_hosts'])}, .meta {sorted(facts.storage_hosts)}")
    if "meta_files" in m and sorted(posixpath.basename(f) for f in m["meta_files"]) != sorted(facts.meta_files):
        out.append("meta files differ between the manifest and the .meta")
    return out


@dataclass
class FileCheck:
    """The manifest's files against a listing: those missing or of another size, and the objects under
    the backup the manifest does not list (``unlisted`` of them, the first by key)."""

    problems: list[dict[str, Any]] = field(default_factory=list)
    listed: int = 0  # files the manifest lists
    unlisted: int = 0
    first_unlisted: str | None = None


def own_keys(name: str) -> set[str]:
    """The manifest's own objects and the ``.meta``: under the backup, never in its file list."""
    return {manifest_key(name), manifest_files_key(name), meta_file_key(name)}


async def check_files(storage: Storage, name: str, m: dict[str, Any]) -> FileCheck:
    """Each manifest file missing from the listing or of another size: the file list and the listing
    streamed side by side, both in key order (one entry of each held, whatever the number of files).
    ValueError / ObjectNotFound from reading the file list pass through: the manifest is unreadable."""
    out = FileCheck()
    own = own_keys(name)
    async with aclosing(listing.side_by_side(storage, f"{name}/", manifest.files(storage, name, m))) as pairs:
        async for key, f, have in pairs:
            if f is None:
                if key not in own:
                    out.unlisted += 1
                    if out.first_unlisted is None:
                        out.first_unlisted = key
                continue
            out.listed += 1
            if have is None:
                out.problems.append({"key": key, "problem": "missing", "expected": f["size"], "actual": None})
            elif have != f["size"]:
                out.problems.append({"key": key, "problem": "size", "expected": f["size"], "actual": have})
    return out


class Structure:
    """A nebula-br backup has no hashes: what its ``.meta`` names must be there at all. Fed the
    listing one key at a time; holds the space ids seen per storage host, not the keys."""

    def __init__(self, name: str, facts: MetaFacts) -> None:
        self.name, self.facts = name, facts
        self.hosts = sorted(set(facts.storage_hosts) | set(facts.host_spaces))
        self.meta_missing = {f"{name}/meta/{f}" for f in facts.meta_files}
        self.seen: dict[str, set[int | None]] = {}

    def add(self, key: str) -> None:
        self.meta_missing.discard(key)
        parts = key.split("/", 3)
        if len(parts) == 4 and parts[1] == "data" and parts[2] in self.hosts:
            self.seen.setdefault(parts[2], set()).add(_space_of(parts[3]))

    def problems(self) -> list[dict[str, Any]]:
        name, facts = self.name, self.facts
        out = [{"key": f"{name}/meta/{f}", "problem": "missing", "expected": None, "actual": None}
               for f in facts.meta_files if f"{name}/meta/{f}" in self.meta_missing]
        for host in self.hosts:
            spaces = facts.host_spaces.get(host, ())
            prefix = f"{name}/data/{host}/"
            seen = self.seen.get(host)
            if not seen:
                if spaces or not facts.host_spaces:
                    out.append({"key": prefix, "problem": "missing", "expected": None, "actual": None,
                                "detail": f"no data for storage host {host}"})
                continue
            for sid in spaces:
                if sid not in seen:
                    out.append({"key": f"{prefix}data*/{sid}/", "problem": "missing", "expected": None,
                                "actual": None, "detail": f"no data of space {sid} from {host}"})
        return out


def structure_problems(name: str, facts: MetaFacts, keys: Iterable[str]) -> list[dict[str, Any]]:
    """The parts a nebula-br ``.meta`` names that are missing from ``keys``."""
    st = Structure(name, facts)
    for k in keys:
        st.add(k)
    return st.problems()


def _space_of(rel: str) -> int | None:
    """``data<i>/<spaceId>/...`` -> spaceId."""
    parts = rel.split("/")
    if len(parts) >= 3 and parts[0].startswith("data") and parts[1].isdigit():
        return int(parts[1])
    return None


# -- one backup ----------------------------------------------------------------------------------------
async def own_objects(storage: Storage, name: str) -> dict[str, int]:
    """The backup's own objects that are there (manifest, its file list, ``.meta``, the in-progress
    marker), key -> size: looked up by name, so no listing of its data is held to find them."""
    return await listing.object_sizes(storage, own_keys(name) | {in_progress_key(name)})


async def tally_objects(storage: Storage, name: str, *, skip: Iterable[str] = (),
                        structure: Structure | None = None) -> tuple[int, int]:
    """(count, bytes) of the objects under ``<name>/`` but ``skip``, streamed (each fed to
    ``structure``, when given)."""
    skipped, n, total = set(skip), 0, 0
    async for o in storage.iter_objects(f"{name}/"):
        if o.key in skipped:
            continue
        n, total = n + 1, total + o.size
        if structure is not None:
            structure.add(o.key)
    return n, total


async def inspect_backup(storage: Storage, name: str, *, decode_meta: MetaDecoder) -> BackupEntry:
    """Read one backup's manifest and ``.meta`` and classify it against its listing (streamed)."""
    objs = await own_objects(storage, name)
    e = BackupEntry(name=name, state=INCOMPLETE, made_by=BY_UNKNOWN, objects=objs)
    mkey, metakey = manifest_key(name), meta_file_key(name)
    meta_error = await _read_meta(storage, e, decode_meta) if metakey in objs else None
    if mkey in objs:
        await _classify_brsm(storage, e, meta_error)
    elif metakey in objs and in_progress_key(name) in objs:
        e.made_by = BY_BRSM  # brsm wrote .meta but crashed before its manifest: resumable, not complete
        e.state = INCOMPLETE
        e.files, e.bytes = await tally_objects(storage, name)
        e.problems.append(f"brsm is still writing it (or crashed): no {MANIFEST} yet")
    elif metakey in objs:
        await _classify_nebula_br(storage, e, meta_error)
    else:
        e.files, e.bytes = await tally_objects(storage, name)
    if e.created_ms is None:
        t = name_time(name)
        if t is not None:
            e.created_ms, e.created_from = int(t * 1000), "name"
    return e


async def _read_meta(storage: Storage, e: BackupEntry, decode_meta: MetaDecoder) -> str | None:
    """``e.meta`` (and its SHA-256) from ``<NAME>.meta``; returns why it could not be read, or None."""
    name, metakey = e.name, meta_file_key(e.name)
    meta_error = too_big(f"{name}.meta", e.objects[metakey], MAX_META_BYTES)
    try:
        if meta_error is None:
            raw = await storage.get_bytes(metakey)
            e.meta_sha256 = hashlib.sha256(raw).hexdigest()
            e.meta = decode_meta(raw)
    except ObjectNotFound:
        meta_error = f"{name}.meta disappeared while it was read"
    except ValueError as err:
        meta_error = f"{name}.meta is unreadable: {err}"
    return meta_error


async def _classify_brsm(storage: Storage, e: BackupEntry, meta_error: str | None) -> None:
    """A backup with a brsm manifest: complete when the manifest reads, its ``.meta`` agrees with it,
    and every file it lists is there with its size."""
    name, objs, mkey, metakey = e.name, e.objects, manifest_key(e.name), meta_file_key(e.name)
    e.made_by = BY_BRSM
    e.checksums = True
    try:
        big = too_big(MANIFEST, objs[mkey], MAX_MANIFEST_BYTES)
        if big:
            raise ValueError(big)
        m = manifest.parse_header(await storage.get_bytes(mkey), name)
    except ObjectNotFound:
        e.state = INCOMPLETE  # deleted under us (prune, cleanup): reads as incomplete
        e.problems.append(f"{MANIFEST} disappeared while it was read")
        return
    except ValueError as err:
        e.state = BROKEN
        e.problems.append(str(err))
        return
    e.manifest = m
    e.created_ms, e.created_from = m["create_time_ms"], "manifest"
    sp = m.get("spaces", {})
    e.spaces = [str(sp[k]) for k in sorted(sp, key=lambda k: (len(str(k)), str(k)))]
    e.all_spaces = bool(m.get("all_spaces", True))
    e.full = bool(m.get("full", True))
    e.files = manifest.file_count(m)
    e.bytes = e.bytes_sent = manifest.total_bytes(m)
    inc = m.get("incremental")
    if isinstance(inc, dict) and isinstance(inc.get("bytes_sent"), int):
        e.bytes_sent = inc["bytes_sent"]
        e.incremental_from = inc.get("base") if isinstance(inc.get("base"), str) else None
    if meta_error:
        e.problems.append(meta_error)
    elif metakey not in objs:
        e.problems.append(f"{name}.meta is missing")
    else:
        e.problems.extend(meta_disagreements(m, e.meta, name))
        changed = meta_hash_problem(m, e.meta_sha256, name)
        if changed:
            e.problems.append(changed)
    try:
        e.file_check = await check_files(storage, name, m)
    except ObjectNotFound:
        e.problems.append(f"{manifest.MANIFEST_FILES} is missing: the manifest's file list cannot be read")
    except ValueError as err:
        e.problems.append(str(err))
    else:
        bad = e.file_check.problems
        if bad:
            e.problems.append(f"{len(bad)} file(s) listed in the manifest are missing or have another size, "
                              f"e.g. {bad[0]['key']}")
    e.state = BROKEN if e.problems else COMPLETE


async def _classify_nebula_br(storage: Storage, e: BackupEntry, meta_error: str | None) -> None:
    """A backup with only a ``.meta`` (nebula-br's): complete when it reads, names this backup, and
    every part it names is there."""
    name, facts = e.name, e.meta
    e.made_by = BY_NEBULA_BR
    if meta_error:
        e.state = BROKEN
        e.problems.append(meta_error)
        return
    e.created_ms, e.created_from = (facts.create_time_ms, "meta") if facts.create_time_ms else (None, "none")
    e.spaces = [facts.spaces[k] for k in sorted(facts.spaces)]
    e.all_spaces, e.full = facts.all_spaces, facts.full
    structure = Structure(name, facts)
    e.files, e.bytes = await tally_objects(storage, name, skip=(meta_file_key(name),), structure=structure)
    e.bytes_sent = e.bytes
    if facts.name != name:
        e.problems.append(f"{name}.meta names backup {facts.name!r}")
    e.structure = bad = structure.problems()
    if bad:
        e.problems.append(f"{len(bad)} part(s) named by {name}.meta are missing, e.g. {bad[0]['key']}")
    e.state = BROKEN if e.problems else COMPLETE


# -- the whole storage ---------------------------------------------------------------------------------
async def list_backups(storage: Storage, *, decode_meta: MetaDecoder, concurrency: int = 8) -> list[BackupEntry]:
    """Every top-level entry whose name starts with ``BACKUP`` (as ``br show``), oldest first."""
    names = [d.rstrip("/") for d in await storage.list_dirs("") if d.startswith("BACKUP")]

    async def one(n: str) -> BackupEntry:
        e = await inspect_backup(storage, n, decode_meta=decode_meta)
        # what was read to classify it goes (``show`` and ``prune`` use the public view alone)
        e.objects, e.manifest, e.file_check, e.structure = {}, None, None, None
        return e

    entries = await gather_bounded(concurrency, one, names)
    return sorted(entries, key=lambda e: (e.created_ms is None, e.created_ms or 0, e.name))
