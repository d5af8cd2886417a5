"""An in-process model of a Nebula cluster, shared by ``FakeMeta`` and ``FakeHosts``.

Deterministic (no wall clock, no randomness unless seeded), so hypothesis can drive workflows on it.
Machines hold an in-memory file tree (absolute path -> bytes, plus explicitly made directories);
the meta state (spaces, parts, snapshots) lives on the cluster object and is exported to / restored
from "SST" files (JSON inside) the way metad does it.
"""
from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from typing import Any, Callable

from brsm.ports import HostAddr
# Fault and Machine are named here too: the kept worlds (tests/journal_fixtures/*/world.pickle) were
# pickled when they were defined in this module, and unpickling looks them up here.
from brsm.fakes.faults import Fault, Faults  # noqa: F401
from brsm.fakes.machine import Machine

META_PORT = 9559
CLUSTER_ID_FILE = "cluster.id"  # storaged keeps metad's cluster id here, relative to its install root
META_CLUSTER_ID = "nebula/0/data/__meta_cluster_id_key__"  # metad keeps its own in its data (not a backed-up table)
INITIAL_CLUSTER_ID = 4242
STORAGE_PORT = 9779
GRAPH_PORT = 9669
EPOCH = 1_764_000_000  # 2025-11-24 16:00:00 UTC: the fake metad's clock starts here


def encode_cluster_id(cid: int) -> bytes:
    """As Nebula's FileBasedClusterIdMan writes it: the int64 in the machine's byte order (8 bytes)."""
    return int(cid).to_bytes(8, "little", signed=True)


def decode_cluster_id(raw: bytes) -> int:
    """0 unless exactly 8 bytes (getClusterIdFromFile)."""
    return int.from_bytes(raw, "little", signed=True) if len(raw) == 8 else 0


@dataclass
class SpaceModel:
    id: int
    name: str
    partition_num: int
    parts: dict[int, str]  # part id -> storage host "ip:port"


@dataclass
class SnapshotModel:
    status: str  # VALID / INVALID
    hosts: list[str]


