"""metad stand-in: serves ``nebula3.meta.MetaService`` (the generated Processor) over TCP.

    python -m brsm.sandbox.metad --flagfile=F | --local_ip=.. --port=9559 --ws_http_port=19559
        --data_path=DIR --meta_server_addrs=IP:PORT[,..] --pid_file=P --log_dir=D

One port accepts three transports, told apart by the first bytes of each connection:
  ``80 01 ..``               unframed (buffered) binary protocol   (nebula3.mclient)
  ``<len:4> 80 01``          framed binary protocol                 (nebula-br, Go)
  ``<len:4> 0F FF``          fbthrift header transport              (THeaderTransport)

State is a RocksDB (rocksdict, raw mode) at ``<data_path>/nebula/0/data`` with tables (key prefixes)
``__spaces__``, ``__index__``, ``__parts__``, ``__machines__``, ``__id__`` (exported by createBackup),
``__hosts__`` (heartbeats), ``__snapshots__`` and ``__meta_cluster_id_key__`` (not exported; a
metad on fresh data makes a new random one, as MetaDaemonInit.cpp). Machines are registered by
``addHosts`` (ADD HOSTS) only, never by a heartbeat.
"""
from __future__ import annotations

import concurrent.futures
import json
import logging
import os
import random
import shutil
import socket
import socketserver
import sys
import threading
import time
from typing import Any

import rocksdict
from nebula3.common import ttypes as common
from nebula3.fbthrift.protocol import TBinaryProtocol, THeaderProtocol
from nebula3.fbthrift.transport import TTransport
from nebula3.fbthrift.transport.THeaderTransport import CLIENT_TYPE, THeaderTransport
from nebula3.fbthrift.Thrift import TApplicationException, TType
from nebula3.fbthrift.util import Serializer
from nebula3.fbthrift.util.Decorators import process_method as thrift_process_method
from nebula3.meta import MetaService
from nebula3.meta import ttypes as meta

from brsm.sandbox import control, layout, raft, schema
from brsm.sandbox.flags import parse_hostport

EC = common.ErrorCode
T_SPACES = b"__spaces__"
T_INDEX = b"__index__"
T_PARTS = b"__parts__"
T_MACHINES = b"__machines__"
T_ID = b"__id__"
T_HOSTS = b"__hosts__"
T_SNAPSHOTS = b"__snapshots__"
T_LAST_UPDATE = b"__last_update_time__"
T_FT_INDEX = b"__ft_index__"
T_ZONES = b"__zones__"  # zone name -> its hosts ("h:p, h:p"), MetaKeyUtils::zoneKey/zoneVal  # MetaKeyUtils.cpp: "ft_index" is never backed up
K_CLUSTER_ID = b"__meta_cluster_id_key__"
# What createBackup exports, as src/common/utils/MetaKeyUtils.cpp lists it (the stand-in keeps only
# some of Nebula's tables): tableMaps (space tables, filtered by space; ``__index__`` is exported
# apart, filtered by name and id), systemTableMaps marked true (only in an all-spaces backup), and
# systemInfoMaps (``__id__`` and ``__last_update_time__``: in EVERY backup). Never exported:
# ``__hosts__``, ``__snapshots__``, ``__meta_cluster_id_key__``.
SPACE_TABLES = (T_SPACES, T_PARTS)
SYSTEM_TABLES = (T_MACHINES, T_ZONES)
SYSTEM_INFO = (T_ID, T_LAST_UPDATE)
HOST_OFFLINE_AFTER_MS = 5000
AGENT_OFFLINE_AFTER_MS = 5000
# RPCs whose processors never ask whether this metad leads (GetMetaDirInfoProcessor.cpp,
# RestoreProcessor.cpp, VerifyClientVersionProcessor.cpp)
NO_LEADER_CHECK = {"restoreMeta", "getMetaDirInfo", "verifyClientVersion"}
_BIN = TBinaryProtocol.TBinaryProtocolFactory()


def _i32(n: int) -> bytes:
    """An id as MetaKeyUtils appends it: its bytes in the machine's order (reinterpret_cast)."""
    return schema.i32(n)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _b(s: str | bytes) -> bytes:
    return s if isinstance(s, bytes) else s.encode()


def _s(b: str | bytes) -> str:
    return b.decode() if isinstance(b, bytes) else b


def _has_leader(cls: type) -> bool:
    return any(f and f[2] == "leader" for f in cls.thrift_spec)


def _resp_class(rpc: str) -> type:
    return getattr(MetaService, f"{rpc}_result").thrift_spec[0][3][0]


class BackupError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------------------------------------
# faults


class Faults:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[dict[str, Any]] = []
        self._hang_release = threading.Event()

    def add(self, spec: dict[str, Any]) -> dict[str, Any]:
        if spec.get("clear"):
            self.clear(spec.get("rpc"))
            return {"faults": self.list()}
        rpc = spec.get("rpc")
        if not rpc:
            raise layout.HTTPError(400, "fault needs 'rpc' (or 'clear')")
        kinds = [k for k in ("code", "leader_changed", "delay", "hang") if k in spec]
        if len(kinds) != 1:
            raise layout.HTTPError(400, "fault needs exactly one of code, leader_changed, delay, hang")
        kind = kinds[0]
        value = spec[kind]
        try:
            if kind == "leader_changed":
                parse_hostport(value)
            elif kind in ("code", "delay"):
                value = int(value) if kind == "code" else float(value)
            count = spec.get("count")
            if count is not None and int(count) < 1:
                raise ValueError("count must be >= 1 (leave it out for 'until cleared')")
        except (TypeError, ValueError) as exc:
            raise layout.HTTPError(400, f"bad fault: {exc}") from exc
        fault = {"rpc": rpc, "kind": kind, "value": value, "remaining": spec.get("count")}
        with self._lock:
            if kind == "hang":
                self._hang_release = threading.Event()
            fault["_release"] = self._hang_release
            self._faults.append(fault)
        return {"faults": self.list()}

    def clear(self, rpc: str | None = None) -> None:
        with self._lock:
            keep = [f for f in self._faults if rpc and f["rpc"] != rpc]
            for f in self._faults:
                if f not in keep:
                    f["_release"].set()
            self._faults = keep

    def list(self) -> list[dict[str, Any]]:
        with self._lock:
            return [{k: v for k, v in f.items() if not k.startswith("_")} for f in self._faults]

    def take(self, rpc: str) -> dict[str, Any] | None:
        with self._lock:
            for f in self._faults:
                if f["rpc"] in (rpc, "*"):
                    if f["remaining"] is not None:
                        f["remaining"] -= 1
                        if f["remaining"] <= 0:
                            self._faults.remove(f)
                    return f
        return None


# ---------------------------------------------------------------------------------------------
# what differs on the wire between releases (src/interface/meta.thrift at each tag)


def release(version: str) -> tuple[int, int]:
    """(major, minor) of a release string: "3.2.0" → (3, 2)."""
    major, minor = version.strip().lstrip("v").split(".")[:2]
    return int(major), int(minor.split("-")[0])


