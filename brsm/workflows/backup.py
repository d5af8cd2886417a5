"""Backup: PLANNED → LOCKED → SNAPSHOTTED → COPIED → UPLOADED → CLEANED.

Each step is idempotent (check before act) because a crash between its intent and its completion
makes resume run it again; each has a compensation for rollback, equally safe to repeat.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import posixpath
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from brsm import __version__, failpoints
from brsm.engine.definitions import BACKUP
from brsm.engine.runner import StepContext, Workflow
from brsm.errors import MetaError, PreflightFailed, StorageError, UsageError
from brsm.ports import CreatedBackup, HostAddr, HostsPort, MetaPort, Progress, Storage, UploadState
from brsm.workflows import common, topology
from brsm.workflows.layout import (data_key, in_progress_key, manifest_key, meta_checkpoint_dir, meta_file_key,
                                   meta_sst_key)
from brsm.workflows.limits import TokenBucket, parse_rate
from brsm.workflows.transfer import EventBatcher, FileJob, Limits, run_bounded, upload_file

DEFAULT_INSTALL_DIR = "/usr/local/nebula"
SNAPSHOT_REQUESTED = "SnapshotRequested"
SNAPSHOT_DROPPED = "SnapshotDropped"
CREATE_BACKUP_ABANDONED = "CreateBackupAbandoned"
FILES_PLANNED = "FilesPlanned"
FILE_COPIED = "FileCopied"
PART_UPLOADED = "PartUploaded"
PLAN_WALKS = 32  # checkpoint dirs listed at once while planning the copy


@dataclass
class BackupPorts:
    meta: MetaPort
    hosts: HostsPort
    storage: Storage
    progress: Progress
    # where Nebula is installed on a host (its flagfiles), for clusters without nebula-agent
    install_dir: Callable[[str], str] = lambda host: DEFAULT_INSTALL_DIR
    # seconds SNAPSHOTTED waits for metad's createBackup ([cluster] create_backup_timeout)
    create_backup_timeout: float = 300.0
    # seconds a lease lives unrefreshed ([cluster] lease_ttl); None: the operation's param or 300
    lease_ttl: float | None = None


# -- folding the file-level events ------------------------------------------------------------
def _reduce_copied(acc: dict[str, Any], d: dict[str, Any]) -> None:
    acc.setdefault("copied", {})[d["key"]] = d
    acc.get("parts", {}).pop(d["key"], None)


def _reduce_part(acc: dict[str, Any], d: dict[str, Any]) -> None:
    st = acc.setdefault("parts", {}).get(d["key"])
    if st is None or st["upload_id"] != d["upload_id"]:
        st = {"upload_id": d["upload_id"], "part_size": d["part_size"], "parts": []}
        acc["parts"][d["key"]] = st
    st["parts"] = [p for p in st["parts"] if p["n"] != d["n"]] + [{"n": d["n"], "etag": d["etag"], "size": d["size"]}]


def _reduce_snapshot_requested(acc: dict[str, Any], d: dict[str, Any]) -> None:
    acc["snapshots_before"] = d["existing"]


def _reduce_abandoned(acc: dict[str, Any], d: dict[str, Any]) -> None:
    acc["create_backup_abandoned"] = d


REDUCERS = {
    common.PREFLIGHT_PASSED: common.reduce_preflight,
    common.PROBE_WRITTEN: common.reduce_probe_written,
    common.PROBE_REMOVED: common.reduce_probe_removed,
    FILE_COPIED: _reduce_copied,
    PART_UPLOADED: _reduce_part,
    SNAPSHOT_REQUESTED: _reduce_snapshot_requested,
    CREATE_BACKUP_ABANDONED: _reduce_abandoned,
}


def _ports(ctx: StepContext) -> BackupPorts:
    return ctx.ports


# -- preflight ----------------------------------------------------------------------------------
async def preflight(ctx: StepContext) -> dict[str, Any]:
    p = _ports(ctx)
    topo = await common.preflight_topology(ctx, p.meta, p.hosts, p.install_dir)
    if not topo["storage"]:
        raise PreflightFailed("metad lists no storage hosts", hint="is --config pointing at the right metad?")
    if not topo["meta"]:
        raise PreflightFailed("metad lists no meta hosts", hint="is --config pointing at the right metad?")
    p.progress.note(f"topology from {topo['source']}")
    spaces = await common.as_preflight(p.meta.list_spaces())
    wanted = list(ctx.params.get("spaces") or [])
    missing = [s for s in wanted if s not in spaces]
    if missing:
        raise PreflightFailed(
            f"space(s) not found: {', '.join(missing)}; the cluster has: {', '.join(sorted(spaces)) or 'none'}",
            hint="check --spaces (names are case-sensitive)")
    if not spaces:
        raise PreflightFailed("the cluster has no graph spaces to back up", hint="create a space first")
    await common.check_paths(p.hosts, topo)
    await common.as_preflight(common.warn_not_backed_up(
        ctx, p.meta, [spaces[k] for k in (wanted or spaces)], p.progress,
        "not in the backup (rebuild them after a restore)"))
    await common.probe_storage(ctx, p.storage)
    return {"topology": topo, "spaces": {k: spaces[k] for k in (wanted or sorted(spaces))}}


async def attach(ctx: StepContext) -> None:
    ctx.runtime["limits"] = Limits(
        concurrency=int(ctx.params.get("concurrency") or 8),
        per_host=int(ctx.params.get("per_host") or 4),
        bucket=TokenBucket(parse_rate(ctx.params.get("rate_limit"))),
    )
    if ctx.mode == "resume":
        await _check_resumable(ctx)
    if ctx.mode == "rollback":
        await common.remove_probes(ctx, _ports(ctx).storage)
    await common.reattach_lease(ctx, _ports(ctx).hosts, "backup", lease_step="LOCKED")


async def _check_resumable(ctx: StepContext) -> None:
    """pgBackRest's rule: refuse to resume onto something that changed, and say why."""
    p, st = _ports(ctx), ctx.state
    if "topology" in ctx.extra:
        now = await common.discover_topology(p.meta, p.hosts, p.install_dir)
        was = ctx.extra["topology"]
        shape = lambda t: sorted((s["addr"], tuple(s["data_paths"])) for s in t["storage"])  # noqa: E731
        if shape(now) != shape(was):
            raise UsageError(f"cannot resume operation {ctx.op_id}: the cluster's storage hosts changed since it "
                             f"started", hint=f"roll it back with `brsm rollback {ctx.op_id}` and start a new backup")
    name = ctx.facts.get("backup_name")
    if name and "CLEANED" not in st.started:
        if name not in {s.name for s in await p.meta.list_snapshots()}:
            raise UsageError(f"cannot resume operation {ctx.op_id}: its snapshot {name} is gone from the cluster",
                             hint=f"roll it back with `brsm rollback {ctx.op_id}` and start a new backup")


