"""`brsm gc`: removing what backups and restores leave behind, never what is in use; and what gc and
`brsm cleanup` (brsm/workflows/cleanup.py) share: the live operations and the ports they reach.

Both run as journaled operations of their own, so the audit trail shows who removed what. What is
"in use" comes from the journal: an operation that is neither finished nor rolled back may still be
resumed, so its snapshot, its objects and its set-aside data are never touched.
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

from brsm.engine.definitions import GC
from brsm.engine.step_context import StepContext
from brsm.engine.workflow import Workflow
from brsm.engine.state import KindState, Params, completed, on
from brsm.errors import BrsmError, OperationFailed
from brsm.ports import HostsPort, MetaPort, Storage
from brsm.workflows import common, listing, meta_checkpoints
from brsm.workflows.gc_leases import lease_problem, leases, live_leases  # what lease gc sees
from brsm.workflows.lease import host_clock, read_holder
from brsm.workflows.lease_holder import LeaseInfo, is_stale
from brsm.workflows.layout import MANIFEST, in_progress_key, manifest_key, meta_file_key


REMOVED = "OrphanRemoved"
_NAME_TIME = re.compile(r"^BACKUP_(\d{4})_(\d{2})_(\d{2})_(\d{2})_(\d{2})_(\d{2})")
# a restore's set-aside original data (old) and its staged download (new: the staged restore's)
_ASIDE = re.compile(r"nebula_brsm_(old|new)_((?:[0-9a-f]+-)?\d+)$")
# a restore's set-aside cluster.id of a storaged or graphd root, or its marker that there was none
_CLUSTER_ID_ASIDE = re.compile(r"/\.?cluster\.id\.brsm_(?:old|absent)_((?:[0-9a-f]+-)?\d+)$")


@dataclass(frozen=True)
class LiveOps:
    """Operations that may still be resumed: their ids and the backup names they use."""

    op_ids: frozenset[int] = frozenset()
    names: dict[str, int] = field(default_factory=dict)  # backup name -> op id
    # the same as refs (`<journal id>-<op id>`, brsm.engine.step_context.op_ref): what is on a cluster is judged by these
    refs: frozenset[str] = frozenset()
    known_refs: frozenset[str] = frozenset()
    journal_id: str | None = None
    # finished restores of this journal run with --keep-old: their set-aside data is the user's, kept
    kept_old: frozenset[str] = frozenset()
    # backup name -> (op id, ref, the op that broke its lease): unfinished operations whose run is dead
    # (another run of this journal took their lease over), so what they left is nobody's until rolled back
    dead: dict[str, tuple[int, str, int]] = field(default_factory=dict)


def judge_set_aside(token: str, live: LiveOps, lease_owners: frozenset[str] = frozenset()) -> tuple[str, str]:
    """What gc may do with ``nebula_brsm_old_<token>``: ``("set_aside", why)`` (removable: a finished
    restore of this journal), or ``("set_aside_unknown", why)`` (left alone), or ``("in_use", why)``.

    >>> judge_set_aside("3f9a0c12be47-38", LiveOps(known_refs=frozenset({"3f9a0c12be47-38"})))[0]
    'set_aside'
    >>> judge_set_aside("38", LiveOps(known_refs=frozenset({"38"})))[0]  # older brsm
    'set_aside_unknown'
    """
    if token in live.refs or token in lease_owners:
        return "in_use", f"restore {token} has not finished (or holds the cluster lease): never"
    if token.isdigit():
        return "set_aside_unknown", (f"named by a bare operation id ({token}, an older brsm): any journal's "
                                     f"operation {token} could have made it, so it is left alone; remove it by "
                                     "hand once you know whose it is")
    if token in live.kept_old:
        return "kept_old", (f"restore {token} kept the original data on purpose (--keep-old): never removed by gc; "
                            "remove it by hand once it is no longer needed")
    if token in live.known_refs:
        return "set_aside", f"restore {token} of this journal has finished"
    return "set_aside_unknown", f"operation {token} is not in this journal: left alone"


@dataclass
class MaintenancePorts:
    meta: MetaPort | None
    hosts: HostsPort | None
    storage: Storage | None
    live: LiveOps
    progress: Any = None
    install_dir: Any = None  # host -> Nebula's install dir (flagfiles), for clusters without nebula-agent


def ports(ctx: StepContext) -> MaintenancePorts:
    """The one way a step reaches its ports: the engine's ``ctx.ports`` serves every kind, untyped;
    this names the ones a gc or cleanup step has."""
    return ctx.ports


def name_time(name: str) -> float | None:
    m = _NAME_TIME.match(name)
    if not m:
        return None
    return time.mktime(tuple(int(x) for x in m.groups()) + (0, 0, -1))  # metad names in its local time


# -- gc ---------------------------------------------------------------------------------------------

async def _marker_owner(storage: Storage, name: str) -> str | None:
    """The ref (or bare op id) in a backup's in-progress marker, None when it names none."""
    try:
        raw = json.loads(await storage.get_bytes(in_progress_key(name)))
        return str(raw.get("op_ref") or raw["op_id"])
    except (BrsmError, ValueError, TypeError, KeyError, AttributeError):
        return None


