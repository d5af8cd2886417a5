"""What every restore step shares: its ports, the journal's event names, and small accessors."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from brsm.errors import BrsmError, Interrupted, OperationFailed, PreflightFailed
from brsm.ports import MetaPort, MetaSstCodec, HostsPort, Progress, Storage
from brsm.workflows.restore import placement
from brsm.workflows.restore.state import RestoreContext

# the events the state folds are named in state.py (and ledger.py); these are only journaled
SPACES_DROPPED = "SpacesDropped"
DATA_PROVED = "RestoredDataProved"
UNVERIFIED_ALLOWED = "UnverifiedRestoreAllowed"
TAMPERED = "the backup was damaged or tampered with; restore another backup (see `brsm show`)"


@dataclass
class RestorePorts:
    meta: MetaPort
    hosts: HostsPort
    storage: Storage
    progress: Progress
    install_dir: Callable[[str], str]
    # `<NAME>.meta` bytes → CreatedBackup: restores nebula-br backups, which have no manifest.
    decode_meta: Callable[[bytes], Any] | None = None
    lease_ttl: float | None = None  # as BackupPorts.lease_ttl
    # the install dir the config names for a host, None when it names none (flags only, or a host not
    # listed): then the daemon's own root (its working dir: nebula.service starts it in the install dir)
    configured_install_dir: Callable[[str], str | None] | None = None
    # writes the meta SST a restore of chosen spaces ingests (restore.partial_meta); None: the older way,
    # drop the chosen spaces and ingest the backup's tables (the in-process fakes keep no SSTs)
    meta_sst: MetaSstCodec | None = None


def ports(ctx: RestoreContext) -> RestorePorts:
    """The one way a step reaches its ports: the engine's ``ctx.ports`` serves every kind, untyped;
    this names the ones a restore step has."""
    return ctx.ports


def partial(ctx: RestoreContext) -> bool:
    """A restore of chosen spaces (the backup holds only some)."""
    return not ctx.data.all_spaces


def chosen_spaces(ctx: RestoreContext) -> list[str] | None:
    """The ids of the chosen spaces (each one's dirs are ``<root>/nebula/<id>``), from CHECKED's
    ``spaces`` ({id: name}), which only CHECKED's completion sets (RestoreState). A journal written
    before STARTED journaled its listed names as ``spaces_listed`` has them as STARTED's ``spaces``:
    they set nothing here, so every undo still finds ``nebula/<id>`` to put back."""
    if not partial(ctx):
        return None
    spaces = ctx.data.spaces
    if not isinstance(spaces, dict):
        spaces = (ctx.data.manifest or {}).get("spaces")
        if not isinstance(spaces, dict):
            raise OperationFailed("the journal names the chosen spaces by name only, not by id: brsm cannot tell "
                                  "which space dirs this restore set aside",
                                  hint="look under <data path>/nebula_brsm_old_<op> on every storage host for the "
                                       "original space dirs; nothing was moved or deleted by this step")
    return sorted(str(k) for k in spaces)


def set_aside_spaces(ctx: RestoreContext) -> list[str] | None:
    """The space dirs SET_ASIDE moves away (None: whole roots): the chosen spaces, and the spaces
    re-created since the backup under another id that the restore replaces (CHECKED's
    ``replaced_spaces``; none in a journal from before it existed)."""
    chosen = chosen_spaces(ctx)
    if chosen is None:
        return None
    return sorted(set(chosen) | {str(k) for k in ctx.data.replaced_spaces})


def staged(ctx: RestoreContext) -> bool:
    """This run stages (CHECKED chose it); an operation journaled before staging existed did not."""
    return ctx.data.mode == placement.STAGED


def pairs(ctx: RestoreContext) -> list[tuple[str, str]]:
    return [(o, n) for o, n in ctx.data.pairs]


def root_of(ctx: RestoreContext) -> Callable[[dict[str, Any]], str]:
    """A storaged's or graphd's root (where its cluster.id is): metad's word, else the config's."""
    p = ports(ctx)
    return lambda s: s.get("root") or p.install_dir(s["host"])


def cluster_down(ctx: RestoreContext) -> bool:
    """STOPPED began and was not undone, and the restored cluster has not come up (STARTED not
    completed): the cluster may be down until this restore goes on or is rolled back."""
    st = ctx.state
    return "STOPPED" in st.started and "STOPPED" not in st.undone and "STARTED" not in st.completed


def down_error(ctx: RestoreContext, e: BaseException) -> BaseException:
    """A failure while the cluster may be down, as the CLI must show it: never a preflight failure
    (exit 4 says nothing was touched), and a hint that names the exact command that brings the
    cluster back up. An interruption is left as it is (the CLI words those from the journal)."""
    if isinstance(e, Interrupted) or not isinstance(e, Exception) or not cluster_down(ctx):
        return e
    back = (f"the cluster's services may be down: `brsm rollback {ctx.op_id}` brings it back up with its original "
            f"data (or fix the cause, then `brsm resume {ctx.op_id}`)")
    if not isinstance(e, BrsmError):
        out: BrsmError = OperationFailed(f"{type(e).__name__}: {e}", hint=back)
        out.__cause__ = e
        return out
    if isinstance(e, PreflightFailed):
        out = OperationFailed(e.message, hint=e.hint)
        out.__cause__ = e
        e = out
    if f"brsm rollback {ctx.op_id}`" not in (e.hint or ""):
        e.hint = "; ".join(h for h in (e.hint, back) if h)
    return e
