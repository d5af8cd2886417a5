"""The cluster leases `brsm gc` reads on every metad host, and which of them it must treat as held: gc
judges what is in use from its journal *and* from the lease of any journal (a lease does not say which
backup its run uses). ``p`` is gc's ports (brsm.workflows.maintenance.MaintenancePorts): only its hosts
are read here."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from brsm.errors import InvalidLease
from brsm.workflows.lease import host_clock, read_holder
from brsm.workflows.lease_holder import LeaseInfo, is_stale, too_far_ahead
from brsm.workflows.layout import lease_path


async def leases(p: Any, topology: dict[str, Any]) -> list[tuple[str, str, LeaseInfo | None, float]]:
    """(metad host, lease dir, its holder or None when it names none, that host's clock now) of every
    lease dir on the cluster. A host that cannot be read raises: "could not look" is never "nobody"."""
    out = []
    for m in topology["meta"]:
        h = p.hosts.host(m["host"])
        path = lease_path(m["root"])
        if await h.exists(path):
            out.append((m["host"], path, await _holder_or_invalid(h, path), await host_clock(h)))
    return out


@dataclass(frozen=True)
class _Invalid:
    """A lease whose holder.json brsm cannot judge: held (nobody can say its run is dead), listed by gc
    as ``invalid_lease`` and removed only with --confirm."""
    why: str

    def describe(self) -> str:
        return f"an invalid holder.json ({self.why})"


async def _holder_or_invalid(h: Any, path: str) -> Any:
    try:
        return await read_holder(h, path)
    except InvalidLease as e:
        return _Invalid(e.message)


def lease_problem(info: Any, now: float) -> str | None:
    if isinstance(info, _Invalid):
        return info.why
    return too_far_ahead(info, now) if info is not None else None


async def live_leases(p: Any, topology: dict[str, Any] | None) -> list[LeaseInfo]:
    """The cluster leases held now by a live run (not stale, judged by the lease host's clock) that is
    not this gc: what they own is not gc's to judge from this journal, whatever it says (otherwise a
    second journal's gc would drop a running backup's snapshot and delete its upload)."""
    if p.hosts is None or topology is None:
        return []
    return [info for _host, _path, info, now in await leases(p, topology)
            if info is not None and (lease_problem(info, now) is not None or not is_stale(info, now))]
