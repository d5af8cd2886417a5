"""The socket under the Thrift meta client: one connection and what it has seen, a call the event
loop may abandon (its socket shut so the worker thread returns at once), and the probe that tells
an HTTP port from metad's."""
from __future__ import annotations

import socket
import threading

from nebula3.fbthrift.transport import TSocket
from nebula3.meta import MetaService

from brsm.errors import MetaError
from brsm.ports import HostAddr


class RecordingSocket(TSocket.TSocket):
    """A TSocket that remembers the first bytes the peer sent (to recognise an HTTP port)."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(host, port)
        self.first = b""
        self.received = 0

    def read(self, sz: int) -> bytes:
        buff = super().read(sz)
        self.received += len(buff)
        if len(self.first) < 8:
            self.first += buff[: 8 - len(self.first)]
        return buff


class Conn:
    def __init__(self, addr: HostAddr, sock: RecordingSocket, client: MetaService.Client) -> None:
        self.addr = addr
        self.sock = sock
        self.client = client
        self.calls = 0

    def close(self) -> None:
        try:
            self.sock.close()
        except Exception:  # noqa: BLE001
            pass


class InFlight:
    """One call as the event loop sees it: abandoning it (the awaiting task was cancelled) shuts its
    socket down so the worker thread returns now, instead of when metad answers (createBackup: never,
    if metad hangs), and releases the client for the calls a rollback makes next."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.conn: Conn | None = None
        self.abandoned = False
        self.finished = threading.Event()

    def sending(self, conn: Conn) -> None:
        with self.lock:
            if self.abandoned:
                raise MetaError("meta call abandoned before it was sent")
            self.conn = conn

    def abandon(self) -> None:
        with self.lock:
            self.abandoned = True
            conn = self.conn
        h = conn.sock.handle if conn is not None else None
        if h is not None:
            try:
                h.shutdown(socket.SHUT_RDWR)  # wakes the worker's blocked recv at once
            except OSError:
                pass


ABANDON_WAIT = 5.0  # seconds an abandoned call's worker gets to return before the loop stops waiting


class Refused(Exception):
    """Could not connect (nothing sent): safe to try another address."""


def looks_http(addr: HostAddr, timeout: float) -> bool:
    try:
        with socket.create_connection((addr.host, addr.port), timeout=min(timeout, 3.0)) as s:
            s.settimeout(min(timeout, 3.0))
            s.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
            return s.recv(5).startswith(b"HTTP/")
    except OSError:
        return False
