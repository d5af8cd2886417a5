"""An HTTP server on a daemon thread, started, addressed and stopped one way: the S3 fault proxy
and the OSS endpoint both run like this (in their own process, or in a test's)."""
from __future__ import annotations

import threading
from http.server import HTTPServer


class ServedInThread:
    thread_name = "http-server"

    def __init__(self, httpd: HTTPServer) -> None:
        self._httpd = httpd
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        return self._httpd.server_address[:2]

    @property
    def endpoint(self) -> str:
        h, p = self.address
        return f"http://{h}:{p}"

    def start(self) -> "ServedInThread":
        self._thread = threading.Thread(target=self.serve_forever, name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._httpd.serve_forever(poll_interval=0.05)

    def shutdown(self) -> None:
        """Stop serve_forever (from another thread, e.g. a signal handler's); close() frees the port."""
        self._httpd.shutdown()

    def close(self) -> None:
        self._httpd.server_close()

    def stop(self) -> None:
        self.shutdown()
        self.close()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