async def find_orphans(p: MaintenancePorts, *, grace_seconds: float, topology: dict[str, Any] | None) -> list[dict]:
    live = await live_leases(p, topology)
    owners = frozenset(i.owner for i in live if isinstance(i, LeaseInfo))
    held_by = "; ".join(i.describe() for i in live)
    snapshots: set[str] = set()
    out: list[dict] = []
    if p.meta is not None:
        listed = await p.meta.list_snapshots()
        snapshots = {s.name for s in listed}
        out += _orphan_snapshots(p.live, listed, held_by if live else None)
    if p.storage is not None:
        out += await _orphan_backups(p, owners, held_by if live else None, snapshots, grace_seconds)
    out += await dead_run_leftovers(p, owners, snapshots)
    if p.hosts is not None and topology is not None:
        out += await _orphan_restore_dirs(p, topology, owners)
        if p.meta is not None:
            out += await meta_checkpoints.find_stray(p.meta, p.hosts, topology, p.live.names,
                                                     held_by if live else None)
        for host, path, info, now in await leases(p, topology):
            bad = lease_problem(info, now)
            if bad is not None:
                out.append({"kind": "invalid_lease", "host": host, "path": path, "holder": info.describe(),
                            "why": f"{bad}: nobody can tell whether its run lives; removed only with --confirm"})
                continue
            if info is None or (is_stale(info, now) and info.owner not in p.live.refs):
                out.append({"kind": "stale_lease", "host": host, "path": path,
                            "holder": info.describe() if info else "unreadable",
                            "why": "expired and its process is gone" if info else "no holder recorded"})
    return out


async def dead_run_leftovers(p: MaintenancePorts, owners: frozenset[str], snapshots: set[str]) -> list[dict]:
    """The snapshot and partial backup of an unfinished backup whose lease a later run took over: its
    run is dead (a live one stops within one refresh of losing its lease), so they are listed, and
    --confirm removes them, unless that operation holds the lease again (resumed since)."""
    out: list[dict] = []
    for name, (op_id, ref, by) in sorted(p.live.dead.items()):
        if ref in owners:
            continue
        why = (f"left by operation {op_id}, whose run is dead (operation {by} took its lease over); "
               f"`brsm rollback {op_id}` undoes it all, --confirm removes this")
        if name in snapshots:
            out.append({"kind": "dead_run_snapshot", "name": name, "op_id": op_id, "why": why})
        if p.storage is not None:
            if manifest_key(name) in await listing.object_sizes(p.storage, [manifest_key(name)]):
                continue
            n, size = await listing.tally_objects(p.storage, f"{name}/")
            if n:
                out.append({"kind": "dead_run_backup", "name": name, "op_id": op_id, "objects": n,
                            "bytes": size, "why": why})
    return out


def _orphan_snapshots(live: LiveOps, listed: list[Any], held_by: str | None) -> list[dict]:
    """``BACKUP*`` snapshots no unfinished operation of this journal uses (while a lease is held: in use)."""
    out = []
    for s in listed:
        if not s.name.startswith("BACKUP") or s.name in live.names:
            continue
        if held_by is not None:
            out.append({"kind": "in_use", "name": s.name, "status": s.status,
                        "why": f"the cluster lease is held by {held_by}: a live run may own it; left alone"})
            continue
        out.append({"kind": "snapshot", "name": s.name, "status": s.status,
                    "why": "no unfinished brsm operation uses it"})
    return out


async def _orphan_backups(p: MaintenancePorts, owners: frozenset[str], held_by: str | None, snapshots: set[str],
                          grace_seconds: float) -> list[dict]:
    """Backups in storage without a manifest (nor a finished nebula-br ``.meta``), past the grace period."""
    out, now = [], time.time()
    for d in await p.storage.list_dirs(""):
        name = d.rstrip("/")
        if not name.startswith("BACKUP") or name in p.live.names:
            continue
        # the markers looked up by name: a finished backup of a million files is not listed to find them
        keys = await listing.object_sizes(p.storage, [manifest_key(name), meta_file_key(name), in_progress_key(name)])
        if manifest_key(name) in keys or (f"{name}/{name}.meta" in keys and in_progress_key(name) not in keys):
            continue  # complete (brsm manifest, or nebula-br's .meta written last)
        objects, size = await listing.tally_objects(p.storage, f"{name}/")
        owner = await _marker_owner(p.storage, name) if in_progress_key(name) in keys else None
        if owner is not None and (owner in owners or owner in p.live.refs):
            out.append({"kind": "in_use", "name": name, "objects": objects,
                        "why": f"being written by {owner}, which holds the cluster lease or has not finished"})
            continue
        if held_by is not None:  # a live run of any journal may use it (its lease does not say which backup)
            out.append({"kind": "in_use", "name": name, "objects": objects,
                        "why": (f"its snapshot is on the cluster and the lease is held by {held_by}" if name in snapshots
                                else f"the cluster lease is held by {held_by}: a live run may use it; left alone")})
            continue
        t = name_time(name)
        if t is not None and now - t < grace_seconds:
            continue
        out.append({"kind": "incomplete_backup", "name": name, "objects": objects,
                    "bytes": size, "why": f"no {MANIFEST} and older than the grace period"})
    return out


