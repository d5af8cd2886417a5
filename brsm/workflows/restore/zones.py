"""The zones restoreMeta will rewrite, for the zone check of CHECKED (brsm.workflows.topology.zone_problem).

A full restore sets metad's data aside and ingests the backup's tables, so restoreMeta's
``replaceHostInZone`` walks the BACKUP's zone table, not the cluster's: a zone merged or split since
the backup is what it was then. brsm's manifest records the zones at backup time; a backup made by
nebula-br (or an older brsm) records none, and its zone table is read from the backup itself, the
``__zones__.sst`` metad exported (MetaServiceUtils::backupTables, RocksEngine::backupTable names the
file after the table's prefix; an empty table is exported as no file at all). A restore of chosen
spaces leaves the cluster's zone table in place: then the cluster's zones are the ones that matter.
"""
from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Any

from brsm.errors import ObjectNotFound, VerificationFailed
from brsm.workflows import catalog
from brsm.workflows.layout import meta_sst_key
from brsm.workflows.restore.context import TAMPERED, ports
from brsm.workflows.restore.state import RestoreContext

ZONES_TABLE = b"__zones__"  # MetaKeyUtils.cpp: systemTableMaps "zones"
ZONES_SST = "__zones__.sst"
MAX_ZONES_SST_BYTES = 64 << 20  # a zone per host: kilobytes; more is no zone table


@dataclass(frozen=True)
class RestoredZones:
    """The zones restoreMeta will walk, and where brsm read them (said with a refusal)."""

    zones: dict[str, list[str]]
    source: str

    @property
    def from_cluster(self) -> bool:
        return self.source == CLUSTER


CLUSTER = "the cluster"


def parse(rows: dict[bytes, bytes]) -> dict[str, list[str]]:
    """The zone rows of a meta table dump → {zone: its hosts}. Key ``__zones__<name>``
    (MetaKeyUtils::zoneKey), value ``"h:p, h:p"`` (zoneVal: NetworkUtils::toHostsStr; read back by
    toHosts, which splits on ',' and trims). Rows of other tables are ignored.

    >>> parse({b"__zones__rack1": b"10.0.0.1:9779, 10.0.0.2:9779", b"__id__": b"x"})
    {'rack1': ['10.0.0.1:9779', '10.0.0.2:9779']}
    """
    return {k[len(ZONES_TABLE):].decode("utf-8", "replace"):
            [h.strip() for h in v.decode("utf-8", "replace").split(",") if h.strip()]
            for k, v in sorted(rows.items()) if k.startswith(ZONES_TABLE)}


def sst_file(meta_files: list[str]) -> str | None:
    """The backup's zone table among its meta files (full paths or base names), None when it has none.

    >>> sst_file(["/m/nebula/0/checkpoints/B/__spaces__.sst", "__zones__.sst"]), sst_file(["__id__.sst"])
    ('__zones__.sst', None)
    """
    return next((f for f in meta_files if posixpath.basename(f) == ZONES_SST), None)


async def restored(ctx: RestoreContext, m: dict[str, Any], topo: dict[str, Any]) -> RestoredZones:
    """The zones restoreMeta will find once the backup's tables are in."""
    if not m.get("all_spaces", True):
        return RestoredZones(topo.get("zones") or {}, CLUSTER)
    recorded = (m.get("topology") or {}).get("zones")
    if recorded is not None:
        return RestoredZones(recorded, "the backup's manifest")
    f = sst_file(list(m.get("meta_files") or []))
    if f is None:
        return RestoredZones({}, "the backup (no zone table)")
    codec = ports(ctx).meta_sst
    if codec is None:  # the in-process fakes keep no SSTs: the cluster's zones are the best guess
        return RestoredZones(topo.get("zones") or {}, CLUSTER)
    name = ctx.data.params.name
    key = meta_sst_key(name, f)
    st = ports(ctx).storage
    try:
        big = catalog.too_big(key, (await st.stat(key)).size, MAX_ZONES_SST_BYTES)
        if big:
            raise VerificationFailed(f"backup {name}: {big}", hint=TAMPERED)
        blob = await st.get_bytes(key)
    except ObjectNotFound as e:
        raise VerificationFailed(f"backup {name} is damaged: {key} is missing", hint=TAMPERED) from e
    try:
        rows = codec.read([blob])
    except ValueError as e:
        raise VerificationFailed(f"backup {name}: {key} is no meta SST ({e})", hint=TAMPERED) from e
    return RestoredZones(parse(rows), f"the backup's {ZONES_SST}")
