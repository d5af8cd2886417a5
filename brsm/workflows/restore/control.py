"""Service control for a restore: which daemons run where, stopping and starting them through
brsm.workflows.services with progress, waiting for metad and for every storaged ONLINE, and the
"still down?" check before every step that renames, writes or starts.

Why: a storaged started behind brsm's back (an operator, a rebooted host) while the files are
written would make a restore finish with data that is neither the backup's nor the original. Before every
step that renames, writes or starts (and every undo that renames data back) brsm checks again that
the daemons it stopped are down: no pid in `nebula.service status`, the port closed, no process using
the data dirs. Otherwise it journals ServiceFoundRunning and stops there (exit 5), touching nothing.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any

from brsm.errors import BrsmError, OperationFailed
from brsm.ports import HostAddr
from brsm.workflows import services
from brsm.workflows.restore import ownership
from brsm.workflows.restore.context import RestorePorts, ports
from brsm.workflows.restore.state import DowntimeEnded, RestoreContext

ALL_DOWN = ("graphd", "storaged", "metad")
# A "still down" check this process passed less than FRESH_SECONDS ago, with no service started since,
# is not repeated: the steps of a staged restore's downtime follow each other within milliseconds,
# and the window such a check leaves open is no wider than the one between any check and the action
# after it. A resume, or a step after a long one (the offline download), always checks again.
FRESH_SECONDS = 2.0
DIR_USERS_SETTLE = (0.5, 1.0, 2.0)  # re-checks of data-dir users before they count
STARTED_BY_US = ("graphd", "storaged")  # metad runs (ours) from META_RESTORED on

ROLE_OF = {"metad": "meta", "storaged": "storage", "graphd": "graph"}


def hosts_by_role(ctx: RestoreContext) -> dict[str, list[str]]:
    topo = ctx.data.topo
    return {svc: sorted({s["host"] for s in topo[ROLE_OF[svc]]}) for svc in ("graphd", "storaged", "metad")}


def targets(ctx: RestoreContext, svc: str) -> list[services.ServiceTarget]:
    """Every host running ``svc``, its install dir (config) and the port it serves on (topology)."""
    p = ports(ctx)
    seen: dict[str, services.ServiceTarget] = {}
    for s in ctx.data.topo[ROLE_OF[svc]]:
        if s["host"] not in seen:
            seen[s["host"]] = services.ServiceTarget(s["host"], _install_dir(p, s), HostAddr.parse(s["addr"]).port)
    return [seen[h] for h in sorted(seen)]


def _install_dir(p: RestorePorts, svc: dict[str, Any]) -> str:
    return services.script_dir(svc, p.configured_install_dir, p.install_dir)


def service_timeout(ctx: RestoreContext) -> float:
    """--service-timeout, or (not given) a wait scaled to the data each storaged loads before it
    listens (services.start_timeout); a journal from before that default always holds a number."""
    given = ctx.data.params.service_timeout
    if given:
        return given
    topo = ctx.data.topology or {}
    return services.start_timeout(ctx.data.data_bytes, len({s["host"] for s in topo.get("storage", [])}))


class StillLoading(OperationFailed):
    """Every storaged that did not open its port in time runs and is ONLINE in metad (its heartbeat
    accepted, so it is loading its parts: StorageServer::start opens the ports after the kvstore):
    nothing is wrong with the restored data, so the operation is kept as it is for ``brsm resume``,
    never rolled back."""

    keeps_operation = True


async def stop(ctx: RestoreContext, svc: str) -> None:
    ts = targets(ctx, svc)
    with hosts_task(ctx, f"stop {svc}", len(ts)):
        await services.stop(ports(ctx).hosts, svc, ts, timeout=service_timeout(ctx), on_down=lambda t: ctx.record(
            ownership.DaemonStopped(t.host, svc), durable=False))  # lost: judges nothing


def start_watch(ctx: RestoreContext, svc: str) -> services.StartWatch:
    """Journal every start this operation issues and the pid it then sees (ownership), and judge a
    daemon found "already running" by those pids: one started behind brsm's back is refused."""

    def issued(ts) -> None:
        # durable, one fsync for every host: a start this forgot would make its daemon a stranger
        ctx.record_batch([ownership.DaemonStartIssued(t.host, svc) for t in ts])

    def started(t: services.ServiceTarget, pid: int | None) -> None:
        # not fsynced (this runs in the downtime): lost, the start stays unresolved, which judges nothing
        ctx.record(ownership.DaemonStarted(t.host, svc, pid=pid, at=time.time()), durable=False)

    def foreign(t: services.ServiceTarget, pid: int) -> str | None:
        if ownership.judge(pid, ctx.data.own_daemons, ctx.data.tracks_starts, t.host, svc) != ownership.FOREIGN:
            return None
        msg = ownership.foreign_message(svc, t.host, pid, t.install_dir, ctx.op_id, ctx.mode)
        ctx.record(ownership.ServiceFoundRunning(t.host, svc, before=f"start {svc}", foreign_pid=pid,
                                                 why=f"{svc} is running as pid {pid}, not started by this operation"))
        return msg

    return services.StartWatch(issued, started, foreign)