class Wire:
    """The meta wire of one release, as far as the stand-in serves it.

    - ``DropSnapshotReq`` is ``1: binary name`` before 3.3.0 and ``1: list<binary> names`` from
      3.3.0 (meta.thrift v3.2.0 / v3.3.0);
    - a name that is not there: SUCCEEDED with nothing dropped before 3.4.0, E_SNAPSHOT_NOT_FOUND
      from 3.4.0 (DropSnapshotProcessor::process, "does not exist or already dropped");
    - 3.0.x keeps the snapshot, marked INVALID, when dropping a checkpoint fails and still answers
      SUCCEEDED (v3.0.0 DropSnapshotProcessor: handleErrorCode(putRet) of the INVALID put); 3.1+
      removes the record whatever failed;
    - ``restoreMeta`` answers ``ExecResp`` before 3.3.0 and ``RestoreMetaResp`` from 3.3.0."""

    def __init__(self, version: str) -> None:
        self.version = version
        rel = release(version)
        self.drop_by_name = rel < (3, 3)
        self.drop_unknown_succeeds = rel < (3, 4)
        self.drop_failure_keeps_invalid = rel < (3, 1)
        self.restore_meta_exec_resp = rel < (3, 3)


class DropSnapshotReqV30:
    """``struct DropSnapshotReq { 1: binary name }`` (meta.thrift v3.0.0–v3.2.x), read as fbthrift's
    generated reader does: a field 1 of another type (a 3.3+ client's ``list<binary> names``) is
    skipped, so the name stays empty."""

    def __init__(self) -> None:
        self.name = b""

    def read(self, iprot: Any) -> None:
        iprot.readStructBegin()
        while True:
            _fname, ftype, fid = iprot.readFieldBegin()
            if ftype == TType.STOP:
                break
            if fid == 1 and ftype == TType.STRING:
                self.name = iprot.readString()
            else:
                iprot.skip(ftype)
            iprot.readFieldEnd()
        iprot.readStructEnd()


class _DropSnapshotArgsV30:
    def __init__(self) -> None:
        self.req: DropSnapshotReqV30 | None = None

    def read(self, iprot: Any) -> None:
        iprot.readStructBegin()
        while True:
            _fname, ftype, fid = iprot.readFieldBegin()
            if ftype == TType.STOP:
                break
            if fid == 1 and ftype == TType.STRUCT:
                self.req = DropSnapshotReqV30()
                self.req.read(iprot)
            else:
                iprot.skip(ftype)
            iprot.readFieldEnd()
        iprot.readStructEnd()


class _ExecRespResult:
    """``<rpc>_result`` whose success is an ``ExecResp`` (restoreMeta before 3.3.0)."""

    def __init__(self, success: Any = None) -> None:
        self.success = success

    def write(self, oprot: Any) -> None:
        oprot.writeStructBegin("restoreMeta_result")
        if self.success is not None:
            oprot.writeFieldBegin("success", TType.STRUCT, 0)
            self.success.write(oprot)
            oprot.writeFieldEnd()
        oprot.writeFieldStop()
        oprot.writeStructEnd()


def _process(rpc: str, args_cls: type, result: Any) -> Any:
    """A Processor entry (as the generated ``process_<rpc>``) reading ``args_cls`` and answering
    what ``result(response)`` wraps."""
    def fn(self: Any, args: Any, handler_ctx: Any) -> Any:
        try:
            return result(getattr(self._handler, rpc)(args.req))
        except Exception as exc:  # noqa: BLE001 - as the generated code: an application exception
            self._event_handler.handlerError(handler_ctx, rpc, exc)
            return TApplicationException(message=repr(exc))
    fn.__name__ = f"process_{rpc}"  # the decorator names the reply after it
    return thrift_process_method(args_cls, oneway=False)(fn)


def install_wire(processor: Any, wire: Wire) -> None:
    """Make the generated (3.x-latest) Processor read and answer as ``wire``'s release does."""
    if wire.drop_by_name:
        def dropped(resp: Any) -> Any:
            return MetaService.dropSnapshot_result(success=resp)
        processor._processMap["dropSnapshot"] = _process("dropSnapshot", _DropSnapshotArgsV30, dropped)
    if wire.restore_meta_exec_resp:
        processor._processMap["restoreMeta"] = _process("restoreMeta", MetaService.restoreMeta_args,
                                                        _ExecRespResult)


# ---------------------------------------------------------------------------------------------
# the handler


