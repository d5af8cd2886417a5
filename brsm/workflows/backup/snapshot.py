"""SNAPSHOTTED: metad's createBackup, and the snapshot it made found again after a crash."""
from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

from brsm.errors import BrsmError, MetaError
from brsm.ports import CreatedBackup
from brsm.workflows import common, meta_checkpoints, topology
from brsm.workflows.backup.context import SNAPSHOT_DROPPED, BackupPorts, ports
from brsm.workflows.backup.state import BackupContext, CreateBackupAbandoned, SnapshotRequested


# -- SNAPSHOTTED --------------------------------------------------------------------------------------
def _leaked(ctx: BackupContext, current: list[str]) -> list[str]:
    """Snapshots that appeared since our intent: ours, lost by a crash before completion.

    While we hold the lease no other brsm run creates snapshots, so a new BACKUP_* snapshot since
    the list recorded in SnapshotRequested is ours (see docs/design.md for the residual risk of
    someone creating one by hand in that window).
    """
    before = set((ctx.data.snapshots_before or []))
    return [n for n in current if n not in before and n.startswith("BACKUP_")]


def _metad(ctx: BackupContext) -> str:
    addrs = [m["addr"] for m in (ctx.data.topology or {}).get("meta", [])]
    return ("metad at " + addrs[0]) if len(addrs) == 1 else f"metad ({', '.join(addrs) or 'no address known'})"


async def _create_backup(ctx: BackupContext, p: BackupPorts) -> CreatedBackup:
    """createBackup, bounded by create_backup_timeout, with a note every few seconds while it runs.
    Given up on (the bound, or a signal), it is journaled (CreateBackupAbandoned): metad may still be
    at work on it, which the rollback then waits out before it drops the snapshot (_snapshots_now)."""
    bound = float(p.create_backup_timeout)
    where = _metad(ctx)
    t0 = time.monotonic()

    def abandoned(why: str) -> None:
        ctx.record(CreateBackupAbandoned(why=why, after_seconds=round(time.monotonic() - t0, 1), bound_seconds=bound))

    try:
        return await common.wait_noting(
            p.meta.create_backup(list(ctx.data.params.spaces) or None), progress=p.progress, bound=bound,
            note=lambda s: f"waiting on {where}: createBackup has not answered for {s:.0f} s (brsm gives it "
                           f"{bound:.0f} s); it checkpoints every storaged, with writes blocked meanwhile")
    except TimeoutError:
        abandoned("timeout")
        raise MetaError(
            f"{where} did not answer createBackup within {bound:.0f} s ([cluster] create_backup_timeout)",
            hint="check metad's log there and every storaged's (disk space, checkpoint errors, a hung process), "
                 "and SHOW JOBS; metad keeps writes blocked while it is in createBackup. A snapshot it made is "
                 "dropped by the rollback; one it makes later is listed by `brsm gc`. If checkpoints are only "
                 "slow, raise create_backup_timeout") from None
    except asyncio.CancelledError:
        abandoned("interrupted")
        raise
    except MetaError as e:
        try:  # a failed link() of a --wal_path on another filesystem (EXDEV) is the likely cause
            note = await topology.wal_link_problem(p.hosts, ctx.data.topology or {})
        except BrsmError:
            note = None
        if note is None:
            raise
        raise MetaError(f"{e.message}; {note}", code=e.code,
                        hint="put --wal_path on the same filesystem as the data paths (or leave it unset) and "
                             f"restart storaged; {e.hint or ''}".rstrip("; ")) from e


async def _snapshots_now(ctx: BackupContext, p: BackupPorts) -> tuple[list[str], list[str]]:
    """The cluster's snapshots, and those of them that are ours though never recorded (_leaked).

    After a createBackup brsm gave up on, metad may still be at work: its snapshot stays INVALID until
    metad finishes and marks it VALID, so dropping it earlier would not stick. Such a snapshot is waited
    for (at most create_backup_timeout more, with a note every few seconds) before it is dropped."""
    snaps = await p.meta.list_snapshots()
    if ctx.data.create_backup_abandoned:
        bound = float(p.create_backup_timeout)
        t0, last = time.monotonic(), None
        while True:
            busy = [s.name for s in snaps if s.status == "INVALID" and _leaked(ctx, [s.name])]
            waited = time.monotonic() - t0
            if not busy or waited >= bound:
                break
            if last is None or time.monotonic() - last >= common.NOTE_EVERY:
                last = time.monotonic()
                p.progress.note(f"{_metad(ctx)} is still making snapshot {', '.join(busy)} (INVALID) for the "
                                f"createBackup brsm gave up on: waiting {waited:.0f} s of at most {bound:.0f} s "
                                "for it to finish before dropping it")
            await asyncio.sleep(1.0)
            snaps = await p.meta.list_snapshots()
    current = [s.name for s in snaps]
    return current, _leaked(ctx, current)


async def snapshotted(ctx: BackupContext) -> dict[str, Any]:
    p = ports(ctx)
    current, leaked = await _snapshots_now(ctx, p)
    if ctx.data.snapshots_before is not None:  # re-run after a crash: drop what the lost attempt made
        if leaked:
            await p.meta.drop_snapshots(leaked)
            left = await meta_checkpoints.remove_meta_checkpoints(p.meta, p.hosts, leaked, p.progress)
            ctx.record(SNAPSHOT_DROPPED, {"names": leaked, "why": "made by an attempt that crashed before recording it",
                                          "meta_checkpoints": left})
            current = [n for n in current if n not in leaked]
    ctx.record(SnapshotRequested(existing=current, spaces=list(ctx.data.params.spaces)))
    created = await _create_backup(ctx, p)
    return {
        "backup_name": created.name,
        "meta_b64": base64.b64encode(created.meta_bytes).decode(),
        "spaces": {str(k): v for k, v in created.spaces.items()},
        "all_spaces": created.all_spaces,
        "meta_files": list(created.meta_files),
        "meta_paths": list(created.meta_paths),
        "checkpoints": {h: [list(c) for c in cps] for h, cps in created.checkpoints.items()},
        "storage_hosts": [str(h) for h in created.storage_hosts],
        "create_time_ms": created.create_time_ms,
    }


async def undo_snapshotted(ctx: BackupContext) -> None:
    p = ports(ctx)
    current, leaked = await _snapshots_now(ctx, p)
    names = set(leaked)
    if ctx.data.backup_name in current:
        names.add(ctx.data.name)
    dropped = sorted(names)
    if dropped:
        await p.meta.drop_snapshots(dropped)
    # also when the snapshot was already gone (a rollback run again): a former meta leader's copy stays
    gone = set(dropped) | {n for n in [ctx.data.backup_name] if n}
    left = await meta_checkpoints.remove_meta_checkpoints(p.meta, p.hosts, gone, p.progress)
    if dropped or left["removed"] or left["left"]:
        ctx.record(SNAPSHOT_DROPPED, {"names": dropped, "why": "rollback", "meta_checkpoints": left})
