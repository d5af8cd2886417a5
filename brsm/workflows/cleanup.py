"""`brsm cleanup NAME`: deleting one backup (its objects and its snapshot), journaled as an operation of
its own, and never while another operation uses that backup or holds a lease."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from brsm.engine.definitions import CLEANUP
from brsm.engine.step_context import StepContext
from brsm.engine.workflow import Workflow
from brsm.engine.state import KindState, Params
from brsm.errors import UsageError
from brsm.workflows import common, listing, meta_checkpoints
from brsm.workflows.layout import bad_backup_name, manifest_key, meta_file_key
from brsm.workflows.maintenance import REMOVED, MaintenancePorts, ports


def _refuse_in_use(p: MaintenancePorts, name: str) -> None:
    if name in p.live.names:
        raise UsageError(f"backup {name} is in use by operation {p.live.names[name]}, which has not finished",
                         hint=f"finish it (`brsm resume {p.live.names[name]}`) or roll it back first")


@dataclass(frozen=True)
class CleanupParams(Params):
    name: str = ""  # the backup to delete

    @classmethod
    def from_data(cls, d: dict[str, Any]) -> "CleanupParams":
        return cls(name=d.get("name") or "")


@dataclass
class CleanupState(KindState):
    PARAMS: ClassVar[type[CleanupParams]] = CleanupParams
    params: CleanupParams = field(default_factory=CleanupParams)


async def cleanup_check(ctx: StepContext[CleanupState]) -> dict[str, Any]:
    """Every refusal before anything is deleted: then the operation has begun no step, and `brsm
    rollback` closes it at once (a refusal inside CLEANED left one neither resume nor rollback could end)."""
    p = ports(ctx)
    name = ctx.data.params.name
    why = bad_backup_name(name)
    if why:  # the CLI refuses it first; a journaled one (edited, or from an older brsm) must not reach storage
        raise UsageError(why, hint="backup names look like BACKUP_2026_11_24_15_23_34")
    if p.storage is None and p.meta is None:
        raise UsageError(f"nothing to delete {name} from: give --storage (or --config with a storage.default), "
                         "and --config to drop its snapshot too",
                         hint="e.g. brsm cleanup NAME --storage URI --config FILE")
    _refuse_in_use(p, name)
    common.refuse_while_leased(f"cleanup of {name}", await common.as_preflight(
        common.held_leases(p.meta, p.hosts, p.install_dir, mine=ctx.ref)))
    if "CLEANED" in ctx.state.started:  # a resume: what is gone may be gone because of us
        return {}
    found = p.meta is not None and name in {s.name for s in await p.meta.list_snapshots()}
    if not found and p.storage is not None:
        found = await listing.any_object(p.storage, f"{name}/")
    if not found:
        where = " or ".join(w for w in (p.storage.uri if p.storage is not None else None,
                                        "the cluster's snapshots" if p.meta is not None else None) if w)
        raise UsageError(f"no backup named {name} in {where}", hint="see `brsm show --storage URI`")
    return {}


async def cleanup_step(ctx: StepContext[CleanupState]) -> dict[str, Any]:
    p = ports(ctx)
    name = ctx.data.params.name
    _refuse_in_use(p, name)
    # again, right before deleting: another journal's run may have taken the lease since the check
    common.refuse_while_leased(f"cleanup of {name}", await common.held_leases(p.meta, p.hosts, p.install_dir,
                                                                              mine=ctx.ref))
    dropped = []
    if p.meta is not None and name in {s.name for s in await p.meta.list_snapshots()}:
        await p.meta.drop_snapshots([name])
        dropped.append(name)
    if p.meta is not None and p.hosts is not None:  # a former meta leader keeps its copy (run again: idempotent)
        await meta_checkpoints.remove_meta_checkpoints(p.meta, p.hosts, [name], p.progress)
    deleted = 0
    if p.storage is not None:
        # (whether it exists was checked before the step; on a resume, what is gone may be gone because of us)
        # The manifest goes first: a half-deleted backup then reads as incomplete, never as good.
        await p.storage.delete(manifest_key(name))
        await p.storage.delete(meta_file_key(name))
        await p.storage.abort_uploads(f"{name}/")
        deleted = await p.storage.delete_prefix(f"{name}/")
    ctx.record(REMOVED, {"what": "backup", "name": name, "objects": deleted, "snapshot_dropped": bool(dropped)})
    return {"name": name, "objects_deleted": deleted, "snapshot_dropped": bool(dropped)}


def cleanup_workflow() -> Workflow:
    return Workflow(kind=CLEANUP, steps={"CLEANED": cleanup_step}, preflight=cleanup_check, state=CleanupState)
