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
import re
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict

from brsm import concurrency
from brsm.errors import InvalidLease, LockHeld, RemoteError
from brsm.ports import HostPort
from brsm.workflows.lease_holder import (ABANDONED_AFTER, LeaseInfo, NoHolder, holder_from, invalid_lease, is_stale, too_far_ahead)

TTL = 300.0
REFRESH_EVERY = 60.0
_POLL = 0.2
# Every look at a lease on a host is bounded: a FIFO at holder.json, or a dead NFS mount under the
# metad root, would otherwise hang brsm (and the rollback a signal starts) for ever.
REMOTE_TIMEOUT = 30.0
_HOLDER_MAX = 64 * 1024
async def bounded(aw, host: HostPort, what: str, timeout: float | None = None):
    """``await aw``, given up after ``REMOTE_TIMEOUT`` s as a RemoteError (a hung mount, a FIFO)."""
    limit = REMOTE_TIMEOUT if timeout is None else timeout
    try:
        return await concurrency.bounded(aw, limit)
    except concurrency.Overdue:
        raise RemoteError(f"{host.name}: {what} did not answer within {limit:.0f} s",
                          host=host.name, hint="a hung mount (NFS) or a FIFO where brsm's lease is? "
                                               "check that path on the host") from None


async def _kind_of(host: HostPort, path: str) -> str:
    """"file", "none" or "other" (a FIFO, a directory, a device: never opened, an open of a FIFO blocks),
    asked under a timeout, so a hung mount cannot hang brsm; a look that failed raises."""
    return await host.path_kind(path, timeout=REMOTE_TIMEOUT)


async def _read_small(host: HostPort, path: str) -> bytes:
    buf = b""
    async for chunk in host.open_read(path):
        buf += chunk
        if len(buf) > _HOLDER_MAX:
            break
    return buf


async def read_holder(host: HostPort, path: str) -> LeaseInfo | None:
    """The holder, or None when there is none (no file). A holder.json brsm did not write (not JSON, a
    field of the wrong type or out of range, a FIFO or a directory in its place) raises ``InvalidLease``:
    it is reported, never guessed at. A host we cannot reach raises, and so does one that does not answer
    within ``REMOTE_TIMEOUT``: "could not look" must never pass for "nobody holds it".

    The file's type is asked first (`test` over SSH, under a timeout): SFTP's open of a FIFO blocks the
    host's sftp-server, and every later file operation of this run on that host with it."""
    file = f"{path}/holder.json"
    kind = await _kind_of(host, file)
    if kind == "none":
        return None
    if kind == "other":
        raise InvalidLease("holder.json is not a regular file (a FIFO, a directory?)")
    try:
        buf = await bounded(_read_small(host, file), host, f"reading {file}")
    except (RemoteError, OSError):
        if await _kind_of(host, file) == "none":  # removed since (released, taken over); raises when unreachable
            return None
        raise
    if len(buf) > _HOLDER_MAX:
        raise InvalidLease(f"holder.json is larger than {_HOLDER_MAX >> 10} KiB")
    try:
        raw = json.loads(buf)
    except ValueError:
        raise InvalidLease("holder.json is not JSON") from None
    return holder_from(raw)


async def _write(host: HostPort, path: str, info: LeaseInfo) -> None:
    raw = asdict(info)
    if not raw["home"]:
        del raw["home"]  # as an older brsm wrote it: nothing to add
    data = json.dumps(raw).encode()

    async def one():
        yield data

    await bounded(host.write_file(f"{path}/holder.json", one(), mode=0o600), host, f"writing {path}/holder.json")


async def lease_exists(host: HostPort, path: str) -> bool:
    """Whether a lease dir is there (`test -e` under the timeout: a hung mount never hangs the look)."""
    return await _exists(host, path)


async def _exists(host: HostPort, path: str) -> bool:
    return await _kind_of(host, path) != "none"


async def _remove(host: HostPort, path: str) -> None:
    await bounded(host.remove_tree(path), host, f"removing {path}")


