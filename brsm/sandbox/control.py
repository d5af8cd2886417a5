"""Clients for the sandbox stand-ins: a small Thrift meta client and the JSON admin/fault API.

Admin HTTP (every process, on ``--ws_http_port`` of its ``--local_ip``):
  GET  /status                     {"status": "running", ...}
metad:
  POST /fault  {"rpc": "createBackup", "code": -24, "count": 1}            next N calls return that code
               {"rpc": "createBackup", "leader_changed": "127.0.0.12:9559"}  answer E_LEADER_CHANGED, leader set
               {"rpc": "listCluster", "delay": 2.5, "count": 1}           answer late
               {"rpc": "listCluster", "hang": true}                       never answer until cleared
               {"clear": true}  (or {"clear": true, "rpc": "x"})          remove faults (releases hung calls)
               "count" absent = until cleared; "rpc": "*" matches every RPC.
  GET  /fault  {"faults": [...]}
  GET  /hosts  registered hosts with role, dirs, admin HTTP port, last heartbeat
storaged:
  POST /fault  {"fail_checkpoint": true, "count": 1}   next checkpoint(s) fail (HTTP 500 → createBackup fails)
               {"checkpoint_delay": 2.0, "count": 1}  checkpoint(s) take that long (holds writes blocked)
               {"fail_writes": true, "count": 1}      next /write(s) answer HTTP 500
               {"clear": true}
  GET  /fault
  POST /block_writes {"on": true|false}
  POST /checkpoint {"name": N, "spaces": {"<spaceId>": [partIds]}}
  POST /drop_checkpoint {"name": N}
  POST /write?space_id=S   body: repeated [u32 klen][key][u32 vlen][value] (big-endian); 409 while blocked
  POST /checksum {"space_id": S}  → {"parts": {"<partId>": sha256 hex}, "keys": n}
  POST /drop_space {"space_id": S}
  GET  /stats  counters (writes ok / refused, bytes)
"""
from __future__ import annotations

import http.client
import json
import socket
import time
from typing import Any

from nebula3.common import ttypes as common
from nebula3.fbthrift.protocol import TBinaryProtocol, THeaderProtocol
from nebula3.fbthrift.transport import TSocket, TTransport
from nebula3.meta import MetaService
from nebula3.meta import ttypes as meta

from brsm.sandbox.errors import SandboxFailure

ErrorCode = common.ErrorCode
TRANSPORTS = ("framed", "buffered", "header")


class SandboxControlError(SandboxFailure):
    pass


def split_addr(addr: str | tuple[str, int]) -> tuple[str, int]:
    if isinstance(addr, tuple):
        return addr[0], int(addr[1])
    host, _, port = addr.rpartition(":")
    return host, int(port)


def host_addr(addr: str | tuple[str, int]) -> common.HostAddr:
    h, p = split_addr(addr)
    return common.HostAddr(host=h, port=p)


def fmt_addr(ha: common.HostAddr) -> str:
    return f"{ha.host}:{ha.port}"


# ---------------------------------------------------------------------------------------------
# Thrift


def open_meta_client(addr: str | tuple[str, int], transport: str = "buffered",
                     timeout: float = 30.0) -> tuple[MetaService.Client, Any]:
    """A ``MetaService.Client`` over ``transport`` (framed | buffered | header)."""
    host, port = split_addr(addr)
    sock = TSocket.TSocket(host, port)
    sock.setTimeout(int(timeout * 1000))
    if transport == "framed":
        trans = TTransport.TFramedTransport(sock)
        proto = TBinaryProtocol.TBinaryProtocol(trans)
    elif transport == "buffered":
        trans = TTransport.TBufferedTransport(sock)
        proto = TBinaryProtocol.TBinaryProtocol(trans)
    elif transport == "header":
        proto = THeaderProtocol.THeaderProtocol(sock)
        trans = proto.trans
    else:
        raise ValueError(f"unknown transport {transport!r}")
    trans.open()
    return MetaService.Client(proto), trans


class MetaClient:
    """Thin wrapper that follows E_LEADER_CHANGED (reconnects to ``leader`` and retries)."""

    def __init__(self, addr: str | tuple[str, int], transport: str = "buffered", timeout: float = 30.0,
                 follow_leader: bool = True) -> None:
        self.addr = split_addr(addr)
        self.transport = transport
        self.timeout = timeout
        self.follow_leader = follow_leader
        self._client: MetaService.Client | None = None
        self._trans: Any = None

    def _connect(self) -> MetaService.Client:
        if self._client is None:
            self._client, self._trans = open_meta_client(self.addr, self.transport, self.timeout)
        return self._client

    def close(self) -> None:
        if self._trans is not None:
            try:
                self._trans.close()
            except Exception:  # noqa: BLE001
                pass
        self._client = self._trans = None

    def __enter__(self) -> "MetaClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def call(self, method: str, req: Any) -> Any:
        for _ in range(4):
            client = self._connect()
            try:
                resp = getattr(client, method)(req)
            except Exception:
                self.close()
                raise
            if (self.follow_leader and getattr(resp, "code", 0) == ErrorCode.E_LEADER_CHANGED
                    and getattr(resp, "leader", None) is not None and resp.leader.host):
                new = (resp.leader.host, resp.leader.port)
                if new != self.addr:
                    self.close()
                    self.addr = new
                    continue
            return resp
        return resp

    def __getattr__(self, method: str) -> Any:
        if method.startswith("_"):
            raise AttributeError(method)
        return lambda req: self.call(method, req)


