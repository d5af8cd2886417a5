"""The direct-path helper's channel: the program sent to a host, and JSON lines to and from it."""
from __future__ import annotations

from collections.abc import Callable

import asyncssh

from brsm.concurrency import Overdue, bounded
from brsm.errors import RemoteError


def direct_helper_source() -> str:
    """The helper's program text, as sent to the hosts (read once)."""
    global _HELPER_SOURCE
    if _HELPER_SOURCE is None:
        import pathlib

        _HELPER_SOURCE = (pathlib.Path(__file__).parent / "direct_helper.py").read_text()
    return _HELPER_SOURCE


_HELPER_SOURCE: str | None = None


class HelperProcess:
    """brsm.ports.HelperChannel over one SSH channel. What the helper writes to stderr is kept (the
    tail) for the error that ends it; it never holds a URL (the helper reports errors without them)."""

    def __init__(self, host: str, proc: asyncssh.SSHClientProcess, release: Callable[[], None]) -> None:
        self.host, self._p, self._release = host, proc, release
        self._closed = False

    async def send(self, msg: dict) -> None:
        import json

        try:
            self._p.stdin.write(json.dumps(msg) + "\n")
            await self._p.stdin.drain()
        except (asyncssh.Error, OSError, BrokenPipeError) as e:
            raise RemoteError(f"{self.host}: the direct-path helper stopped taking input: {type(e).__name__}",
                              host=self.host) from e

    async def receive(self) -> dict | None:
        import json

        try:
            line = await self._p.stdout.readline()
        except (asyncssh.Error, OSError) as e:
            raise RemoteError(f"{self.host}: lost the direct-path helper: {type(e).__name__}: {e}",
                              host=self.host) from e
        if not line:
            return None
        try:
            return json.loads(line)
        except ValueError:
            return {"error": {"status": 0, "code": "BadHelperOutput", "message": line[:200]}, "n": 0, "fatal": True}

    async def close(self, *, at_once: bool = False) -> int | None:
        if self._closed:
            return self._p.exit_status
        self._closed = True
        try:
            try:
                if not at_once:
                    self._p.stdin.write('{"op": "exit"}\n')
                self._p.stdin.write_eof()
            except (asyncssh.Error, OSError):
                pass
            try:
                await bounded(self._p.wait_closed(), 10)
            except (Overdue, asyncssh.Error, OSError):
                self._p.close()
            return self._p.exit_status
        finally:
            self._release()
