"""The state every cluster-touching kind (backup, restore) folds the same way: what its preflight found
and the storage probes it journaled.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from brsm.engine import events as ev
from brsm.engine.runner import StepContext
from brsm.engine.state import KindState, on, on_each

PREFLIGHT_PASSED = ev.PREFLIGHT_PASSED
PROBE_WRITTEN = "ProbeWritten"  # {key[, upload]}: a probe object (or direct-path upload) is about to exist
PROBE_REMOVED = "ProbeRemoved"  # {key}: it is gone


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

    @on_each(PROBE_WRITTEN, PROBE_REMOVED, sets=("probes",))
    def _probes(self, type_: str, d: dict[str, Any]) -> None:
        if type_ == PROBE_WRITTEN:
            self.probes[d["key"]] = "upload" if d.get("upload") else "object"
        else:
            self.probes.pop(d["key"], None)

    def left_effects(self) -> bool:
        return bool(self.probes)

    @property
    def topo(self) -> dict[str, Any]:
        """The topology, for a step that runs only after the preflight journaled it."""
        if self.topology is None:
            raise AssertionError("the preflight's topology is not journaled yet")
        return self.topology


ClusterContext = StepContext[ClusterState]
