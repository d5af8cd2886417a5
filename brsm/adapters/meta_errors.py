"""What a metad's answer, or what answered instead of a metad, means: a MetaError with a hint.

Kept apart from the client (``meta``), which decides when to call, reconnect and follow the leader:
here only the words an operator reads, each saying what to check. A port that is not metad's
(an HTTP port, an SSH server, storaged's Thrift port) is named for what it is, never reported with
the Thrift runtime's own words ("Incorrect frame size"), which name no cause.
"""
from __future__ import annotations

from nebula3.common import ttypes as common
from nebula3.fbthrift.protocol.TProtocol import TProtocolException
from nebula3.fbthrift.Thrift import TApplicationException

from brsm.adapters.meta_transport import Conn, looks_http
from brsm.errors import MetaError
from brsm.ports import HostAddr

EC = common.ErrorCode
NOT_META_HINT = ("point brsm at metad's Thrift port (default 9559) in the config's cluster.meta; "
                 "storaged (9779), graphd (9669) and the HTTP ports (19559, ...) are other services")

HINTS = {
    EC.E_BACKUP_RUNNING_JOBS: "a job (compaction, index rebuild, balance) is running: wait for it "
                              "(SHOW JOBS) and retry",
    EC.E_BACKUP_FAILED: "look at metad's and storaged's logs; the snapshot it left is INVALID and "
                        "is dropped by rollback (or DROP SNAPSHOT)",
    EC.E_SNAPSHOT_FAILURE: "a storaged failed to checkpoint: check its disk space and logs",
    EC.E_RESTORE_FAILURE: "check that the meta SST files were copied to that metad host and metad can read them",
    EC.E_CLIENT_SERVER_INCOMPATIBLE: "the cluster's metad rejects this client version: set the meta "
                                     "client_version in the config to one in metad's --client_white_list",
    EC.E_LEADER_CHANGED: "the meta leader kept moving; wait for the meta Raft group to settle and retry",
}


def error_name(code: int | None) -> str:
    return EC._VALUES_TO_NAMES.get(code, f"error {code}") if code is not None else "no code"


def not_meta(addr: HostAddr, detail: str, *, http: bool = False) -> MetaError:
    if http:
        return MetaError(f"{addr} does not speak the Nebula meta protocol (is it an HTTP port?): {detail}",
                         hint="point brsm at metad's Thrift port (default 9559), not its HTTP port (19559)")
    return MetaError(f"{addr} does not speak the Nebula meta protocol: {detail}", hint=NOT_META_HINT)


def transport_error(conn: Conn, rpc: str, exc: BaseException, *, timeout: float) -> MetaError:
    """A call on ``conn`` that raised: what answered (by the first bytes it sent), or what went wrong
    on the way. ``timeout`` bounds the HTTP probe of a port that stayed silent."""
    first = conn.sock.first
    if first and not first.startswith(b"\x80\x01"):
        shown = first.decode("latin-1") if first[:4].isascii() else first.hex()
        kind = " (an HTTP server)" if first.startswith(b"HTTP") else \
            " (an SSH server)" if first.startswith(b"SSH-") else ""
        return not_meta(conn.addr, f"it answered {shown!r}{kind}", http=first.startswith(b"HTTP"))
    if isinstance(exc, (TProtocolException,)) or "frame size" in str(exc).lower():
        # never echo the protocol's own words ("Incorrect frame size"): they name no cause
        return not_meta(conn.addr, "its answer is not a meta protocol message")
    if isinstance(exc, TApplicationException):
        return MetaError(f"metad at {conn.addr}: {rpc} failed: {exc.message or exc}",
                         hint="is this metad older or newer than brsm supports?")
    if "timed out" in str(exc) and not first:
        if looks_http(conn.addr, timeout):
            return not_meta(conn.addr, "it answers HTTP", http=True)
        return MetaError(f"metad at {conn.addr}: no answer to {rpc} within the timeout",
                         hint="is metad overloaded or hung? check its log; raise the meta timeout if it is slow")
    return MetaError(f"metad at {conn.addr}: {rpc} failed: connection lost ({exc})",
                     hint="metad restarted or the network dropped; retry")