def lost_by_silence(since_ok: float, period: float, ttl: float) -> bool:
    """True when the lease, last refreshed ``since_ok`` seconds ago, could expire before the next
    refresh ``period`` from now: the run must stop while the lease is still its own.

    >>> lost_by_silence(120, 60, 300), lost_by_silence(240, 60, 300)
    (False, True)
    """
    return since_ok + period >= ttl


async def host_clock(host: HostPort) -> float:
    """The host's clock now: what a lease on that host is judged by."""
    return await host.clock(timeout=REMOTE_TIMEOUT)


LostCallback = Callable[[str, "LeaseInfo | None", str], None]


class Lease:
    def __init__(self, hosts: Sequence[tuple[HostPort, str]], *, op_id: int, kind: str, who: str,
                 ttl: float = TTL, on_takeover: Callable[[str, LeaseInfo], None] | None = None,
                 ref: str | None = None, on_lost: LostCallback | None = None, home: str = "") -> None:
        # Sorted by host name so two runs contend in the same order and cannot deadlock half-way.
        self.hosts = sorted(hosts, key=lambda hp: hp[0].name)
        self.op_id = op_id
        self.ref = ref or str(op_id)  # what ownership is judged by (LeaseInfo.owner)
        self.kind = kind
        self.who = who
        self.home = home  # BRSM_HOME of this journal: another journal's operator is told where we run
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
                         self.now_on(host) + self.ttl, ref=self.ref if self.ref != str(self.op_id) else "",
                         home=self.home)

    def mine(self, holder: LeaseInfo | None) -> bool:
        return holder is not None and holder.owner == self.ref

    async def _holder(self, host: HostPort, path: str) -> LeaseInfo | None:
        """read_holder, with an invalid holder.json reported as the whole lease being invalid."""
        try:
            return await read_holder(host, path)
        except InvalidLease as e:
            raise invalid_lease(host.name, path, e.message) from None

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
            if await host.claim_dir(path, timeout=REMOTE_TIMEOUT):
                try:
                    await _write(host, path, self._info(host))
                except BaseException:
                    try:  # ours and empty: do not leave a lease nobody can name
                        await _remove(host, path)
                    except Exception:  # noqa: BLE001 - the original error matters more
                        pass
                    raise
                return
            try:
                holder = await self._holder(host, path)
            except RemoteError:
                await asyncio.sleep(0.2)  # a dropped connection: one more look before deciding
                holder = await self._holder(host, path)
            if self.mine(holder):
                await _write(host, path, self._info(host))  # ours from a previous process: refresh
                return
            if holder is None:
                # Another run may be between mkdir and writing holder.json (milliseconds); a dir that
                # stays without a holder for ABANDONED_AFTER s was left by a run killed in between.
                for _ in range(int(ABANDONED_AFTER / _POLL)):
                    await asyncio.sleep(_POLL)
                    holder = await self._holder(host, path)
                    if holder is not None or not await _exists(host, path):
                        break
                if holder is None:
                    if await _exists(host, path):
                        if self.on_takeover:
                            self.on_takeover(host.name, NoHolder(0, "", "", "", 0, 0.0))
                        await _remove(host, path)
                    continue  # gone (or removed above): mkdir again
                if self.mine(holder):
                    await _write(host, path, self._info(host))
                    return
            far = too_far_ahead(holder, self.now_on(host))
            if far is not None:
                raise invalid_lease(host.name, path, far)
            if not is_stale(holder, self.now_on(host)):
                raise LockHeld(f"cluster is locked by {holder.describe()}", hint=holder.where_to_continue())
            if self.on_takeover:
                self.on_takeover(host.name, holder)
            await _remove(host, path)
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
                        if holder is None and await _exists(host, path):
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
        try:
            holder = await read_holder(host, path)
        except InvalidLease:
            return  # not a holder this operation wrote: not ours to remove
        if self.mine(holder):
            await _remove(host, path)