async def start(ctx: RestoreContext, svc: str) -> None:
    ctx.runtime.last_down_check = None
    ts = targets(ctx, svc)
    with hosts_task(ctx, f"start {svc}", len(ts)):
        try:
            await services.start(ports(ctx).hosts, svc, ts, timeout=service_timeout(ctx), watch=start_watch(ctx, svc))
        except services.NotListeningYet as e:
            if svc == "storaged":
                await _still_loading(ctx, e)
            raise


async def _still_loading(ctx: RestoreContext, e: services.NotListeningYet) -> None:
    """Raise StillLoading if every storaged that runs without listening is ONLINE in metad's listHosts
    (loading its parts); otherwise return, and the start fails as it is (a storaged metad refuses:
    unregistered, another cluster's id)."""
    addrs = sorted(s["addr"] for s in ctx.data.topo["storage"] if s["host"] in set(e.hosts))
    try:
        listed = {str(h.addr): h for h in await ports(ctx).meta.list_hosts("STORAGE")}
    except BrsmError:
        return
    if addrs and all(a in listed and listed[a].online for a in addrs):
        raise StillLoading(
            f"storaged {', '.join(addrs)} runs and is ONLINE in metad but has not opened its port after "
            f"{service_timeout(ctx):.0f} s: it is still loading its parts; "
            + ("the rollback stops here" if ctx.mode == "rollback" else "the restore is kept as it is, not rolled back")
            + f" ({e.message})",
            hint=f"wait until `nebula.service status storaged` says it listens on {', '.join(e.hosts)}, then "
                 + (f"`brsm rollback {ctx.op_id}` goes on with the rollback" if ctx.mode == "rollback" else
                    f"`brsm resume {ctx.op_id}` finishes the restore")) from e


class hosts_task:
    """A progress task (rich on a terminal, a JSON line with --json) for a wait on every host at once:
    started before it, advanced to the total and done once every host got there (without it a restore
    is silent for half its time while daemons stop and start)."""

    def __init__(self, ctx: RestoreContext, task: str, total: int, unit: str = "hosts") -> None:
        self.progress, self.task, self.total, self.unit = ports(ctx).progress, task, total, unit

    def __enter__(self) -> "hosts_task":
        self.progress.start(self.task, self.total, unit=self.unit)
        return self

    def __exit__(self, exc_type, *_exc) -> None:
        if exc_type is None:
            self.progress.advance(self.task, self.total)
        self.progress.done(self.task)


async def start_all(ctx: RestoreContext) -> None:
    await start(ctx, "metad")
    await wait_meta(ctx)
    await start(ctx, "storaged")
    await wait_storage_online(ctx)
    await start(ctx, "graphd")



def downtime_ended(ctx: RestoreContext, how: str) -> float | None:
    """Journal the end of the cluster's downtime (every storaged ONLINE again: ``how`` "restored" or
    "rolled back"), once; the seconds since DowntimeBegan, in the brsm machine's clock (both ends are
    read by the run that journals them, or a resume's, whose clock may differ: a figure, not a proof)."""
    began, ended = ctx.data.downtime_began, ctx.data.downtime_seconds
    if began is None or ended is not None:
        return ended
    seconds = round(max(0.0, time.time() - began), 3)
    ctx.record(DowntimeEnded(at=time.time(), seconds=seconds, how=how))
    ports(ctx).progress.note(f"the cluster was down {seconds:.1f} s (first service stopped → every storaged ONLINE, {how})")
    return seconds


