"""storaged stand-in: keeps space data the way Nebula does and answers metad's admin calls.

    python -m brsm.sandbox.storaged --flagfile=F | --local_ip=.. --port=9779 --ws_http_port=19779
        --data_path=D1[,D2] --meta_server_addrs=IP:PORT[,..] --pid_file=P --log_dir=D

* Heartbeats metad every ``--heartbeat_interval_secs`` (1 in the sandbox; role STORAGE, its
  ``local_ip:port``, DirInfo{root = working dir, data}, the cluster id of ``--cluster_id_path``,
  default ``cluster.id`` in the working dir); the heartbeat ``version`` carries its admin HTTP port.
  Until metad accepts one (a registered machine, the right cluster id) it opens no port.
* Per space and data path a RocksDB at ``<dp>/nebula/<spaceId>/data``; part p lives on data path
  ``p % len(data_paths)``; per part an append-only WAL under ``<dp>/nebula/<spaceId>/wal/<partId>/``.
* Keys ``<partId u32 BE><type: 1 vertex, 2 edge><id bytes>``; the last applied log id and term of a
  part are kept under ``<partId><0x05>__commit__``.
* ``POST /ingest?space_id=S&wal_segments=W`` (``brsm sandbox load --files``): the records of each
  part become SST files of one record each, written with RocksDB's SstFileWriter under
  ``<dp>/nebula/<spaceId>/download/`` and ingested (Nebula's own ingest path), and the same records
  go to the part's WAL as W log entries, each starting a new segment file: many small SST and WAL
  files that are the space's real data, so a checkpoint holds them all.
* ``--port`` is a plain TCP listener (brsm never speaks to storaged); the internal RPC metad uses
  is JSON over the admin HTTP port (see brsm/sandbox/control.py).
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import struct
import sys
import threading
import time
from typing import Any

import rocksdict
from nebula3.common import ttypes as common
from nebula3.meta import ttypes as meta

from brsm.sandbox import control, layout, part_cleanup
from brsm.sandbox.flags import parse_hostport

TYPE_VERTEX = 1
TYPE_EDGE = 2
TYPE_SYSTEM = 5
COMMIT_SUFFIX = bytes([TYPE_SYSTEM]) + b"__commit__"
WAL_FILE_SIZE = 16 * 2**20
# RocksDB keeps every table file open by default; a space loaded with many small files
# (``sandbox load --files``) would run into the fd limit. Nebula deployments bound it the same way
# (``--rocksdb_db_options={"max_open_files": ...}``).
MAX_OPEN_FILES = 1024
_REC = struct.Struct(">QQI")  # log_id, term, payload length


def commit_key(part_id: int) -> bytes:
    return part_id.to_bytes(4, "big") + COMMIT_SUFFIX


def encode_records(items: list[tuple[bytes, bytes]]) -> bytes:
    out = bytearray()
    for k, v in items:
        out += len(k).to_bytes(4, "big") + k + len(v).to_bytes(4, "big") + v
    return bytes(out)


def decode_records(body: bytes) -> list[tuple[bytes, bytes]]:
    mv = memoryview(body)
    out = []
    i, n = 0, len(body)
    while i < n:
        if i + 4 > n:
            raise layout.HTTPError(400, "truncated record")
        kl = int.from_bytes(mv[i:i + 4], "big")
        k = bytes(mv[i + 4:i + 4 + kl])
        i += 4 + kl
        vl = int.from_bytes(mv[i:i + 4], "big")
        v = bytes(mv[i + 4:i + 4 + vl])
        if len(k) != kl or len(v) != vl or kl < 5:
            raise layout.HTTPError(400, "bad record")
        i += 4 + vl
        out.append((k, v))
    return out


# ---------------------------------------------------------------------------------------------
# heartbeat helper shared by storaged, graphd and metad followers


class HeartbeatClient:
    def __init__(self, meta_addrs: list[str]) -> None:
        self.meta_addrs = meta_addrs
        self.index = 0
        self.client: control.MetaClient | None = None

    def call(self, method: str, req: Any) -> Any:
        last: Exception | None = None
        for _ in range(len(self.meta_addrs) + 1):  # +1: a stale connection gets one fresh retry
            if self.client is None:
                self.client = control.MetaClient(self.meta_addrs[self.index % len(self.meta_addrs)], timeout=5.0)
            try:
                return self.client.call(method, req)
            except Exception as exc:  # noqa: BLE001
                last = exc
                self.client.close()
                self.client = None
                self.index += 1
        raise last if last else RuntimeError("no meta server")

    def close(self) -> None:
        if self.client:
            self.client.close()
            self.client = None


def heartbeat_once(svc: layout.Service, client: HeartbeatClient | None, role: int,
                   dir_info: common.DirInfo, cluster_id: int = 0) -> tuple[HeartbeatClient, Any]:
    """One ``heartBeat``; returns the client (to reuse) and metad's answer, whatever its code.
    ``svc.last_hb`` is the last answer that succeeded."""
    if client is None:
        client = HeartbeatClient(svc.meta_addrs)  # type: ignore[attr-defined]
    req = meta.HBReq(role=role, host=common.HostAddr(host=svc.local_ip, port=svc.port),
                     cluster_id=cluster_id, dir=dir_info, git_info_sha=b"sandbox",
                     version=control.encode_version(svc.ws_http_port, control.build_version(svc.flags)).encode())
    resp = client.call("heartBeat", req)
    if resp.code == common.ErrorCode.SUCCEEDED:
        svc.last_hb = resp  # type: ignore[attr-defined]
    return client, resp


def working_dir() -> str:
    """DirInfo.root of a daemon: its working directory (MetaClientOptions.rootPath_ =
    boost::filesystem::current_path() in StorageServer.cpp and GraphService.cpp), which
    nebula.service makes the install root."""
    return os.getcwd()


def read_cluster_id(path: str) -> int:
    """FileBasedClusterIdMan::getClusterIdFromFile: the int64 in the machine's byte order; 0 when the
    file is missing or not exactly 8 bytes."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(9)
    except OSError:
        return 0
    return int.from_bytes(raw, sys.byteorder, signed=True) if len(raw) == 8 else 0