def add_hosts(meta_addr: str | tuple[str, int], addrs: list[str], timeout: float = 30.0) -> None:
    """``ADD HOSTS`` (metad's addHosts): what an operator does before storaged can join. Waits for
    metad to answer; hosts already registered are fine."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with MetaClient(meta_addr, timeout=5.0) as mc:
                for a in addrs:  # one by one: E_EXISTED for one host must not refuse the others
                    resp = mc.addHosts(meta.AddHostsReq(hosts=[host_addr(a)]))
                    if resp.code not in (ErrorCode.SUCCEEDED, ErrorCode.E_EXISTED):
                        check(resp, f"addHosts {a}")
                return
        except (OSError, TTransport.TTransportException) as exc:
            if time.monotonic() > deadline:
                raise SandboxControlError(f"metad at {meta_addr} did not answer addHosts within {timeout:.0f}s: {exc}")
            time.sleep(0.1)


def check(resp: Any, what: str) -> Any:
    code = getattr(resp, "code", 0)
    if code != ErrorCode.SUCCEEDED:
        name = ErrorCode._VALUES_TO_NAMES.get(code, str(code))
        raise SandboxControlError(f"{what}: metad answered {name} ({code})")
    return resp


# ---------------------------------------------------------------------------------------------
# HTTP JSON


class HTTPStatusError(SandboxControlError):
    def __init__(self, status: int, body: Any, what: str) -> None:
        super().__init__(f"{what}: HTTP {status}: {body}")
        self.status = status
        self.body = body


def http_call(addr: str | tuple[str, int], method: str, path: str, body: Any = None,
              timeout: float = 30.0, raw: bytes | None = None) -> Any:
    host, port = split_addr(addr)
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        headers = {"Content-Type": "application/octet-stream" if raw is not None else "application/json"}
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        payload = resp.read()
        obj = json.loads(payload) if payload else None
        if resp.status >= 300:
            raise HTTPStatusError(resp.status, obj, f"{method} http://{host}:{port}{path}")
        return obj
    finally:
        conn.close()


def status(http_addr: str | tuple[str, int], timeout: float = 2.0) -> dict[str, Any]:
    return http_call(http_addr, "GET", "/status", timeout=timeout)


def is_running(http_addr: str | tuple[str, int]) -> bool:
    try:
        return status(http_addr).get("status") == "running"
    except (OSError, SandboxControlError, ValueError):
        return False


def wait_running(http_addr: str | tuple[str, int], timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            st = status(http_addr)
            if st.get("status") == "running":
                return st
        except (OSError, SandboxControlError, ValueError) as exc:
            last = exc
        time.sleep(0.1)
    raise SandboxControlError(f"{http_addr} not running after {timeout}s: {last}")


def set_fault(http_addr: str | tuple[str, int], **fault: Any) -> dict[str, Any]:
    """e.g. ``set_fault(meta_http, rpc="createBackup", code=-24, count=1)`` or
    ``set_fault(storage_http, fail_checkpoint=True, count=1)``."""
    return http_call(http_addr, "POST", "/fault", fault)


def clear_faults(http_addr: str | tuple[str, int], rpc: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"clear": True}
    if rpc:
        body["rpc"] = rpc
    return http_call(http_addr, "POST", "/fault", body)


def get_faults(http_addr: str | tuple[str, int]) -> dict[str, Any]:
    return http_call(http_addr, "GET", "/fault")


def storage_stats(http_addr: str | tuple[str, int]) -> dict[str, Any]:
    return http_call(http_addr, "GET", "/stats")


def wait_port_closed(host: str, port: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.3):
                pass
        except OSError:
            return True
        time.sleep(0.1)
    return False


# ---------------------------------------------------------------------------------------------
# storage discovery through the meta protocol


NEBULA_VERSION = "3.8.0"  # the release the stand-ins claim to be unless told another
# sandbox-only flag in every stand-in's flagfile: the release that "binary" was built as (a real
# daemon has it compiled in: getOriginVersion(), src/version/Version.cpp.in, NEBULA_BUILD_VERSION)
VERSION_FLAG = "sandbox_nebula_version"


def build_version(flags: Any) -> str:
    """The release a stand-in plays (``--sandbox_nebula_version``, default 3.8.0)."""
    return flags.get(VERSION_FLAG) or NEBULA_VERSION


def encode_version(ws_http_port: int, version: str = NEBULA_VERSION) -> str:
    """Heartbeat ``version`` of the stand-ins: a plain release string, as a real daemon reports
    (its getOriginVersion(), shown by listHosts). The admin HTTP port is Nebula's default relation
    (``ws_http_port = port + 10000``), which every sandbox daemon keeps; a port that differs is
    still carried after a ';' (real daemons never send one)."""
    return version


def http_port_from_version(version: bytes | str | None, port: int) -> int:
    if isinstance(version, bytes):
        version = version.decode(errors="replace")
    for part in (version or "").split(";"):
        if part.startswith("ws_http_port="):
            return int(part.split("=", 1)[1])
    return port + 10000


def storage_http_addrs(client: MetaClient) -> dict[str, tuple[str, int]]:
    """``"host:port"`` of each storaged → its admin HTTP address (from listHosts' version)."""
    resp = check(client.listHosts(meta.ListHostsReq(type=meta.ListHostType.STORAGE)), "listHosts")
    out = {}
    for item in resp.hosts or []:
        out[fmt_addr(item.hostAddr)] = (item.hostAddr.host,
                                        http_port_from_version(item.version, item.hostAddr.port))
    return out