async def wait_meta(ctx: RestoreContext) -> None:
    deadline = time.monotonic() + service_timeout(ctx)
    while True:
        try:
            await ports(ctx).meta.list_spaces()
            return
        except BrsmError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def wait_storage_online(ctx: RestoreContext) -> list[str]:
    """Until metad's listHosts counts every storaged of the topology ONLINE (its heartbeat accepted)."""
    want = sorted({s["addr"] for s in ctx.data.topo["storage"]})
    timeout = service_timeout(ctx)
    t0, slept, pause = time.monotonic(), 0.0, 0.1
    while True:
        listed = {str(h.addr): h for h in await ports(ctx).meta.list_hosts("STORAGE")}
        missing = [a for a in want if not (a in listed and listed[a].online)]
        if not missing:
            return want
        if max(time.monotonic() - t0, slept) >= timeout:
            why = "; ".join(f"{a}: {listed[a].status if a in listed else 'not listed'}" for a in missing)
            causes = await _offline_causes(ctx, missing)
            if any(kind == ownership.FOREIGN for kind, _ in causes):
                raise services.ForeignDaemon("; ".join(text for kind, text in causes if kind == ownership.FOREIGN),
                                             hint=f"{len(missing)} of {len(want)} storaged are not ONLINE in "
                                                  f"metad's listHosts within {timeout:.0f} s: {why}")
            known = [text for _, text in causes]
            raise OperationFailed(
                f"after the restore {len(missing)} of {len(want)} storaged are not ONLINE in metad's listHosts "
                f"within {timeout:.0f} s: {why}" + (f"; {'; '.join(known)}" if known else ""),
                hint=("look at the storaged log under <install>/logs on the host(s) named" if known and len(known) == len(missing)
                      else "a storaged is ONLINE once metad accepts its heartbeats: check its host is registered "
                           "(ADD HOSTS) and its <install>/cluster.id; look at the storaged and metad logs"))
        await asyncio.sleep(pause)
        slept += pause
        pause = min(0.5, pause * 2)


async def _offline_causes(ctx: RestoreContext, addrs: list[str]) -> list[tuple[str, str]]:
    """Why the storaged at ``addrs`` are not ONLINE, where brsm can tell: ``(FOREIGN, line)`` for one that
    runs as a pid this operation did not start, ``("exited", line)`` for one that does not run. A
    storaged that runs as brsm's own (or its status says nothing) adds nothing: then the cause is
    metad's refusal (ADD HOSTS, cluster.id), as the hint says."""
    by_addr = {s["addr"]: s["host"] for s in ctx.data.topo["storage"]}
    ts = {t.host: t for t in targets(ctx, "storaged")}
    hosts = sorted({by_addr[a] for a in addrs if by_addr.get(a) in ts})

    async def one(host: str) -> tuple[str, str] | None:
        t = ts[host]
        try:
            got, _ = await services.check_host(ports(ctx).hosts, host, [("storaged", t)], [])
        except BrsmError:
            return None
        st, _open = got.get("storaged", (None, False))
        if st is None:
            return None
        if not st.running:
            return ("exited", f"storaged on {host} is not running (it exited: see its log under {t.install_dir}/logs)")
        if st.pid is not None and ownership.judge(st.pid, ctx.data.own_daemons, ctx.data.tracks_starts, host, "storaged", issued_now=False) == ownership.FOREIGN:
            return (ownership.FOREIGN, ownership.foreign_message("storaged", host, st.pid, t.install_dir,
                                                                  ctx.op_id, ctx.mode))
        return None

    return [c for c in await asyncio.gather(*(one(h) for h in hosts)) if c]


