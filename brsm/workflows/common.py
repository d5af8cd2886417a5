"""Pieces both workflows use: topology facts, preflight checks, the lease, error conversion. (The
SSH login of every host, which topology discovery runs first, is ``ssh_login``.)"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from brsm.engine import events as ev
from brsm.engine.runner import who
from brsm.concurrency import gather_bounded
from brsm.errors import BrsmError, LeaseLost, LockHeld, MetaError, PreflightFailed, StorageError, VerificationFailed
from brsm.home import brsm_home
from brsm.ports import HostsPort, MetaPort, Storage
from brsm.workflows import topology
from brsm.workflows.lease import Lease, host_clock, read_holder
from brsm.workflows.lease_holder import LeaseInfo, is_stale, takeover_note
from brsm.workflows.layout import lease_path
from brsm.workflows.shared_state import PROBE_REMOVED, PROBE_WRITTEN, ClusterContext, ProbeRemoved, ProbeWritten
from brsm.workflows.ssh_login import check_ssh

PREFLIGHT_PASSED = ev.PREFLIGHT_PASSED  # its payload is folded by shared_state.ClusterState
HOST_KEY_ACCEPTED = "HostKeyAccepted"
LEASE_TAKEN = "LeaseTaken"
LEASE_BROKEN = "LeaseBroken"
LEASE_LOST = "LeaseLost"
LEASE_RELEASED = "LeaseReleased"  # let go by a run kept for a resume (the backup's detach)


async def discover_topology(meta: MetaPort, hosts: HostsPort, install_dir: Callable[[str], str]) -> dict[str, Any]:
    """The cluster's topology (brsm.workflows.topology), after checking SSH to every host it names."""
    return await topology.discover(meta, hosts, install_dir, check_ssh=check_ssh)


NOT_BACKED_UP = "NotBackedUp"


async def preflight_topology(ctx: ClusterContext, meta: MetaPort, hosts: HostsPort,
                             install_dir: Callable[[str], str]) -> dict[str, Any]:
    """The cluster's topology as a preflight failure when it cannot be read; the host keys seen while
    reading it are journaled either way."""
    try:
        return await as_preflight(discover_topology(meta, hosts, install_dir))
    finally:
        record_host_keys(ctx, hosts)


E_SPACE_NOT_FOUND = -5  # ErrorCode.E_SPACE_NOT_FOUND (common.thrift)


async def warn_not_backed_up(ctx: ClusterContext, meta: MetaPort, space_ids: Iterable[int] | None, progress: Any,
                             what: str) -> list[str]:
    """Full-text indexes and listeners are never in a backup (MetaKeyUtils.cpp skips the ft_index and
    listener tables, and listeners' data lives outside storaged's): name them, never hide them.

    ``space_ids`` None: every space the cluster has now (a full restore replaces all of meta). Only
    spaces that exist now are asked about: a backup's space may have been dropped, or re-created
    under another id, since it was taken (listListener answers E_SPACE_NOT_FOUND for an id metad
    does not know, ListenerProcessor.cpp), and a space dropped between the listing and the question
    has no listeners left either."""
    current = set((await meta.list_spaces()).values())
    ids = current if space_ids is None else {int(i) for i in space_ids} & current
    found = [f"full-text index {n} (space {sid})" for n, sid in sorted((await meta.list_ft_indexes()).items())
             if sid in ids]
    for sid in sorted(ids):
        found += [f"listener {li} (space {sid})" for li in await listeners_if_space(meta, sid)]
    if found:
        ctx.record(NOT_BACKED_UP, {"items": found, "what": what})
        progress.note(f"warning: {what}: " + "; ".join(found))
    return found


async def listeners_if_space(meta: MetaPort, space_id: int) -> list[str]:
    """A space's listeners; none when metad no longer knows the space (dropped since it was listed)."""
    try:
        return await meta.list_listeners(space_id)
    except MetaError as e:
        if e.code == E_SPACE_NOT_FOUND:
            return []
        raise