async def detach(ctx: StepContext) -> None:
    common.record_host_keys(ctx, _ports(ctx).hosts)
    await common.detach_lease(ctx)


# -- LOCKED ---------------------------------------------------------------------------------------
async def locked(ctx: StepContext) -> dict[str, Any]:
    lease = common.make_lease(ctx, _ports(ctx).hosts, "backup")
    await lease.acquire()
    return {"lease_hosts": [h.name for h, _ in lease.hosts]}


async def undo_locked(ctx: StepContext) -> None:
    if "topology" in ctx.extra:
        await common.make_lease(ctx, _ports(ctx).hosts, "backup").release()


# -- SNAPSHOTTED --------------------------------------------------------------------------------------
def _leaked(ctx: StepContext, current: list[str]) -> list[str]:
    """Snapshots that appeared since our intent: ours, lost by a crash before completion.

    While we hold the lease no other brsm run creates snapshots, so a new BACKUP_* snapshot since
    the list recorded in SnapshotRequested is ours (see docs/design.md for the residual risk of
    someone creating one by hand in that window).
    """
    before = set(ctx.extra.get("snapshots_before", []))
    return [n for n in current if n not in before and n.startswith("BACKUP_")]


def _metad(ctx: StepContext) -> str:
    addrs = [m["addr"] for m in ctx.extra.get("topology", {}).get("meta", [])]
    return ("metad at " + addrs[0]) if len(addrs) == 1 else f"metad ({', '.join(addrs) or 'no address known'})"