class FakeCluster:
    """Meta hosts, storage hosts with data paths, spaces with per-host files, snapshots, services."""

    def __init__(self, *, metas: int = 1, storages: int = 3, data_paths: int = 2, prefix: str = "127.0.0",
                 install_dir: str = "/usr/local/nebula", data_root: str = "/data", free: int = 1 << 40,
                 seed: int = 0, service_lag: int = 1) -> None:
        self.install_dir = install_dir
        self.service_lag = service_lag
        self.faults = Faults()
        # what the hosts' direct-path helpers "send" a signed URL with (brsm.fakes.helper): a test wires
        # in its store's (MemoryStorage.signed_request); None, and no store answers a host
        self.signed_http: Callable[..., tuple[int, dict[str, Any]]] | None = None
        self.rng = random.Random(seed)
        self.clock = EPOCH
        self.machines: dict[str, Machine] = {}
        self.meta_addrs = [HostAddr(f"{prefix}.{11 + i}", META_PORT) for i in range(metas)]
        self.storage_addrs = [HostAddr(f"{prefix}.{101 + i}", STORAGE_PORT) for i in range(storages)]
        self.meta_paths: dict[HostAddr, str] = {}
        self.storage_paths: dict[HostAddr, list[str]] = {}
        for a in self.meta_addrs:
            m = self._machine(a.host, {"metad": META_PORT, "graphd": GRAPH_PORT}, free)
            self.meta_paths[a] = f"{data_root}/meta"
            m.put(f"{data_root}/meta/{META_CLUSTER_ID}", encode_cluster_id(INITIAL_CLUSTER_ID))
        for a in self.storage_addrs:
            m = self._machine(a.host, {"storaged": STORAGE_PORT}, free)
            self.storage_paths[a] = [f"{data_root}/storage{i + 1}" for i in range(data_paths)]
            for dp in self.storage_paths[a]:
                m.mkdirs(f"{dp}/nebula")
            # storaged's flagfile, which brsm reads for --wal_path, --rocksdb_wal_dir, --minimum_reserved_bytes
            m.put(f"{install_dir}/etc/nebula-storaged.conf",
                  f"--data_path={','.join(self.storage_paths[a])}\n--port={STORAGE_PORT}\n".encode())
            m.put(f"{install_dir}/{CLUSTER_ID_FILE}", encode_cluster_id(INITIAL_CLUSTER_ID))
        self.leader = self.meta_addrs[0]
        self.spaces: dict[int, SpaceModel] = {}
        self.next_id = 1
        self.snapshots: dict[str, SnapshotModel] = {}
        self.write_blocked = False
        self.backup_running = False
        self.agents = True  # a nebula-agent on every host (listCluster works)
        self.version = "3.8.0"  # what every daemon reports in its heartbeat
        self.ft_indexes: dict[str, int] = {}  # full-text index name -> space id
        self.zones: dict[str, list[str]] | None = None  # None: one default zone per storage host (ADD HOSTS)
        self.listeners: dict[int, list[str]] = {}
        # hosts whose storaged, once metad accepts its heartbeat, is still loading its parts: it runs and
        # is ONLINE but opens no port until the host leaves this set (StorageServer::start)
        self.loading: set[str] = set()

    def _machine(self, name: str, services: dict[str, int], free: int) -> Machine:
        m = self.machines.get(name)
        if m is None:
            m = self.machines[name] = Machine(name, install_dir=self.install_dir, services=services, free=free)
            m.put(f"{self.install_dir}/scripts/nebula.service", b"#!/bin/bash\n# fake\n", 0o755)
        else:
            m.services.update(services)
            m.running.update({s: True for s in services})
            m.listening.update({s: True for s in services})
            m.pids.update({s: 1000 + p for s, p in services.items()})
        return m

    # -- addresses ---------------------------------------------------------------------------
    def machine(self, host: str) -> Machine:
        return self.machines[host]

    def host_of(self, addr: HostAddr | str) -> Machine:
        a = addr if isinstance(addr, HostAddr) else HostAddr.parse(addr)
        return self.machines[a.host]

    def service_up(self, host: str, svc: str) -> bool:
        """The daemon's process is alive (it may not listen yet)."""
        m = self.machines.get(host)
        return bool(m and m.running.get(svc)) and self.faults.peek("host_down", host) is None

    def storaged_online(self, host: str) -> bool:
        """ONLINE in listHosts: listening, or accepted by metad and still loading its parts."""
        if self.service_listening(host, "storaged"):
            return True
        m = self.machines.get(host)
        return host in self.loading and self.service_up(host, "storaged") and bool(m and self._storaged_accepted(m))

    def service_listening(self, host: str, svc: str) -> bool:
        m = self.machines.get(host)
        return self.service_up(host, svc) and bool(m and m.listening.get(svc))

    # -- the daemons (what nebula.service and the daemons themselves do) -------------------------
    def meta_cluster_id(self, addr: HostAddr | None = None) -> int | None:
        """The id metad keeps in its data (``__meta_cluster_id_key__``); None on fresh data."""
        a = addr or self.leader
        raw = self.host_of(a).files.get(f"{self.meta_paths[a]}/{META_CLUSTER_ID}")
        return decode_cluster_id(raw) if raw is not None else None

    @property
    def cluster_id(self) -> int:
        return self.meta_cluster_id() or 0

    def start_service(self, host: str, svc: str) -> int | None:
        """``nebula.service start``: the pid of the daemon if it already runs (nothing started), else
        None: the daemon forked and will listen after ``service_lag`` observations (a storaged only
        once metad accepts its cluster id)."""
        m = self.machine(host)
        if m.running.get(svc):
            return m.pids[svc]
        m.running[svc] = True
        m.listening[svc] = False
        m.pids[svc] += 1
        m.pending[svc] = ("start", self.service_lag)
        if svc == "metad":
            for a in self.meta_addrs:
                if a.host == host and self.meta_cluster_id(a) is None:
                    # MetaDaemonInit: no id in the data (fresh data) → a new random one, kept in the data
                    m.put(f"{self.meta_paths[a]}/{META_CLUSTER_ID}", encode_cluster_id(self.rng.randint(1, 2**62)))
        self._settle(m, svc)
        return None

    def stop_service(self, host: str, svc: str, *, kill: bool = False) -> None:
        """``nebula.service stop`` sends SIGTERM and returns: the process exits after ``service_lag``
        observations (``kill``: at once)."""
        m = self.machine(host)
        if not m.running.get(svc):
            return
        m.pending[svc] = ("stop", 0 if kill else self.service_lag)
        self._settle(m, svc)

    def observe(self, host: str, svc: str) -> tuple[bool, bool]:
        """(running, listening) as seen now; then time moves on by one observation."""
        m = self.machine(host)
        seen = (bool(m.running.get(svc)), bool(m.listening.get(svc)))
        kind, left = m.pending.get(svc, ("", 0))
        if kind:
            m.pending[svc] = (kind, max(0, left - 1))
        self._settle(m, svc)
        return seen

    def _settle(self, m: Machine, svc: str) -> None:
        kind, left = m.pending.get(svc, ("", 0))
        if not kind or left > 0:
            return
        if kind == "stop":
            m.running[svc] = m.listening[svc] = False
            del m.pending[svc]
        elif svc != "storaged" or (self._storaged_accepted(m) and m.name not in self.loading):
            m.listening[svc] = True
            del m.pending[svc]
        # else: a storaged whose heartbeat metad refuses keeps retrying, never listening

    def _storaged_accepted(self, m: Machine) -> bool:
        """storaged's heartbeat (MetaClient::heartbeat, HBProcessor): sends the id in
        ``<install>/cluster.id`` (0 when there is none); metad refuses another non-zero id
        (E_WRONGCLUSTER), else answers with its id, which storaged then writes to that file."""
        if not self.service_up(self.leader.host, "metad"):
            return False
        mine = self.meta_cluster_id()
        if mine is None:
            return False
        path = f"{m.install_dir}/{CLUSTER_ID_FILE}"
        raw = m.files.get(path)
        peer = decode_cluster_id(raw) if raw is not None else 0
        if peer and peer != mine:
            return False
        if not peer:
            m.put(path, encode_cluster_id(mine))
        return True

    # -- data ----------------------------------------------------------------------------------
    def tick(self, seconds: int = 1) -> int:
        self.clock += seconds
        return self.clock

    def part_location(self, space_id: int, part_id: int) -> tuple[HostAddr, str]:
        addr = HostAddr.parse(self.spaces[space_id].parts[part_id])
        dps = self.storage_paths[addr]
        return addr, dps[(part_id - 1) // len(self.storage_addrs) % len(dps)]

    def add_space(self, name: str, *, partition_num: int = 6, files_per_path: int = 2, size: int = 1000) -> int:
        """Create a space with parts spread over the storage hosts and some RocksDB/WAL files."""
        sid = self.next_id
        self.next_id += 1
        hosts = [str(a) for a in self.storage_addrs]
        self.spaces[sid] = SpaceModel(sid, name, partition_num,
                                      {p: hosts[(p - 1) % len(hosts)] for p in range(1, partition_num + 1)})
        for p in range(1, partition_num + 1):
            addr, dp = self.part_location(sid, p)
            m = self.host_of(addr)
            m.put(f"{dp}/nebula/{sid}/wal/{p}/{1:019d}.wal", self._bytes(f"{sid}/{p}/wal", size // 4))
        for addr in self.storage_addrs:
            m = self.host_of(addr)
            for dp in self.storage_paths[addr]:
                if not any(self.part_location(sid, p) == (addr, dp) for p in range(1, partition_num + 1)):
                    continue
                for i in range(files_per_path):
                    m.put(f"{dp}/nebula/{sid}/data/{i + 1:06d}.sst", self._bytes(f"{sid}/{addr}/{dp}/{i}", size))
                m.put(f"{dp}/nebula/{sid}/data/CURRENT", b"MANIFEST-000001\n")
        return sid

    def write(self, name: str, data: bytes | None = None) -> bool:
        """A client write to a space: refused (False) while writes are blocked by a backup."""
        if self.write_blocked:
            return False
        sid = self.space_id(name)
        addr, dp = self.part_location(sid, 1)
        m = self.host_of(addr)
        path = f"{dp}/nebula/{sid}/data/{len(m.under(f'{dp}/nebula/{sid}/data')) + 1:06d}.sst"
        m.put(path, data if data is not None else self._bytes(path, 100))
        return True

    def _bytes(self, key: str, n: int) -> bytes:
        out = b""
        i = 0
        while len(out) < n:
            out += hashlib.sha256(f"{key}/{i}/{self.rng.random()}".encode()).digest()
            i += 1
        return out[:n]

    def space_id(self, name: str) -> int:
        for s in self.spaces.values():
            if s.name == name:
                return s.id
        raise KeyError(name)

    def space_files(self, sid: int) -> dict[tuple[str, str], bytes]:
        """{(host, path relative to the data path): bytes} of a space's live data (for comparisons)."""
        out = {}
        for addr in self.storage_addrs:
            m = self.host_of(addr)
            for i, dp in enumerate(self.storage_paths[addr]):
                base = f"{dp}/nebula/{sid}"
                for f in m.under(base):
                    rel = f[len(base) + 1:]
                    if not rel.startswith("checkpoints/"):
                        out[(f"{addr}#{i}", rel)] = m.files[f]
        return out

    # -- meta tables as "SST" files (JSON inside) ------------------------------------------------
    def export_tables(self, space_ids: list[int], all_spaces: bool) -> dict[str, bytes]:
        sp = {str(s): {"name": self.spaces[s].name, "partition_num": self.spaces[s].partition_num}
              for s in space_ids}
        parts = {str(s): {str(p): h for p, h in self.spaces[s].parts.items()} for s in space_ids}
        out = {"__spaces__.sst": sp, "__parts__.sst": parts, "__id__.sst": {"next_id": self.next_id}}
        if all_spaces:  # MetaKeyUtils.cpp: system tables only for all spaces, __id__ always
            out["__machines__.sst"] = {"machines": [str(a) for a in self.storage_addrs]}
        return {k: json.dumps(v, sort_keys=True).encode() for k, v in out.items()}

    def import_tables(self, tables: dict[str, dict], mapping: dict[str, str]) -> None:
        sp = tables.get("__spaces__.sst", {})
        parts = tables.get("__parts__.sst", {})
        for sid_s, info in sp.items():
            sid = int(sid_s)
            self.spaces[sid] = SpaceModel(sid, info["name"], info["partition_num"],
                                          {int(p): mapping.get(h, h) for p, h in parts.get(sid_s, {}).items()})
        if "__id__.sst" in tables:
            self.next_id = max(self.next_id, int(tables["__id__.sst"]["next_id"]))