async def as_preflight(aw: Awaitable[Any]) -> Any:
    """Errors before any side effect are preflight failures (exit 4), keeping message and hint; a
    backup found damaged stays a verification failure (exit 6)."""
    try:
        return await aw
    except (PreflightFailed, VerificationFailed):
        raise
    except BrsmError as e:
        raise PreflightFailed(e.message, hint=e.hint) from e


async def each_host(items: Iterable[Any], host_of: Callable[[Any], str], work: Callable[[Any], Awaitable[Any]]) -> list[Any]:
    """``work(item)`` for every item: one host's items one after the other (in their order), every
    host at once — renames of one data dir stay ordered, and the cluster's downtime does not grow
    with the number of hosts. Results grouped by host; a failure stops the others (gather_bounded)."""
    groups: dict[str, list[Any]] = {}
    for item in items:
        groups.setdefault(host_of(item), []).append(item)

    async def run(host_items: list[Any]) -> list[Any]:
        return [await work(item) for item in host_items]

    return [r for rs in await gather_bounded(max(1, len(groups)), run, list(groups.values())) for r in rs]


NOTE_EVERY = 5.0  # seconds between "still waiting" notes


async def wait_noting(aw: Awaitable[Any], *, progress: Any, note: Callable[[float], str],
                      bound: float | None = None, every: float = NOTE_EVERY) -> Any:
    """Await ``aw``, telling ``progress`` ``note(seconds waited)`` every ``every`` seconds, so a long
    wait on the cluster is never silent. Past ``bound`` seconds ``aw`` is cancelled and
    ``TimeoutError`` raised; cancelled itself, it cancels ``aw`` and waits for it to stop.

        await wait_noting(meta.create_backup(None), progress=p, bound=300,
                          note=lambda s: f"waiting on metad's createBackup: {s:.0f} s")
        # every 5 s: "waiting on metad's createBackup: 5 s", "... 10 s", ...
    """
    task = asyncio.ensure_future(aw)
    t0 = time.monotonic()
    try:
        while True:
            waited = time.monotonic() - t0
            left = None if bound is None else bound - waited
            if left is not None and left <= 0:
                raise TimeoutError(f"no answer within {bound:.0f} s")
            done, _ = await asyncio.wait({task}, timeout=every if left is None else min(every, left))
            if done:
                return task.result()
            waited = time.monotonic() - t0
            if bound is None or waited < bound:
                progress.note(note(waited))
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def record_host_keys(ctx: ClusterContext, hosts: HostsPort | None) -> None:
    """Journal every SSH host key accepted on first contact (--accept-new-host-keys) since the last
    call: host, port, key type, fingerprint, known_hosts file. A public fingerprint, never a secret."""
    take = getattr(hosts, "take_accepted_host_keys", None)
    for key in take() if take is not None else ():
        ctx.record(HOST_KEY_ACCEPTED, key)


async def check_paths(hosts: HostsPort, topology: dict[str, Any]) -> None:
    missing = []
    for role in ("meta", "storage"):
        for svc in topology[role]:
            h = hosts.host(svc["host"])
            for dp in svc["data_paths"]:
                if not await h.exists(dp):
                    missing.append(f"{svc['host']}:{dp}")
    if missing:
        raise PreflightFailed(f"data paths reported by metad do not exist: {', '.join(missing)}",
                              hint="is the config's host mapping right (address → SSH host)?")


