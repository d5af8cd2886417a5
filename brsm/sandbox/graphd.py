"""graphd stand-in: heartbeats to metad as GRAPH, listens on ``--port``, ``/status`` on ``--ws_http_port``.

    python -m brsm.sandbox.graphd --flagfile=F | --local_ip=.. --port=9669 --ws_http_port=19669
        --meta_server_addrs=IP:PORT[,..] --pid_file=P --log_dir=D
"""
from __future__ import annotations

import sys
import threading
from typing import Any

from nebula3.common import ttypes as common
from nebula3.meta import ttypes as meta

from brsm.sandbox import layout
from brsm.sandbox.flags import parse_hostport
from brsm.sandbox.storaged import heartbeat_once, working_dir


class Graphd(layout.Service):
    name = "graphd"

    def __init__(self, argv: list[str]) -> None:
        super().__init__(argv)
        self.meta_addrs = [f"{h}:{p}" for h, p in map(parse_hostport, self.flags.list("meta_server_addrs"))]
        self.last_hb = None

    def status(self) -> dict[str, Any]:
        st = super().status()
        st["registered"] = self.last_hb is not None
        return st

    def start(self) -> None:
        threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True).start()

    def _heartbeat_loop(self) -> None:
        client = None
        dir_info = common.DirInfo(root=working_dir().encode(), data=[])
        while not self.stop_event.is_set():
            try:
                # role GRAPH: no cluster id is sent, checked or kept (MetaClient::heartbeat keeps
                # cluster.id for STORAGE roles only)
                client, _resp = heartbeat_once(self, client, meta.HostRole.GRAPH, dir_info)
            except Exception as exc:  # noqa: BLE001
                self.log.debug("heartbeat failed: %s", exc)
                if client:
                    client.close()
                client = None
            self.stop_event.wait(1.0)


def main(argv: list[str] | None = None) -> int:
    return Graphd(list(sys.argv[1:] if argv is None else argv)).run()


if __name__ == "__main__":
    sys.exit(main())