async def _orphan_restore_dirs(p: MaintenancePorts, topology: dict[str, Any], owners: frozenset[str]) -> list[dict]:
    """Set-aside (``nebula_brsm_old_<op>``) and staging (``nebula_brsm_new_<op>``) dirs of restores that
    finished, on every data path, --wal_path and --rocksdb_wal_dir; an unfinished restore's are never listed."""
    out = []
    for role in ("storage", "meta"):
        for svc in topology[role]:
            h = p.hosts.host(svc["host"])
            for dp in list(svc["data_paths"]) + [svc[k] for k in ("wal_path", "rocksdb_wal_dir") if svc.get(k)]:
                for line in await h.list_named(dp, ["nebula_brsm_old_*", "nebula_brsm_new_*"], dirs_only=True):
                    m = _ASIDE.search(line.strip())
                    if not m:
                        continue
                    kind, why = judge_set_aside(m.group(2), p.live, owners)
                    if kind == "in_use":
                        continue  # an unfinished restore's data, original or staged: never
                    if m.group(1) == "new":  # a staged download its restore did not clean up
                        kind = {"set_aside": "staging", "set_aside_unknown": "staging_unknown",
                                "kept_old": "staging"}[kind]
                    out.append({"kind": kind, "host": svc["host"], "path": line.strip(), "op_ref": m.group(2),
                                "why": why})
    out += await _orphan_cluster_ids(p, topology, owners)
    return out


async def _orphan_cluster_ids(p: MaintenancePorts, topology: dict[str, Any], owners: frozenset[str]) -> list[dict]:
    """The ``cluster.id`` files a restore set aside (``cluster.id.brsm_old_<op>``) or the markers that
    there was none (``.cluster.id.brsm_absent_<op>``), in every storaged and graphd root: judged as
    that restore's set-aside data dirs are (judge_set_aside)."""
    out = []
    roots = sorted({(s["host"], s.get("root") or (p.install_dir(s["host"]) if p.install_dir else None))
                    for role in ("storage", "graph") for s in topology.get(role, [])})
    for host, root in roots:
        if not root:
            continue
        for line in await p.hosts.host(host).list_named(root, ["cluster.id.brsm_old_*", ".cluster.id.brsm_absent_*"]):
            m = _CLUSTER_ID_ASIDE.search(line.strip())
            if not m:
                continue
            kind, why = judge_set_aside(m.group(1), p.live, owners)
            if kind == "in_use":
                continue
            out.append({"kind": kind, "host": host, "path": line.strip(), "op_ref": m.group(1), "why": why})
    return out


async def gc_scan(ctx: StepContext[GcState]) -> dict[str, Any]:
    p = ports(ctx)
    topo = None
    if p.meta is not None:
        topo = await common.discover_topology(p.meta, p.hosts, p.install_dir or (lambda h: "/usr/local/nebula"))
    try:
        orphans = await find_orphans(p, grace_seconds=ctx.data.params.grace_seconds, topology=topo)
    finally:
        common.record_host_keys(ctx, p.hosts)
    return {"orphans": orphans}


NOT_REMOVED = "OrphanNotRemoved"


async def _still_there(p: MaintenancePorts, o: dict[str, Any]) -> bool:
    """After a removal: is the orphan still there? (metad may answer SUCCEEDED to a dropSnapshot it did
    not carry out, and a tree can survive `rm -rf` in part.)"""
    if o["kind"] in ("snapshot", "dead_run_snapshot"):
        return o["name"] in {s.name for s in await p.meta.list_snapshots()}
    if o["kind"] in ("incomplete_backup", "dead_run_backup"):
        return await listing.any_object(p.storage, f"{o['name']}/")
    return await p.hosts.host(o["host"]).exists(o["path"])


@dataclass(frozen=True)
class GcParams(Params):
    confirm: bool = False  # remove; without it gc only lists
    grace_seconds: float = 3600.0  # a leftover younger than this may belong to a run under way

    @classmethod
    def from_data(cls, d: dict[str, Any]) -> "GcParams":
        return cls(confirm=bool(d.get("confirm")), grace_seconds=float(d.get("grace_seconds", 3600)))


