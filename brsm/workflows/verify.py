"""`brsm verify`: is a backup in storage whole?

* ``quick``  every object the manifest lists exists with its size (one listing, no reads);
* ``full``   quick, then every object re-hashed (streamed, ``concurrency`` at once, with progress);
* ``sample`` quick, then a random share of the objects re-hashed (``seed`` makes the pick repeatable).

A nebula-br backup has no manifest and no hashes: ``.meta`` must decode, and the meta files and the
data of every storage host it names must be there; ``full``/``sample`` can re-hash nothing and say so.

The result is a report listing every problem; the CLI turns a non-empty list into exit code 6.
"""
from __future__ import annotations

import asyncio
import hashlib
import math
import random
import re
from dataclasses import dataclass, field
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from typing import Any

from brsm.errors import ObjectNotFound, UsageError
from brsm.ports import Progress, Storage
from brsm.workflows import catalog, listing, manifest
from brsm.workflows.layout import MANIFEST, manifest_files_key, manifest_key, meta_file_key

QUICK, FULL, SAMPLE = "quick", "full", "sample"
_HASH_IN_THREAD = 256 << 10


@dataclass
class VerifyReport:
    name: str
    mode: str
    made_by: str
    state: str
    checksums: bool
    files: int = 0
    bytes: int = 0
    checked: int = 0  # objects whose presence and size were checked
    hashed_files: int = 0
    hashed_bytes: int = 0
    sample: float | None = None
    seed: int | None = None
    problems: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "mode": self.mode, "made_by": self.made_by, "state": self.state,
                "checksums": self.checksums, "ok": self.ok, "files": self.files, "bytes": self.bytes,
                "checked": self.checked, "hashed_files": self.hashed_files, "hashed_bytes": self.hashed_bytes,
                "sample": self.sample, "seed": self.seed, "problems": self.problems, "notes": self.notes}