def write_cluster_id(path: str, cluster_id: int) -> None:
    """FileBasedClusterIdMan::persistInFile: make the directory, remove the old file, write 8 bytes."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    with os.fdopen(fd, "wb") as fh:
        fh.write(int(cluster_id).to_bytes(8, sys.byteorder, signed=True))


# ---------------------------------------------------------------------------------------------


class PartWal:
    """Append-only WAL of one part: files named by the first log id they hold."""

    def __init__(self, directory: str) -> None:
        self.dir = directory
        os.makedirs(directory, exist_ok=True)
        self.fh = None
        self.size = 0
        self.sealed = False

    def append(self, log_id: int, term: int, payload: bytes, *, new_segment: bool = False) -> None:
        """Append one log entry; ``new_segment`` starts a new file with it (as a full file would)."""
        if new_segment or self.fh is None or self.size >= WAL_FILE_SIZE:
            # after a restart: go on in the last file (FileBasedWal's ctor opens it O_APPEND); not
            # after a checkpoint linked it
            reopen_last = self.fh is None and not new_segment and not self.sealed
            self.sealed = False
            if self.fh is not None:
                self.fh.close()
            existing = sorted(f for f in os.listdir(self.dir) if f.endswith(".wal")) if reopen_last else []
            if existing and os.path.getsize(os.path.join(self.dir, existing[-1])) < WAL_FILE_SIZE:
                path = os.path.join(self.dir, existing[-1])
            else:
                path = os.path.join(self.dir, f"{log_id:019d}.wal")
            self.fh = open(path, "ab")
            self.size = self.fh.tell()
        rec = _REC.pack(log_id, term, len(payload)) + payload
        self.fh.write(rec)
        self.size += len(rec)

    def flush(self) -> None:
        if self.fh is not None:
            self.fh.flush()

    def seal(self) -> None:
        """FileBasedWal::closeCurrFile before a checkpoint links the files: the next log goes to a
        new file, so a linked file never grows after the checkpoint."""
        if self.fh is not None:
            self.fh.close()
            self.fh = None
        self.sealed = True

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()
            self.fh = None


class Storaged(layout.Service):
    name = "storaged"
    role = meta.HostRole.STORAGE

    def __init__(self, argv: list[str]) -> None:
        super().__init__(argv)
        self.data_paths = [os.path.abspath(p) for p in self.flags.list("data_path")]
        # RocksEngine.cpp: with --wal_path a part's WAL is <wal_path>/nebula/<sid>/wal/<pid>, else
        # beside the data under <data_path>/nebula/<sid>/wal/<pid>
        wal = self.flags.get("wal_path")
        self.wal_root = os.path.abspath(wal) if wal else None
        # RocksEngineConfig.cpp: with --rocksdb_wal_dir RocksDB's own WAL of space S is
        # <rocksdb_wal_dir>/rocksdb_wal/S (every data path's engine of S points there)
        rwal = self.flags.get("rocksdb_wal_dir")
        self.rocksdb_wal_dir = os.path.abspath(rwal) if rwal else None
        # DiskManager.cpp: a data path with less than --minimum_reserved_bytes available (statvfs,
        # refreshed every --disk_check_interval_secs) takes no more writes
        self.minimum_reserved_bytes = self.flags.int("minimum_reserved_bytes", 1 << 30)
        self.disk_check_interval = float(self.flags.str("disk_check_interval_secs", "10"))
        self.free_bytes: list[int] = []
        self.free_checked = 0.0
        # not a Nebula flag: the seconds this stand-in takes to load its parts before it listens, as
        # a storaged holding much data does (StorageServer::start opens its ports after the kvstore)
        self.load_parts_secs = float(self.flags.str("sandbox_load_parts_secs", "0"))
        if not self.data_paths:
            raise SystemExit("storaged: --data_path is required")
        self.meta_addrs = [f"{h}:{p}" for h, p in map(parse_hostport, self.flags.list("meta_server_addrs"))]
        self.addr = f"{self.local_ip}:{self.port}"
        self.dbs: dict[tuple[int, int], rocksdict.Rdict] = {}
        self.wals: dict[tuple[int, int], PartWal] = {}
        self.part_state: dict[tuple[int, int], list[int]] = {}  # (sid, pid) -> [log_id, term]
        self.part_locks: dict[tuple[int, int], threading.Lock] = {}
        self.owned: dict[int, set[int]] = {}
        self.space_lock = threading.RLock()
        self.gate = threading.Condition()
        self.blocked = False
        self.inflight = 0
        self.faults: dict[str, Any] = {}
        self.fault_lock = threading.Lock()
        self.unclosed: list[rocksdict.Rdict] = []  # dbs left open at exit (see shutdown)
        self.stats = {"writes_ok": 0, "writes_refused": 0, "bytes_written": 0, "checkpoints": 0}
        self.cluster_id = 0
        self.cluster_id_path = self.flags.str("cluster_id_path", "cluster.id")  # relative: to the working dir
        self.heartbeat_interval = float(self.flags.str("heartbeat_interval_secs", "1"))
        self.meta_lock = threading.Lock()
        self.meta_client: HeartbeatClient | None = None
        self.last_hb = None
        self.term = 1
        for method, path, fn in (
            ("GET", "/fault", lambda b, q: {"faults": self._fault_list()}),
            ("POST", "/fault", lambda b, q: self._set_fault(layout.json_body(b))),
            ("GET", "/stats", lambda b, q: dict(self.stats, blocked=self.blocked)),
            ("POST", "/block_writes", lambda b, q: self._block_writes(layout.json_body(b))),
            ("POST", "/checkpoint", lambda b, q: self._checkpoint(layout.json_body(b))),
            ("POST", "/drop_checkpoint", lambda b, q: self._drop_checkpoint(layout.json_body(b))),
            ("POST", "/write", self._write),
            ("POST", "/ingest", self._ingest),
            ("POST", "/checksum", lambda b, q: self._checksum(layout.json_body(b))),
            ("POST", "/drop_space", lambda b, q: self._drop_space(layout.json_body(b))),
        ):
            self.route(method, path, fn)

    # -- lifecycle
    def wal_dir(self, data_path: str, sid: int, pid: int | None = None) -> str:
        return layout.space_wal_dir(self.wal_root or data_path, sid, pid)

    def dir_info(self) -> common.DirInfo:
        return common.DirInfo(root=working_dir().encode(), data=[d.encode() for d in self.data_paths])

    def status(self) -> dict[str, Any]:
        st = super().status()
        st.update({"spaces": sorted({sid for sid, _ in self.dbs}), "writes_blocked": self.blocked,
                   "data_paths": self.data_paths, "registered": self.last_hb is not None})
        return st

    def start(self) -> None:
        """StorageServer::start: ``waitForMetadReady`` (heartbeat until metad accepts one, forever)
        before the kvstore, the web service and the storage server: until then neither ``--port`` nor
        the admin HTTP port listens. A storaged that is not a registered machine, or whose cluster.id
        names another cluster, keeps trying and never listens."""
        self._heartbeat_client = None
        while not self.stop_event.is_set():
            if self._beat():
                break
            self.stop_event.wait(self.heartbeat_interval)
        if self.stop_event.is_set():
            return
        # MetaClient::waitForMetadReady registers the heartbeat task before StorageServer::start loads
        # the kvstore: a storaged loading its parts is ONLINE in listHosts with its ports still closed
        threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True).start()
        for dp in self.data_paths:
            os.makedirs(dp, exist_ok=True)
            root = os.path.join(dp, "nebula")
            if not os.path.isdir(root):
                continue
            for entry in sorted(os.listdir(root)):
                if entry.isdigit() and int(entry) > 0 and os.path.isdir(layout.space_data_dir(dp, int(entry))):
                    self.ensure_space(int(entry))
        self._remove_unassigned_parts()
        if self.load_parts_secs > 0:
            self.log.info("loading parts: %.1f s before the ports open", self.load_parts_secs)
            if self.stop_event.wait(self.load_parts_secs):
                return
        self.refresh_free_bytes()

    def _remove_unassigned_parts(self) -> None:
        """NebulaStore::loadPartFromDataPath: every part found on disk that meta no longer assigns to
        this host is removed (RocksEngine::removePart: its system keys, here the part's commit key;
        its data keys stay in RocksDB); a space meta no longer has is removed with its dir
        (``auto_remove_invalid_space``)."""
        with self.space_lock:
            sids = sorted({sid for sid, _ in self.dbs})
        for sid in sids:
            try:
                resp = HeartbeatClient(self.meta_addrs).call("getPartsAlloc", meta.GetPartsAllocReq(space_id=sid))
            except Exception as exc:  # noqa: BLE001 - metad unreachable: nothing is removed on a guess
                self.log.warning("space %d: parts not checked against metad: %s", sid, exc)
                continue
            if resp.code == common.ErrorCode.E_SPACE_NOT_FOUND:
                if self.flags.str("auto_remove_invalid_space", "true").lower() not in ("false", "0", "no"):
                    self.log.info("space %d does not exist in meta any more: removing its data", sid)
                    self._drop_space({"space_id": sid})
                continue
            if resp.code != common.ErrorCode.SUCCEEDED:
                continue
            assigned = {pid for pid, hosts in (resp.parts or {}).items()
                        if any(control.fmt_addr(h) == self.addr for h in hosts)}
            for pid in part_cleanup.unassigned(self._local_parts(sid, resp.parts or {}), assigned):
                self.log.info("Part %d of space %d is not in balancing and does not exist in meta any more, "
                              "will remove it!", pid, sid)
                self.db_for(sid, pid).delete(commit_key(pid))
                self.part_state.pop((sid, pid), None)

    def _local_parts(self, sid: int, meta_parts: dict[int, Any]) -> set[int]:
        """RocksEngine::allParts: the parts with a system key on this host's engines."""
        top = max([int(p) for p in meta_parts] + [0])
        return {pid for pid in range(1, top + 1) if self.db_for(sid, pid).get(commit_key(pid)) is not None}

    def _beat(self) -> bool:
        """MetaClient::heartbeat for role STORAGE: while its cluster id is 0 it reads ``--cluster_id_path``
        (default ``cluster.id``, relative to the working directory) and sends that; once metad accepts
        a heartbeat and the id is still 0, it persists the id metad answered. True if accepted."""
        if not self.cluster_id:
            self.cluster_id = read_cluster_id(self.cluster_id_path)
        try:
            self._heartbeat_client, resp = heartbeat_once(self, self._heartbeat_client, self.role, self.dir_info(),
                                                          self.cluster_id)
        except Exception as exc:  # noqa: BLE001
            self.log.info("heartbeat failed: %s", exc)
            if self._heartbeat_client:
                self._heartbeat_client.close()
            self._heartbeat_client = None
            return False
        if resp.code != common.ErrorCode.SUCCEEDED:
            name = common.ErrorCode._VALUES_TO_NAMES.get(resp.code, str(resp.code))
            self.log.error("Heartbeat failed, status: %s (%s)", name, resp.code)
            return False
        if not self.cluster_id:
            self.log.info("Persist the cluster Id from metad %s", resp.cluster_id)
            write_cluster_id(self.cluster_id_path, resp.cluster_id)
            self.cluster_id = resp.cluster_id
        return True

    def _heartbeat_loop(self) -> None:
        beats = 0
        while not self.stop_event.wait(self.heartbeat_interval):
            beats += 1
            if beats % 5 == 0:
                self.owned.clear()  # re-read part ownership from metad now and then (restoreMeta moves parts)
            self._beat()
            self._remove_invalid_spaces()

    def _remove_invalid_spaces(self) -> None:
        """NebulaStore::removeSpace, which MetaClient's cache refresh calls for a space metad no longer
        has: with ``--auto_remove_invalid_space`` (default true) the space's dirs go. metad's
        dropSpace never calls a storaged; this is how a dropped space leaves the disk."""
        if self.flags.str("auto_remove_invalid_space", "true").lower() in ("false", "0", "no"):
            return
        with self.space_lock:
            sids = sorted({sid for sid, _ in self.dbs})
        for sid in sids:
            try:
                self._refresh_owned(sid)
            except layout.HTTPError as exc:
                if exc.body.get("code") == common.ErrorCode.E_SPACE_NOT_FOUND:
                    self.log.info("space %d is gone from metad: removing its data", sid)
                    self._drop_space({"space_id": sid})
            except Exception as exc:  # noqa: BLE001 - metad unreachable: try again next beat
                self.log.debug("space %d check failed: %s", sid, exc)

    def shutdown(self) -> None:
        """RocksDB closes without flushing its memtables while its own WAL is on (Nebula's default,
        ``--rocksdb_disable_wal=false``, RocksEngineConfig.cpp; DBImpl::CloseHelper flushes only
        unpersisted, WAL-less data): what was written since the last flush stays in RocksDB's WAL and
        is replayed at the next open. rocksdict's close flushes, so the WAL is synced and the process
        ends without closing the dbs (main: ``os._exit``)."""
        with self.space_lock:
            for wal in self.wals.values():
                wal.close()
            keep_wal = not self.flags.bool("rocksdb_disable_wal", False)
            for db in self.dbs.values():
                try:
                    if keep_wal:
                        db.flush_wal(True)
                        self.unclosed.append(db)
                    else:
                        db.close()
                except Exception:  # noqa: BLE001
                    pass
            self.dbs.clear()
            self.wals.clear()

    # -- spaces and parts
    def ensure_space(self, sid: int) -> None:
        with self.space_lock:
            if (sid, 0) in self.dbs:
                return
            for idx, dp in enumerate(self.data_paths):
                path = layout.space_data_dir(dp, sid)
                os.makedirs(path, exist_ok=True)
                os.makedirs(self.wal_dir(dp, sid), exist_ok=True)
                self.dbs[(sid, idx)] = rocksdict.Rdict(path, self._db_options(self.rocksdb_wal(sid)))
            self.log.info("opened space %d on %d data path(s)", sid, len(self.data_paths))

    def rocksdb_wal(self, sid: int) -> str | None:
        """RocksEngineConfig.cpp (initRocksdbOptions): ``<rocksdb_wal_dir>/rocksdb_wal/<spaceId>``,
        made if missing, or None (RocksDB keeps its WAL in the db dir)."""
        if not self.rocksdb_wal_dir:
            return None
        d = layout.rocksdb_wal_dir(self.rocksdb_wal_dir, sid)
        os.makedirs(d, exist_ok=True)
        return d

    @staticmethod
    def _db_options(wal_dir: str | None = None) -> rocksdict.Options:
        opts = rocksdict.Options(raw_mode=True)
        opts.create_if_missing(True)
        opts.set_max_open_files(MAX_OPEN_FILES)
        if wal_dir:
            opts.set_wal_dir(wal_dir)
        return opts

    # -- disk space (DiskManager.cpp)
    def refresh_free_bytes(self) -> list[int]:
        """DiskManager::refresh: the available bytes (statvfs f_bavail * f_frsize, boost's
        ``space().available``) of each data path."""
        out = []
        for dp in self.data_paths:
            st = os.statvfs(dp)
            out.append(st.f_bavail * st.f_frsize)
        self.free_bytes, self.free_checked = out, time.monotonic()
        return out

    def has_enough_space(self, pid: int) -> bool:
        """DiskManager::hasEnoughSpace: the part's data path has at least --minimum_reserved_bytes
        available (as of the last refresh)."""
        if not self.free_bytes or time.monotonic() - self.free_checked >= self.disk_check_interval:
            self.refresh_free_bytes()
        return self.free_bytes[layout.data_path_for_part(self.data_paths, pid)] >= self.minimum_reserved_bytes

    def _check_space(self, sid: int, pids) -> None:
        """FileBasedWal::appendLog refuses a log when the disk is short; RaftPart answers the write
        E_RAFT_WAL_FAIL."""
        short = sorted(p for p in pids if not self.has_enough_space(p))
        if short:
            self.stats["writes_refused"] += 1
            raise layout.HTTPError(507, f"parts {short} of space {sid}: less than --minimum_reserved_bytes="
                                        f"{self.minimum_reserved_bytes} available on their data path",
                                   code=common.ErrorCode.E_RAFT_WAL_FAIL)

    def db_for(self, sid: int, pid: int) -> rocksdict.Rdict:
        return self.dbs[(sid, layout.data_path_for_part(self.data_paths, pid))]

    def _state(self, sid: int, pid: int) -> list[int]:
        st = self.part_state.get((sid, pid))
        if st is None:
            raw = self.db_for(sid, pid).get(commit_key(pid))
            st = [int.from_bytes(raw[:8], "big"), int.from_bytes(raw[8:16], "big")] if raw else [0, self.term]
            self.part_state[(sid, pid)] = st
        return st

    def _wal(self, sid: int, pid: int) -> PartWal:
        w = self.wals.get((sid, pid))
        if w is None:
            dp = self.data_paths[layout.data_path_for_part(self.data_paths, pid)]
            w = self.wals[(sid, pid)] = PartWal(self.wal_dir(dp, sid, pid))
        return w

    def _refresh_owned(self, sid: int) -> set[int]:
        with self.meta_lock:
            if self.meta_client is None:
                self.meta_client = HeartbeatClient(self.meta_addrs)
            try:
                resp = self.meta_client.call("getPartsAlloc", meta.GetPartsAllocReq(space_id=sid))
            except Exception:
                self.meta_client.close()
                self.meta_client = None
                raise
        if resp.code != 0:
            raise layout.HTTPError(404, f"metad: space {sid}: code {resp.code}", code=resp.code)
        owned = {pid for pid, hosts in (resp.parts or {}).items()
                 if any(control.fmt_addr(h) == self.addr for h in hosts)}
        self.owned[sid] = owned
        return owned

    # -- faults
    def _fault_list(self) -> dict[str, Any]:
        with self.fault_lock:
            return dict(self.faults)

    def _set_fault(self, spec: dict[str, Any]) -> dict[str, Any]:
        with self.fault_lock:
            if spec.get("clear"):
                self.faults.clear()
            else:
                count = spec.get("count")
                if count is not None and (not isinstance(count, int) or count < 1):
                    raise layout.HTTPError(400, "count must be an integer >= 1 (leave it out for 'until cleared')")
                known = False
                for key in ("fail_checkpoint", "checkpoint_delay", "fail_writes", "wal_link_exdev"):
                    if key in spec:
                        known = True
                        self.faults[key] = {"value": spec[key], "remaining": count}
                if not known:
                    raise layout.HTTPError(400, "fault needs fail_checkpoint, checkpoint_delay, fail_writes, "
                                                "wal_link_exdev or clear")
            return {"faults": dict(self.faults)}

    def _take_fault(self, key: str) -> Any:
        with self.fault_lock:
            f = self.faults.get(key)
            if not f or not f["value"]:
                return None
            if f["remaining"] is not None:
                f["remaining"] -= 1
                if f["remaining"] <= 0:
                    del self.faults[key]
            return f["value"]

    # -- admin RPCs
    def _block_writes(self, body: dict[str, Any]) -> dict[str, Any]:
        on = bool(body.get("on"))
        with self.gate:
            self.blocked = on
            if on:
                deadline = time.monotonic() + 30
                while self.inflight and time.monotonic() < deadline:
                    self.gate.wait(0.1)
                if self.inflight:
                    self.blocked = False
                    raise layout.HTTPError(503, "writes still in flight after 30s")
        self.log.info("writes %s", "blocked" if on else "unblocked")
        return {"blocked": on}

    def _checkpoint(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body.get("name")
        if not name or "/" in name or name.startswith("."):
            raise layout.HTTPError(400, "bad checkpoint name")
        delay = self._take_fault("checkpoint_delay")
        if delay:
            time.sleep(float(delay))
        if self._take_fault("fail_checkpoint"):
            self.log.error("checkpoint %s: injected failure", name)
            raise layout.HTTPError(500, "injected checkpoint failure", code=common.ErrorCode.E_FAILED_TO_CHECKPOINT)
        result: dict[str, list[dict[str, Any]]] = {}
        spaces = body.get("spaces") or {}
        if "space_id" in body:  # short form: one space, the parts metad says this host owns
            spaces = {str(int(body["space_id"])): sorted(self._refresh_owned(int(body["space_id"])))}
        for sid_s, pids in spaces.items():
            sid = int(sid_s)
            pids = [int(p) for p in pids]
            with self.space_lock:
                if (sid, 0) not in self.dbs and not pids:
                    result[sid_s] = []
                    continue
                self.ensure_space(sid)
            entries = []
            for idx, dp in enumerate(self.data_paths):
                ck = layout.space_checkpoint_dir(dp, sid, name)
                if os.path.exists(ck):
                    raise layout.HTTPError(409, f"checkpoint {ck} exists", code=common.ErrorCode.E_EXISTED)
                os.makedirs(os.path.dirname(ck), exist_ok=True)
                os.makedirs(ck)
                db = self.dbs[(sid, idx)]
                db.flush_wal(True)
                rocksdict.Checkpoint(db).create_checkpoint(os.path.join(ck, "data"))
                os.makedirs(os.path.join(ck, "wal"))
                parts = {}
                for pid in pids:
                    if layout.data_path_for_part(self.data_paths, pid) != idx:
                        continue
                    lock = self.part_locks.setdefault((sid, pid), threading.Lock())
                    with lock:
                        w = self.wals.get((sid, pid))
                        if w:
                            w.seal()
                        try:
                            self._link_wal(self.wal_dir(dp, sid, pid), os.path.join(ck, "wal", str(pid)))
                        except OSError as exc:
                            self.log.error("checkpoint %s: link of part %d's WAL failed: %s", name, pid, exc)
                            raise layout.HTTPError(500, f"checkpoint {name}: cannot hard-link the WAL of part "
                                                        f"{pid}: {exc}", code=common.ErrorCode.E_FAILED_TO_CHECKPOINT,
                                                   errno=exc.errno) from exc
                        log_id, term = self._state(sid, pid)
                    parts[str(pid)] = {"log_id": log_id, "term_id": term, "commit_log_id": log_id,
                                       "checkpoint_path": ck}
                # NebulaStore::createCheckpoint: CheckpointInfo.data_path is realPath(<engine root>/checkpoints/<name>)
                # (symlinks resolved), while the heartbeat's data paths are only made absolute
                entries.append({"data_path": os.path.realpath(ck), "parts": parts})
            result[sid_s] = entries
        self.stats["checkpoints"] += 1
        self.log.info("checkpoint %s done: %s", name, {k: len(v) for k, v in result.items()})
        return {"spaces": result}

    def _link_wal(self, src: str, dst: str) -> None:
        """FileBasedWal::linkCurrentWAL: the part's WAL files hard-linked (``link()``, so EXDEV when
        the WAL is on another filesystem than the checkpoint) under their own names; the current
        file was closed first (the next log starts a new one). Fault ``wal_link_exdev``: link()
        fails with EXDEV as it does for a --wal_path on another disk."""
        os.makedirs(dst)
        if not os.path.isdir(src):
            return
        for f in sorted(os.listdir(src)):
            if f.endswith(".wal"):
                if self._take_fault("wal_link_exdev"):
                    raise OSError(errno.EXDEV, os.strerror(errno.EXDEV), os.path.join(src, f))
                os.link(os.path.join(src, f), os.path.join(dst, f))

    def _drop_checkpoint(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body.get("name")
        if not name or "/" in name or name.startswith("."):
            raise layout.HTTPError(400, "bad checkpoint name")
        removed = []
        for dp in self.data_paths:
            root = os.path.join(dp, "nebula")
            if not os.path.isdir(root):
                continue
            for entry in os.listdir(root):
                if entry.isdigit():
                    ck = layout.space_checkpoint_dir(dp, int(entry), name)
                    if os.path.exists(ck):
                        shutil.rmtree(ck)
                        removed.append(ck)
        self.log.info("dropped checkpoint %s: %s", name, removed)
        return {"removed": removed}

    def _by_owned_part(self, sid: int, records: list[tuple[bytes, bytes]]) -> dict[int, list[tuple[bytes, bytes]]]:
        """Records grouped by part; a part this host does not hold is refused as Nebula's storaged
        does (421, E_LEADER_CHANGED), after one refresh of the ownership from metad."""
        by_part: dict[int, list[tuple[bytes, bytes]]] = {}
        for k, v in records:
            by_part.setdefault(int.from_bytes(k[:4], "big"), []).append((k, v))
        owned = self.owned.get(sid)
        if owned is None or not set(by_part) <= owned:
            owned = self._refresh_owned(sid)
        foreign = sorted(set(by_part) - owned)
        if foreign:
            raise layout.HTTPError(421, f"parts {foreign} of space {sid} are not on {self.addr}",
                                   code=common.ErrorCode.E_LEADER_CHANGED)
        return by_part

    @contextlib.contextmanager
    def _admitted(self, nbytes: int):
        """One write while writes are not blocked (409, E_BLOCK_WRITE_FAILURE while a backup blocks
        them), counted in flight so that blocking waits for it to land; counted as done on success."""
        with self.gate:
            if self.blocked:
                self.stats["writes_refused"] += 1
                raise layout.HTTPError(409, "writes are blocked (backup in progress)", blocked=True,
                                       code=common.ErrorCode.E_BLOCK_WRITE_FAILURE)
            self.inflight += 1
        try:
            yield
            self.stats["writes_ok"] += 1
            self.stats["bytes_written"] += nbytes
        finally:
            with self.gate:
                self.inflight -= 1
                self.gate.notify_all()

    def _write(self, body: bytes, query: dict[str, str]) -> dict[str, Any]:
        try:
            sid = int(query["space_id"])
        except (KeyError, ValueError) as exc:
            raise layout.HTTPError(400, "write needs ?space_id=") from exc
        records = decode_records(body)
        by_part = self._by_owned_part(sid, records)
        if self._take_fault("fail_writes"):
            raise layout.HTTPError(500, "injected write failure")
        self._check_space(sid, by_part)
        with self._admitted(len(body)):
            self.ensure_space(sid)
            for pid, items in sorted(by_part.items()):
                lock = self.part_locks.setdefault((sid, pid), threading.Lock())
                with lock:
                    st = self._state(sid, pid)
                    st[0] += 1
                    st[1] = self.term
                    self._wal(sid, pid).append(st[0], st[1], encode_records(items))
                    wb = rocksdict.WriteBatch(raw_mode=True)
                    for k, v in items:
                        wb.put(k, v)
                    wb.put(commit_key(pid), st[0].to_bytes(8, "big") + st[1].to_bytes(8, "big"))
                    self.db_for(sid, pid).write(wb)
        return {"written": len(records), "parts": sorted(by_part)}

    def _ingest(self, body: bytes, query: dict[str, str]) -> dict[str, Any]:
        """Records → one SST file each, ingested into the space's RocksDB, plus ``wal_segments`` log
        entries per part, each in a new WAL segment file (``brsm sandbox load --files``)."""
        try:
            sid = int(query["space_id"])
            segments = int(query.get("wal_segments", "1"))
        except (KeyError, ValueError) as exc:
            raise layout.HTTPError(400, "ingest needs ?space_id=[&wal_segments=]") from exc
        if segments < 0:
            raise layout.HTTPError(400, "wal_segments must be >= 0")
        by_part = self._by_owned_part(sid, decode_records(body))
        ssts = wal_files = 0
        self._check_space(sid, by_part)
        with self._admitted(len(body)):
            self.ensure_space(sid)
            for pid, items in sorted(by_part.items()):
                items.sort()
                idx = layout.data_path_for_part(self.data_paths, pid)
                dp = self.data_paths[idx]
                download = os.path.join(layout.space_dir(dp, sid), "download", f"ingest-{pid}-{threading.get_ident()}")
                os.makedirs(download, exist_ok=True)
                lock = self.part_locks.setdefault((sid, pid), threading.Lock())
                with lock:
                    paths = []
                    try:
                        writer = rocksdict.SstFileWriter(options=self._db_options())
                        for i, (k, v) in enumerate(items):
                            path = os.path.join(download, f"{i:08d}.sst")
                            writer.open(path)
                            writer[k] = v
                            writer.finish()
                            paths.append(path)
                        if paths:
                            io = rocksdict.IngestExternalFileOptions()
                            io.set_move_files(True)
                            self.db_for(sid, pid).ingest_external_file(paths, io)
                    finally:
                        shutil.rmtree(download, ignore_errors=True)  # links only: the data stays in the db
                    ssts += len(paths)
                    st = self._state(sid, pid)
                    wal = self._wal(sid, pid)
                    n = min(segments, len(items))
                    for j in range(n):
                        st[0] += 1
                        st[1] = self.term
                        wal.append(st[0], st[1], encode_records(items[j::n]), new_segment=True)
                    wal.flush()
                    wal_files += n
                    self.db_for(sid, pid).put(commit_key(pid), st[0].to_bytes(8, "big") + st[1].to_bytes(8, "big"))
        return {"ingested": ssts, "wal_segments": wal_files, "parts": sorted(by_part)}

    def _checksum(self, body: dict[str, Any]) -> dict[str, Any]:
        sid = int(body["space_id"])
        parts: dict[int, Any] = {}
        keys = 0
        with self.space_lock:
            dbs = [(idx, db) for (s, idx), db in self.dbs.items() if s == sid]
        for _, db in dbs:
            for k, v in db.items():
                if len(k) < 5 or k[4] not in (TYPE_VERTEX, TYPE_EDGE):
                    continue
                pid = int.from_bytes(k[:4], "big")
                h = parts.get(pid)
                if h is None:
                    h = parts[pid] = hashlib.sha256()
                h.update(len(k).to_bytes(4, "big") + k + len(v).to_bytes(4, "big"))
                h.update(v)
                keys += 1
        return {"parts": {str(p): h.hexdigest() for p, h in sorted(parts.items())}, "keys": keys}

    def _drop_space(self, body: dict[str, Any]) -> dict[str, Any]:
        sid = int(body["space_id"])
        with self.space_lock:
            for key in [k for k in self.wals if k[0] == sid]:
                self.wals.pop(key).close()
            for key in [k for k in self.dbs if k[0] == sid]:
                self.dbs.pop(key).close()
            for key in [k for k in self.part_state if k[0] == sid]:
                self.part_state.pop(key)
            self.owned.pop(sid, None)
            for dp in self.data_paths:
                shutil.rmtree(layout.space_data_dir(dp, sid), ignore_errors=True)
                shutil.rmtree(self.wal_dir(dp, sid), ignore_errors=True)
                shutil.rmtree(layout.space_dir(dp, sid), ignore_errors=True)  # NebulaStore::removeSpaceDir: the engine's root
        self.log.info("dropped space %d", sid)
        return {"dropped": sid}


def main(argv: list[str] | None = None) -> int:
    svc = Storaged(list(sys.argv[1:] if argv is None else argv))
    rc = svc.run()
    if svc.unclosed:  # dropping a rocksdict db flushes it: end as a process does, its dbs unclosed
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    return rc


if __name__ == "__main__":
    sys.exit(main())
