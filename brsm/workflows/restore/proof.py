"""Proof that what starts is the backup, byte for byte.

Offline: every restored file re-hashed on its host (``sha256sum``) right before anything starts on it.
Staged: the staged files re-hashed while the cluster still serves (no downtime), with a fingerprint
of every staged tree taken first — each entry's relative path, type, size, mtime, ctime and inode
(ctime: a write with the mtime set back still changes it). The swap is a rename, which keeps all of
those for every entry below the renamed dir; so right before the start, the live trees' fingerprints must equal
the staged ones: a listing (seconds, whatever the size) instead of a re-hash (minutes per 100 GB).
A file written, replaced, added or removed since it was hashed changes the fingerprint.
"""
from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from brsm.errors import VerificationFailed
from brsm.ports import TreeFingerprint
from brsm.workflows.restore import placement
from brsm.workflows.restore.context import DATA_PROVED, chosen_spaces, ports
from brsm.workflows.restore.state import RestoreContext

HASH_BATCH = 64
# Format 1 (journals written before format 2): regular files only, by path, size, mtime and inode.
# Format 2: every entry below the dir whatever its type, with its ctime (see HostPort.fingerprint_trees).
FORMAT = 2


async def rehash_restored(ctx: RestoreContext, *, staged: bool = False) -> dict[str, Any]:
    """Re-hash on the hosts every restored file that has a SHA-256 in the manifest (sha256sum, all
    hosts at once): offline right before anything is started on it, staged at the end of STAGED.
    A staged file that differs is removed, so a resume downloads it again."""
    p = ports(ctx)
    by_host: dict[str, list[dict[str, Any]]] = {}
    for d in ctx.data.restored:
        if d.sha256:
            by_host.setdefault(d.host, []).append(d)
    total = sum(d.size for ds in by_host.values() for d in ds)
    p.progress.start("re-hash restored files", total)
    bad: list[tuple[str, str, str]] = []  # (host, path, "missing" or "changed")

    async def one(host: str) -> None:
        files = sorted(by_host[host], key=lambda d: d.dest)
        for i in range(0, len(files), HASH_BATCH):
            batch = files[i:i + HASH_BATCH]
            got = await p.hosts.host(host).hash_files([d.dest for d in batch], timeout=3600)
            for d in batch:
                if got.get(d.dest) != d.sha256:
                    bad.append((host, d.dest, "missing" if d.dest not in got else "changed"))
            p.progress.advance("re-hash restored files", sum(d.size for d in batch))

    try:
        await asyncio.gather(*(one(h) for h in sorted(by_host)))
    finally:
        p.progress.done("re-hash restored files")
    first = f"{bad[0][0]}:{bad[0][1]} ({bad[0][2]})" if bad else ""
    if bad and staged:
        for host, path, _why in bad:
            await p.hosts.host(host).remove_tree(path)
        raise VerificationFailed(
            f"{len(bad)} staged file(s) differ from the backup's SHA-256 once written, e.g. {first}: something "
            "wrote into the staging dirs (or the disk returned other bytes); they were removed",
            hint=f"the cluster was not touched; find what writes there, then `brsm resume {ctx.op_id}` (downloads "
                 f"them again) or `brsm rollback {ctx.op_id}`")
    if bad:
        raise VerificationFailed(
            f"before starting the restored cluster, {len(bad)} restored file(s) differ from the backup's SHA-256, "
            f"e.g. {first}: something wrote into the data dirs since they were downloaded",
            hint=f"nothing was started on it; `brsm rollback {ctx.op_id}` puts the original data back")
    facts = {"files": sum(len(v) for v in by_host.values()), "bytes": total, "hosts": sorted(by_host),
             "how": "sha256sum of every " + ("staged file" if staged else "restored file in place")}
    ctx.record(DATA_PROVED, facts)
    return facts


