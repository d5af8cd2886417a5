"""MetaPort over a ``FakeCluster``, with Nebula's semantics (see nebula-backup-facts.md)."""
from __future__ import annotations

import asyncio
import dataclasses
import json
import posixpath
import time
from collections.abc import Sequence

from nebula3.common import ttypes as common
from nebula3.meta import ttypes as meta

from brsm.adapters.meta_codec import created_backup, encode_backup_meta, make_backup_meta
from brsm.errors import MetaError
from brsm.fakes.cluster import FakeCluster, SnapshotModel
from brsm.ports import CreatedBackup, HostAddr, ListedHost, ServiceInfo, Snapshot, SpaceSchema

EC = common.ErrorCode
# The fake's own words for a failure, written apart from ThriftMeta's error mapping: a fake that shared
# the adapter's mapping could not catch a mistake in it. Workflows only read ``code`` and show the hint.
MAX_HOPS = 4
_HINTS = {
    EC.E_BACKUP_RUNNING_JOBS: "another job runs on the cluster (SHOW JOBS); retry when it ends",
    EC.E_LEADER_CHANGED: "the meta leader kept changing; retry once the meta group is stable",
}


def _code_name(code: int) -> str:
    return EC._VALUES_TO_NAMES.get(code) or f"error {code}"


