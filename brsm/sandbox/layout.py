"""Nebula's on-disk layout and the process plumbing shared by the sandbox stand-ins.

Paths (as Nebula lays them out):
  metad     <data_path>/nebula/0/data                       its RocksDB
            <data_path>/checkpoints/<BACKUP>/<table>.sst    meta tables exported by createBackup
  storaged  <dp>/nebula/<spaceId>/data                      RocksDB of that space on data path dp
            <dp>/nebula/<spaceId>/wal/<partId>/<first log id, 19 digits>.wal
            <dp>/nebula/<spaceId>/checkpoints/<BACKUP>/{data,wal/<partId>}
            <wal_path>/nebula/<spaceId>/wal/<partId>/...        with --wal_path (RocksEngine.cpp)
            <rocksdb_wal_dir>/rocksdb_wal/<spaceId>/*.log      RocksDB's WAL, with --rocksdb_wal_dir
  storaged  <working dir>/cluster.id                       identity learnt from metad (--cluster_id_path)
"""
from __future__ import annotations

import errno
import http.server
import json
import logging
import os
import signal
import socket
import socketserver
import sys
import threading
import types
import urllib.parse
from collections.abc import Callable
from typing import Any

from brsm.sandbox.flags import Flags, parse_flags

META_SPACE_ID = 0


def meta_db_path(data_path: str) -> str:
    return os.path.join(data_path, "nebula", "0", "data")


def meta_checkpoint_dir(data_path: str, name: str) -> str:
    """RocksEngine::backupTable: ``<dataPath_>/checkpoints/<name>`` with the meta engine's
    ``dataPath_ = <data_path>/nebula/0`` (src/kvstore/RocksEngine.cpp)."""
    return os.path.join(data_path, "nebula", "0", "checkpoints", name)


def space_dir(data_path: str, space_id: int) -> str:
    return os.path.join(data_path, "nebula", str(space_id))


def space_data_dir(data_path: str, space_id: int) -> str:
    return os.path.join(space_dir(data_path, space_id), "data")


def space_wal_dir(data_path: str, space_id: int, part_id: int | None = None) -> str:
    d = os.path.join(space_dir(data_path, space_id), "wal")
    return d if part_id is None else os.path.join(d, str(part_id))


def rocksdb_wal_dir(rocksdb_wal_dir: str, space_id: int) -> str:
    """RocksEngineConfig.cpp: RocksDB's own WAL of a space with ``--rocksdb_wal_dir``."""
    return os.path.join(rocksdb_wal_dir, "rocksdb_wal", str(space_id))


def space_checkpoint_dir(data_path: str, space_id: int, name: str) -> str:
    return os.path.join(space_dir(data_path, space_id), "checkpoints", name)


def data_path_for_part(data_paths: list[str], part_id: int) -> int:
    """Index of the data path that holds ``part_id`` on a storaged."""
    return part_id % len(data_paths)


# ---------------------------------------------------------------------------------------------
# process plumbing