class MetaHandler(schema.SchemaRPCs):
    """Implements the RPCs. Every method takes the request struct and returns the response."""

    def __init__(self, svc: "MetaDaemon") -> None:
        self.svc = svc
        self.db: rocksdict.Rdict = svc.db
        self.lock = threading.RLock()
        self.backup_lock = threading.Lock()

    # -- small store helpers
    def _prefix(self, prefix: bytes) -> list[tuple[bytes, bytes]]:
        out = []
        for k, v in self.db.items(from_key=prefix):
            if not k.startswith(prefix):
                break
            out.append((k, v))
        return out

    def _get(self, key: bytes) -> bytes | None:
        return self.db.get(key)

    def _batch(self) -> Any:
        """A batch of writes for ``self.db.write`` (replicated by the meta Raft when there are peers)."""
        return raft.Batch() if self.svc.raft is not None else rocksdict.WriteBatch(raw_mode=True)

    def _leader(self) -> common.HostAddr:
        return control.host_addr(self.svc.leader)

    def _ok(self, cls: type, **kw: Any) -> Any:
        resp = cls(code=EC.SUCCEEDED, **kw)
        if _has_leader(cls):
            resp.leader = self._leader()
        return resp

    def _err(self, cls: type, code: int) -> Any:
        resp = cls(code=code)
        if _has_leader(cls):
            resp.leader = self._leader()
        return resp

    def _spaces(self) -> dict[int, meta.SpaceDesc]:
        out = {}
        for k, v in self._prefix(T_SPACES):
            desc = Serializer.deserialize(_BIN, v, meta.SpaceDesc())
            out[schema.from_i32(k[len(T_SPACES):])] = desc
        return out

    def _space_id(self, name: bytes) -> int | None:
        v = self._get(T_INDEX + b"\x01" + _b(name))
        return None if v is None else schema.from_i32(v)

    def _parts(self, space_id: int) -> dict[int, list[str]]:
        prefix = T_PARTS + _i32(space_id)
        return {schema.from_i32(k[len(prefix):]): json.loads(v)
                for k, v in self._prefix(prefix)}

    def _hosts(self) -> dict[str, dict[str, Any]]:
        return {_s(k[len(T_HOSTS):]): json.loads(v) for k, v in self._prefix(T_HOSTS)}

    def _machines(self) -> list[str]:
        return sorted(_s(k[len(T_MACHINES):]) for k, _ in self._prefix(T_MACHINES))

    def _online(self, info: dict[str, Any] | None) -> bool:
        window = AGENT_OFFLINE_AFTER_MS if info and info.get("role") == meta.HostRole.AGENT else HOST_OFFLINE_AFTER_MS
        return bool(info) and _now_ms() - info["ts"] < window

    def _next_id(self) -> int:
        raw = self._get(T_ID)
        nxt = (schema.from_i32(raw) if raw else 0) + 1
        self.db[T_ID] = _i32(nxt)
        return nxt

    def _storage_http(self, addr: str) -> tuple[str, int]:
        info = self._hosts().get(addr)
        host, port = parse_hostport(addr)
        if info and info.get("http_port"):
            return host, int(info["http_port"])
        return host, port + 10000

    def _storage_call(self, addr: str, path: str, body: dict[str, Any], timeout: float = 120.0) -> Any:
        return control.http_call(self._storage_http(addr), "POST", path, body, timeout=timeout)

    # -- RPCs --------------------------------------------------------------------------------
    def verifyClientVersion(self, req: meta.VerifyClientVersionReq) -> Any:
        self.svc.log.info("verifyClientVersion %s from %s", req.client_version, req.host)
        return self._ok(meta.VerifyClientVersionResp)

    def getMetaDirInfo(self, req: meta.GetMetaDirInfoReq) -> Any:
        """src/meta/processors/admin/GetMetaDirInfoProcessor.cpp: ``data`` = the kvstore's data
        roots (``--data_path`` made absolute), ``root`` = the daemon's current working directory."""
        return meta.GetMetaDirInfoResp(code=EC.SUCCEEDED, dir=self.svc.dir_info())

    def heartBeat(self, req: meta.HBReq) -> Any:
        """As src/meta/processors/admin/HBProcessor.cpp (HBProcessor::process):
        - a STORAGE heartbeat from a host that is not a registered machine (ADD HOSTS;
          ActiveHostsMan::machineRegistered) gets E_MACHINE_NOT_FOUND, with the leader set, and
          registers nothing;
        - a STORAGE (or STORAGE_LISTENER) heartbeat with cluster_id 0 gets metad's cluster id back; one
          with another non-zero id gets E_WRONGCLUSTER (no leader set) and is not recorded;
        - otherwise the host's info (role, time, dirs) is recorded: listHosts counts it ONLINE."""
        addr = control.fmt_addr(req.host)
        info = {
            "role": req.role,
            "root": _s(req.dir.root) if req.dir and req.dir.root else "",
            "data": [_s(d) for d in (req.dir.data or [])] if req.dir else [],
            "version": _s(req.version or b""),
            "http_port": control.http_port_from_version(req.version, req.host.port),
            "ts": _now_ms(),
        }
        reply_id = 0
        with self.lock:
            if req.role in (meta.HostRole.STORAGE, meta.HostRole.STORAGE_LISTENER):
                if req.role == meta.HostRole.STORAGE and self._get(T_MACHINES + _b(addr)) is None:
                    self.svc.log.info("Machine %s is not registered", addr)
                    return self._err(meta.HBResp, EC.E_MACHINE_NOT_FOUND)
                peer = req.cluster_id or 0
                if peer == 0:
                    self.svc.log.info("Set clusterId for new host %s", addr)
                    reply_id = self.svc.cluster_id
                elif peer != self.svc.cluster_id:
                    self.svc.log.info("Reject wrong cluster host %s (cluster id %s)", addr, peer)
                    return meta.HBResp(code=EC.E_WRONGCLUSTER)
            self.db[T_HOSTS + _b(addr)] = json.dumps(info).encode()
        return self._ok(meta.HBResp, cluster_id=reply_id, last_update_time_in_ms=_now_ms(), meta_version=3)

    def addHosts(self, req: meta.AddHostsReq) -> Any:
        """ADD HOSTS, as src/meta/processors/zone/AddHostsProcessor.cpp: E_INVALID_PARM for an empty
        list or (std::unique) a host given twice in a row; E_HOST_CAN_NOT_BE_ADDED for a host that
        heartbeats lately in another role; E_EXISTED for a registered machine; else every machine key
        is written (all or none). Each host added gets a zone of its own, default_zone_<ip>_<port>."""
        hosts = [control.fmt_addr(h) for h in req.hosts or []]
        if not hosts or any(a == b for a, b in zip(hosts, hosts[1:])):
            return self._err(meta.ExecResp, EC.E_INVALID_PARM)
        with self.lock:
            known = self._hosts()
            for addr in hosts:
                info = known.get(addr)
                if info and info["role"] != meta.HostRole.STORAGE and self._online(info):
                    self.svc.log.error("The host %s is not storage", addr)
                    return self._err(meta.ExecResp, EC.E_HOST_CAN_NOT_BE_ADDED)
                if self._get(T_MACHINES + _b(addr)) is not None:
                    self.svc.log.error("The host %s have existed!", addr)
                    return self._err(meta.ExecResp, EC.E_EXISTED)
            wb = self._batch()
            for addr in hosts:
                wb.put(T_MACHINES + _b(addr), b"")
                host, port = parse_hostport(addr)
                wb.put(T_ZONES + _b(f"default_zone_{host}_{port}"), _b(addr))  # one zone per host added
            self.db.write(wb)
        self.svc.log.info("added hosts %s", hosts)
        return self._ok(meta.ExecResp)

    def agentHeartbeat(self, req: meta.AgentHBReq) -> Any:
        """src/meta/processors/admin/AgentHBProcessor.cpp: records the agent as a host of role
        AGENT and answers the other services on its host (with their dirs)."""
        addr = control.fmt_addr(req.host)
        info = {"role": meta.HostRole.AGENT, "root": "", "data": [], "ts": _now_ms(),
                "version": _s(req.version or b"")}
        with self.lock:
            self.db[T_HOSTS + _b(addr)] = json.dumps(info).encode()
        services = []
        for other, oi in sorted(self._hosts().items()):
            h, p = parse_hostport(other)
            if h != _s(req.host.host) or oi["role"] == meta.HostRole.AGENT or not self._online(oi):
                continue
            services.append(meta.ServiceInfo(dir=common.DirInfo(root=_b(oi["root"]), data=[_b(d) for d in oi["data"]]),
                                             addr=common.HostAddr(host=h, port=p), role=oi["role"]))
        return self._ok(meta.AgentHBResp, service_list=services)

    # -- zones (src/meta/processors/zone/)
    def _zones(self) -> dict[str, list[str]]:
        return {_s(k[len(T_ZONES):]): [h.strip() for h in _s(v).split(",") if h.strip()]
                for k, v in self._prefix(T_ZONES)}

    def listZones(self, req: meta.ListZonesReq) -> Any:
        """ListZonesProcessor (zone/ListZonesProcessor.cpp): every zone with its hosts."""
        zones = [meta.Zone(zone_name=_b(n), nodes=[control.host_addr(h) for h in hs])
                 for n, hs in sorted(self._zones().items())]
        return self._ok(meta.ListZonesResp, zones=zones)

    def mergeZone(self, req: meta.MergeZoneReq) -> Any:
        """MergeZoneProcessor.cpp, reduced to the zone table: the named zones become one zone holding
        all their hosts (an operator's MERGE ZONE ... INTO ...)."""
        zones = self._zones()
        names = [_s(z) for z in req.zones or []]
        if len(names) < 2 or any(n not in zones for n in names) or not req.zone_name:
            return self._err(meta.ExecResp, EC.E_INVALID_PARM if len(names) < 2 else EC.E_ZONE_NOT_FOUND)
        hosts = [h for n in names for h in zones[n]]
        with self.lock:
            wb = self._batch()
            for n in names:
                wb.delete(T_ZONES + _b(n))
            wb.put(T_ZONES + _b(req.zone_name), _b(", ".join(hosts)))
            self.db.write(wb)
        return self._ok(meta.ExecResp)

    def listCluster(self, req: meta.ListClusterInfoReq) -> Any:
        """src/meta/processors/admin/ListClusterInfoProcessor.cpp: services from the hosts table
        whose heartbeat is within the liveness window (GRAPH and STORAGE with their dirs, AGENT
        without), META from the meta Raft peers WITHOUT a dir; every host must have an agent, or
        the whole call fails with E_LIST_CLUSTER_NO_AGENT_FAILURE."""
        services: dict[str, list[meta.ServiceInfo]] = {}
        for addr, info in sorted(self._hosts().items()):
            if info["role"] == meta.HostRole.META or not self._online(info):
                continue
            host, port = parse_hostport(addr)
            si = meta.ServiceInfo(addr=common.HostAddr(host=host, port=port), role=info["role"])
            if info["role"] in (meta.HostRole.GRAPH, meta.HostRole.STORAGE):
                si.dir = common.DirInfo(root=_b(info["root"]), data=[_b(d) for d in info["data"]])
            services.setdefault(host, []).append(si)
        for addr in self.svc.meta_addrs:
            host, port = parse_hostport(addr)
            services.setdefault(host, []).append(meta.ServiceInfo(addr=common.HostAddr(host=host, port=port),
                                                                  role=meta.HostRole.META))
        for host, sis in services.items():
            agents = [si for si in sis if si.role == meta.HostRole.AGENT]
            if not agents:
                self.svc.log.info("listCluster: there is no agent in host %s", host)
                return self._err(meta.ListClusterInfoResp, EC.E_LIST_CLUSTER_NO_AGENT_FAILURE)
            for extra in agents[1:]:
                sis.remove(extra)
        return self._ok(meta.ListClusterInfoResp, host_services=services)

    def listHosts(self, req: meta.ListHostsReq) -> Any:
        want = {meta.ListHostType.GRAPH: [meta.HostRole.GRAPH],
                meta.ListHostType.META: [meta.HostRole.META],
                meta.ListHostType.STORAGE: [meta.HostRole.STORAGE],
                meta.ListHostType.AGENT: [meta.HostRole.AGENT],
                meta.ListHostType.ALLOC: [meta.HostRole.STORAGE]}.get(req.type, [meta.HostRole.STORAGE])
        spaces = self._spaces()
        parts_by_host: dict[str, dict[bytes, list[int]]] = {}
        for sid, desc in spaces.items():
            for pid, hosts in self._parts(sid).items():
                for h in hosts:
                    parts_by_host.setdefault(h, {}).setdefault(desc.space_name, []).append(pid)
        items = []
        hosts = {a: i for a, i in self._hosts().items() if i["role"] != meta.HostRole.META}
        if meta.HostRole.META in want:
            # ListHostsProcessor::allMetaHostsStatus: the meta Raft peers, not heartbeats
            hosts.update({a: {"role": meta.HostRole.META, "ts": _now_ms(),
                              "version": control.encode_version(self.svc.ws_http_port, self.svc.wire.version)}
                          for a in self.svc.meta_addrs})
        addrs = set(hosts)
        if meta.HostRole.STORAGE in want:
            addrs |= set(self._machines())
        for addr in sorted(addrs):
            info = hosts.get(addr) or {"role": meta.HostRole.STORAGE, "ts": 0, "version": ""}
            if info["role"] not in want:
                continue
            h, p = parse_hostport(addr)
            parts = {k: sorted(v) for k, v in parts_by_host.get(addr, {}).items()}
            items.append(meta.HostItem(
                hostAddr=common.HostAddr(host=h, port=p),
                status=meta.HostStatus.ONLINE if self._online(info) else meta.HostStatus.OFFLINE,
                leader_parts=parts, all_parts=parts, role=info["role"], git_info_sha=b"sandbox",
                version=_b(info.get("version", ""))))
        return self._ok(meta.ListHostsResp, hosts=items)

    def createSpace(self, req: meta.CreateSpaceReq) -> Any:
        props: meta.SpaceDesc = req.properties
        if props is None or not props.space_name:
            return self._err(meta.ExecResp, EC.E_INVALID_PARM)
        with self.lock:
            existing = self._space_id(props.space_name)
            if existing is not None:
                if req.if_not_exists:
                    return self._ok(meta.ExecResp, id=meta.ID(space_id=existing))
                return self._err(meta.ExecResp, EC.E_EXISTED)
            hosts = [a for a in self._machines() if self._online(self._hosts().get(a))]
            if not hosts:
                return self._err(meta.ExecResp, EC.E_NO_HOSTS)
            if not props.partition_num or props.partition_num <= 0:
                props.partition_num = 10
            # CreateSpaceProcessor.cpp: replica_factor hosts per part, never more than there are
            rf = props.replica_factor or 1
            if rf > len(hosts):
                self.svc.log.warning("createSpace: replica factor %d over %d hosts", rf, len(hosts))
                return self._err(meta.ExecResp, EC.E_INVALID_PARM)
            props.replica_factor = rf
            if props.vid_type is None:
                props.vid_type = meta.ColumnTypeDef(type=common.PropertyType.FIXED_STRING, type_length=8)
            props.charset_name = props.charset_name or b"utf8"
            props.collate_name = props.collate_name or b"utf8_bin"
            sid = self._next_id()
            wb = self._batch()
            wb.put(T_SPACES + _i32(sid), Serializer.serialize(_BIN, props))
            wb.put(T_INDEX + b"\x01" + _b(props.space_name), _i32(sid))
            wb.put(T_LAST_UPDATE, _now_ms().to_bytes(8, "little", signed=True))  # LastUpdateTimeMan::update
            for pid in range(1, props.partition_num + 1):
                wb.put(T_PARTS + _i32(sid) + _i32(pid),
                       json.dumps([hosts[(pid - 1 + j) % len(hosts)] for j in range(rf)]).encode())
            self.db.write(wb)
        self.svc.log.info("created space %s id %d over %s", props.space_name, sid, hosts)
        return self._ok(meta.ExecResp, id=meta.ID(space_id=sid))

    def getSpace(self, req: meta.GetSpaceReq) -> Any:
        sid = self._space_id(req.space_name)
        if sid is None:
            return self._err(meta.GetSpaceResp, EC.E_SPACE_NOT_FOUND)
        desc = self._spaces().get(sid)
        return self._ok(meta.GetSpaceResp, item=meta.SpaceItem(space_id=sid, properties=desc))

    def listSpaces(self, req: meta.ListSpacesReq) -> Any:
        items = [meta.IdName(id=meta.ID(space_id=sid), name=desc.space_name)
                 for sid, desc in sorted(self._spaces().items())]
        return self._ok(meta.ListSpacesResp, spaces=items)

    def dropSpace(self, req: meta.DropSpaceReq) -> Any:
        """src/meta/processors/parts/DropSpaceProcessor.cpp: removes the space's meta keys
        (schema.drop_space_keys: tags, edges, indexes and their name keys stay behind) and never calls a
        storaged: each running storaged notices the space is gone and removes its dir itself
        (NebulaStore::removeSpace under ``auto_remove_invalid_space``)."""
        with self.lock:
            sid = self._space_id(req.space_name)
            if sid is None:
                if req.if_exists:
                    return self._ok(meta.ExecResp)
                return self._err(meta.ExecResp, EC.E_SPACE_NOT_FOUND)
            wb = self._batch()
            for k in schema.drop_space_keys(self._prefix, sid, _b(req.space_name)):
                wb.delete(k)
            wb.put(T_LAST_UPDATE, _now_ms().to_bytes(8, "little", signed=True))
            self.db.write(wb)
        self.svc.log.info("Drop space %s, id %d", _s(req.space_name), sid)
        return self._ok(meta.ExecResp, id=meta.ID(space_id=sid))

    def getPartsAlloc(self, req: meta.GetPartsAllocReq) -> Any:
        if req.space_id not in self._spaces():
            return self._err(meta.GetPartsAllocResp, EC.E_SPACE_NOT_FOUND)
        parts = {pid: [control.host_addr(h) for h in hosts] for pid, hosts in self._parts(req.space_id).items()}
        return self._ok(meta.GetPartsAllocResp, parts=parts, terms={pid: 1 for pid in parts})

    # -- full-text indexes and listeners (never in a backup: MetaKeyUtils.cpp skips ft_index and listener)
    def createFTIndex(self, req: meta.CreateFTIndexReq) -> Any:
        """FTIndexProcessor.cpp (CreateFTIndexProcessor), reduced: the stand-in keeps no schemas, so it
        checks only that the space exists and the name is new."""
        name = _b(req.fulltext_index_name or b"")
        if not name or req.index is None or req.index.space_id not in self._spaces():
            return self._err(meta.ExecResp, EC.E_INVALID_PARM if not name else EC.E_SPACE_NOT_FOUND)
        if self._get(T_FT_INDEX + name) is not None:
            return self._err(meta.ExecResp, EC.E_EXISTED)
        self.db[T_FT_INDEX + name] = Serializer.serialize(_BIN, req.index)
        return self._ok(meta.ExecResp)

    def listFTIndexes(self, req: meta.ListFTIndexesReq) -> Any:
        """FTIndexProcessor.cpp (ListFTIndexesProcessor): every full-text index by name."""
        idx = {_s(k[len(T_FT_INDEX):]): Serializer.deserialize(_BIN, v, meta.FTIndex()) for k, v in self._prefix(T_FT_INDEX)}
        return self._ok(meta.ListFTIndexesResp, indexes=idx)

    def listListener(self, req: meta.ListListenerReq) -> Any:
        """ListenerProcessor.cpp: the stand-in runs no listeners, so none are listed."""
        if req.space_id not in self._spaces():
            return self._err(meta.ListListenerResp, EC.E_SPACE_NOT_FOUND)
        return self._ok(meta.ListListenerResp, listeners=[])

    # -- snapshots / backup
    def _put_snapshot(self, name: str, status: int, hosts: list[str]) -> None:
        self.db[T_SNAPSHOTS + _b(name)] = json.dumps({"status": status, "hosts": ", ".join(hosts)}).encode()

    def _snapshots(self) -> dict[str, dict[str, Any]]:
        return {_s(k[len(T_SNAPSHOTS):]): json.loads(v) for k, v in self._prefix(T_SNAPSHOTS)}

    def _backup_name(self) -> str:
        # metad's local time, second resolution as Nebula; if that name is taken (two backups in the
        # same second) wait for the next second rather than inventing another format.
        while True:
            name = "BACKUP_" + time.strftime("%Y_%m_%d_%H_%M_%S", time.localtime())
            if self._get(T_SNAPSHOTS + _b(name)) is None and not os.path.exists(
                    layout.meta_checkpoint_dir(self.svc.data_path, name)):
                return name
            time.sleep(1.0 - (time.time() % 1.0) + 0.01)

    def createBackup(self, req: meta.CreateBackupReq) -> Any:
        if not self.backup_lock.acquire(blocking=False):
            self.svc.log.warning("createBackup refused: another backup is running")
            return self._err(meta.CreateBackupResp, EC.E_BACKUP_RUNNING_JOBS)
        try:
            return self._create_backup(req)
        finally:
            self.backup_lock.release()

    def _create_backup(self, req: meta.CreateBackupReq) -> Any:
        R = meta.CreateBackupResp
        spaces = self._spaces()
        all_spaces = not req.spaces
        if all_spaces:
            chosen = sorted(spaces)
        else:
            chosen = []
            for name in req.spaces:
                sid = self._space_id(name)
                if sid is None:
                    self.svc.log.warning("createBackup: no space %r", name)
                    return self._err(R, EC.E_BACKUP_SPACE_NOT_FOUND)
                chosen.append(sid)
            chosen = sorted(set(chosen))
        if not chosen:
            return self._err(R, EC.E_BACKUP_SPACE_NOT_FOUND)
        parts = {sid: self._parts(sid) for sid in chosen}
        machines = self._machines()
        storage = sorted(set(machines) | {h for p in parts.values() for hs in p.values() for h in hs})
        if not storage:
            return self._err(R, EC.E_NO_HOSTS)
        name = self._backup_name()
        self._put_snapshot(name, meta.SnapshotStatus.INVALID, storage)
        self.svc.log.info("createBackup %s: spaces %s, hosts %s", name, chosen, storage)
        blocked: list[str] = []
        try:
            # block writes everywhere
            for addr in storage:
                try:
                    self._storage_call(addr, "/block_writes", {"on": True}, timeout=30)
                    blocked.append(addr)
                except Exception as exc:  # noqa: BLE001
                    raise BackupError(EC.E_BLOCK_WRITE_FAILURE, f"block writes on {addr}: {exc}") from exc
            # checkpoints, one request per storaged, in parallel
            per_host = {addr: {str(sid): sorted(pid for pid, hs in parts[sid].items() if addr in hs)
                               for sid in chosen} for addr in storage}
            with concurrent.futures.ThreadPoolExecutor(max_workers=len(storage)) as pool:
                futs = {addr: pool.submit(self._storage_call, addr, "/checkpoint",
                                          {"name": name, "spaces": per_host[addr]}, 300.0)
                        for addr in storage}
                results = {}
                errors = []
                for addr, fut in futs.items():
                    try:
                        results[addr] = fut.result()
                    except Exception as exc:  # noqa: BLE001
                        errors.append(f"{addr}: {exc}")
            if errors:
                raise BackupError(EC.E_BACKUP_FAILED, "checkpoint failed on " + "; ".join(errors))
            # export meta tables
            try:
                files = self._export_tables(name, chosen, all_spaces)
            except Exception as exc:  # noqa: BLE001
                raise BackupError(EC.E_BACKUP_FAILED, f"meta export: {exc}") from exc
        except BackupError as exc:
            self.svc.log.error("createBackup %s failed: %s", name, exc)
            self._unblock(blocked)
            return self._err(R, exc.code)
        if not self._unblock(blocked):
            return self._err(R, EC.E_BLOCK_WRITE_FAILURE)
        self._put_snapshot(name, meta.SnapshotStatus.VALID, storage)

        space_backups = {}
        for sid in chosen:
            host_backups = []
            for addr in storage:
                cps = []
                for cp in results[addr]["spaces"].get(str(sid), []):
                    cps.append(common.CheckpointInfo(
                        space_id=sid, data_path=_b(cp["data_path"]),
                        # NebulaStore::createCheckpoint fills only log_id and term_id, and only for the
                        # parts this host leads (the stand-in's leader of a part: its first host)
                        parts={int(pid): common.LogInfo(log_id=li["log_id"], term_id=li["term_id"])
                               for pid, li in cp["parts"].items() if parts[sid].get(int(pid), [addr])[0] == addr}))
                if cps:
                    host_backups.append(meta.HostBackupInfo(host=control.host_addr(addr), checkpoints=cps))
            space_backups[sid] = meta.SpaceBackupInfo(space=spaces[sid], host_backups=host_backups)
        # CreateBackupProcessor.cpp sets meta_files, space_backups, backup_name, full, all_spaces and
        # create_time: never storage_hosts nor cluster_id (the open-source metad leaves them unset).
        bm = meta.BackupMeta(
            space_backups=space_backups, meta_files=[_b(f) for f in files], backup_name=_b(name),
            full=True, all_spaces=all_spaces, create_time=_now_ms())
        # meta_files are absolute paths on this metad host, as Nebula returns them (nebula-br uploads
        # dirname(meta_files[0]) and keeps only base names in its .meta file)
        self.svc.log.info("createBackup %s done: %d meta files", name, len(files))
        return self._ok(R, meta=bm)

    def _unblock(self, addrs: list[str]) -> bool:
        ok = True
        for addr in addrs:
            try:
                self._storage_call(addr, "/block_writes", {"on": False}, timeout=30)
            except Exception as exc:  # noqa: BLE001
                ok = False
                self.svc.log.error("unblock writes on %s failed: %s", addr, exc)
        return ok

    def _export_tables(self, name: str, space_ids: list[int], all_spaces: bool) -> list[str]:
        """MetaServiceUtils::backupTables: one SST per non-empty table under
        ``<data_path>/nebula/0/checkpoints/<name>/<table>.sst`` (RocksEngine::backupTable), full
        paths returned. Space tables filtered by space id; ``__index__`` by space name/id; system
        tables only for all spaces; ``__id__`` and ``__last_update_time__`` always."""
        out_dir = layout.meta_checkpoint_dir(self.svc.data_path, name)
        os.makedirs(out_dir, exist_ok=True)
        wanted = {_i32(s) for s in space_ids}
        names = {sid: self._spaces()[sid].space_name for sid in space_ids}
        files = []
        tables = SPACE_TABLES + schema.SCHEMA_TABLES + (SYSTEM_TABLES if all_spaces else ()) + SYSTEM_INFO + (T_INDEX,)
        for table in tables:
            rows = self._prefix(table)
            if table in SPACE_TABLES + schema.SCHEMA_TABLES:
                rows = [(k, v) for k, v in rows if k[len(table):len(table) + 4] in wanted]
            elif table == T_INDEX:
                # MetaServiceUtils::backupIndexTable: the chosen spaces' name keys, and the tag, edge
                # and index name keys of those spaces
                idx_names = {T_INDEX + b"\x01" + _b(n) for n in names.values()}
                rows = [(k, v) for k, v in rows
                        if k in idx_names or (k[len(T_INDEX)] != schema.SPACE and schema.index_entry_space(k)[1] in space_ids)]
            if not rows:
                continue  # E_BACKUP_EMPTY_TABLE: an empty table is skipped
            fname = f"{_s(table)}.sst"
            w = rocksdict.SstFileWriter(rocksdict.Options(raw_mode=True))
            w.open(os.path.join(out_dir, fname))
            for k, v in rows:
                w[k] = v
            w.finish()
            files.append(os.path.join(out_dir, fname))
        return files

    def dropSnapshot(self, req: meta.DropSnapshotReq) -> Any:
        """src/meta/processors/admin/DropSnapshotProcessor.cpp: only the FIRST name is dropped
        ("only the first one will be dropped"); the others are silently kept. No name:
        E_SNAPSHOT_FAILURE; an unknown name: E_SNAPSHOT_NOT_FOUND. Checkpoints are dropped on the
        hosts the snapshot record names; failures there are only logged. Before 3.4.0 see
        ``_drop_snapshot_before_3_4``."""
        if self.svc.wire.drop_by_name or self.svc.wire.drop_unknown_succeeds:
            return self._drop_snapshot_before_3_4(req)
        names = [_s(n) for n in (req.names or [])]
        if not names:
            return self._err(meta.ExecResp, EC.E_SNAPSHOT_FAILURE)
        if len(names) > 1:
            self.svc.log.info("dropSnapshot: more than one snapshot given, only the first one will be "
                              "dropped, name=%s", names[0])
        name = names[0]
        snaps = self._snapshots()
        if name not in snaps:
            return self._err(meta.ExecResp, EC.E_SNAPSHOT_NOT_FOUND)
        return self._drop_snapshot(name, snaps[name])

    def _drop_snapshot_before_3_4(self, req: Any) -> Any:
        """DropSnapshotProcessor::process of v3.0.0–v3.2.x (``req.get_name()``, one binary name) and
        v3.3.0 (``names[0]``): a snapshot that is not there (or the empty name a 3.3+ client's list
        decodes to on a 3.0–3.2 metad, which skips the mistyped field) is "does not exist or already
        dropped": SUCCEEDED, nothing dropped."""
        name = _s(req.name or b"") if self.svc.wire.drop_by_name else _s((req.names or [b""])[0])
        snaps = self._snapshots()
        if name not in snaps:
            self.svc.log.info("Snapshot %s does not exist or already dropped.", name)
            return self._ok(meta.ExecResp)
        return self._drop_snapshot(name, snaps[name])

    def _drop_snapshot(self, name: str, rec: dict[str, Any]) -> Any:
        hosts = [h.strip() for h in rec["hosts"].split(",") if h.strip()]
        failed = False
        for addr in sorted(set(hosts)):
            try:
                self._storage_call(addr, "/drop_checkpoint", {"name": name}, timeout=60)
            except Exception as exc:  # noqa: BLE001 - as Nebula: log and go on
                failed = True
                self.svc.log.warning("drop checkpoint %s on %s failed: %s", name, addr, exc)
        if failed and self.svc.wire.drop_failure_keeps_invalid:
            # v3.0.x: the record stays, INVALID, and the answer is the code of that put: SUCCEEDED
            self.svc.log.error("Drop snapshot error on storage engine")
            self._put_snapshot(name, meta.SnapshotStatus.INVALID, hosts)
            return self._ok(meta.ExecResp)
        # "TODO sky : need remove meta checkpoint from slave hosts": only this metad's is removed
        shutil.rmtree(layout.meta_checkpoint_dir(self.svc.data_path, name), ignore_errors=True)
        self.db.delete(T_SNAPSHOTS + _b(name))
        self.svc.log.info("dropped snapshot %s", name)
        return self._ok(meta.ExecResp)

    def listSnapshots(self, req: meta.ListSnapshotsReq) -> Any:
        snaps = [meta.Snapshot(name=_b(n), status=v["status"], hosts=_b(v["hosts"]))
                 for n, v in sorted(self._snapshots().items())]
        return self._ok(meta.ListSnapshotsResp, snapshots=snaps)

    def restoreMeta(self, req: meta.RestoreMetaReq) -> Any:
        # RestoreProcessor is a BaseProcessor<cpp2::ExecResp> before 3.3.0 (RestoreProcessor.h)
        R = meta.ExecResp if self.svc.wire.restore_meta_exec_resp else meta.RestoreMetaResp
        files = [_s(f) for f in (req.files or [])]
        if not files:
            return self._err(R, EC.E_RESTORE_FAILURE)
        for f in files:
            if not os.path.isfile(f):
                self.svc.log.error("restoreMeta: no file %s", f)
                return self._err(R, EC.E_RESTORE_FAILURE)
        # RestoreProcessor.cpp: pairs whose hosts are equal are skipped
        mapping = {control.fmt_addr(p.from_host): control.fmt_addr(p.to_host) for p in (req.hosts or [])
                   if control.fmt_addr(p.from_host) != control.fmt_addr(p.to_host)}
        with self.lock:
            try:
                self.db.ingest_external_file(files)
            except Exception as exc:  # noqa: BLE001
                self.svc.log.error("restoreMeta: ingest failed: %s", exc)
                return self._err(R, EC.E_RESTORE_FAILURE)
            wb = rocksdict.WriteBatch(raw_mode=True)  # local: restoreMeta bypasses Raft
            for k, v in self._prefix(T_PARTS):
                hosts = json.loads(v)
                new = [mapping.get(h, h) for h in hosts]
                if new != hosts:
                    wb.put(k, json.dumps(new).encode())
            if mapping:
                # RestoreProcessor::replaceHostInZone: CHECK_EQ(1, hosts.size()) on every zone: a zone
                # of several hosts aborts metad (glog's CHECK failure, SIGABRT)
                for zone, zhosts in sorted(self._zones().items()):
                    if len(zhosts) != 1:
                        self.svc.log.critical("Check failed: 1 == hosts.size() (1 vs. %d) zone %s", len(zhosts), zone)
                        logging.shutdown()
                        os.abort()
                    if zhosts[0] in mapping:
                        h, port = parse_hostport(mapping[zhosts[0]])
                        wb.delete(T_ZONES + _b(zone))
                        wb.put(T_ZONES + _b(f"default_zone_{h}_{port}"), _b(mapping[zhosts[0]]))
            old_machines = self._machines()
            for m in old_machines:
                wb.delete(T_MACHINES + _b(m))
            for m in old_machines:
                wb.put(T_MACHINES + _b(mapping.get(m, m)), b"")
            # RestoreProcessor.cpp rewrites parts, zones and machines; it never touches __hosts__
            self.db.write(wb)
            self.db.flush()
        # RestoreProcessor.cpp: after a successful ingest every input file is unlink()ed, so the
        # same call cannot be repeated with the same paths
        for f in files:
            try:
                os.unlink(f)
            except OSError:
                pass
        part_hosts = {}
        for sid in sorted(self._spaces()):
            part_hosts[sid] = [meta.PartInfo(part_id=pid, hosts=[control.host_addr(h) for h in hs])
                               for pid, hs in sorted(self._parts(sid).items())]
        self.svc.log.info("restoreMeta: ingested %s, host map %s", files, mapping)
        if R is meta.ExecResp:
            return self._ok(R)
        return self._ok(R, part_hosts=part_hosts)


