"""MetaPort over Thrift: nebula3's generated ``MetaService.Client`` on its vendored fbthrift runtime.

Plain binary protocol over a buffered socket (as ``nebula3.mclient``). The client is synchronous and
not thread-safe: every call runs in ``asyncio.to_thread`` under one lock, on one connection.
On connect it calls ``verifyClientVersion``. Every response ``code`` is checked; ``E_LEADER_CHANGED``
with a leader set moves the connection there and retries (a few hops at most); a refused connection
moves on to the next configured address. What an answer (or a port that is not metad's) means to
an operator is said in ``meta_errors``.
"""
from __future__ import annotations

import asyncio
import dataclasses
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any

from nebula3.common import ttypes as common
from nebula3.fbthrift.protocol import TBinaryProtocol
from nebula3.fbthrift.Thrift import TApplicationException
from nebula3.fbthrift.transport import TTransport
from nebula3.meta import MetaService
from nebula3.meta import ttypes as meta

from brsm.adapters.meta_codec import created_backup, drop_snapshot_req, encode_backup_meta, release, text
from brsm.adapters.meta_errors import HINTS, NOT_META_HINT, error_name, not_meta, transport_error
from brsm.adapters.meta_transport import ABANDON_WAIT, Conn, InFlight, RecordingSocket, Refused, looks_http
from brsm.errors import MetaError
from brsm.ports import CreatedBackup, HostAddr, ListedHost, ServiceInfo, Snapshot, SpaceSchema

__all__ = ["ThriftMeta"]

EC = common.ErrorCode
MAX_HOPS = 4
ROLE_NAMES = meta.HostRole._VALUES_TO_NAMES
SNAPSHOT_STATUS = meta.SnapshotStatus._VALUES_TO_NAMES
HOST_STATUS = meta.HostStatus._VALUES_TO_NAMES
LIST_HOST_TYPES = {"STORAGE": meta.ListHostType.STORAGE, "GRAPH": meta.ListHostType.GRAPH,
                   "META": meta.ListHostType.META, "AGENT": meta.ListHostType.AGENT}
# createBackup waits for every storaged to checkpoint: give it much longer than ordinary calls
# safe to resend when a pooled connection turned out dead before anything came back
IDEMPOTENT = {"listCluster", "getMetaDirInfo", "listSpaces", "listSnapshots", "dropSpace", "restoreMeta",
              "getSpace", "listHosts"}
LONG_RPCS = {"createBackup": 1800.0, "restoreMeta": 600.0, "dropSnapshot": 600.0}
FIRST_ANSWER_SECONDS = 1.0  # silence this long on a new connection: check whether it is an HTTP port


