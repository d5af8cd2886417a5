"""nebula-agent stand-in: one per host, heartbeats to metad as role AGENT.

    python -m brsm.sandbox.agent --agent=IP:8888 --meta=IP:9559[,..] [--hbs=1] --pid_file=P --log_dir=D

What it mirrors (vesoft-inc/nebula-agent ``cmd/agent.go``, ``internal/clients/meta.go``): the agent
calls metad's ``agentHeartbeat(AgentHBReq{host, git_info_sha, version})`` every ``--hbs`` seconds;
metad records it in its hosts table with role AGENT (``AgentHBProcessor.cpp``), and
``listCluster`` fails with E_LIST_CLUSTER_NO_AGENT_FAILURE for any host without a live agent
(``ListClusterInfoProcessor.cpp``). The real agent also serves a gRPC API (move/remove dirs, start
and stop services, up/download files) on its port; brsm does not use it (it works over SSH), so the
stand-in only holds the port open.
"""
from __future__ import annotations

import sys
import threading

from nebula3.common import ttypes as common
from nebula3.meta import ttypes as meta

from brsm.sandbox import control, layout
from brsm.sandbox.flags import parse_hostport
from brsm.sandbox.storaged import HeartbeatClient

AGENT_PORT = 8888  # nebula-agent's usual --agent port
GIT_INFO_SHA = b"sandbox"
VERSION = b"3.8.0-sandbox"


class Agent(layout.Service):
    name = "agent"

    def __init__(self, argv: list[str]) -> None:
        super().__init__(argv)
        self.meta_addrs = [f"{h}:{p}" for h, p in map(parse_hostport, self.flags.list("meta_server_addrs"))]
        self.interval = float(self.flags.get("hbs") or 1)
        self.last_hb = None

    def status(self):  # type: ignore[override]
        st = super().status()
        st["registered"] = self.last_hb is not None and self.last_hb.code == common.ErrorCode.SUCCEEDED
        st["services"] = [control.fmt_addr(s.addr) for s in (getattr(self.last_hb, "service_list", None) or [])]
        return st

    def start(self) -> None:
        threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True).start()

    def _heartbeat_loop(self) -> None:
        client: HeartbeatClient | None = None
        req = meta.AgentHBReq(host=common.HostAddr(host=self.local_ip, port=self.port),
                              git_info_sha=GIT_INFO_SHA, version=VERSION)
        while not self.stop_event.is_set():
            try:
                if client is None:
                    client = HeartbeatClient(self.meta_addrs)
                self.last_hb = client.call("agentHeartbeat", req)
            except Exception as exc:  # noqa: BLE001 - metad down or restarting: retry, as the agent does
                self.log.debug("agent heartbeat failed: %s", exc)
                if client:
                    client.close()
                client = None
            self.stop_event.wait(self.interval)


def translate(argv: list[str]) -> list[str]:
    """The agent's own flags (``--agent=H:P``, ``--meta=H:P``) in the stand-ins' flag names."""
    out = []
    for a in argv:
        if a.startswith("--agent="):
            host, port = parse_hostport(a.split("=", 1)[1])
            out += [f"--local_ip={host}", f"--port={port}", f"--ws_http_port={port + 10000}"]
        elif a.startswith("--meta="):
            out.append("--meta_server_addrs=" + a.split("=", 1)[1])
        else:
            out.append(a)
    return out


def main(argv: list[str] | None = None) -> int:
    return Agent(translate(list(sys.argv[1:] if argv is None else argv))).run()


if __name__ == "__main__":
    sys.exit(main())