def parse_sample(text: str) -> float:
    """``5%`` or ``0.05`` → 0.05; a share in (0, 1]."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(%?)\s*", text or "")
    if m:
        v = float(m.group(1)) / (100 if m.group(2) else 1)
        if 0 < v <= 1:
            return v
    raise UsageError(f"--sample takes a share of the files, not {text!r}", hint="write it like 5% or 0.05")


def pick_sample(files: list[dict[str, Any]], share: float, seed: int) -> list[dict[str, Any]]:
    """The same files for the same (files, share, seed): at least one file when there are any."""
    ordered = sorted(files, key=lambda f: f["key"])
    return [ordered[i] for i in sample_indices(len(ordered), share, seed)]


def sample_indices(n: int, share: float, seed: int) -> list[int]:
    """The positions (in key order) of the files a sample re-hashes, ascending (``sample_picks``)."""
    return [i for i, picked in enumerate(sample_picks(n, share, seed)) if picked]


def sample_picks(n: int, share: float, seed: int) -> Iterator[bool]:
    """For each of ``n`` positions in turn, whether the sample takes it: exactly ceil(share x n) of
    them (at least one), the same for the same (n, share, seed), so a file list streamed in key order
    is sampled as one held whole would be. Selection sampling (Knuth's Algorithm S): nothing is kept
    per position, where a set of the picked positions held a million ints at ``--sample 100%``.

    >>> list(sample_picks(5, 0.4, 7)).count(True), list(sample_picks(5, 0.4, 7)) == list(sample_picks(5, 0.4, 7))
    (2, True)
    """
    if n <= 0:
        return
    k = min(n, max(1, math.ceil(share * n)))
    rng = random.Random(seed)
    for i in range(n):
        take = rng.random() * (n - i) < k
        k -= take
        yield take


async def hash_object(storage: Storage, key: str, progress: Progress | None = None) -> tuple[int, str]:
    """(bytes read, SHA-256 hex) of one object, streamed."""
    h = hashlib.sha256()
    n = 0
    async for block in storage.get(key):
        if len(block) >= _HASH_IN_THREAD:
            await asyncio.to_thread(h.update, block)
        else:
            h.update(block)
        n += len(block)
        if progress is not None:
            progress.advance("verify", len(block))
    return n, h.hexdigest()


async def rehash(storage: Storage, files: Iterable[dict[str, Any]] | AsyncIterable[dict[str, Any]], *,
                 concurrency: int, progress: Progress | None, total: int | None = None) -> list[dict[str, Any]]:
    """Re-hash ``files`` (manifest entries, a list or a stream), at most ``concurrency`` at once; the
    problems found. ``total``: their bytes, for the progress (summed here when ``files`` is a list)."""
    problems: list[dict[str, Any]] = []
    if not hasattr(files, "__aiter__"):
        files = list(files)
        total = sum(f["size"] for f in files) if total is None else total
        stream: AsyncIterator[dict[str, Any]] = _aiter(files)
    else:
        stream = aiter(files)
    pull = asyncio.Lock()  # one async iterator, several workers: one pulls at a time

    async def worker() -> None:  # a fixed pool: 100,000 files cost `concurrency` tasks, not 100,000
        while True:
            async with pull:
                f = await anext(stream, None)
            if f is None:
                return
            try:
                n, digest = await hash_object(storage, f["key"], progress)
            except ObjectNotFound:
                problems.append({"key": f["key"], "problem": "missing", "expected": f["size"], "actual": None})
                continue
            if n != f["size"]:
                problems.append({"key": f["key"], "problem": "size", "expected": f["size"], "actual": n})
            elif digest != f["sha256"]:
                problems.append({"key": f["key"], "problem": "sha256", "expected": f["sha256"], "actual": digest})

    if progress is not None:
        progress.start("verify", total)
    try:
        try:
            async with asyncio.TaskGroup() as tg:  # a storage error stops the others and surfaces
                for _ in range(max(1, concurrency)):
                    tg.create_task(worker())
        except* Exception as eg:
            raise eg.exceptions[0]  # noqa: B904 - the first failure, with its own cause
    finally:
        if progress is not None:
            progress.done("verify")
    return sorted(problems, key=lambda p: p["key"])


async def _aiter(items: Iterable[Any]) -> AsyncIterator[Any]:
    for x in items:
        yield x


def _verify_nebula_br(r: VerifyReport, e: Any, name: str, mode: str) -> None:
    """A backup without a brsm manifest: its ``.meta`` decodes, names it, and every file and storage
    host it names is there; no checksums, so --full/--sample cannot pass: a check of contents that
    could check none must not read as one that found them whole."""
    if e.meta is None:
        r.problems.append({"key": meta_file_key(name), "problem": "unreadable", "detail": "; ".join(e.problems)})
        return
    if e.meta.name != name:
        r.problems.append({"key": meta_file_key(name), "problem": "inconsistent",
                           "detail": f"it names backup {e.meta.name!r}"})
    r.problems.extend(e.structure or [])
    r.checked = len(e.meta.meta_files) + len(set(e.meta.storage_hosts) | set(e.meta.host_spaces))
    r.notes.append("no brsm manifest (made by nebula-br, or its manifest was deleted): no checksums; checked that .meta decodes and that its meta files and "
                   "the data of every storage host it names exist")
    if mode != QUICK:
        # asked to check the contents and could check none: never "ok" (an operator would trust it)
        r.problems.append({"key": manifest_key(name), "problem": "unverifiable",
                           "detail": f"--{mode} asked to re-hash the contents, but the backup records no "
                                     f"checksums (no {MANIFEST}: made by nebula-br, or a brsm backup whose "
                                     "manifest was deleted): 0 objects re-hashed, changed bytes of the same "
                                     "size cannot be found"})


def _meta_problems(e: Any, name: str) -> list[dict[str, Any]]:
    """A brsm backup's ``.meta``: there, readable, in agreement with the manifest, unchanged since."""
    key = meta_file_key(name)
    if key not in e.objects:
        return [{"key": key, "problem": "missing", "expected": None, "actual": None}]
    if e.meta is None:
        return [{"key": key, "problem": "unreadable", "detail": "; ".join(p for p in e.problems if ".meta" in p)}]
    out = [{"key": key, "problem": "inconsistent", "detail": d} for d in catalog.meta_disagreements(e.manifest, e.meta, name)]
    changed = catalog.meta_hash_problem(e.manifest, e.meta_sha256, name)
    if changed:
        out.append({"key": key, "problem": "changed", "detail": changed})
    return out


async def verify_backup(storage: Storage, name: str, *, decode_meta: catalog.MetaDecoder, mode: str = QUICK,
                        sample: float | None = None, seed: int | None = None, concurrency: int = 4,
                        progress: Progress | None = None) -> VerifyReport:
    if mode not in (QUICK, FULL, SAMPLE):
        raise UsageError(f"unknown verify mode {mode!r}", hint="use --quick, --full or --sample 5%")
    if mode == SAMPLE:
        if sample is None:
            raise UsageError("sample mode needs a share", hint="e.g. --sample 5%")
        if seed is None:
            seed = random.SystemRandom().randrange(1 << 32)
    if not await listing.any_object(storage, f"{name}/"):
        raise UsageError(f"no backup named {name} in {storage.uri}", hint=f"see `brsm show --storage {storage.uri}`")
    e = await catalog.inspect_backup(storage, name, decode_meta=decode_meta)  # its listing streamed, not held
    r = VerifyReport(name=name, mode=mode, made_by=e.made_by, state=e.state, checksums=e.checksums,
                     files=e.files, bytes=e.bytes, sample=sample if mode == SAMPLE else None,
                     seed=seed if mode == SAMPLE else None)

    if _unverifiable(r, e, name, mode):
        return r

    # brsm, with a readable manifest
    m = e.manifest
    r.problems.extend(_meta_problems(e, name))
    fc = e.file_check
    if fc is None:  # the header read, its file list did not
        r.problems.append({"key": manifest_files_key(name), "problem": "unreadable",
                           "detail": "; ".join(e.problems)})
        return r
    quick = fc.problems
    r.problems.extend(quick)
    r.checked = fc.listed
    if fc.unlisted:
        r.notes.append(f"{fc.unlisted} object(s) under {name}/ are not in the manifest (ignored by restore), "
                       f"e.g. {fc.first_unlisted}")
    if mode == QUICK:
        return r
    await _rehash_listed(r, storage, name, m, quick, fc.listed, picked_from=(sample, seed),
                         concurrency=concurrency, progress=progress)
    return r


def _unverifiable(r: VerifyReport, e: catalog.BackupEntry, name: str, mode: str) -> bool:
    """Fill ``r`` for a backup whose files cannot be checked against a brsm manifest (none readable,
    none at all, or nebula-br's): True when the report is complete."""
    if e.made_by == catalog.BY_BRSM and e.manifest is None:
        r.problems.append({"key": manifest_key(name), "problem": "unreadable" if e.state == catalog.BROKEN
                           else "missing", "detail": "; ".join(e.problems)})
        return True
    if e.made_by == catalog.BY_UNKNOWN:
        r.problems.append({"key": manifest_key(name), "problem": "missing",
                           "detail": f"no {MANIFEST} and no {name}.meta: the backup is incomplete (still being "
                                     "written, or abandoned: `brsm gc` removes those)"})
        return True
    if e.made_by == catalog.BY_NEBULA_BR:
        _verify_nebula_br(r, e, name, mode)
        return True
    return False


async def _rehash_listed(r: VerifyReport, storage: Storage, name: str, m: dict[str, Any], quick: list[dict[str, Any]],
                         listed: int, *, picked_from: tuple[float | None, int | None], concurrency: int,
                         progress: Progress | None) -> None:
    """Re-hash the manifest's files (all of them, or the sample), reading the file list again as a
    stream: never held whole."""
    mode, (sample, seed) = r.mode, picked_from
    failed = {p["key"] for p in quick}  # empty but for a damaged backup
    picks = sample_picks(listed, sample, seed) if mode == SAMPLE else None
    counted = {"files": 0, "bytes": 0}

    async def todo() -> AsyncIterator[dict[str, Any]]:
        async for f in manifest.files(storage, name, m):  # read again: never held whole
            if (picks is not None and not next(picks, False)) or f["key"] in failed:
                continue
            counted["files"] += 1
            counted["bytes"] += f["size"]
            yield f

    total = manifest.total_bytes(m) if mode == FULL and not failed else None
    try:
        r.problems.extend(await rehash(storage, todo(), concurrency=concurrency, progress=progress, total=total))
    except (ValueError, ObjectNotFound) as err:  # the file list changed since it was read a moment ago
        r.problems.append({"key": manifest_files_key(name), "problem": "unreadable", "detail": str(err)})
    r.hashed_files = counted["files"]
    r.hashed_bytes = counted["bytes"]
