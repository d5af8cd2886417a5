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
import hashlib
from collections.abc import Sequence
from typing import Any

from brsm.errors import VerificationFailed
from brsm.workflows.restore import placement
from brsm.workflows.restore.context import DATA_PROVED, chosen_spaces, ports as _p
from brsm.workflows.restore.state import RestoreContext

HASH_BATCH = 64
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
FORMAT = 2
SCRIPTS = {1: FINGERPRINT_SCRIPT_V1, 2: FINGERPRINT_SCRIPT}
SYMLINK = "symlink"  # what parse_fingerprints says of a dir that is a symbolic link


async def rehash_restored(ctx: RestoreContext, *, staged: bool = False) -> dict[str, Any]:
    """Re-hash on the hosts every restored file that has a SHA-256 in the manifest (sha256sum, all
    hosts at once): offline right before anything is started on it, staged at the end of STAGED.
    A staged file that differs is removed, so a resume downloads it again."""
    p = _p(ctx)
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
            r = await p.hosts.host(host).run(["sha256sum", "--", *(d.dest for d in batch)], check=False,
                                            timeout=3600)
            got = parse_sha256sum(r.stdout)
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


def parse_fingerprints(stdout: str) -> dict[str, str | None]:
    """What :data:`FINGERPRINT_SCRIPT` printed → ``{dir: SHA-256 of its sorted listing}``, None for a
    dir that does not exist.

    >>> fp = parse_fingerprints("== /a\\nx\\t3\\t1.5\\t9\\n== /b\\nabsent\\n")
    >>> sorted(fp), fp["/b"], len(fp["/a"])
    (['/a', '/b'], None, 64)
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
        elif cur is not None and line == SYMLINK and listing[cur] == []:
            links.add(cur)
        elif cur is not None and listing[cur] is not None:
            listing[cur].append(line)
    return {d: (SYMLINK if d in links else None if lines is None else hashlib.sha256("\n".join(lines).encode()).hexdigest())
            for d, lines in listing.items()}


async def fingerprints(ctx: RestoreContext, dirs: Sequence[tuple[str, str]], *,
                       fmt: int = FORMAT) -> dict[str, str | None]:
    """``{"host:dir": fingerprint}`` for every (host, dir), one command per host, every host at once
    (``fmt``: the format the fingerprints compared against were taken in). A dir that is a symlink
    is refused: its listing would be empty whatever it points at."""
    p = _p(ctx)
    by_host: dict[str, list[str]] = {}
    for host, d in dirs:
        by_host.setdefault(host, []).append(d)

    async def one(host: str) -> dict[str, str | None]:
        r = await p.hosts.host(host).run(["bash", "-c", SCRIPTS[fmt], "brsm-fingerprint", *by_host[host]],
                                        timeout=3600)
        got = parse_fingerprints(r.stdout)
        return {f"{host}:{d}": got.get(d) for d in by_host[host]}

    out: dict[str, str | None] = {}
    for part in await asyncio.gather(*(one(h) for h in sorted(by_host))):
        out.update(part)
    links = sorted(d for d, v in out.items() if v == SYMLINK)
    if links:
        raise VerificationFailed(
            f"{links[0]} is a symbolic link, not the directory brsm made" + (f" (and {len(links) - 1} more)" if
                                                                            len(links) > 1 else "")
            + ": what is staged there is not where brsm put it",
            hint=f"nothing was started on it; look at what made the link, then `brsm rollback {ctx.op_id}`")
    return out


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
