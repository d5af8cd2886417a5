"""brsm's own lease on a cluster, so two runs (from any machines) never work on it at once.

A lease is a directory created with ``mkdir`` (atomic on POSIX) on every metad host, in sorted
order, all or none, holding ``holder.json``: op id, user@host, pid, expiry. A live run refreshes
it; a lease is stale only when past its expiry *and*, when the holder ran on this machine, its
process is gone (restic's rule). Taking over a stale lease is journaled by the caller.

A run killed between ``mkdir`` and writing ``holder.json`` leaves a lease dir that names nobody.
A live run writes its holder milliseconds after its ``mkdir``, so a lease dir seen without a holder
for ``ABANDONED_AFTER`` seconds was abandoned: it is taken over like a stale one (so a resume or
rollback after such a kill, or the next run, is not locked out until someone runs ``brsm gc``).

Expiry is written and judged in the clock of the metad host that holds the lease (read over SSH when
the lease is taken), never in the operator machine's: two operators whose clocks disagree by minutes
would otherwise each see the other's lease as stale, or their own as fresh long after it expired.

A lost lease stops the run (restic's rule). The refresher calls ``on_lost`` when a lease dir names
another holder (taken over: by a run that thought it stale, or by hand), is gone (removed by hand or by
``brsm gc``), or could not be refreshed for so long that it would expire before the next try. Working
on without the lease means working beside another run on the same cluster.
"""
from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from brsm.errors import LockHeld, RemoteError
from brsm.ports import HostPort

TTL = 300.0
REFRESH_EVERY = 60.0
ABANDONED_AFTER = 10.0  # seconds a lease dir may show no holder.json before it counts as abandoned
_POLL = 0.2


@dataclass(frozen=True)
class LeaseInfo:
    op_id: int
    kind: str
    who: str
    machine: str
    pid: int
    expires: float
    # <journal id>-<op id> (brsm.engine.runner.op_ref); "" in a holder.json an older brsm wrote
    ref: str = ""

    @property
    def owner(self) -> str:
        """Who holds it, across journals: the ref, or the bare op id an older brsm wrote. Operation 38
        of one journal is never operation 38 of another."""
        return self.ref or str(self.op_id)

    def describe(self) -> str:
        until = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.expires))
        journal = f" of journal {self.ref.rsplit('-', 1)[0]}" if "-" in self.ref else ""
        return (f"operation {self.op_id}{journal} ({self.kind}) by {self.who}, pid {self.pid} on {self.machine}, "
                f"until {until}")


@dataclass(frozen=True)
class NoHolder(LeaseInfo):
    """What a lease dir without ``holder.json`` is taken over from (for the caller's journal)."""

    def describe(self) -> str:
        return f"nobody (the lease dir stayed without holder.json for {ABANDONED_AFTER:.0f} s: its run was " \
               "killed between creating it and writing its holder)"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_stale(info: LeaseInfo, now: float | None = None) -> bool:
    """``now`` in the lease host's clock (``Lease`` passes it); this machine's clock when not given."""
    now = time.time() if now is None else now
    if info.expires > now:
        return False
    if info.machine == socket.gethostname():
        return not _pid_alive(info.pid)
    return True


async def read_holder(host: HostPort, path: str) -> LeaseInfo | None:
    """The holder, or None when there is none (no file, or an unreadable one). A host we cannot
    reach raises: "could not look" must never pass for "nobody holds it"."""
    try:
        buf = b""
        async for chunk in host.open_read(f"{path}/holder.json"):
            buf += chunk
        raw = json.loads(buf)
        known = {f for f in LeaseInfo.__dataclass_fields__}
        return LeaseInfo(**{k: v for k, v in raw.items() if k in known})
    except (ValueError, TypeError, AttributeError):
        return None
    except (RemoteError, OSError):
        if await host.exists(f"{path}/holder.json"):  # raises in turn when the host is unreachable
            raise
        return None


async def _write(host: HostPort, path: str, info: LeaseInfo) -> None:
    data = json.dumps(asdict(info)).encode()

    async def one():
        yield data

    await host.write_file(f"{path}/holder.json", one(), mode=0o600)


def lost_by_silence(since_ok: float, period: float, ttl: float) -> bool:
    """True when the lease, last refreshed ``since_ok`` seconds ago, could expire before the next
    refresh ``period`` from now: the run must stop while the lease is still its own.

    >>> lost_by_silence(120, 60, 300), lost_by_silence(240, 60, 300)
    (False, True)
    """
    return since_ok + period >= ttl


def parse_remote_clock(text: str) -> float:
    """``date +%s.%N`` output; a ``date`` without ``%N`` (busybox) prints ``1767000000.N``.

    >>> parse_remote_clock("1767000000.250000000\\n"), parse_remote_clock("1767000000.N")
    (1767000000.25, 1767000000.0)
    """
    head, _, frac = text.strip().partition(".")
    if not head.isdigit():
        raise ValueError(f"not a clock reading: {text.strip()[:40]!r}")
    return float(head) + (float("0." + frac) if frac.isdigit() else 0.0)


async def host_clock(host: HostPort) -> float:
    """The host's clock now (``date`` over SSH): what a lease on that host is judged by."""
    r = await host.run(["date", "+%s.%N"], check=False)
    try:
        return parse_remote_clock(r.stdout)
    except ValueError:
        raise RemoteError(f"could not read the clock of {host.name} (`date +%s.%N` printed "
                          f"{r.stdout.strip()[:60]!r})", host=host.name,
                          hint="brsm judges its lease by the metad host's clock; check that `date` runs there") from None


LostCallback = Callable[[str, "LeaseInfo | None", str], None]