@dataclass
class GcState(KindState):
    PARAMS: ClassVar[type[GcParams]] = GcParams
    params: GcParams = field(default_factory=GcParams)
    orphans: list[dict[str, Any]] = field(default_factory=list)  # what SCANNED found
    removed: list[dict[str, Any]] = field(default_factory=list)  # OrphanRemoved payloads, in order

    @completed("SCANNED", sets=("orphans",))
    def _scanned(self, f: dict[str, Any]) -> None:
        self.orphans = f.get("orphans") or []

    @on(REMOVED, sets=("removed",))
    def _removed(self, d: dict[str, Any]) -> None:
        self.removed.append(d)


async def gc_remove(ctx: StepContext[GcState]) -> dict[str, Any]:
    """Each orphan removed, then looked for again: only one that is gone is journaled ``OrphanRemoved``
    and counted; one still there is journaled ``OrphanNotRemoved`` and fails the step, naming it."""
    p = ports(ctx)
    if not ctx.data.params.confirm:
        return {"removed": 0, "dry_run": True}
    done = {_ident(e) for e in ctx.data.removed}
    left: list[str] = []
    held: list[LeaseInfo] | None = None
    for o in ctx.data.orphans:
        if _ident(o) in done or o["kind"] not in ("snapshot", "incomplete_backup", "set_aside", "staging", "stale_lease",
                                              "invalid_lease", "dead_run_snapshot", "dead_run_backup",
                                              "meta_checkpoint"):
            continue
        if o["kind"] in ("snapshot", "incomplete_backup", "meta_checkpoint"):
            if held is None:  # once, right before the first deletion: a run may have taken the lease since the scan
                held = await common.held_leases(p.meta, p.hosts, p.install_dir, mine=ctx.ref) or []
            if held:
                ctx.record(NOT_REMOVED, {**_where(o), "why": "the cluster lease was taken since the scan by "
                                                             + "; ".join(h.describe() for h in held)})
                continue  # left alone, as the scan would have
        if o["kind"] in ("snapshot", "dead_run_snapshot"):
            await p.meta.drop_snapshots([o["name"]])
            if p.hosts is not None:
                await meta_checkpoints.remove_meta_checkpoints(p.meta, p.hosts, [o["name"]], p.progress)
        elif o["kind"] in ("incomplete_backup", "dead_run_backup"):
            await p.storage.abort_uploads(f"{o['name']}/")
            await p.storage.delete_prefix(f"{o['name']}/")
        elif o["kind"] == "meta_checkpoint":
            if o["name"] in {s.name for s in await p.meta.list_snapshots()}:
                ctx.record(NOT_REMOVED, {**_where(o), "why": "its snapshot is listed again since the scan"})
                continue  # a snapshot of that name now: its checkpoint, not an orphan
            await p.hosts.host(o["host"]).remove_tree(o["path"])
        elif o["kind"] == "stale_lease":
            holder = await read_holder(p.hosts.host(o["host"]), o["path"])
            if holder is not None and not is_stale(holder, await host_clock(p.hosts.host(o["host"]))):
                ctx.record(NOT_REMOVED, {**_where(o), "why": f"taken since the scan by {holder.describe()}"})
                continue  # a live run took it since the scan: its lease, not an orphan
            await p.hosts.host(o["host"]).remove_tree(o["path"])
        else:
            await p.hosts.host(o["host"]).remove_tree(o["path"])
        if await _still_there(p, o):
            ctx.record(NOT_REMOVED, {**_where(o), "why": "still there after its removal"})
            left.append(str(o.get("name") or f"{o['host']}:{o['path']}"))
            continue
        ctx.record(REMOVED, _where(o))
    removed = len(ctx.data.removed)
    if left:
        raise OperationFailed(f"gc removed {removed} orphan(s) but {len(left)} are still there: {', '.join(left)}",
                              hint="see `brsm audit` of this gc for why; remove them by hand, or fix the cause and "
                                   "run gc again")
    return {"removed": removed, "dry_run": False}


def _ident(o: dict[str, Any]) -> tuple[Any, ...]:
    """What an orphan is, to know it removed on a resume: a meta checkpoint by its host and path (one
    name may be on several metads), every other kind as before (its name, else its path)."""
    if o.get("kind") == "meta_checkpoint":
        return (o["kind"], o.get("host"), o.get("path"))
    return (o.get("kind"), o.get("name") or o.get("path"))


def _where(o: dict[str, Any]) -> dict[str, Any]:
    return {"kind": o["kind"], "name": o.get("name"), "path": o.get("path"), "host": o.get("host")}


def gc_workflow() -> Workflow:
    return Workflow(kind=GC, steps={"SCANNED": gc_scan, "CLEANED": gc_remove}, state=GcState)
