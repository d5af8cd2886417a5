"""UPLOADED (the .meta and manifest, written last) and CLEANED (the snapshot dropped, the lease released)."""
from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from contextlib import aclosing
from typing import Any

from brsm import __version__
from brsm.engine.state import ABSENT
from brsm.errors import StorageError
from brsm.workflows import common, listing, manifest, meta_checkpoints
from brsm.workflows.layout import in_progress_key, manifest_files_key, manifest_key, meta_file_key
from brsm.workflows.backup.context import SNAPSHOT_DROPPED, ports
from brsm.workflows.backup.state import BackupContext


# -- UPLOADED ---------------------------------------------------------------------------------------------
def manifest_files(ctx: BackupContext) -> manifest.FileSource:
    """The manifest's file entries, afresh on each call (the writer walks them twice)."""
    def gen() -> Iterator[dict[str, Any]]:
        for d in ctx.data.files:  # the ledger streams them in key order, the order the manifest lists
            f = {"key": d.key, "size": d.size, "sha256": d.sha256, "host": d.host, "path": d.path}
            if d.ident is not ABSENT:
                f["ident"] = d.ident
            if d.reused_from is not ABSENT:
                f["reused_from"] = d.reused_from
            yield f
    return gen


def incremental(ctx: BackupContext) -> dict[str, Any] | None:
    """What an incremental backup's header says of its base: the files and bytes copied inside the
    storage from it, and the bytes sent (read from the hosts); None for a backup that asked for no base.
    Counted over the ledger (a resumed run's own counts would miss the first run's)."""
    base = ctx.data.base
    if base is None:
        return None
    files = reused = reused_bytes = total = 0
    for d in ctx.data.files:
        files += 1
        total += d.size
        if d.reused_from is not ABSENT:
            reused += 1
            reused_bytes += d.size
    return {"base": base.name, "why": base.why, "files_reused": reused, "bytes_reused": reused_bytes,
            "files_sent": files - reused, "bytes_sent": total - reused_bytes}


def build_header(ctx: BackupContext) -> dict[str, Any]:
    """Everything the manifest says but its files (manifest.write adds format 2's ``file_list``)."""
    return {
        "tool": "brsm",
        "brsm_version": __version__,
        "op_id": ctx.op_id,
        "op_ref": ctx.ref,
        "backup_name": ctx.data.name,
        "create_time_ms": ctx.data.create_time_ms,
        "spaces": ctx.data.spaces,
        "all_spaces": ctx.data.all_spaces,
        "meta_files": ctx.data.meta_files,
        # the .meta is written just before the manifest: a reader can tell when it changed since
        "meta_sha256": hashlib.sha256(base64.b64decode(ctx.data.meta_b64)).hexdigest(),
        "storage_hosts": ctx.data.storage_hosts,
        "topology": ctx.data.topo,
    }


async def uploaded(ctx: BackupContext) -> dict[str, Any]:
    p = ports(ctx)
    name = ctx.data.name
    missing, first = 0, None
    # the ledger (key order) and the listing streamed side by side: neither held whole
    async with aclosing(listing.side_by_side(p.storage, f"{name}/", ctx.data.files, key=lambda d: d.key)) as pairs:
        async for key, d, have in pairs:
            if d is not None and have != d.size:
                missing += 1
                first = first or key
    if missing:
        raise StorageError(f"{missing} copied file(s) are missing or changed in storage, e.g. {first}",
                           hint=f"run `brsm resume {ctx.op_id}` to copy them again")
    # Every file is complete: an upload still open under the backup was started by an attempt that
    # crashed before journaling its first part, and would linger (and cost) forever.
    await p.storage.abort_uploads(f"{name}/")
    await p.storage.put_bytes(meta_file_key(name), base64.b64decode(ctx.data.meta_b64))
    header = build_header(ctx)
    inc = incremental(ctx)
    if inc is not None:
        header["incremental"] = inc
    anchor = ctx.journal_anchor()
    if anchor is not None:  # the journal's state now, kept with the backup (`brsm journal verify --against`)
        header["journal_anchor"] = anchor
    # The file list streamed, then its header written last: a backup without it is incomplete, never
    # mistaken for a good one.
    written = await manifest.write(p.storage, name, header, manifest_files(ctx))
    await p.storage.delete(in_progress_key(name))
    return {"manifest": manifest_key(name), "total_bytes": written["file_list"]["total_bytes"],
            "total_files": written["file_list"]["count"]}


async def undo_uploaded(ctx: BackupContext) -> None:
    p = ports(ctx)
    name = ctx.data.backup_name
    if name:
        await p.storage.delete(manifest_key(name))
        await p.storage.delete(manifest_files_key(name))
        await p.storage.delete(meta_file_key(name))


# -- CLEANED ---------------------------------------------------------------------------------------------
async def cleaned(ctx: BackupContext) -> dict[str, Any]:
    p = ports(ctx)
    name = ctx.data.name
    listed = name in {s.name for s in await p.meta.list_snapshots()}
    if listed:
        await p.meta.drop_snapshots([name])
    left = await meta_checkpoints.remove_meta_checkpoints(p.meta, p.hosts, [name], p.progress)  # run again: idempotent
    if listed or left["removed"] or left["left"]:
        ctx.record(SNAPSHOT_DROPPED, {"names": [name] if listed else [], "why": "backup complete",
                                      "meta_checkpoints": left})
    await common.remove_probes(ctx, p.storage)
    await common.make_lease(ctx, p.hosts, "backup").release()
    return {"completed": True}
