"""Which zones the restore's zone check looks at: for a backup of all spaces, the backup's own zone
table (restoreMeta's replaceHostInZone walks what was ingested), read from its ``__zones__.sst`` when
the manifest records none (a nebula-br backup). Real SSTs (rocksdict), memory storage."""
from __future__ import annotations

import asyncio
import doctest
from types import SimpleNamespace

import pytest

from brsm.adapters.meta_sst import RocksMetaSst
from brsm.adapters.storage import open_storage
from brsm.errors import VerificationFailed
from brsm.workflows import topology
from brsm.workflows.restore import zones

NAME = "BACKUP_2026_01_01_00_00_00"
CLUSTER = {"default_zone_10.0.0.1_9779": ["10.0.0.1:9779"], "default_zone_10.0.0.2_9779": ["10.0.0.2:9779"]}
MOVE = [("10.0.0.1:9779", "10.0.0.2:9779"), ("10.0.0.2:9779", "10.0.0.1:9779")]


def test_doctests():
    assert doctest.testmod(zones).failed == 0


def _nebula_br_manifest(meta_files):
    # what restore.source builds from a nebula-br backup's .meta: no zones in its topology
    return {"backup_name": NAME, "tool": "nebula-br", "all_spaces": True, "spaces": {"1": "s"},
            "meta_files": meta_files, "topology": {"storage": []}, "files": []}


def _restored(m, sst: bytes | None, codec=RocksMetaSst()):
    async def go():
        st = open_storage("memory://b/p")
        if sst is not None:
            await st.put_bytes(f"{NAME}/meta/__zones__.sst", sst)
        ctx = SimpleNamespace(ports=SimpleNamespace(storage=st, meta_sst=codec), data=SimpleNamespace(params=SimpleNamespace(name=NAME)))
        return await zones.restored(ctx, m, {"zones": CLUSTER})
    return asyncio.run(go())


def test_a_nebula_br_backups_merged_zone_is_read_from_its_sst_not_the_clusters():
    sst = RocksMetaSst().write({b"__zones__rack1": b"10.0.0.1:9779, 10.0.0.2:9779",
                                b"__zones__default_zone_10.0.0.3_9779": b"10.0.0.3:9779"}, set())
    got = _restored(_nebula_br_manifest(["__spaces__.sst", "__zones__.sst"]), sst)
    assert got.zones == {"rack1": ["10.0.0.1:9779", "10.0.0.2:9779"], "default_zone_10.0.0.3_9779": ["10.0.0.3:9779"]}
    assert got.source == "the backup's __zones__.sst" and not got.from_cluster
    assert "zone rack1 holds 2 hosts" in topology.zone_problem(got.zones, MOVE)


def test_a_nebula_br_backups_single_zones_are_not_replaced_by_a_merged_live_zone():
    sst = RocksMetaSst().write({b"__zones__z1": b"10.0.0.1:9779", b"__zones__z2": b"10.0.0.2:9779"}, set())
    got = _restored(_nebula_br_manifest(["/m/nebula/0/checkpoints/B/__zones__.sst"]), sst)
    assert got.zones == {"z1": ["10.0.0.1:9779"], "z2": ["10.0.0.2:9779"]}
    assert topology.zone_problem(got.zones, MOVE) is None


def test_the_manifests_zones_win_and_chosen_spaces_look_at_the_cluster():
    m = _nebula_br_manifest(["__zones__.sst"]) | {"topology": {"storage": [], "zones": {"z": ["a:1"]}}}
    assert _restored(m, None) == zones.RestoredZones({"z": ["a:1"]}, "the backup's manifest")
    chosen = _nebula_br_manifest(["__zones__.sst"]) | {"all_spaces": False}
    assert _restored(chosen, None) == zones.RestoredZones(CLUSTER, zones.CLUSTER)


def test_no_zone_table_in_the_backup_is_no_zone():
    """MetaServiceUtils::backupTables skips an empty table (E_BACKUP_EMPTY_TABLE): no file, no zone."""
    assert _restored(_nebula_br_manifest(["__spaces__.sst"]), None) == zones.RestoredZones({}, "the backup (no zone table)")


@pytest.mark.parametrize("sst", [None, b"not an sst at all" * 8])
def test_a_missing_or_unreadable_zone_table_is_a_damaged_backup(sst):
    with pytest.raises(VerificationFailed, match="__zones__.sst"):
        _restored(_nebula_br_manifest(["__zones__.sst"]), sst)