class Lease:
    def __init__(self, hosts: Sequence[tuple[HostPort, str]], *, op_id: int, kind: str, who: str,
                 ttl: float = TTL, on_takeover: Callable[[str, LeaseInfo], None] | None = None,
                 ref: str | None = None, on_lost: LostCallback | None = None) -> None:
        # Sorted by host name so two runs contend in the same order and cannot deadlock half-way.
        self.hosts = sorted(hosts, key=lambda hp: hp[0].name)
        self.op_id = op_id
        self.ref = ref or str(op_id)  # what ownership is judged by (LeaseInfo.owner)
        self.kind = kind
        self.who = who
        self.ttl = ttl
        self.on_takeover = on_takeover
        self.on_lost = on_lost
        self.period = min(REFRESH_EVERY, ttl / 5)
        self._task: asyncio.Task | None = None
        self._offset: dict[str, float] = {}  # host name -> its clock minus ours

    async def _measure_clock(self, host: HostPort) -> None:
        """The lease host's clock, once per acquire: expiry is judged by it (see the module doc)."""
        t0 = time.time()
        remote = await host_clock(host)
        self._offset[host.name] = remote - (t0 + time.time()) / 2

    def now_on(self, host: HostPort) -> float:
        return time.time() + self._offset.get(host.name, 0.0)

    def _info(self, host: HostPort) -> LeaseInfo:
        return LeaseInfo(self.op_id, self.kind, self.who, socket.gethostname(), os.getpid(),
                         self.now_on(host) + self.ttl, ref=self.ref if self.ref != str(self.op_id) else "")

    def mine(self, holder: LeaseInfo | None) -> bool:
        return holder is not None and holder.owner == self.ref

    async def acquire(self) -> None:
        await self.stop_refresh()  # acquiring again (resume re-runs LOCKED) must not leak a refresher
        taken: list[tuple[HostPort, str]] = []
        try:
            for host, path in self.hosts:
                await self._acquire_one(host, path)
                taken.append((host, path))
        except BaseException:
            for host, path in reversed(taken):
                await self._release_one(host, path)
            raise
        self._task = asyncio.create_task(self._refresh_loop())

    async def _acquire_one(self, host: HostPort, path: str) -> None:
        await self._measure_clock(host)
        for _ in range(3):
            r = await host.run(["mkdir", path], check=False)
            if r.exit_status == 0:
                try:
                    await _write(host, path, self._info(host))
                except BaseException:
                    try:  # ours and empty: do not leave a lease nobody can name
                        await host.remove_tree(path)
                    except Exception:  # noqa: BLE001 - the original error matters more
                        pass
                    raise
                return
            try:
                holder = await read_holder(host, path)
            except RemoteError:
                await asyncio.sleep(0.2)  # a dropped connection: one more look before deciding
                holder = await read_holder(host, path)
            if self.mine(holder):
                await _write(host, path, self._info(host))  # ours from a previous process: refresh
                return
            if holder is None:
                # Another run may be between mkdir and writing holder.json (milliseconds); a dir that
                # stays without a holder for ABANDONED_AFTER s was left by a run killed in between.
                for _ in range(int(ABANDONED_AFTER / _POLL)):
                    await asyncio.sleep(_POLL)
                    holder = await read_holder(host, path)
                    if holder is not None or not await host.exists(path):
                        break
                if holder is None:
                    if await host.exists(path):
                        if self.on_takeover:
                            self.on_takeover(host.name, NoHolder(0, "", "", "", 0, 0.0))
                        await host.remove_tree(path)
                    continue  # gone (or removed above): mkdir again
                if self.mine(holder):
                    await _write(host, path, self._info(host))
                    return
            if not is_stale(holder, self.now_on(host)):
                raise LockHeld(f"cluster is locked by {holder.describe()}",
                               hint=f"wait for it to finish; if that process died, `brsm resume {holder.op_id}` or "
                                    f"`brsm rollback {holder.op_id}` takes its lease back at once (from its journal)")
            if self.on_takeover:
                self.on_takeover(host.name, holder)
            await host.remove_tree(path)
        raise LockHeld(f"could not take the cluster lease on {host.name}: it keeps changing hands")

    async def _refresh_loop(self) -> None:
        """Rewrite each holder.json every ``period``; stop at the first sign the lease is not ours."""
        last_ok = {host.name: time.monotonic() for host, _ in self.hosts}
        while True:
            await asyncio.sleep(self.period)
            for host, path in self.hosts:
                try:
                    holder = await read_holder(host, path)
                    if not self.mine(holder):
                        why = "taken over" if holder is not None else "removed"
                        if holder is None and await host.exists(path):
                            why = "left without a holder"
                        self._lost(host, holder, why)
                        return
                    await _write(host, path, self._info(host))
                    last_ok[host.name] = time.monotonic()
                except Exception as exc:  # noqa: BLE001 - a missed refresh is retried while expiry allows
                    silent = time.monotonic() - last_ok[host.name]
                    if lost_by_silence(silent, self.period, self.ttl):
                        self._lost(host, None, f"not refreshed for {silent:.0f} s ({type(exc).__name__}: {exc}); "
                                               f"it expires after {self.ttl:.0f} s")
                        return

    def _lost(self, host: HostPort, holder: LeaseInfo | None, why: str) -> None:
        if self.on_lost is not None:
            self.on_lost(host.name, holder, why)

    async def stop_refresh(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
            self._task = None

    async def release(self) -> None:
        await self.stop_refresh()
        for host, path in reversed(self.hosts):
            await self._release_one(host, path)

    async def _release_one(self, host: HostPort, path: str) -> None:
        """Remove the lease only when it names this operation: never someone else's."""
        holder = await read_holder(host, path)
        if self.mine(holder):
            await host.remove_tree(path)