async def probe_storage(ctx: ClusterContext, storage: Storage) -> None:
    """Write, read back and delete a small object: the storage is reachable, writable and lets brsm
    delete (rollback, cleanup and prune need that too).

    The probe is journaled before it is written (``ProbeWritten``) and after it is gone
    (``ProbeRemoved``): a crash in between, or a storage that refuses the delete, leaves a journaled
    probe that rollback and CLEANED remove (``remove_probes``), never an unrecorded object.
    """
    key = f".brsm-probe-{ctx.ref}-{int(time.time())}"
    ctx.record(ProbeWritten(key))
    try:
        await storage.put_bytes(key, b"brsm probe")
    except BrsmError as e:
        ctx.record(ProbeRemoved(key))  # a put stores all or nothing: nothing to remove
        raise PreflightFailed(f"storage {storage.uri} is not usable: {e.message}",
                              hint=e.hint or "check the URI, the endpoint and the credentials") from e
    try:
        if await storage.get_bytes(key) != b"brsm probe":
            raise StorageError(f"{storage.uri}: a probe object read back different bytes", permanent=True)
    except BrsmError as e:
        failure: BrsmError | None = e
    else:
        failure = None
    try:
        await storage.delete(key)  # never leave the probe in the user's storage
    except BrsmError as e:
        raise PreflightFailed(
            f"storage {storage.uri} took a write but refused to delete it ({key}): {e.message}",
            hint="brsm must be able to delete (rollback, cleanup, prune): grant it, then resume or roll back "
                 "this operation, which removes the probe object") from e
    ctx.record(ProbeRemoved(key))
    if failure is not None:
        raise PreflightFailed(f"storage {storage.uri} is not usable: {failure.message}",
                              hint=failure.hint or "check the URI, the endpoint and the credentials") from failure


async def remove_probes(ctx: ClusterContext, storage: Storage) -> None:
    """Remove what an earlier attempt of this operation's probes left (journaled, not removed): the
    storage probe's object, or the direct path's probe upload (a multipart upload: aborted)."""
    for key, kind in list(ctx.data.probes.items()):
        if kind == "upload":
            await storage.abort_uploads(key)  # every upload of that key; none left is fine
        else:
            await storage.delete(key)  # a missing one is fine
        ctx.record(ProbeRemoved(key))


def unremoved_probes(events: Iterable[Any]) -> list[str]:
    """The probe keys an operation journaled as written and never as removed (pure, over its
    ProbeWritten/ProbeRemoved events): what its rollback must still remove from the storage."""
    left: dict[str, None] = {}
    for e in events:
        if e.type == PROBE_WRITTEN:
            left[e.data["key"]] = None
        elif e.type == PROBE_REMOVED:
            left.pop(e.data["key"], None)
    return list(left)


def probe_journal(ctx: ClusterContext) -> Callable[[str, bool], None]:
    """For direct.choose: each direct-path probe upload journaled before it is opened and once it is
    aborted, so one the store would not abort is removed by CLEANED or the rollback (remove_probes)."""
    def note(key: str, gone: bool) -> None:
        ctx.record(ProbeRemoved(key) if gone else ProbeWritten(key, upload=True))
    return note


def make_lease(ctx: ClusterContext, hosts: HostsPort, kind: str) -> Lease:
    lease = ctx.runtime.lease
    if lease is None:
        topo = ctx.data.topo
        targets = [(hosts.host(m["host"]), lease_path(m["root"])) for m in topo["meta"]]

        def took_over(host: str, holder: LeaseInfo) -> None:
            ctx.record(LEASE_BROKEN, {"host": host, "holder": holder.describe(), "holder_op": holder.op_id,
                                      "holder_ref": holder.owner})
            progress = getattr(ctx.ports, "progress", None)
            if progress is not None:  # said, not only journaled: what the dead run left is now nobody's
                progress.note(takeover_note(host, holder, ctx.data.params.journal_id, ctx.data.params.config))

        def lost(host: str, holder: LeaseInfo | None, why: str) -> None:
            ctx.record(LEASE_LOST, {"host": host, "why": why, "holder": holder.describe() if holder else None,
                                    "holder_ref": holder.owner if holder else None})
            abort = ctx.abort
            if abort is not None:
                abort(lease_lost_error(ctx, host, holder, why))

        ttl = getattr(ctx.ports, "lease_ttl", None) or ctx.data.params.lease_ttl or 300

        lease = Lease(targets, op_id=ctx.op_id, ref=ctx.ref, kind=kind, who=who(), on_takeover=took_over,
                      on_lost=lost, ttl=float(ttl), home=str(brsm_home()))
        ctx.runtime.lease = lease
    return lease