async def fingerprints(ctx: RestoreContext, dirs: Sequence[tuple[str, str]], *,
                       fmt: int = FORMAT) -> dict[str, str | None]:
    """``{"host:dir": fingerprint}`` for every (host, dir), one command per host, every host at once
    (``fmt``: the format the fingerprints compared against were taken in). A dir that is a symlink
    is refused: its listing would be empty whatever it points at."""
    p = ports(ctx)
    by_host: dict[str, list[str]] = {}
    for host, d in dirs:
        by_host.setdefault(host, []).append(d)

    async def one(host: str) -> dict[str, TreeFingerprint | None]:
        got = await p.hosts.host(host).fingerprint_trees(by_host[host], fmt=fmt, timeout=3600)
        return {f"{host}:{d}": got.get(d) for d in by_host[host]}

    seen: dict[str, TreeFingerprint | None] = {}
    for part in await asyncio.gather(*(one(h) for h in sorted(by_host))):
        seen.update(part)
    links = sorted(d for d, v in seen.items() if v is not None and v.symlink)
    if links:
        raise VerificationFailed(
            f"{links[0]} is a symbolic link, not the directory brsm made" + (f" (and {len(links) - 1} more)" if
                                                                            len(links) > 1 else "")
            + ": what is staged there is not where brsm put it",
            hint=f"nothing was started on it; look at what made the link, then `brsm rollback {ctx.op_id}`")
    return {d: (v.digest if v is not None else None) for d, v in seen.items()}


def fingerprint_changes(before: dict[str, str | None], now: dict[str, str | None]) -> list[str]:
    """The dirs whose fingerprint differs, each as "host:dir (why)".

    >>> fingerprint_changes({"h:/a": "1", "h:/b": None}, {"h:/a": "2", "h:/b": None})
    ['h:/a (a file was written, replaced, added or removed)']
    """
    out = []
    for d, want in sorted(before.items()):
        got = now.get(d)
        if got == want:
            continue
        why = ("gone" if got is None else "appeared" if want is None else "a file was written, replaced, added or removed")
        out.append(f"{d} ({why})")
    return out


def fingerprinted_dirs(ctx: RestoreContext) -> list[tuple[str, str]]:
    """What the staged proof covers: each staged tree (by its staged path) and each meta restore dir."""
    topo = ctx.data.topo
    return ([(h, s) for h, s, _live in placement.swaps(topo, ctx.ref, chosen_spaces(ctx))]
            + placement.meta_restore_dirs(topo, ctx.ref))


async def check_fingerprints(ctx: RestoreContext, *, meta_only: bool = False) -> dict[str, Any]:
    """Staged: the trees in place (and the meta restore dirs) are the ones re-hashed in STAGED —
    same files, sizes, mtimes and inodes. STAGED fingerprinted each tree at its staged path; the swap
    renamed it to its live path (placement.swaps), a meta restore dir stays where it was."""
    want: dict[str, str | None] = ctx.data.fingerprints
    now_at = {f"{h}:{d}": (h, d) for h, d in placement.meta_restore_dirs(ctx.data.topo, ctx.ref)}
    if not meta_only:
        now_at.update({f"{h}:{s}": (h, live) for h, s, live in placement.swaps(ctx.data.topo, ctx.ref,
                                                                                chosen_spaces(ctx))})
    keys = sorted(k for k in want if k in now_at)
    got = await fingerprints(ctx, [now_at[k] for k in keys], fmt=ctx.data.fingerprint_format)
    changed = fingerprint_changes({k: want[k] for k in keys},
                                  {k: got[f"{now_at[k][0]}:{now_at[k][1]}"] for k in keys})
    if changed:
        raise VerificationFailed(
            f"before starting the restored cluster, {len(changed)} restored dir(s) are not as they were staged and "
            f"re-hashed, e.g. {changed[0]}: something wrote into them since",
            hint=f"nothing was started on them; `brsm rollback {ctx.op_id}` puts the original data back")
    how = ("(path, size, mtime, inode)" if ctx.data.fingerprint_format == 1 else
           "(every entry: path, type, size, mtime, ctime, inode)")
    facts = {"dirs": len(keys), "how": f"fingerprint of the staged, re-hashed trees {how}"}
    if not meta_only:
        ctx.record(DATA_PROVED, facts)
    return facts