async def _create_backup(ctx: StepContext, p: BackupPorts) -> CreatedBackup:
    """createBackup, bounded by create_backup_timeout, with a note every few seconds while it runs.
    Given up on (the bound, or a signal), it is journaled (CreateBackupAbandoned): metad may still be
    at work on it, which the rollback then waits out before it drops the snapshot (_snapshots_now)."""
    bound = float(p.create_backup_timeout)
    where = _metad(ctx)
    t0 = time.monotonic()

    def abandoned(why: str) -> None:
        ctx.record(CREATE_BACKUP_ABANDONED, {"why": why, "after_seconds": round(time.monotonic() - t0, 1),
                                             "bound_seconds": bound})

    try:
        return await common.wait_noting(
            p.meta.create_backup(list(ctx.params.get("spaces") or []) or None), progress=p.progress, bound=bound,
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


async def _snapshots_now(ctx: StepContext, p: BackupPorts) -> tuple[list[str], list[str]]:
    """The cluster's snapshots, and those of them that are ours though never recorded (_leaked).

    After a createBackup brsm gave up on, metad may still be at work: its snapshot stays INVALID until
    metad finishes and marks it VALID, so dropping it earlier would not stick. Such a snapshot is waited
    for (at most create_backup_timeout more, with a note every few seconds) before it is dropped."""
    snaps = await p.meta.list_snapshots()
    if ctx.extra.get("create_backup_abandoned"):
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


async def snapshotted(ctx: StepContext) -> dict[str, Any]:
    p = _ports(ctx)
    current, leaked = await _snapshots_now(ctx, p)
    if "snapshots_before" in ctx.extra:  # re-run after a crash: drop what the lost attempt made
        if leaked:
            await p.meta.drop_snapshots(leaked)
            ctx.record(SNAPSHOT_DROPPED, {"names": leaked, "why": "made by an attempt that crashed before recording it"})
            current = [n for n in current if n not in leaked]
    ctx.record(SNAPSHOT_REQUESTED, {"existing": current, "spaces": list(ctx.params.get("spaces") or [])})
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


async def undo_snapshotted(ctx: StepContext) -> None:
    p = _ports(ctx)
    current, leaked = await _snapshots_now(ctx, p)
    names = set(leaked)
    if ctx.facts.get("backup_name") in current:
        names.add(ctx.facts["backup_name"])
    if names:
        await p.meta.drop_snapshots(sorted(names))
        ctx.record(SNAPSHOT_DROPPED, {"names": sorted(names), "why": "rollback"})


# -- COPIED ---------------------------------------------------------------------------------------------
async def _plan(ctx: StepContext) -> list[FileJob]:
    p = _ports(ctx)
    name = ctx.facts["backup_name"]
    topo = ctx.extra["topology"]
    by_addr = {s["addr"]: s for s in topo["storage"]}
    # data<i> is the index of the checkpoint's data path among the host's, compared canonically;
    # two checkpoints of one space landing on one index would overwrite each other: refuse
    owner: dict[tuple[str, int, int], str] = {}
    walks = []
    for h, cps in sorted(ctx.facts["checkpoints"].items()):
        if h not in by_addr:
            raise PreflightFailed(f"metad made a checkpoint on {h}, which is not among the storage hosts it lists",
                                  hint="a storaged joined or left during the backup: roll back and start again")
        for space_id, data_path, cdir in cps:
            idx = topology.data_path_index(by_addr[h], data_path)
            seen = owner.setdefault((h, idx, int(space_id)), cdir)
            if seen != cdir:
                raise PreflightFailed(f"two checkpoints of space {space_id} on {h} map to data{idx}: {seen} and {cdir}",
                                      hint="two --data_path entries of that storaged resolve to one directory; fix its "
                                           "flagfile (nothing was copied)")
            walks.append((h, space_id, idx, cdir))

    async def walk(job: tuple[str, Any, int, str]) -> list[FileJob]:
        host_addr, space_id, idx, cdir = job
        addr = HostAddr.parse(host_addr)
        if posixpath.basename(cdir.rstrip("/")) in ("data", "wal"):
            cdir = posixpath.dirname(cdir.rstrip("/"))
        prefix = cdir.rstrip("/") + "/"
        found = await p.hosts.host(addr.host).walk(cdir)
        return [FileJob(addr.host, f.path, f.size,
                        data_key(name, addr, idx, int(space_id),
                                 f.path[len(prefix):] if f.path.startswith(prefix) else posixpath.relpath(f.path, cdir)))
                for f in sorted(found, key=lambda f: f.path)]

    # One `find` per checkpoint dir, all at once (PLAN_WALKS at a time); the jobs in host, then dir order.
    jobs = [j for js in await common.gather_bounded(PLAN_WALKS, walk, walks) for j in js]
    jobs.extend(await _meta_jobs(ctx))
    return jobs


async def _meta_jobs(ctx: StepContext) -> list[FileJob]:
    """The meta SSTs sit on the metad that made the backup (the leader), at the full paths metad
    returned (``<data_path>/nebula/0/checkpoints/<NAME>/<table>.sst``): find the host that has them."""
    p = _ports(ctx)
    name = ctx.facts["backup_name"]
    files = {posixpath.basename(f) for f in ctx.facts["meta_files"]}
    dirs = sorted({posixpath.dirname(f) for f in ctx.facts.get("meta_paths") or [] if posixpath.isabs(f)})
    for m in ctx.extra["topology"]["meta"]:
        host = p.hosts.host(m["host"])
        candidates = dirs or [meta_checkpoint_dir(dp, name) for dp in m["data_paths"]]
        for mdir in candidates:
            if await host.exists(mdir):
                found = [f for f in await host.walk(mdir) if posixpath.basename(f.path) in files]
                if {posixpath.basename(f.path) for f in found} == files:
                    return [FileJob(m["host"], f.path, f.size, meta_sst_key(name, f.path)) for f in found]
    raise StorageError(f"meta SST files of {name} not found on any metad host", permanent=True,
                       hint="was the snapshot dropped by hand? roll back and start a new backup")


async def copied(ctx: StepContext) -> dict[str, Any]:
    p = _ports(ctx)
    name = ctx.facts["backup_name"]
    jobs = await _plan(ctx)
    await p.storage.put_bytes(in_progress_key(name), json.dumps({"op_id": ctx.op_id, "op_ref": ctx.ref}).encode())
    ctx.record(FILES_PLANNED, {"files": len(jobs), "bytes": sum(j.size for j in jobs)})
    # Resume: a file journaled as copied counts only if the object is there with that size.
    present = {o.key: o.size for o in await p.storage.list(f"{name}/")}
    done = ctx.extra.get("copied", {})
    todo = [j for j in jobs if not (j.key in done and done[j.key]["size"] == j.size and present.get(j.key) == j.size)]
    limits: Limits = ctx.runtime["limits"]
    p.progress.start("copy", sum(j.size for j in todo))
    events = EventBatcher(ctx.record_batch)
    sent = [0]  # bytes read from the hosts in this run (a resume sends less than the files' sizes)
    count = 0
    parts_sent = 0

    async def one(job: FileJob) -> None:
        nonlocal count
        saved = ctx.extra.get("parts", {}).get(job.key)
        state = UploadState(saved["upload_id"], list(saved["parts"]), saved["part_size"]) if saved else UploadState()
        journaled = {(state.upload_id, p["n"], p["etag"]) for p in state.parts}

        def on_part(s: UploadState) -> None:
            # Parts finish out of order (several in flight): journal every stored part not journaled
            # yet, not the highest-numbered one, so the journal names exactly the parts stored.
            nonlocal parts_sent
            for part in s.parts:
                if (s.upload_id, part["n"], part["etag"]) in journaled:
                    continue
                journaled.add((s.upload_id, part["n"], part["etag"]))
                # a hint, not a commitment: lost (power loss only), it costs re-sending one part or block,
                # and UPLOADED aborts any upload left unfinished; so no fsync per part
                ctx.record(PART_UPLOADED, {"key": job.key, "upload_id": s.upload_id, "part_size": s.part_size,
                                           "n": part["n"], "etag": part["etag"], "size": part["size"]},
                           durable=False)
                parts_sent += 1
                failpoints.hit(f"part:{parts_sent}")

        up = await upload_file(job, p.hosts.host(job.host), p.storage, limits, p.progress,
                               state=state, on_part=on_part)
        digest = up.sha256
        sent[0] += up.sent
        count += 1
        failpoints.hit(f"file:{count}")
        events.add(FILE_COPIED, {"key": job.key, "host": job.host, "path": job.path, "size": job.size,
                                 "sha256": digest})

    try:
        await run_bounded(todo, lambda j: j.host, limits, one)
    finally:
        events.flush()  # what finished is journaled even when another file failed
        p.progress.done("copy")
    return {"files": len(jobs), "bytes": sum(j.size for j in jobs), "skipped_on_resume": len(jobs) - len(todo),
            "bytes_sent": sent[0]}


async def undo_copied(ctx: StepContext) -> None:
    p = _ports(ctx)
    name = ctx.facts.get("backup_name")
    if name:
        await p.storage.abort_uploads(f"{name}/")
        await p.storage.delete_prefix(f"{name}/")


# -- UPLOADED ---------------------------------------------------------------------------------------------
def build_manifest(ctx: StepContext) -> dict[str, Any]:
    copied = ctx.extra.get("copied", {})
    files = sorted(({"key": d["key"], "size": d["size"], "sha256": d["sha256"], "host": d["host"], "path": d["path"]}
                    for d in copied.values()), key=lambda f: f["key"])
    return {
        "format": 1,
        "tool": "brsm",
        "brsm_version": __version__,
        "op_id": ctx.op_id,
        "op_ref": ctx.ref,
        "backup_name": ctx.facts["backup_name"],
        "create_time_ms": ctx.facts["create_time_ms"],
        "spaces": ctx.facts["spaces"],
        "all_spaces": ctx.facts["all_spaces"],
        "meta_files": ctx.facts["meta_files"],
        # the .meta is written just before the manifest: a reader can tell when it changed since
        "meta_sha256": hashlib.sha256(base64.b64decode(ctx.facts["meta_b64"])).hexdigest(),
        "storage_hosts": ctx.facts["storage_hosts"],
        "topology": ctx.extra["topology"],
        "total_bytes": sum(f["size"] for f in files),
        "files": files,
    }


async def uploaded(ctx: StepContext) -> dict[str, Any]:
    p = _ports(ctx)
    name = ctx.facts["backup_name"]
    planned = {o.key: o.size for o in await p.storage.list(f"{name}/")}
    copied = ctx.extra.get("copied", {})
    missing = [k for k, d in copied.items() if planned.get(k) != d["size"]]
    if missing:
        raise StorageError(f"{len(missing)} copied file(s) are missing or changed in storage, e.g. {missing[0]}",
                           hint=f"run `brsm resume {ctx.op_id}` to copy them again")
    # Every file is complete: an upload still open under the backup was started by an attempt that
    # crashed before journaling its first part, and would linger (and cost) forever.
    await p.storage.abort_uploads(f"{name}/")
    await p.storage.put_bytes(meta_file_key(name), base64.b64decode(ctx.facts["meta_b64"]))
    manifest = build_manifest(ctx)
    # Written last: a backup without its manifest is incomplete, never mistaken for a good one.
    await p.storage.put_bytes(manifest_key(name), json.dumps(manifest, sort_keys=True, indent=1).encode())
    await p.storage.delete(in_progress_key(name))
    return {"manifest": manifest_key(name), "total_bytes": manifest["total_bytes"], "total_files": len(manifest["files"])}


async def undo_uploaded(ctx: StepContext) -> None:
    p = _ports(ctx)
    name = ctx.facts.get("backup_name")
    if name:
        await p.storage.delete(manifest_key(name))
        await p.storage.delete(meta_file_key(name))


# -- CLEANED ---------------------------------------------------------------------------------------------
async def cleaned(ctx: StepContext) -> dict[str, Any]:
    p = _ports(ctx)
    name = ctx.facts["backup_name"]
    if name in {s.name for s in await p.meta.list_snapshots()}:
        await p.meta.drop_snapshots([name])
        ctx.record(SNAPSHOT_DROPPED, {"names": [name], "why": "backup complete"})
    await common.remove_probes(ctx, p.storage)
    await common.make_lease(ctx, p.hosts, "backup").release()
    return {"completed": True}


def workflow() -> Workflow:
    return Workflow(
        kind=BACKUP,
        steps={"LOCKED": locked, "SNAPSHOTTED": snapshotted, "COPIED": copied, "UPLOADED": uploaded,
               "CLEANED": cleaned},
        undos={"LOCKED": undo_locked, "SNAPSHOTTED": undo_snapshotted, "COPIED": undo_copied,
               "UPLOADED": undo_uploaded},
        reducers=REDUCERS,
        preflight=preflight,
        attach=attach,
        detach=detach,
    )