def lease_lost_error(ctx: ClusterContext, host: str, holder: LeaseInfo | None, why: str) -> LeaseLost:
    """The failure a lost lease ends the run with: who has the cluster now, and what to do."""
    whom = f": now held by {holder.describe()}" if holder is not None else ""
    if holder is not None:
        hint = (f"let that run finish (or stop it), then `brsm resume {ctx.op_id}` or `brsm rollback {ctx.op_id}`, "
                f"which take the lease back first")
    else:
        hint = (f"check that {host} is reachable and that nobody removes the lease dir by hand, then "
                f"`brsm resume {ctx.op_id}` or `brsm rollback {ctx.op_id}`")
    return LeaseLost(f"operation {ctx.op_id} lost its cluster lease on {host} ({why}){whom}; it stopped "
                     f"where it was and was not rolled back", hint=hint)


def lease_active(ctx: ClusterContext, lease_step: str) -> bool:
    """The lease may be held: ``lease_step`` (the workflow's step that takes it) began and was not undone."""
    st = ctx.state
    return lease_step in st.started and lease_step not in st.undone and ctx.data.topology is not None


async def reattach_lease(ctx: ClusterContext, hosts: HostsPort, kind: str, lease_step: str) -> None:
    """A resume or rollback in a new process takes its own (or a stale) lease back first."""
    if lease_active(ctx, lease_step) and not ctx.state.finished:
        lease = make_lease(ctx, hosts, kind)
        await lease.acquire()
        ctx.record(LEASE_TAKEN, {"hosts": [h.name for h, _ in lease.hosts], "mode": ctx.mode})


async def detach_lease(ctx: ClusterContext) -> None:
    lease = ctx.runtime.lease
    if lease is not None:
        await lease.stop_refresh()


# -- deleters and the lease ---------------------------------------------------------------------
async def held_leases(meta: MetaPort | None, hosts: HostsPort | None, install_dir: Callable[[str], str] | None, *,
                      mine: str | None = None, topology: dict[str, Any] | None = None) -> list[LeaseInfo] | None:
    """Who holds the cluster lease now, whichever journal or machine it was taken from: the live
    (not stale, judged by each lease host's clock) holders other than ``mine``. None when there is
    no cluster to look at (no config). A host that cannot be read raises: "could not look" is never
    "nobody holds it"."""
    if meta is None or hosts is None:
        return None
    topo = topology or await discover_topology(meta, hosts, install_dir or (lambda h: "/usr/local/nebula"))
    found: dict[str, LeaseInfo] = {}
    for m in topo["meta"]:
        h = hosts.host(m["host"])
        path = lease_path(m["root"])
        holder = await read_holder(h, path) if await h.exists(path) else None
        if holder is None or holder.owner == mine or is_stale(holder, await host_clock(h)):
            continue
        found.setdefault(holder.owner, holder)
    return list(found.values())


def refuse_while_leased(what: str, holders: list[LeaseInfo] | None) -> None:
    """Nothing deletes a backup while another run holds the cluster lease: a restore there may be
    using it (its lease does not say which backup), a backup may be writing one. One line naming
    every holder, and how to go on."""
    if not holders:
        return
    names = "; ".join(h.describe() for h in holders)
    ops = ", ".join(str(h.op_id) for h in holders)
    raise LockHeld(f"{what} refused: the cluster lease is held by {names}, which may be using a backup in this "
                   f"storage; nothing was deleted",
                   hint=f"let that run finish, then run this again; if its process died, resume or roll back "
                        f"operation {ops} from its own journal (BRSM_HOME), or wait until its lease expires")

