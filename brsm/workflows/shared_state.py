"""The state every cluster-touching kind (backup, restore) folds the same way: what its preflight found
and the storage probes it journaled.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from brsm.engine import events as ev
from brsm.engine.runner import StepContext
from brsm.engine.state import ABSENT, Event, KindState, Params, on, on_each

PREFLIGHT_PASSED = ev.PREFLIGHT_PASSED
PROBE_WRITTEN = "ProbeWritten"
PROBE_REMOVED = "ProbeRemoved"


@dataclass(frozen=True)
class ProbeWritten(Event):
    """A probe object (or, ``upload``, a direct-path probe upload) is about to exist in the storage."""

    TYPE: ClassVar[str] = PROBE_WRITTEN
    key: str
    upload: bool = ABSENT


@dataclass(frozen=True)
class ProbeRemoved(Event):
    TYPE: ClassVar[str] = PROBE_REMOVED
    key: str


@dataclass(frozen=True)
class CommonParams(Params):
    """What every operation's params may say."""

    config: str | None = None  # the config file the CLI read (for hints, metrics)
    journal_id: str | None = None  # with the op id, names what the operation leaves (engine.step_context.op_ref)
    lease_ttl: float | None = None  # seconds; the ports' [cluster] lease_ttl comes first, 300 without either

    @staticmethod
    def common(d: Mapping[str, Any]) -> dict[str, Any]:
        return {"config": d.get("config"), "journal_id": d.get("journal_id"), "lease_ttl": d.get("lease_ttl")}

    @classmethod
    def from_data(cls, d: Mapping[str, Any]) -> "CommonParams":
        return cls(**cls.common(d))


@dataclass(frozen=True)
class TransferParams(CommonParams):
    """A backup's or restore's: how files move."""

    concurrency: int = 8  # files at once
    per_host: int = 4  # files at once per host
    rate_limit: str | None = None  # "50M" and the like (limits.parse_rate)
    data_path: str | None = None  # asked for: "via-brsm" (None too), "direct" or "auto" (direct.choose)

    @classmethod
    def transfer(cls, d: Mapping[str, Any]) -> dict[str, Any]:
        return {**cls.common(d), "concurrency": int(d.get("concurrency") or 8), "per_host": int(d.get("per_host") or 4),
                "rate_limit": d.get("rate_limit"), "data_path": d.get("data_path")}


@dataclass
class ClusterState(KindState):
    # the cluster as the preflight found it (brsm.workflows.common.discover_topology); None before
    topology: dict[str, Any] | None = None
    # the data path the preflight chose (brsm.workflows.direct: "via-brsm" or "direct"), and why
    data_path: str | None = None
    data_path_why: str = ""
    # probe key -> "object" or "upload", written and not yet removed (what a rollback still removes)
    probes: dict[str, str] = field(default_factory=dict)

    @on(PREFLIGHT_PASSED, sets=("topology", "data_path", "data_path_why"))
    def _preflight(self, d: dict[str, Any]) -> None:
        if "topology" in d:
            self.topology = d["topology"]
        if "data_path" in d:  # kept for COPIED (or DOWNLOADED) and every resume
            self.data_path, self.data_path_why = d["data_path"], d.get("data_path_why", "")

    @on_each(ProbeWritten, ProbeRemoved, sets=("probes",))
    def _probes(self, _type: str, e: ProbeWritten | ProbeRemoved) -> None:
        if isinstance(e, ProbeWritten):
            self.probes[e.key] = "upload" if e.upload else "object"
        else:
            self.probes.pop(e.key, None)

    def left_effects(self) -> bool:
        return bool(self.probes)

    @property
    def topo(self) -> dict[str, Any]:
        """The topology, for a step that runs only after the preflight journaled it."""
        if self.topology is None:
            raise AssertionError("the preflight's topology is not journaled yet")
        return self.topology


ClusterContext = StepContext[ClusterState]