async def refuse_foreign(ctx: RestoreContext, svcs: tuple[str, ...]) -> None:
    """Before a resumed step starts several daemons at once (STARTED: storaged and graphd): refuse if one
    of them runs as a pid this operation did not start, before any start is issued, so nothing starts
    beside it either. One exec per host, every host at once; a daemon that is down, or runs as the
    operation's own pid (or one it cannot judge), passes."""
    checks = [(svc, t) for svc in svcs for t in targets(ctx, svc)]
    by_host: dict[str, list[tuple[str, services.ServiceTarget]]] = {}
    for svc, t in checks:
        by_host.setdefault(t.host, []).append((svc, t))

    async def one(host: str) -> list[tuple[str, services.ServiceTarget, int]]:
        got, _ = await services.check_host(ports(ctx).hosts, host, by_host[host], [])
        out = []
        for svc, t in by_host[host]:
            st, _open = got.get(svc, (None, False))
            if st is not None and st.running and st.pid is not None and \
                    ownership.judge(st.pid, ctx.data.own_daemons, ctx.data.tracks_starts, host, svc, issued_now=False) == ownership.FOREIGN:
                out.append((svc, t, st.pid))
        return out

    found = [f for fs in await asyncio.gather(*(one(h) for h in sorted(by_host))) for f in fs]
    for svc, t, pid in found:
        ctx.record(ownership.ServiceFoundRunning(t.host, svc, before=f"start {svc}", foreign_pid=pid,
                                                 why=f"{svc} is running as pid {pid}, not started by this operation"))
    if found:
        raise services.ForeignDaemon(
            "; ".join(ownership.foreign_message(svc, t.host, pid, t.install_dir, ctx.op_id, ctx.mode)
                      for svc, t, pid in found),
            hint="brsm starts nothing on top of a daemon it did not start, and undoes nothing by itself",
            found=[(t.host, pid) for _, t, pid in found])


class ServicesNotDown(OperationFailed):
    """A daemon brsm stopped runs again (or its port or data dirs are in use): brsm will not act on a belief."""


def dirs_of(ctx: RestoreContext, svcs: tuple[str, ...]) -> dict[str, list[str]]:
    topo = ctx.data.topo
    out: dict[str, list[str]] = {}
    for svc in svcs:
        role = ROLE_OF[svc]
        if role == "graph":
            continue
        for s in topo[role]:
            out.setdefault(s["host"], []).extend(dp for dp in s["data_paths"] if dp not in out.get(s["host"], []))
    return out


async def ensure_down(ctx: RestoreContext, before: str, svcs: tuple[str, ...] = ALL_DOWN) -> None:
    """Refuse to go on with ``before`` unless every daemon of ``svcs`` is down on every host and no
    process uses their data dirs."""
    p = ports(ctx)
    last = ctx.runtime.last_down_check
    if last is not None and time.monotonic() - last[0] < FRESH_SECONDS and set(svcs) <= last[1]:
        return  # checked moments ago by this process, and nothing started since (start() forgets it)
    p.progress.note(f"checking that {', '.join(svcs)} are still down before {before}")
    # one exec per host, every host at once: this runs inside the cluster's downtime
    checks, dirs = [(svc, t) for svc in svcs for t in targets(ctx, svc)], dirs_of(ctx, svcs)
    found, users = await services.find_not_down(p.hosts, checks, dirs)
    for pause in DIR_USERS_SETTLE if not found and users else ():
        # a file handle of brsm's own transfer cut short a moment ago (the host's sftp-server closes
        # it once the channel is gone) is not a daemon: only users that stay count
        await asyncio.sleep(pause)
        found, users = await services.find_not_down(p.hosts, checks, dirs)
        if found or not users:
            break
    if not found:  # a daemon found running names itself; only without one do the data dirs' users count
        found += [(h, "data dir", why) for h, why in users]
    if not found:
        ctx.runtime.last_down_check = (time.monotonic(), set(svcs))
        return
    for host, svc, why in found:
        ctx.record(ownership.ServiceFoundRunning(host, svc, before=before, why=why))
    text = "; ".join(f"{h}: {why}" for h, _svc, why in found)
    where = ", ".join(sorted({h for h, _, _ in found}))
    raise ServicesNotDown(
        f"refusing to go on with {before}: what brsm stopped for this restore is not down any more on "
        f"{len({h for h, _, _ in found})} host(s): {text}; stop it there (`nebula.service stop "
        f"{found[0][1] if found[0][1] in ALL_DOWN else '<service>'}`) before brsm goes on",
        hint=f"someone or something (a reboot, an operator, systemd) started it behind brsm's back: stop it on "
             f"{where} (`<install>/scripts/nebula.service stop <service>`), find out why, then "
             f"`brsm resume {ctx.op_id}` (continues) or `brsm rollback {ctx.op_id}` (puts the original data back)")


