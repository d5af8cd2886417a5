"""The meta SST of a restore of chosen spaces (brsm.workflows.restore.meta_ingest): exactly the chosen
spaces' keys, id counters never below a live id; and the host maps such a restore refuses."""
from __future__ import annotations

from brsm.adapters.meta_sst import RocksMetaSst
from brsm.ports import SpaceSchema
from brsm.workflows.restore import meta_ingest as mi
from brsm.workflows.restore.partial_meta import moved_cluster_hosts, refusal


def backup_rows() -> dict[bytes, bytes]:
    """A backup of space 5 ('s'): one tag (id 6), one edge (7), one index (8); __id__ 5, local id 8."""
    return {
        b"__id__": mi.i32(5), b"__last_update_time__": (1).to_bytes(8, "little"),
        b"__spaces__" + mi.i32(5): b"desc", b"__parts__" + mi.i32(5) + mi.i32(1): b"hosts",
        mi.INDEX + b"\x01s": mi.i32(5),
        mi.tag_key(5, 6, 0): b"tag", mi.name_key(mi.TAG, 5, "t"): mi.i32(6),
        mi.edge_key(5, 7, 0): b"edge", mi.name_key(mi.EDGE, 5, "e"): mi.i32(7),
        mi.index_key(5, 8): b"idx", mi.name_key(mi.IDX, 5, "i"): mi.i32(8),
        mi.LOCAL_ID + mi.i32(5): mi.i32(8),
    }


LIVE = {5: SpaceSchema(tags=((6, "t", 0), (9, "late", 0)), edges=((7, "e", 0),), indexes=((8, "i"), (10, "late_i"))),
        11: SpaceSchema(tags=((12, "other", 0),))}


def test_schema_made_after_the_backup_is_deleted_and_the_backups_put():
    p = mi.plan(backup_rows(), {5: "s"}, {"s": 5, "o": 11}, LIVE, now_ms=99)
    assert p.deletes == {mi.tag_key(5, 9, 0), mi.name_key(mi.TAG, 5, "late"), mi.index_key(5, 10),
                         mi.name_key(mi.IDX, 5, "late_i")}
    assert {k for k in backup_rows() if k not in (b"__id__", b"__last_update_time__", mi.LOCAL_ID + mi.i32(5))} \
        <= set(p.puts)
    assert not p.deletes & set(p.puts)
    # nothing of the other space is put or deleted
    assert all(mi.space_of(k) in (None, 5) for k in set(p.puts) | p.deletes)


def test_id_counters_never_fall_below_a_live_id():
    p = mi.plan(backup_rows(), {5: "s"}, {"s": 5, "o": 11}, LIVE, now_ms=99)
    assert mi.from_i32(p.puts[b"__id__"]) == 12  # the largest live id (space 11's tag), above the backup's 5
    assert mi.from_i32(p.puts[mi.LOCAL_ID + mi.i32(5)]) == 10  # the largest id live in space 5, above the backup's 8
    assert p.puts[b"__last_update_time__"] == (99).to_bytes(8, "little")
    # a cluster whose ids are all below the backup's keeps the backup's
    low = mi.plan(backup_rows(), {5: "s"}, {"s": 5}, {5: SpaceSchema()}, now_ms=1)
    assert mi.from_i32(low.puts[b"__id__"]) == 5 and mi.from_i32(low.puts[mi.LOCAL_ID + mi.i32(5)]) == 8


def test_the_sst_deletes_and_puts_on_ingest(tmp_path):
    """RocksDB's own format: ingesting the SST deletes the tombstoned keys and writes the puts."""
    import rocksdict
    codec = RocksMetaSst()
    p = mi.plan(backup_rows(), {5: "s"}, {"s": 5, "o": 11}, LIVE, now_ms=99)
    blob = codec.write(p.puts, p.deletes)
    db = rocksdict.Rdict(str(tmp_path / "db"), rocksdict.Options(raw_mode=True))
    late = {mi.tag_key(5, 9, 0): b"late", mi.name_key(mi.TAG, 5, "late"): mi.i32(9), b"__spaces__" + mi.i32(11): b"o"}
    for k, v in late.items():
        db[k] = v
    (tmp_path / "x.sst").write_bytes(blob)
    db.ingest_external_file([str(tmp_path / "x.sst")])
    rows = dict(db.items())
    db.close()
    assert mi.tag_key(5, 9, 0) not in rows and mi.name_key(mi.TAG, 5, "late") not in rows
    assert rows[b"__spaces__" + mi.i32(11)] == b"o"  # another space untouched
    assert rows[mi.tag_key(5, 6, 0)] == b"tag"
    assert codec.read([blob]) == {k: v for k, v in p.puts.items()}


def test_a_host_of_the_cluster_maps_to_itself_or_the_restore_is_refused():
    cluster = ["a:9779", "b:9779"]
    assert refusal([("a:9779", "a:9779"), ("b:9779", "b:9779")], cluster) is None
    assert refusal([("old:9779", "a:9779")], cluster) is None  # a backup host the cluster does not have
    why = refusal([("a:9779", "b:9779"), ("b:9779", "a:9779")], cluster)
    assert why and "a:9779 → b:9779" in why and "every space" in why
    assert moved_cluster_hosts([("a:9779", "c:9779")], cluster) == [("a:9779", "c:9779")]


async def test_schema_a_dropped_space_left_behind_is_found_after_the_ingest():
    """A space dropped since the backup: its leftover schema (DropSpaceProcessor keeps it) could not be
    listed before the ingest; once the space is back, what it lists beyond the ingested SST is found."""
    from types import SimpleNamespace

    from brsm.workflows.restore.partial_meta import leftover_keys

    class Meta:
        async def list_schema(self, sid: int) -> SpaceSchema:
            return SpaceSchema(tags=((6, "t", 0), (20, "made_then_dropped", 0)), edges=((7, "e", 0),),
                               indexes=((8, "i"),))

    codec = RocksMetaSst()
    p = mi.plan(backup_rows(), {5: "s"}, {}, {}, now_ms=1)  # the space was not live: nothing listed
    ctx = SimpleNamespace(ports=SimpleNamespace(meta=Meta(), meta_sst=codec))
    extra = await leftover_keys(ctx, {"spaces": {"5": "s"}}, codec.write(p.puts, p.deletes))
    assert extra == {mi.tag_key(5, 20, 0), mi.name_key(mi.TAG, 5, "made_then_dropped")}