class FakeMeta:
    """Implements ``brsm.ports.MetaPort``. Every call yields to the event loop once, so concurrent
    callers interleave as they would over the network (a second createBackup is refused)."""

    def __init__(self, cluster: FakeCluster, *, max_hops: int = MAX_HOPS) -> None:
        self.c = cluster
        self.max_hops = max_hops
        self.calls: list[str] = []
        self.closed = False

    # -- plumbing ------------------------------------------------------------------------------
    def _fail(self, rpc: str, code: int, where: HostAddr | None = None) -> MetaError:
        return MetaError(f"metad {where or self.c.leader}: {rpc} failed: {_code_name(code)} ({code})", code=code,
                         hint=_HINTS.get(code))

    async def _enter(self, rpc: str, addr: HostAddr | None = None) -> None:
        await asyncio.sleep(0)
        self.calls.append(rpc)
        target = addr or self.c.leader
        hops = 0
        while addr is None and self.c.faults.take("leader_change", rpc) is not None:
            hops += 1
            if hops > self.max_hops:
                raise MetaError(f"{rpc}: meta leader changed {hops} times in a row (last answer from "
                                f"{self.c.leader})", code=EC.E_LEADER_CHANGED, hint=_HINTS[EC.E_LEADER_CHANGED])
            ring = self.c.meta_addrs  # the leadership moves to the next metad
            self.c.leader = ring[(ring.index(self.c.leader) + 1) % len(ring)]
            target = self.c.leader
        if not self.c.service_up(target.host, "metad"):
            raise MetaError(f"cannot reach any metad: {target}: connection refused" if addr is None else
                            f"cannot reach metad at {target} for {rpc}: connection refused",
                            hint="is metad running, and are the meta addresses right?")
        f = self.c.faults.peek("meta_code", rpc)
        if f is not None and "after_hosts" not in f.params:
            self.c.faults.take("meta_code", rpc)
            raise self._fail(rpc, int(f.params["code"]), target)

    # -- MetaPort ------------------------------------------------------------------------------
    async def list_cluster(self) -> list[ServiceInfo]:
        """As ListClusterInfoProcessor.cpp: META entries have no dir; no agent → -2072."""
        await self._enter("listCluster")
        c = self.c
        if not c.agents:
            raise self._fail("listCluster", EC.E_LIST_CLUSTER_NO_AGENT_FAILURE)
        out = []
        for a in c.meta_addrs:
            out.append(ServiceInfo("META", a, "", ()))
            out.append(ServiceInfo("GRAPH", HostAddr(a.host, 9669), c.install_dir, ()))
        for a in c.storage_addrs:
            out.append(ServiceInfo("STORAGE", a, c.install_dir, tuple(c.storage_paths[a])))
        return sorted(out, key=lambda s: (s.role, s.addr))

    async def meta_dir(self, addr: HostAddr | None = None) -> ServiceInfo:
        await self._enter("getMetaDirInfo", addr)
        a = addr or self.c.leader
        return ServiceInfo("META", a, self.c.install_dir, (self.c.meta_paths[a],))

    async def list_spaces(self) -> dict[str, int]:
        await self._enter("listSpaces")
        return {s.name: s.id for s in self.c.spaces.values()}

    async def list_zones(self) -> dict[str, list[str]]:
        await self._enter("listZones")
        c = self.c
        return {k: list(v) for k, v in c.zones.items()} if c.zones is not None else \
            {f"default_zone_{a.host}_{a.port}": [str(a)] for a in c.storage_addrs}

    async def list_ft_indexes(self) -> dict[str, int]:
        await self._enter("listFTIndexes")
        return dict(self.c.ft_indexes)

    async def list_listeners(self, space_id: int) -> list[str]:
        await self._enter("listListener")
        if space_id not in self.c.spaces:  # CHECK_SPACE_ID_AND_RETURN (ListenerProcessor.cpp)
            raise self._fail("listListener", EC.E_SPACE_NOT_FOUND)
        return list(self.c.listeners.get(space_id, []))

    def _backup_name(self) -> str:
        while True:
            name = "BACKUP_" + time.strftime("%Y_%m_%d_%H_%M_%S", time.gmtime(self.c.clock))
            if name not in self.c.snapshots:
                return name
            self.c.tick()

    async def create_backup(self, spaces: Sequence[str] | None) -> CreatedBackup:
        rpc = "createBackup"
        await self._enter(rpc)
        c = self.c
        if c.backup_running:
            raise self._fail(rpc, EC.E_BACKUP_RUNNING_JOBS)
        if spaces:
            try:
                chosen = sorted({c.space_id(n) for n in spaces})
            except KeyError:
                raise self._fail(rpc, EC.E_BACKUP_SPACE_NOT_FOUND) from None
        else:
            chosen = sorted(c.spaces)
        if not chosen:
            raise self._fail(rpc, EC.E_BACKUP_SPACE_NOT_FOUND)
        c.backup_running = True
        try:
            return await self._create(chosen, not spaces)
        finally:
            c.backup_running = False
            c.write_blocked = False

    async def _create(self, chosen: list[int], all_spaces: bool) -> CreatedBackup:
        rpc = "createBackup"
        c = self.c
        name = self._backup_name()
        c.tick()
        hosts = [str(a) for a in c.storage_addrs]
        c.snapshots[name] = SnapshotModel("INVALID", hosts)
        c.write_blocked = True
        fail = c.faults.peek("meta_code", rpc, lambda f: "after_hosts" in f.params)
        per_host: dict[int, dict[str, list[common.CheckpointInfo]]] = {sid: {} for sid in chosen}
        for i, addr in enumerate(c.storage_addrs):
            await asyncio.sleep(0)  # a concurrent createBackup sees the one running
            if fail is not None and i >= int(fail.params["after_hosts"]):
                c.faults.take("meta_code", rpc, lambda f: f is fail)
                raise self._fail(rpc, int(fail.params["code"]))
            if not c.service_up(addr.host, "storaged"):
                raise self._fail(rpc, EC.E_BACKUP_FAILED)
            m = c.host_of(addr)
            for sid in chosen:
                for dp in c.storage_paths[addr]:
                    pids = [p for p in c.spaces[sid].parts if c.part_location(sid, p) == (addr, dp)]
                    base = f"{dp}/nebula/{sid}"
                    if not pids and not m.under(f"{base}/data"):
                        continue
                    ck = f"{base}/checkpoints/{name}"
                    m.mkdirs(f"{ck}/data")
                    m.mkdirs(f"{ck}/wal")
                    for f in m.under(f"{base}/data"):
                        m.link(f, f"{ck}/data/{f[len(base) + 6:]}")  # RocksDB's checkpoint hard-links
                    for p in pids:
                        m.mkdirs(f"{ck}/wal/{p}")
                        for f in m.under(f"{base}/wal/{p}"):
                            m.put(f"{ck}/wal/{f[len(base) + 5:]}", m.files[f])
                    parts = {p: common.LogInfo(log_id=10, term_id=1, commit_log_id=10, checkpoint_path=ck.encode())
                             for p in pids}
                    per_host[sid].setdefault(str(addr), []).append(
                        common.CheckpointInfo(space_id=sid, parts=parts, data_path=ck.encode()))
        leader_host = c.host_of(c.leader)
        mdir = posixpath.join(c.meta_paths[c.leader], "nebula", "0", "checkpoints", name)
        tables = c.export_tables(chosen, all_spaces)
        for fname, data in tables.items():
            leader_host.put(f"{mdir}/{fname}", data)
        c.write_blocked = False
        c.snapshots[name].status = "VALID"
        descs = {sid: (meta.SpaceDesc(space_name=c.spaces[sid].name.encode(),
                                      partition_num=c.spaces[sid].partition_num, replica_factor=1),
                       per_host[sid]) for sid in chosen}
        # as the open-source metad: full meta paths, no storage_hosts, no cluster_id
        bm = make_backup_meta(name=name, spaces=descs, meta_files=[f"{mdir}/{f}" for f in sorted(tables)],
                              all_spaces=all_spaces, create_time_ms=c.clock * 1000, storage_hosts=[])
        paths = tuple(f"{mdir}/{f}" for f in sorted(tables))
        bm.meta_files = [f.encode() for f in sorted(tables)]
        return dataclasses.replace(created_backup(bm, encode_backup_meta(bm)), meta_paths=paths)

    async def list_snapshots(self) -> list[Snapshot]:
        await self._enter("listSnapshots")
        return [Snapshot(n, s.status, ", ".join(s.hosts)) for n, s in sorted(self.c.snapshots.items())]

    async def drop_snapshots(self, names: Sequence[str]) -> None:
        """The port's contract: every name dropped (the adapter makes one call per name, since
        metad drops only the first); a name already gone is fine."""
        c = self.c
        for n in names:
            await self._enter("dropSnapshot")
            if n not in c.snapshots:
                continue
            for addr in c.storage_addrs:
                m = c.host_of(addr)
                for dp in c.storage_paths[addr]:
                    for sid_dir in {f.split("/checkpoints/")[0] for f in m.under(f"{dp}/nebula")
                                    if f"/checkpoints/{n}/" in f} | {
                            d.split("/checkpoints/")[0] for d in m.dirs if d.endswith(f"/checkpoints/{n}")}:
                        m.remove_tree(f"{sid_dir}/checkpoints/{n}")
            # DropSnapshotProcessor.cpp removes the meta checkpoint only on the metad that leads now
            # ("need remove meta checkpoint from slave hosts"): a former leader keeps its own
            c.host_of(c.leader).remove_tree(posixpath.join(c.meta_paths[c.leader], "nebula", "0", "checkpoints", n))
            del c.snapshots[n]

    async def drop_space(self, name: str) -> None:
        await self._enter("dropSpace")
        c = self.c
        try:
            sid = c.space_id(name)
        except KeyError:
            return  # if_exists
        del c.spaces[sid]
        for addr in c.storage_addrs:
            if not c.service_up(addr.host, "storaged"):
                continue  # a stopped storaged is not told; it never removes that space's data
            m = c.host_of(addr)
            for dp in c.storage_paths[addr]:
                for sub in ("data", "wal"):
                    m.remove_tree(f"{dp}/nebula/{sid}/{sub}")

    async def list_schema(self, space_id: int) -> SpaceSchema:
        """The fake cluster keeps no schemas."""
        await self._enter("listTags")
        if space_id not in self.c.spaces:
            raise self._fail("listTags", EC.E_SPACE_NOT_FOUND)
        return SpaceSchema()

    async def restore_meta(self, addr: HostAddr, files: Sequence[str],
                           host_pairs: Sequence[tuple[HostAddr, HostAddr]]) -> None:
        rpc = "restoreMeta"
        await self._enter(rpc, addr)
        c = self.c
        if addr not in c.meta_addrs:
            raise MetaError(f"cannot reach metad at {addr} for {rpc}: connection refused",
                            hint="is metad running on that host?")
        m = c.host_of(addr)
        if not files:
            raise self._fail(rpc, EC.E_RESTORE_FAILURE, addr)
        tables = {}
        for f in files:
            data = m.files.get(m.norm(f))
            if data is None:
                raise self._fail(rpc, EC.E_RESTORE_FAILURE, addr)
            try:
                tables[posixpath.basename(f)] = json.loads(data)
            except ValueError:
                raise self._fail(rpc, EC.E_RESTORE_FAILURE, addr) from None
        c.import_tables(tables, {str(a): str(b) for a, b in host_pairs})
        for f in files:  # RestoreProcessor.cpp unlinks what it ingested
            m.files.pop(m.norm(f), None)

    async def list_hosts(self, role: str = "STORAGE") -> list[ListedHost]:
        """listHosts: a daemon is ONLINE while metad accepts its heartbeats; a storaged does from the
        moment its heartbeat is accepted, which is before it listens while it loads its parts."""
        await self._enter("listHosts")
        c = self.c
        if role == "STORAGE":
            addrs = list(c.storage_addrs)
        elif role == "GRAPH":
            addrs = [HostAddr(a.host, 9669) for a in c.meta_addrs]
        elif role == "META":
            addrs = list(c.meta_addrs)
        else:
            raise ValueError(f"unknown host role {role!r}")
        svc = {"STORAGE": "storaged", "GRAPH": "graphd", "META": "metad"}[role]
        def online(a: HostAddr) -> bool:
            return c.storaged_online(a.host) if svc == "storaged" else c.service_listening(a.host, svc)
        return [ListedHost(a, role, "ONLINE" if online(a) else "OFFLINE", c.version) for a in sorted(addrs)]

    async def close(self) -> None:
        self.closed = True