class HandlerProxy:
    """What the generated Processor calls: applies faults and the leader check, then the RPC."""

    def __init__(self, svc: "MetaDaemon", handler: MetaHandler) -> None:
        self._svc = svc
        self._h = handler

    def __getattr__(self, rpc: str) -> Any:
        if rpc.startswith("_") or not hasattr(MetaService, f"{rpc}_result"):
            raise AttributeError(rpc)
        impl = getattr(self._h, rpc, None)

        def call(req: Any) -> Any:
            cls = _resp_class(rpc)
            fault = self._svc.faults.take(rpc)
            if fault is not None:
                self._svc.log.warning("fault on %s: %s=%s", rpc, fault["kind"], fault["value"])
                if fault["kind"] == "hang":
                    fault["_release"].wait()
                elif fault["kind"] == "delay":
                    time.sleep(float(fault["value"]))
                elif fault["kind"] == "code":
                    return self._h._err(cls, int(fault["value"]))
                elif fault["kind"] == "leader_changed":
                    resp = cls(code=EC.E_LEADER_CHANGED)
                    resp.leader = control.host_addr(fault["value"])
                    return resp
            if not self._svc.is_leader and rpc not in NO_LEADER_CHECK:
                return self._h._err(cls, EC.E_LEADER_CHANGED)
            if impl is None:
                self._svc.log.warning("unsupported RPC %s", rpc)
                return self._h._err(cls, getattr(EC, "E_UNSUPPORTED", EC.E_INVALID_OPERATION))
            try:
                return impl(req)
            except raft.RaftError as exc:  # the write did not reach a majority (or leadership went)
                self._svc.log.warning("%s: %s", rpc, exc)
                return self._h._err(cls, EC.E_LEADER_CHANGED)

        return call


