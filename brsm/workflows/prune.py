"""`brsm prune`: retention over the complete backups in a storage.

Policies apply per space set, as restic's ``forget`` groups snapshots by host and paths: a nightly
backup of all spaces and a one-off ``--spaces space1`` backup are two series, and ``--keep-last 14``
keeps the 14 newest of each, so a one-off never pushes a full backup out. A complete backup is kept
when it is among the ``keep_last`` newest complete ones of its space set, OR was created within
``keep_within`` seconds, OR an unfinished brsm operation uses it, OR it is the newest complete backup
holding one of its spaces (prune never leaves a space without a backup); every other complete backup
is deleted. Incomplete and broken backups never count as kept ones and are never deleted here:
removing those is ``brsm gc``'s (incomplete) or ``brsm cleanup``'s (broken, after a look) job.

Planning is pure (:func:`plan_prune`); :func:`apply_prune` deletes. Each deletion removes the
manifest first, then the ``.meta``, then the rest, so a backup deleted halfway reads as incomplete,
never as a good backup.

``prune --confirm`` is a journaled operation (kind ``prune``): SCANNED journals the plan, CLEANED
journals each deleted backup (``BackupDeleted``), so ``brsm audit`` shows who deleted what, and a
prune killed halfway is finished by ``brsm resume`` (it deletes what the journaled plan still lists,
skipping what was deleted and what an unfinished operation has started to use since). Deletions are
not undone: there is nothing to roll back. A dry run reads only and is not journaled.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from brsm import durations
from brsm.engine.definitions import PRUNE
from brsm.engine.state import Event, KindState, Params, completed, on
from brsm.engine.step_context import StepContext
from brsm.engine.workflow import Workflow
from brsm.errors import BrsmError, ObjectNotFound, StorageError, UsageError
from brsm.ports import HostsPort, MetaPort, Storage
from brsm.workflows import catalog, common
from brsm.workflows.layout import manifest_key, meta_file_key

KEEP, DELETE, SKIP = "keep", "delete", "skip"
NO_LEASE_CHECK = ("no cluster config (--config or BRSM_CONFIG): the cluster lease was not checked, so a restore run "
                  "from another journal that uses one of these backups could not be seen")
GC_NOTE = ("incomplete and broken backups are neither counted nor deleted by prune: `brsm gc` removes "
           "abandoned incomplete ones, `brsm cleanup NAME` a broken one")


def parse_duration(text: str) -> float:
    """``90s``, ``30m``, ``12h``, ``30d``, ``2w`` (a bare number is seconds) → seconds (brsm.durations:
    finite, at most a year)."""
    try:
        return durations.parse_duration(text, allow_zero=True)
    except durations.DurationError as e:
        raise UsageError(f"--keep-within: {e}", hint=f"write it like {durations.FORMS}") from None


@dataclass
class Decision:
    entry: catalog.BackupEntry
    action: str
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        e = self.entry
        return {"name": e.name, "action": self.action, "why": "; ".join(self.reasons), "state": e.state,
                "checksums": e.checksums, "made_by": e.made_by, "created": e.created, "files": e.files,
                "bytes": e.bytes}


@dataclass
class PrunePlan:
    keep_last: int | None
    keep_within: float | None
    now_ms: int
    decisions: list[Decision]

    def of(self, action: str) -> list[Decision]:
        return [d for d in self.decisions if d.action == action]

    @property
    def warnings(self) -> list[str]:
        out = []
        complete = [d for d in self.decisions if d.entry.state == catalog.COMPLETE]
        if complete and all(d.action == DELETE for d in complete):
            out.append("this deletes every complete backup in the storage")
        return out


def check_policy(keep_last: int | None, keep_within: float | None) -> None:
    if keep_last is None and keep_within is None:
        raise UsageError("prune needs a retention policy: --keep-last N, --keep-within DURATION, or both",
                         hint="e.g. brsm prune --storage URI --keep-last 7 --keep-within 30d")
    if keep_last is not None and keep_last < 1:
        raise UsageError(f"--keep-last must be at least 1, not {keep_last}",
                         hint="to keep only recent backups, use --keep-within alone")
    if keep_within is not None and keep_within <= 0:
        raise UsageError("--keep-within must be a positive duration", hint="e.g. 30d")


def space_set(e: catalog.BackupEntry) -> str:
    """The series a backup belongs to for retention: all spaces, or exactly these spaces."""
    if e.all_spaces:
        return "all spaces"
    return "spaces " + ",".join(sorted(e.spaces)) if e.spaces else "no spaces named"


def plan_prune(entries: Iterable[catalog.BackupEntry], *, keep_last: int | None, keep_within: float | None,
               now_ms: int, in_use: Mapping[str, int] | None = None) -> PrunePlan:
    check_policy(keep_last, keep_within)
    in_use = in_use or {}
    entries = list(entries)
    complete = sorted((e for e in entries if e.state == catalog.COMPLETE),
                      key=lambda e: (e.created_ms is not None, e.created_ms or 0, e.name), reverse=True)
    series: dict[str, list[catalog.BackupEntry]] = {}
    for e in complete:
        series.setdefault(space_set(e), []).append(e)
    newest = {e.name for group in series.values() for e in group[:keep_last]} if keep_last else set()
    last_of_space: dict[str, list[str]] = {}  # backup -> the spaces whose newest backup it is
    for sp in sorted({sp for e in complete for sp in e.spaces}):
        holder = next(e for e in complete if sp in e.spaces)
        last_of_space.setdefault(holder.name, []).append(sp)
    decisions: list[Decision] = []
    for e in entries:
        if e.state != catalog.COMPLETE:
            why = ("incomplete: neither counted nor deleted (brsm gc's job)" if e.state == catalog.INCOMPLETE
                   else "broken: neither counted nor deleted (see brsm verify)")
            decisions.append(Decision(e, SKIP, [why]))
            continue
        reasons = []
        if e.name in newest:
            reasons.append(f"among the {keep_last} newest complete of {space_set(e)}")
        if keep_within is not None and e.created_ms is not None and e.created_ms >= now_ms - keep_within * 1000:
            reasons.append("created within the window")
        if e.created_ms is None:
            reasons.append("creation time unknown")
        if e.name in in_use:
            reasons.append(f"in use by unfinished operation {in_use[e.name]}")
        if e.name in last_of_space and not reasons:
            reasons.append(f"the newest backup of {', '.join(last_of_space[e.name])}")
        if reasons:
            decisions.append(Decision(e, KEEP, reasons))
        else:
            parts = []
            if keep_last:
                parts.append(f"not among the {keep_last} newest complete of {space_set(e)}")
            if keep_within is not None:
                parts.append("older than the window")
            decisions.append(Decision(e, DELETE, parts))
    decisions.sort(key=lambda d: (d.entry.created_ms is None, d.entry.created_ms or 0, d.entry.name))
    return PrunePlan(keep_last, keep_within, now_ms, decisions)


async def delete_backup(storage: Storage, name: str) -> int:
    """Commit markers first (manifest, then ``.meta``), then the rest of the prefix; returns objects
    deleted. A marker already gone is fine: a resumed deletion starts over the same way."""
    n = 0
    for key in (manifest_key(name), meta_file_key(name)):
        try:
            await storage.stat(key)
        except ObjectNotFound:
            continue
        await storage.delete(key)
        n += 1
    await storage.abort_uploads(f"{name}/")
    return n + await storage.delete_prefix(f"{name}/")


# -- the journaled operation (prune --confirm) -------------------------------------------------------
BACKUP_DELETED = "BackupDeleted"
BACKUP_DELETE_FAILED = "BackupDeleteFailed"
PRUNE_SKIPPED = "PruneSkipped"


@dataclass(frozen=True)
class BackupDeleted(Event):
    TYPE: ClassVar[str] = BACKUP_DELETED
    name: str
    objects: int  # objects deleted from the storage


@dataclass
class PrunePorts:
    storage: Storage
    decode_meta: catalog.MetaDecoder
    in_use: Mapping[str, int]  # backup name -> the unfinished operation using it (this journal)
    progress: Any = None
    # the cluster (from --config): its lease is checked before anything is deleted, whichever journal
    # holds it (operations of other journals are not in ``in_use``)
    meta: MetaPort | None = None
    hosts: HostsPort | None = None
    install_dir: Callable[[str], str] | None = None


def ports(ctx: StepContext) -> PrunePorts:
    """The one way a step reaches its ports: the engine's ``ctx.ports`` serves every kind, untyped;
    this names the ones a prune step has."""
    return ctx.ports


async def _refuse_while_leased(ctx: StepContext) -> None:
    p = ports(ctx)
    common.refuse_while_leased("prune", await common.held_leases(p.meta, p.hosts, p.install_dir, mine=ctx.ref))


async def prune_check(ctx: StepContext) -> dict[str, Any]:
    """Before the plan: refused while another run holds the cluster lease (when there is a cluster
    to look at: --config), so nothing is planned for deletion under a live restore or backup."""
    p = ports(ctx)
    common.refuse_while_leased("prune", await common.as_preflight(
        common.held_leases(p.meta, p.hosts, p.install_dir, mine=ctx.ref)))
    return {}


async def prune_scan(ctx: StepContext[PruneState]) -> dict[str, Any]:
    """The plan, journaled: what CLEANED deletes (and a resume still deletes) is decided once."""
    p = ports(ctx)
    entries = await catalog.list_backups(p.storage, decode_meta=p.decode_meta)
    plan = plan_prune(entries, keep_last=ctx.data.params.keep_last,
                      keep_within=ctx.data.params.keep_within, now_ms=ctx.data.params.now_ms, in_use=p.in_use)
    warnings = list(plan.warnings)
    if p.meta is None and plan.of(DELETE):
        warnings.append(NO_LEASE_CHECK)
    return {"storage": p.storage.uri, "decisions": [d.to_dict() for d in plan.decisions],
            "delete": [d.entry.name for d in plan.of(DELETE)], "warnings": warnings}


@dataclass(frozen=True)
class PruneParams(Params):
    keep_last: int | None = None  # keep the newest N of each space set
    keep_within: float | None = None  # keep what is younger than this many seconds
    now_ms: int = 0  # the moment the plan is made against, fixed when the operation is created

    @classmethod
    def from_data(cls, d: Mapping[str, Any]) -> "PruneParams":
        return cls(keep_last=d.get("keep_last"), keep_within=d.get("keep_within"), now_ms=int(d.get("now_ms") or 0))


@dataclass
class PruneState(KindState):
    PARAMS: ClassVar[type[PruneParams]] = PruneParams
    params: PruneParams = field(default_factory=PruneParams)
    delete: list[str] = field(default_factory=list)  # the backups SCANNED's plan deletes
    deleted: dict[str, BackupDeleted] = field(default_factory=dict)  # by backup name

    @completed("SCANNED", sets=("delete",))
    def _scanned(self, f: dict[str, Any]) -> None:
        self.delete = f.get("delete") or []

    @on(BackupDeleted, sets=("deleted",))
    def _deleted(self, e: BackupDeleted) -> None:
        self.deleted[e.name] = e


async def prune_delete(ctx: StepContext[PruneState]) -> dict[str, Any]:
    """Each planned backup deleted and journaled; one that fails is journaled and the rest go on, then
    the step fails naming it (``brsm resume`` tries what is left)."""
    p = ports(ctx)
    await _refuse_while_leased(ctx)  # again: a run may have taken it since the plan was made
    done = set(ctx.data.deleted)
    failed: dict[str, dict[str, Any]] = {}
    for name in ctx.data.delete:
        if name in done:
            continue
        if name in p.in_use:  # an operation started to use it after the plan was made
            ctx.record(PRUNE_SKIPPED, {"name": name, "why": f"in use by unfinished operation {p.in_use[name]}"})
            continue
        try:
            n = await delete_backup(p.storage, name)
        except BrsmError as e:
            failed[name] = {"name": name, "error": e.message, "hint": e.hint}
            ctx.record(BACKUP_DELETE_FAILED, failed[name])
            continue
        ctx.record(BackupDeleted(name, n))
    if failed:
        first = next(iter(failed.values()))
        raise StorageError(f"{len(failed)} backup(s) could not be deleted, e.g. {first['name']}: {first['error']}",
                           hint=first.get("hint") or f"fix the cause, then `brsm resume {ctx.op_id}`: what is "
                                                     "half-deleted reads as incomplete and is never restored")
    deleted = ctx.data.deleted
    return {"deleted": sorted(deleted), "objects": sum(d.objects for d in deleted.values()), "op_id": ctx.op_id}


def prune_workflow() -> Workflow:
    return Workflow(kind=PRUNE, steps={"SCANNED": prune_scan, "CLEANED": prune_delete}, preflight=prune_check,
                    state=PruneState)
