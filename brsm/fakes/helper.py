"""The direct data path's host side on a FakeHost (implements ``brsm.ports.HelperChannel``), so the
property campaigns can drive ``--data-path direct`` through crashes and faults.

It speaks the JSON messages brsm.adapters.direct_helper documents, as a task on brsm's own event loop,
and shares no code with that helper. Its "HTTP" is the cluster's ``signed_http`` (what the test
wires in: MemoryStorage.signed_request, for the URLs that store signed; unset, no store answers). It reads and writes the FakeCluster's machine files and meets the cluster's faults:
``host_down`` (the channel ends; brsm sees the helper end), ``disconnect`` (the same, mid-file). It
dies with its channel: :meth:`close` or a dead brsm process (the campaigns cancel every task) ends it
between two steps, never leaving a part half-stored.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
from typing import Any

TMP = ".brsm-tmp"  # what the real helper names its temp files


class FakeHelper:
    def __init__(self, host: Any) -> None:
        self.host = host
        self._in: asyncio.Queue = asyncio.Queue()
        self._out: asyncio.Queue = asyncio.Queue()
        self._out.put_nowait({"hello": 1, "python": "3.11.0"})
        self._task = asyncio.ensure_future(self._serve())

    # -- HelperChannel -------------------------------------------------------------------------
    async def send(self, msg: dict[str, Any]) -> None:
        from brsm.errors import RemoteError

        if self._task.done():
            raise RemoteError(f"{self.host.name}: the direct-path helper stopped taking input: BrokenPipeError",
                              host=self.host.name)
        self._in.put_nowait(msg)

    async def receive(self) -> dict[str, Any] | None:
        if not self._out.empty():
            return self._out.get_nowait()
        get = asyncio.ensure_future(self._out.get())
        try:
            await asyncio.wait({get, self._task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not get.done():
                get.cancel()
                await asyncio.gather(get, return_exceptions=True)
        if get.done() and not get.cancelled():
            return get.result()
        return self._out.get_nowait() if not self._out.empty() else None

    async def close(self, *, at_once: bool = False) -> int | None:
        if not self._task.done():
            self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        return 0 if not self._task.cancelled() else None

    # -- the host side ---------------------------------------------------------------------------
    def _http(self, url: str, method: str, data: bytes = b"", **kw: Any) -> tuple[int, dict[str, Any]]:
        send = self.host.c.signed_http
        if send is None:
            return 0, {"code": "ConnectionRefusedError", "message": "no store reachable from this host"}
        return send(url, method, data, **kw)

    def _gone(self) -> bool:
        """The host or the connection went away: the helper ends (its channel with it)."""
        c, name = self.host.c, self.host.name
        return name not in c.machines or c.faults.take("host_down", name) is not None \
            or c.faults.take("disconnect", name) is not None

    async def _url(self, want: dict[str, Any]) -> str | None:
        self._out.put_nowait(want)
        while True:
            cmd = await self._in.get()
            if "url" in cmd:
                return cmd["url"]
            if cmd.get("op") == "abort":
                return None

    async def _serve(self) -> None:
        while True:
            cmd = await self._in.get()
            op = cmd.get("op")
            if op == "exit":
                return
            if op == "put" and not await self._put(cmd):
                return
            if op == "get" and not await self._get(cmd):
                return
            if op == "probe":
                status, body = self._http(cmd["url"], "PUT", cmd["data"].encode())
                self._out.put_nowait({"probe": True} if status == 200 else
                                     {"probe": False, "error": {"status": status, **body}})

    async def _put(self, cmd: dict[str, Any]) -> bool:
        m = self.host.m
        path, size, part_size, skip = cmd["path"], int(cmd["size"]), int(cmd["part_size"]), int(cmd.get("skip", 0))
        data = m.files.get(m.norm(path))
        if data is None or len(data) != size:
            self._out.put_nowait({"error": {"status": 0, "code": "SizeChanged", "message": f"{path} is not {size} "
                                            "bytes"}, "n": 0, "fatal": True})
            return True
        for n, pos in enumerate(range(0, size, part_size), start=1):
            if n <= skip:
                continue
            chunk = data[pos:pos + part_size]
            md5 = base64.b64encode(hashlib.md5(chunk).digest()).decode()
            while True:
                await asyncio.sleep(0)
                if self._gone():
                    return False
                url = await self._url({"want": "url", "n": n, "size": len(chunk), "md5": md5})
                if url is None:
                    return True
                status, body = self._http(url, "PUT", chunk)
                if status == 200:
                    self._out.put_nowait({"part": n, "etag": body["etag"], "size": len(chunk)})
                    break
                self._out.put_nowait({"error": {"status": status, **body}, "n": n})
        self._out.put_nowait({"file": path, "size": size, "sha256": hashlib.sha256(data).hexdigest()})
        return True

    async def _get(self, cmd: dict[str, Any]) -> bool:
        m = self.host.m
        path, size, want, part_size = cmd["path"], int(cmd["size"]), cmd.get("sha256"), int(cmd["part_size"])
        tmp = m.norm(path + TMP)
        got = bytearray()
        if m.is_dir(tmp):  # a name taken by something not a regular file is refused, as the real helper does
            self._out.put_nowait({"error": {"status": 0, "code": "NotOurs", "message": f"refusing to write {tmp}: "
                                            "a directory brsm did not create is in the way"}, "n": 0, "fatal": True})
            return True
        m.put(tmp, b"")  # a helper that dies leaves its temp file behind, as the real one does
        for n, pos in enumerate(range(0, size, part_size), start=1):
            length = min(part_size, size - pos)
            while True:
                await asyncio.sleep(0)
                if self._gone():
                    return False
                url = await self._url({"want": "url", "n": n, "offset": pos, "size": length})
                if url is None:
                    m.files.pop(tmp, None)
                    return True
                status, body = self._http(url, "GET", offset=pos, length=length)
                if status in (200, 206) and len(body["data"]) == length:
                    break
                err = {"status": status, **body} if "data" not in body else \
                    {"status": status, "code": "ShortRead", "message": f"{len(body['data'])} of {length} bytes"}
                self._out.put_nowait({"error": err, "n": n})
            got += body["data"]
            m.files[tmp] = bytes(got)
            self._out.put_nowait({"got": n, "size": length})
        digest = hashlib.sha256(got).hexdigest()
        if want and digest != want:
            m.files.pop(tmp, None)  # removed before it is reported, as the real helper does
            self._out.put_nowait({"error": {"status": 0, "code": "ChecksumMismatch", "message": f"sha256 {digest}, "
                                            f"the manifest says {want}"}, "n": 0, "fatal": True})
            return True
        m.files.pop(tmp, None)
        m.put(path, bytes(got))
        self._out.put_nowait({"file": path, "size": size, "sha256": digest})
        return True