class Service:
    """Base of a stand-in process: flags, pid file, log file, SIGTERM, JSON admin HTTP server
    and a plain TCP listener on ``--port`` (so "port closed" means "service down")."""

    name = "service"
    thrift_port_listener = True  # metad replaces it with its Thrift server

    def __init__(self, argv: list[str]) -> None:
        self.flags: Flags = parse_flags(argv)
        self.local_ip = self.flags.str("local_ip", "127.0.0.1")
        self.port = self.flags.int("port")
        self.ws_http_port = self.flags.int("ws_http_port", self.port + 10000)
        self.stop_event = threading.Event()
        self.routes: dict[tuple[str, str], Callable[[bytes, dict[str, str]], Any]] = {}
        self.log = logging.getLogger(f"brsm.sandbox.{self.name}")
        self._servers: list[socketserver.BaseServer] = []
        self._pid_file: str | None = None
        self.route("GET", "/status", lambda body, q: self.status())

    # -- overridables
    def status(self) -> dict[str, Any]:
        return {"status": "running", "service": self.name, "pid": os.getpid(),
                "addr": f"{self.local_ip}:{self.port}"}

    def start(self) -> None:  # open stores, start threads
        pass

    def shutdown(self) -> None:  # close stores
        pass

    # -- helpers
    def route(self, method: str, path: str, fn: Callable[[bytes, dict[str, str]], Any]) -> None:
        self.routes[(method, path)] = fn

    def _setup_logging(self) -> None:
        log_dir = self.flags.get("log_dir")
        handlers: list[logging.Handler] = []
        if log_dir:
            os.makedirs(log_dir, exist_ok=True)
            handlers.append(logging.FileHandler(os.path.join(log_dir, f"nebula-{self.name}.log")))
        else:
            handlers.append(logging.StreamHandler(sys.stderr))
        logging.basicConfig(level=logging.INFO, handlers=handlers, force=True,
                            format="%(asctime)s %(levelname)s %(name)s %(threadName)s: %(message)s")

    def _write_pid_file(self) -> None:
        path = self.flags.get("pid_file")
        if not path:
            return
        try:
            with open(path) as fh:
                old = int(fh.read().strip() or 0)
            # ProcessUtils::isPidAvailable: kill(pid, 0) succeeding means "already existed" (here a
            # zombie does not count: this machine's PID 1 does not reap orphans)
            if old and old != os.getpid() and not _zombie(old):
                try:
                    os.kill(old, 0)
                    raise SystemExit(f"{self.name}: pid file {path} names running process {old}")
                except ProcessLookupError:
                    pass
                except PermissionError:
                    raise SystemExit(f"{self.name}: pid file {path} names running process {old}")
        except (FileNotFoundError, ValueError):
            pass
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w") as fh:
            fh.write(f"{os.getpid()}\n")
        os.replace(tmp, path)
        self._pid_file = path

    def _remove_pid_file(self) -> None:
        if self._pid_file:
            try:
                with open(self._pid_file) as fh:
                    if int(fh.read().strip() or 0) == os.getpid():
                        os.unlink(self._pid_file)
            except (OSError, ValueError):
                pass

    def serve_in_thread(self, server: socketserver.BaseServer, name: str) -> None:
        self._servers.append(server)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=name,
                         daemon=True).start()

    def _start_port_listener(self) -> None:
        service = self

        class _Drop(socketserver.BaseRequestHandler):
            def handle(self) -> None:  # accept and close: the port is "open"
                service.log.debug("connection on service port from %s", self.client_address)

        srv = _TCPServer((self.local_ip, self.port), _Drop)
        self.serve_in_thread(srv, "port-listener")

    def _start_http(self) -> None:
        srv = _HTTPServer((self.local_ip, self.ws_http_port), _make_http_handler(self))
        self.serve_in_thread(srv, "admin-http")

    def run(self) -> int:
        self._setup_logging()
        self._write_pid_file()
        signal.signal(signal.SIGTERM, lambda *_: self.stop_event.set())
        signal.signal(signal.SIGINT, lambda *_: self.stop_event.set())
        try:
            self.start()  # may wait (storaged: until metad accepts its heartbeat); a SIGTERM ends it
            if self.stop_event.is_set():
                self.log.info("%s stopping before it served", self.name)
                return 0
            # StorageServer::start and GraphDaemon.cpp start the web service before the Thrift server: once
            # the service port accepts connections, the admin HTTP port does too
            self._start_http()
            if self.thrift_port_listener:
                self._start_port_listener()
            self.log.info("%s serving on %s:%d (http %d)", self.name, self.local_ip, self.port,
                          self.ws_http_port)
            while not self.stop_event.wait(0.5):
                pass
            self.log.info("%s stopping", self.name)
            return 0
        except SystemExit:
            raise
        except BaseException:
            self.log.exception("%s failed", self.name)
            return 1
        finally:
            for srv in self._servers:
                try:
                    srv.shutdown()
                    srv.server_close()
                except Exception:  # noqa: BLE001
                    pass
            try:
                self.shutdown()
            except Exception:  # noqa: BLE001
                self.log.exception("shutdown failed")
            self._remove_pid_file()
            logging.shutdown()


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rsplit(b")", 1)[-1].split()[0:1]
    except OSError:
        return False
    return bool(state) and state[0] in (b"Z", b"X")


class _TCPServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 128


class _HTTPServer(http.server.ThreadingHTTPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 128


def http_server(addr: tuple[str, int], routes: dict[tuple[str, str], Callable[[bytes, dict[str, str]], Any]],
                log: logging.Logger) -> socketserver.BaseServer:
    """A JSON-over-HTTP server of ``routes`` only, beside the admin port (metad's Raft port)."""
    owner = types.SimpleNamespace(routes=routes, log=log)
    return _HTTPServer(addr, _make_http_handler(owner))  # type: ignore[arg-type]


class HTTPError(Exception):
    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": message, **extra}


def _make_http_handler(service: Service) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt: str, *args: Any) -> None:  # quiet
            service.log.debug("http %s", fmt % args)

        def _dispatch(self, method: str) -> None:
            parsed = urllib.parse.urlsplit(self.path)
            query = dict(urllib.parse.parse_qsl(parsed.query))
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            fn = service.routes.get((method, parsed.path))
            if fn is None:
                self._reply(404, {"error": f"no route {method} {parsed.path}"})
                return
            try:
                result = fn(body, query)
                status = 200
            except HTTPError as exc:
                status, result = exc.status, exc.body
            except Exception as exc:  # noqa: BLE001
                service.log.exception("http %s %s failed", method, parsed.path)
                status, result = 500, {"error": f"{type(exc).__name__}: {exc}"}
            self._reply(status, result)

        def _reply(self, status: int, result: Any) -> None:
            data = json.dumps(result).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            try:
                self.wfile.write(data)
            except OSError as exc:
                if exc.errno not in (errno.EPIPE, errno.ECONNRESET):
                    raise

        def do_GET(self) -> None:  # noqa: N802
            self._dispatch("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._dispatch("POST")

    return Handler


def json_body(body: bytes) -> dict[str, Any]:
    if not body:
        return {}
    try:
        obj = json.loads(body)
    except ValueError as exc:
        raise HTTPError(400, f"bad JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise HTTPError(400, "JSON body must be an object")
    return obj


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