# ---------------------------------------------------------------------------------------------
# transport sniffing


class _SocketTransport(TTransport.TTransportBase):
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._wbuf: list[bytes] = []

    def isOpen(self) -> bool:  # noqa: N802
        return True

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def read(self, sz: int) -> bytes:
        try:
            data = self.sock.recv(sz)
        except OSError as exc:
            raise TTransport.TTransportException(TTransport.TTransportException.END_OF_FILE, str(exc))
        if not data:
            raise TTransport.TTransportException(TTransport.TTransportException.END_OF_FILE, "EOF")
        return data

    def write(self, buf: bytes) -> None:
        self._wbuf.append(bytes(buf))

    def flush(self) -> None:
        data = b"".join(self._wbuf)
        self._wbuf = []
        self.sock.sendall(data)


def sniff(head: bytes) -> str | None:
    if head[:2] == b"\x80\x01":
        return "buffered"
    if len(head) >= 6 and head[4:6] == b"\x80\x01":
        return "framed"
    if len(head) >= 6 and head[4:6] == b"\x0f\xff":
        return "header"
    return None


def _peek(sock: socket.socket, n: int, timeout: float = 30.0) -> bytes:
    sock.settimeout(timeout)
    head = b""
    deadline = time.monotonic() + timeout
    while len(head) < n and time.monotonic() < deadline:
        head = sock.recv(n, socket.MSG_PEEK)
        if not head:
            return b""
        if head[:2] == b"\x80\x01":
            break
        if len(head) < n:
            time.sleep(0.002)
    sock.settimeout(None)
    return head