class ThriftMeta:
    """``brsm.ports.MetaPort`` against real metad (or the sandbox stand-in)."""

    def __init__(self, addrs: Sequence[HostAddr], *, timeout: float = 60.0, client_version: str | None = None,
                 max_hops: int = MAX_HOPS) -> None:
        if not addrs:
            raise MetaError("no meta addresses configured", hint="set the cluster's meta addresses in the config")
        self.addrs = [a if isinstance(a, HostAddr) else HostAddr.parse(str(a)) for a in addrs]
        self.timeout = timeout
        self.client_version = client_version
        self.max_hops = max_hops
        self._lock = threading.Lock()
        self._conn: Conn | None = None
        self._leader: HostAddr = self.addrs[0]
        self._metad_version: str | None = None

    # -- connection (worker thread, under the lock) -------------------------------------------------
    def _first_answer(self, conn: Conn) -> Any:
        """metad answers verifyClientVersion at once. A port that stays silent for a few seconds is
        probed once as HTTP (an HTTP server waits for a request line that never comes), so a wrong
        port is named in seconds rather than after the whole timeout; else keep waiting."""
        wait = min(self.timeout, 10.0)
        quick = min(FIRST_ANSWER_SECONDS, wait)
        conn.sock.setTimeout(quick * 1000)
        try:
            return conn.client.recv_verifyClientVersion()
        except TTransport.TTransportException as exc:
            if conn.sock.received or "timed out" not in str(exc) or quick >= wait:
                raise
        if looks_http(conn.addr, self.timeout):
            raise not_meta(conn.addr, "it answers HTTP", http=True)
        conn.sock.setTimeout((wait - quick) * 1000)
        return conn.client.recv_verifyClientVersion()  # nothing was read yet: the protocol is intact

    def _open(self, addr: HostAddr) -> Conn:
        sock = RecordingSocket(addr.host, addr.port)
        sock.setTimeout(min(self.timeout, 10.0) * 1000)
        try:
            sock.open()
        except TTransport.TTransportException as exc:
            raw = str(exc.message or exc)
            why = next((w for k, w in (("refused", "connection refused"), ("timed out", "connect timed out"),
                                       ("No route", "no route to host"), ("unreachable", "network unreachable"),
                                       ("Name or service", "unknown host name")) if k in raw), raw)
            raise Refused(f"{addr}: {why}") from exc
        trans = TTransport.TBufferedTransport(sock)
        proto = TBinaryProtocol.TBinaryProtocol(trans, strictRead=True, strictWrite=True)
        conn = Conn(addr, sock, MetaService.Client(proto))
        req = meta.VerifyClientVersionReq(host=common.HostAddr(host=socket.gethostname(), port=0),
                                          build_version=b"brsm")
        if self.client_version:
            req.client_version = self.client_version.encode()
        try:
            conn.client.send_verifyClientVersion(req)
            resp = self._first_answer(conn)
        except MetaError:
            conn.close()
            raise
        except Exception as exc:  # noqa: BLE001
            conn.close()
            if not conn.sock.received and isinstance(exc, TTransport.TTransportException) \
                    and "timed out" not in str(exc):
                # it took the connection and hung up on the first request: a Thrift server of another
                # service (storaged, graphd), or something else entirely
                raise MetaError(f"{addr} closed the connection on verifyClientVersion without answering: it is "
                                "not metad's Thrift port", hint=NOT_META_HINT) from exc
            if isinstance(exc, TApplicationException):
                raise MetaError(f"{addr} rejected verifyClientVersion ({exc.message or exc}): it is not metad",
                                hint=NOT_META_HINT) from exc
            raise transport_error(conn, "verifyClientVersion", exc, timeout=self.timeout) from exc
        if resp.code == EC.E_CLIENT_SERVER_INCOMPATIBLE:
            conn.close()
            raise MetaError(f"metad at {addr} rejects this client (verifyClientVersion: E_CLIENT_SERVER_INCOMPATIBLE"
                            f"{': ' + text(resp.error_msg) if resp.error_msg else ''})",
                            code=resp.code, hint=HINTS[EC.E_CLIENT_SERVER_INCOMPATIBLE])
        if resp.code not in (EC.SUCCEEDED, EC.E_LEADER_CHANGED):
            conn.close()
            raise MetaError(f"metad at {addr}: verifyClientVersion failed: {error_name(resp.code)}", code=resp.code)
        sock.setTimeout(self.timeout * 1000)
        return conn

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @staticmethod
    def _alive(conn: Conn) -> bool:
        """False if the peer closed the pooled connection (metad restarted): peek without blocking."""
        h = conn.sock.handle
        if h is None:
            return False
        # A Python socket with a timeout polls for up to that timeout *before* recv, MSG_DONTWAIT
        # or not: without switching to non-blocking this peek could sleep for a whole RPC timeout.
        saved = h.gettimeout()
        try:
            h.settimeout(0.0)
            data = h.recv(1, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return True  # nothing to read: open and idle
        except OSError:
            return False
        finally:
            try:
                h.settimeout(saved)
            except OSError:
                pass
        return bool(data)  # b"" = orderly close; unexpected bytes are kept for the protocol to reject

    def _connect_to(self, addr: HostAddr) -> Conn:
        if self._conn is not None and self._conn.addr == addr:
            if self._alive(self._conn):
                return self._conn
        self._drop()
        self._conn = self._open(addr)
        return self._conn

    def _connect_any(self, first: HostAddr) -> Conn:
        order = [first] + [a for a in self.addrs if a != first]
        errors = []
        for a in order:
            try:
                return self._connect_to(a)
            except Refused as exc:
                errors.append(str(exc))
        raise MetaError("cannot reach any metad: " + "; ".join(errors),
                        hint="is metad running, and are the meta addresses (host:port of metad's Thrift port) right?")

    def _call_sync(self, rpc: str, req: Any, addr: HostAddr | None, call: InFlight | None = None) -> Any:
        try:
            return self._call_locked(rpc, req, addr, call)
        finally:
            if call is not None:
                call.finished.set()

    def _call_locked(self, rpc: str, req: Any, addr: HostAddr | None, call: InFlight | None) -> Any:
        with self._lock:
            target = addr or self._leader
            hops = 0
            retried = False
            while True:
                if addr is not None:
                    try:
                        conn = self._connect_to(target)
                    except Refused as exc:
                        raise MetaError(f"cannot reach metad at {target} for {rpc}: {exc}",
                                        hint="is metad running on that host?") from exc
                else:
                    conn = self._connect_any(target)
                    self._leader = conn.addr
                reused = conn.calls > 0
                conn.calls += 1
                seen = conn.sock.received
                long = LONG_RPCS.get(rpc)
                if long:
                    conn.sock.setTimeout(max(long, self.timeout) * 1000)
                try:
                    if call is not None:
                        call.sending(conn)
                    resp = getattr(conn.client, rpc)(req)
                except MetaError:
                    raise
                except Exception as exc:  # noqa: BLE001 - fbthrift raises many kinds
                    self._drop()
                    if (reused and not retried and rpc in IDEMPOTENT and conn.sock.received == seen
                            and isinstance(exc, TTransport.TTransportException) and "timed out" not in str(exc)):
                        retried = True  # a pooled connection went stale under us: one retry on a fresh one
                        continue
                    raise transport_error(conn, rpc, exc, timeout=self.timeout) from exc
                finally:
                    if long and self._conn is conn:
                        conn.sock.setTimeout(self.timeout * 1000)
                code = getattr(resp, "code", EC.SUCCEEDED)
                if code == EC.E_LEADER_CHANGED and addr is None:
                    leader = getattr(resp, "leader", None)
                    hops += 1
                    if hops > self.max_hops:
                        raise MetaError(f"{rpc}: meta leader changed {hops} times in a row (last answer from "
                                        f"{conn.addr})", code=code, hint=HINTS[code])
                    if leader is not None and leader.host and leader.port:
                        target = HostAddr(text(leader.host), int(leader.port))
                    else:  # no leader known yet: ask the next configured metad
                        i = self.addrs.index(conn.addr) if conn.addr in self.addrs else -1
                        target = self.addrs[(i + 1) % len(self.addrs)]
                        time.sleep(0.2 * hops)
                    self._leader = target
                    continue
                if code != EC.SUCCEEDED:
                    raise MetaError(f"metad {conn.addr}: {rpc} failed: {error_name(code)} ({code})", code=code,
                                    hint=HINTS.get(code))
                return resp

    async def _call(self, rpc: str, req: Any, *, addr: HostAddr | None = None) -> Any:
        call = InFlight()
        try:
            return await asyncio.to_thread(self._call_sync, rpc, req, addr, call)
        except asyncio.CancelledError:
            call.abandon()
            deadline = time.monotonic() + ABANDON_WAIT
            while not call.finished.is_set() and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            raise

    # -- MetaPort ---------------------------------------------------------------------------------
    @staticmethod
    def _service(si: meta.ServiceInfo, role: int | None = None) -> ServiceInfo:
        d = si.dir or common.DirInfo()
        return ServiceInfo(role=ROLE_NAMES.get(si.role if role is None else role, "UNKNOWN"),
                           addr=HostAddr(text(si.addr.host), int(si.addr.port)),
                           root=text(d.root), data_paths=tuple(text(p) for p in (d.data or [])))

    async def list_cluster(self) -> list[ServiceInfo]:
        resp = await self._call("listCluster", meta.ListClusterInfoReq())
        out = [self._service(si) for _, sis in sorted((resp.host_services or {}).items()) for si in sis]
        return sorted(out, key=lambda s: (s.role, s.addr))

    async def meta_dir(self, addr: HostAddr | None = None) -> ServiceInfo:
        """getMetaDirInfo answers for the metad that receives it (no leader check in
        GetMetaDirInfoProcessor.cpp): ask each metad for its own dirs."""
        resp = await self._call("getMetaDirInfo", meta.GetMetaDirInfoReq(), addr=addr)
        where = addr or self._leader
        return self._service(meta.ServiceInfo(dir=resp.dir, addr=common.HostAddr(host=where.host, port=where.port),
                                              role=meta.HostRole.META))

    async def list_spaces(self) -> dict[str, int]:
        resp = await self._call("listSpaces", meta.ListSpacesReq())
        return {text(s.name): int(s.id.get_space_id()) for s in resp.spaces or []}

    async def list_zones(self) -> dict[str, list[str]]:
        resp = await self._call("listZones", meta.ListZonesReq())
        return {text(z.zone_name): sorted(f"{text(h.host)}:{h.port}" for h in z.nodes or []) for z in resp.zones or []}

    async def list_ft_indexes(self) -> dict[str, int]:
        resp = await self._call("listFTIndexes", meta.ListFTIndexesReq())
        return {text(n): int(i.space_id) for n, i in (resp.indexes or {}).items()}

    async def list_listeners(self, space_id: int) -> list[str]:
        resp = await self._call("listListener", meta.ListListenerReq(space_id=space_id))
        kinds = meta.ListenerType._VALUES_TO_NAMES
        return sorted(f"{kinds.get(li.type, li.type)} {text(li.host.host)}:{li.host.port} part {li.part_id}"
                      for li in resp.listeners or [])

    async def create_backup(self, spaces: Sequence[str] | None) -> CreatedBackup:
        req = meta.CreateBackupReq(spaces=[s.encode() for s in spaces] if spaces else None)
        resp = await self._call("createBackup", req)
        if resp.meta is None or not resp.meta.backup_name:
            raise MetaError("createBackup succeeded but returned no BackupMeta",
                            hint="the snapshot may exist: list snapshots and drop it")
        # metad reports the SSTs' full paths on its host; nebula-br's `.meta` keeps base names only
        # (its restore joins them with the download dir), so ours does the same.
        paths = tuple(text(f) for f in (resp.meta.meta_files or []))
        resp.meta.meta_files = [f.rsplit(b"/", 1)[-1] if isinstance(f, bytes) else f.rsplit("/", 1)[-1]
                                for f in (resp.meta.meta_files or [])]
        cb = created_backup(resp.meta, encode_backup_meta(resp.meta))
        return dataclasses.replace(cb, meta_paths=paths)

    async def list_snapshots(self) -> list[Snapshot]:
        resp = await self._call("listSnapshots", meta.ListSnapshotsReq())
        return [Snapshot(text(s.name), SNAPSHOT_STATUS.get(s.status, str(s.status)), text(s.hosts))
                for s in resp.snapshots or []]

    async def metad_version(self) -> str:
        """The release metad reports for itself: listHosts(META) answers every meta peer with the
        answering metad's own getOriginVersion() (ListHostsProcessor::allMetaHostsStatus), e.g.
        "3.2.0"; "" for a build without a version. Asked once per adapter."""
        if self._metad_version is None:
            versions = sorted({h.version for h in await self.list_hosts("META") if h.version})
            self._metad_version = versions[0] if versions else ""
        return self._metad_version

    async def drop_snapshots(self, names: Sequence[str]) -> None:
        """One call per name: metad drops only the first name of a request and silently keeps the
        others (DropSnapshotProcessor.cpp). A name already gone (E_SNAPSHOT_NOT_FOUND) is done.

        The request is the one metad's release reads (meta.thrift: ``1: binary name`` before 3.3.0,
        ``1: list<binary> names`` after). And SUCCEEDED is not taken on trust: before 3.4.0 metad
        answers it for a name it does not have (or could not decode), and 3.0.x answers it while
        keeping a snapshot it failed to drop (INVALID), so ``listSnapshots`` must no longer list
        any of ``names`` afterwards, on every release."""
        if not names:
            return
        rel = release(await self.metad_version())
        for n in names:
            try:
                await self._call("dropSnapshot", drop_snapshot_req(n, rel))
            except MetaError as e:
                if e.code != EC.E_SNAPSHOT_NOT_FOUND:
                    raise
        left = [s for s in await self.list_snapshots() if s.name in set(names)]
        if left:
            shown = ", ".join(f"{s.name} ({s.status})" for s in left)
            raise MetaError(
                f"dropSnapshot answered SUCCEEDED but metad still lists {shown} (Nebula "
                f"{self._metad_version or 'of unknown version'})",
                hint="look at metad's and storaged's logs (a checkpoint it could not remove keeps the snapshot), "
                     "then DROP SNAPSHOT it in nebula-console or run `brsm gc --confirm`")

    async def drop_space(self, name: str) -> None:
        await self._call("dropSpace", meta.DropSpaceReq(space_name=name.encode(), if_exists=True))

    async def list_schema(self, space_id: int) -> SpaceSchema:
        tags = await self._call("listTags", meta.ListTagsReq(space_id=space_id))
        edges = await self._call("listEdges", meta.ListEdgesReq(space_id=space_id))
        tag_idx = await self._call("listTagIndexes", meta.ListTagIndexesReq(space_id=space_id))
        edge_idx = await self._call("listEdgeIndexes", meta.ListEdgeIndexesReq(space_id=space_id))
        return SpaceSchema(
            tags=tuple((int(t.tag_id), text(t.tag_name), int(t.version or 0)) for t in tags.tags or []),
            edges=tuple((int(e.edge_type), text(e.edge_name), int(e.version or 0)) for e in edges.edges or []),
            indexes=tuple((int(i.index_id), text(i.index_name)) for i in (tag_idx.items or []) + (edge_idx.items or [])))

    async def restore_meta(self, addr: HostAddr, files: Sequence[str],
                           host_pairs: Sequence[tuple[HostAddr, HostAddr]]) -> None:
        """Called on one SPECIFIC metad (every metad restores its own copy), not the leader."""
        pairs = [meta.HostPair(from_host=common.HostAddr(host=a.host, port=a.port),
                               to_host=common.HostAddr(host=b.host, port=b.port)) for a, b in host_pairs]
        await self._call("restoreMeta", meta.RestoreMetaReq(files=[f.encode() for f in files], hosts=pairs),
                         addr=addr)

    async def list_hosts(self, role: str = "STORAGE") -> list[ListedHost]:
        """``listHosts(ListHostsReq(type=role))``: for STORAGE, every storaged that heartbeated and every
        registered machine (OFFLINE until its heartbeat is accepted)."""
        if role not in LIST_HOST_TYPES:
            raise ValueError(f"unknown host role {role!r} (one of {', '.join(LIST_HOST_TYPES)})")
        resp = await self._call("listHosts", meta.ListHostsReq(type=LIST_HOST_TYPES[role]))
        return sorted((ListedHost(HostAddr(text(h.hostAddr.host), int(h.hostAddr.port)),
                                  ROLE_NAMES.get(h.role, str(h.role)), HOST_STATUS.get(h.status, str(h.status)),
                                  text(h.version))
                       for h in resp.hosts or []), key=lambda h: h.addr)

    async def close(self) -> None:
        def _close() -> None:
            with self._lock:
                self._drop()
        await asyncio.to_thread(_close)


