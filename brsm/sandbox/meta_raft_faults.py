"""Faults of the meta Raft (``brsm sandbox fault meta-leader|meta-stop|meta-start``): force a leader
change, stop or start one metad, and wait for a leader (brsm.sandbox.raft elects one)."""
from __future__ import annotations

import time
from typing import Any

from brsm.sandbox import control
from brsm.sandbox.errors import SandboxFailure, SandboxUsageError
from brsm.sandbox.hosts import Host, run_service


def _metas(state: dict[str, Any]) -> dict[str, Host]:
    return {h["name"]: Host.from_json(h) for h in state["hosts"] if "metad" in h["services"]}


def raft_states(state: dict[str, Any]) -> dict[str, dict[str, Any] | None]:
    """Every metad's Raft state (None for one that does not answer)."""
    out: dict[str, dict[str, Any] | None] = {}
    for name, h in _metas(state).items():
        try:
            out[name] = control.http_call(h.http_addr("metad"), "GET", "/raft/state", timeout=5)
        except Exception:  # noqa: BLE001 - down
            out[name] = None
    return out


def current_leader(state: dict[str, Any]) -> str | None:
    """The meta address every answering metad agrees leads (and which says so itself), or None."""
    states = [s for s in raft_states(state).values() if s]
    leaders = {s["leader"] for s in states}
    if len(leaders) == 1:
        leader = leaders.pop()
        if any(s["me"] == leader for s in states):
            return leader
    return None


def wait_leader(state: dict[str, Any], timeout: float = 60.0, not_: str | None = None) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        leader = current_leader(state)
        if leader and leader != not_:
            return leader
        time.sleep(0.3)
    raise SandboxFailure(f"no meta leader agreed within {timeout:.0f}s: {raft_states(state)}")


def force_leader_change(state: dict[str, Any], timeout: float = 60.0, hold: float = 30.0) -> dict[str, Any]:
    """The leader steps down and stands for no election for ``hold`` s; a follower times out and is
    elected with what its log holds. Returns the old and the new leader."""
    if len(_metas(state)) < 2:
        raise SandboxUsageError("a leader change needs --meta-hosts 2 or more")
    old = wait_leader(state, timeout)
    host = old.rpartition(":")[0]
    control.http_call((host, int(old.rpartition(":")[2]) + 10000), "POST", "/raft/step_down", {"seconds": hold})
    new = wait_leader(state, timeout, not_=old)
    return {"old_leader": old, "new_leader": new}


def stop_metad(state: dict[str, Any], name: str) -> dict[str, Any]:
    h = _metas(state).get(name)
    if h is None:
        raise SandboxUsageError(f"no meta host {name!r}")
    r = run_service(h, "stop", "metad")
    return {"host": name, "stopped": r.returncode == 0, "output": (r.stdout + r.stderr).strip()}


def start_metad(state: dict[str, Any], name: str) -> dict[str, Any]:
    h = _metas(state).get(name)
    if h is None:
        raise SandboxUsageError(f"no meta host {name!r}")
    r = run_service(h, "start", "metad")
    return {"host": name, "started": r.returncode == 0, "output": (r.stdout + r.stderr).strip()}
