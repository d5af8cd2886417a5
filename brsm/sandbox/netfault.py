"""A small TCP fault proxy for the sandbox's SSH faults (asyncio, loopback only, bounded).

``python -m brsm.sandbox.netfault --listen 127.k.0.101:22 --upstream 127.k.0.101:10022 --mode drop --after-bytes 65536``

Modes (per accepted connection):
  pass   forward both ways unchanged (optionally ``--rate`` bytes/s per direction: a slow link)
  drop   forward, then cut the connection (RST) once ``--after-bytes`` bytes have passed in total,
         both directions counted: a transfer larger than N dies mid-way
  close  accept and close at once: the client sees "Connection closed by remote host"
         before the SSH banner (an sshd refusing connections, e.g. MaxStartups)
  hang   accept and never answer (a black hole: the client's own timeout decides)

Bounded: at most ``--max-conns`` connections at once (more are closed at accept), 64 KiB reads,
one pending write per direction (backpressure via ``drain``). Listens on 127.0.0.0/8 only.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import os
import signal
import socket
import struct
import sys

CHUNK = 64 * 1024
MODES = ("pass", "drop", "close", "hang")


def _split(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host, int(port)


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0), like a link that died, not a polite FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(Exception):
        writer.transport.abort()


class Proxy:
    def __init__(self, listen: str, upstream: str, mode: str, after_bytes: int = 0, rate: float = 0.0,
                 max_conns: int = 64) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        self.listen = _split(listen)
        self.upstream = _split(upstream)
        for host in (self.listen[0], self.upstream[0]):
            if not ipaddress.ip_address(host).is_loopback:
                raise ValueError(f"{host} is not a loopback address")
        self.mode = mode
        self.after_bytes = after_bytes
        self.rate = rate
        self.max_conns = max_conns
        self.active = 0
        self.stats = {"accepted": 0, "cut": 0, "closed_at_once": 0, "refused_busy": 0}
        self._hung: set[asyncio.StreamWriter] = set()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, budget: list[int],
                    cut: asyncio.Event) -> None:
        try:
            while not cut.is_set():
                data = await reader.read(CHUNK)
                if not data:
                    break
                if self.mode == "drop":
                    room = budget[0]
                    if len(data) >= room:
                        if room > 0:
                            writer.write(data[:room])
                            with contextlib.suppress(Exception):
                                await writer.drain()
                        budget[0] = 0
                        cut.set()
                        return
                    budget[0] -= len(data)
                writer.write(data)
                await writer.drain()
                if self.rate > 0:
                    await asyncio.sleep(len(data) / self.rate)
            if not cut.is_set():
                with contextlib.suppress(Exception):
                    if writer.can_write_eof():
                        writer.write_eof()
        except (ConnectionError, OSError):
            cut.set()

    async def handle(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        self.stats["accepted"] += 1
        if self.active >= self.max_conns:
            self.stats["refused_busy"] += 1
            _abort(cwriter)
            return
        if self.mode == "close":
            self.stats["closed_at_once"] += 1
            cwriter.close()
            return
        if self.mode == "hang":
            self._hung.add(cwriter)
            return
        self.active += 1
        try:
            try:
                ureader, uwriter = await asyncio.wait_for(asyncio.open_connection(*self.upstream), 10)
            except (OSError, asyncio.TimeoutError):
                _abort(cwriter)
                return
            budget = [self.after_bytes]
            cut = asyncio.Event()
            t1 = asyncio.ensure_future(self._pump(creader, uwriter, budget, cut))
            t2 = asyncio.ensure_future(self._pump(ureader, cwriter, budget, cut))
            waiter = asyncio.ensure_future(cut.wait())
            both = asyncio.gather(t1, t2, return_exceptions=True)
            await asyncio.wait({waiter, both}, return_when=asyncio.FIRST_COMPLETED)
            if cut.is_set():
                if self.mode == "drop" and budget[0] == 0:
                    self.stats["cut"] += 1
                _abort(cwriter)
                _abort(uwriter)
            else:
                cwriter.close()
                uwriter.close()
            for t in (t1, t2, waiter):
                t.cancel()
            with contextlib.suppress(BaseException):
                await both
        finally:
            self.active -= 1

    async def serve(self, ready_file: str | None = None) -> None:
        server = await asyncio.start_server(self.handle, *self.listen, reuse_address=True, backlog=128)
        if ready_file:
            tmp = ready_file + ".tmp"
            with open(tmp, "w") as fh:
                fh.write(f"{os.getpid()}\n")
            os.replace(tmp, ready_file)
        print(f"netfault {self.mode} listening on {self.listen[0]}:{self.listen[1]} -> "
              f"{self.upstream[0]}:{self.upstream[1]} after_bytes={self.after_bytes} rate={self.rate}",
              file=sys.stderr, flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with server:
            await stop.wait()
        for w in self._hung:
            _abort(w)
        print(f"netfault stopped {self.stats}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m brsm.sandbox.netfault", description=__doc__.splitlines()[0])
    ap.add_argument("--listen", required=True)
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--mode", choices=MODES, default="pass")
    ap.add_argument("--after-bytes", type=int, default=0)
    ap.add_argument("--rate", type=float, default=0.0, help="bytes per second per direction (0 = unlimited)")
    ap.add_argument("--max-conns", type=int, default=64)
    ap.add_argument("--ready-file", default=None, help="written (with our pid) once listening")
    ap.add_argument("--tag", default="", help="free text (the sandbox dir), shown in the command line")
    args = ap.parse_args(argv)
    proxy = Proxy(args.listen, args.upstream, args.mode, args.after_bytes, args.rate, args.max_conns)
    asyncio.run(proxy.serve(args.ready_file))
    return 0


if __name__ == "__main__":
    sys.exit(main())