class _ThriftServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 128


def make_thrift_server(svc: "MetaDaemon") -> _ThriftServer:
    processor = MetaService.Processor(HandlerProxy(svc, svc.handler))
    install_wire(processor, svc.wire)

    class Conn(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            sock: socket.socket = self.request
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                head = _peek(sock, 6)
            except OSError:
                return
            kind = sniff(head)
            if kind is None:
                if head:
                    svc.log.warning("unknown protocol from %s: %r", self.client_address, head)
                return
            base = _SocketTransport(sock)
            if kind == "framed":
                trans = TTransport.TFramedTransport(base)
                iprot = oprot = TBinaryProtocol.TBinaryProtocol(trans)
            elif kind == "buffered":
                trans = TTransport.TBufferedTransport(base)
                iprot = oprot = TBinaryProtocol.TBinaryProtocol(trans)
            else:
                trans = THeaderTransport(base, client_types=[CLIENT_TYPE.HEADER])
                iprot = oprot = THeaderProtocol.THeaderProtocol(trans, client_types=[CLIENT_TYPE.HEADER])
            svc.log.debug("%s connection from %s", kind, self.client_address)
            try:
                while not svc.stop_event.is_set():
                    processor.process(iprot, oprot, None)
            except TTransport.TTransportException:
                pass
            except Exception:  # noqa: BLE001
                svc.log.exception("thrift connection from %s failed", self.client_address)

    return _ThriftServer((svc.local_ip, svc.port), Conn)


# ---------------------------------------------------------------------------------------------
# the process


class MetaDaemon(layout.Service):
    name = "metad"
    thrift_port_listener = False

    def __init__(self, argv: list[str]) -> None:
        super().__init__(argv)
        self.data_path = os.path.abspath(self.flags.str("data_path"))
        addrs = self.flags.list("meta_server_addrs") or [f"{self.local_ip}:{self.port}"]
        self.meta_addrs = [f"{h}:{p}" for h, p in map(parse_hostport, addrs)]
        self.leader = self.meta_addrs[0]
        self.addr = f"{self.local_ip}:{self.port}"
        self.is_leader = self.addr == self.leader
        self.faults = Faults()
        self.wire = Wire(control.build_version(self.flags))
        self.db: rocksdict.Rdict | None = None
        self.raft: raft.MetaRaft | None = None
        self.cluster_id = 0  # set by start(): MetaDaemonInit's initKV
        self._raft_routes()
        self.route("GET", "/fault", lambda b, q: {"faults": self.faults.list()})
        self.route("POST", "/fault", lambda b, q: self.faults.add(layout.json_body(b)))
        self.route("GET", "/hosts", lambda b, q: {"hosts": self.handler._hosts(),
                                                 "machines": self.handler._machines()})

    def _raft_routes(self) -> None:
        """The meta Raft's state and the leader-change fault (the messages between metads go to the
        Raft port, brsm.sandbox.raft.raft_addr)."""
        def need() -> raft.MetaRaft:
            if self.raft is None:
                raise layout.HTTPError(409, "this metad runs without Raft peers")
            return self.raft
        self.route("GET", "/raft/state", lambda b, q: need().state())
        self.route("POST", "/raft/step_down",
                   lambda b, q: need().step_down(float(layout.json_body(b).get("seconds", 30))))

    def dir_info(self) -> common.DirInfo:
        """GetMetaDirInfoProcessor.cpp: root = the working directory (boost current_path), which
        nebula.service makes the install root."""
        return common.DirInfo(root=_b(os.getcwd()), data=[_b(self.data_path)])

    def status(self) -> dict[str, Any]:
        st = super().status()
        st.update({"leader": self.leader, "is_leader": self.is_leader, "data_path": self.data_path,
                   "cluster_id": self.cluster_id, "nebula_version": self.wire.version})
        return st

    def start(self) -> None:
        path = layout.meta_db_path(self.data_path)
        os.makedirs(path, exist_ok=True)
        opts = rocksdict.Options(raw_mode=True)
        opts.create_if_missing(True)
        self.db = rocksdict.Rdict(path, opts)
        # --sandbox_meta_raft=false (not a Nebula flag): a metad that only follows the first address
        # as a fixed leader, without Raft; the adapter tests use one to see E_LEADER_CHANGED followed
        if len(self.meta_addrs) > 1 and self.flags.bool("sandbox_meta_raft", True):
            hb = float(self.flags.str("raft_heartbeat_interval_secs", "2"))
            self.raft = raft.MetaRaft(self, self.db, self.meta_addrs, self.addr, self.data_path, hb)
            self.db = raft.ReplicatedDB(self.db, self.raft)
            self.serve_in_thread(layout.http_server(raft.raft_addr(self.addr), self.raft.routes(), self.log),
                                 "raft-port")
            self.raft.start()
        cluster_id = self._init_cluster_id()
        if cluster_id is None:  # stopped while it waited: run() says so and serves nothing
            return
        self.cluster_id = cluster_id
        self.handler = MetaHandler(self)
        srv = make_thrift_server(self)
        self.serve_in_thread(srv, "thrift")

    def _init_cluster_id(self) -> int | None:
        """MetaDaemonInit.cpp initKV, before anything serves: wait for a leader; the id in the local
        store if there is one; else the leader creates it (ClusterIdMan::create) and writes it through
        Raft (persistInKV), and a follower waits until the leader's id has come through Raft. So every
        metad's id is the replicated one, and a follower elected leader later has it.

        Simplified: Nebula's leader retries the append until a majority holds it and exits if it loses
        leadership meanwhile; here the leader retries the same id each second, and one that lost
        leadership waits as a follower does."""
        if self.raft is None:  # a single metad: its store is its own
            raw = self.db.get(K_CLUSTER_ID)
            if raw:
                return int.from_bytes(raw, "big")
            cid = random.randint(1, 2**62)
            self.db[K_CLUSTER_ID] = cid.to_bytes(8, "big")
            return cid
        created: int | None = None
        while not self.stop_event.is_set():
            leader = self.raft.leader()
            raw = self.db.get(K_CLUSTER_ID)
            if leader and raw:
                return int.from_bytes(raw, "big")
            if not leader:
                self.log.info("Leader has not been elected, sleep 1s")
            elif leader == self.addr:
                if created is None:
                    created = random.randint(1, 2**62)
                    self.log.info("I am leader, create cluster Id %d", created)
                try:
                    self.db[K_CLUSTER_ID] = created.to_bytes(8, "big")  # through Raft
                    return created
                except raft.RaftError as exc:
                    self.log.info("Put of the cluster id failed (%s), retry", exc)
            else:
                self.log.info("I am follower, wait for the leader's clusterId")
            self.stop_event.wait(1.0)
        return None

    def shutdown(self) -> None:
        self.faults.clear()
        if self.raft is not None:
            self.raft.stop.set()
        if self.db is not None:
            self.db.close()
            self.db = None


def main(argv: list[str] | None = None) -> int:
    return MetaDaemon(list(sys.argv[1:] if argv is None else argv)).run()


if __name__ == "__main__":
    sys.exit(main())
