"""Schemas, dropSpace and restoreMeta of the sandbox's metad, as Nebula v3.8.0 does them.

Each test names the file of vesoft-inc/nebula (tag v3.8.0) it mirrors. Raw meta keys are read from
metad's RocksDB opened read-only beside the running daemon.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import rocksdict
from nebula3.common import ttypes as common
from nebula3.meta import ttypes as meta

from brsm.sandbox import cluster, control, layout, schema
from brsm.sandbox.data import load as sandbox_load

pytestmark = pytest.mark.sandbox
EC = common.ErrorCode


@pytest.fixture()
def sb(tmp_path):
    state, _ = cluster.up(str(tmp_path), meta_hosts=1, storage_hosts=2, agents=False)
    try:
        sandbox_load(state["meta"][0], spaces=2, size_bytes=1 << 18, seed=5)
        yield tmp_path, state
    finally:
        cluster.down(str(tmp_path))


def call(addr: str, rpc: str, req):
    with control.MetaClient(addr, timeout=30.0, follow_leader=False) as c:
        return c.call(rpc, req)


def raw_meta(state, host: str = "meta1") -> dict[bytes, bytes]:
    """Every key of that metad's RocksDB (opened read-only, as a second reader)."""
    dp = next(h for h in state["hosts"] if h["name"] == host)["data_paths"][0]
    db = rocksdict.Rdict(layout.meta_db_path(dp), rocksdict.Options(raw_mode=True),
                         access_type=rocksdict.AccessType.read_only())
    try:
        return dict(db.items())
    finally:
        db.close()


def space_id(state, name: bytes) -> int:
    r = call(state["meta"][0], "getSpace", meta.GetSpaceReq(space_name=name))
    assert r.code == EC.SUCCEEDED
    return r.item.space_id


def create_tag(state, sid: int, name: bytes) -> int:
    r = call(state["meta"][0], "createTag", meta.CreateTagReq(space_id=sid, tag_name=name, schema=meta.Schema(columns=[])))
    assert r.code == EC.SUCCEEDED, r.code
    return r.id.get_tag_id()


def test_schema_ids_come_from_the_space_local_id(sb):
    """BaseProcessor::autoIncrementIdInSpace: the first id in a space is ``__id__``+1 (getAvailableGlobalId,
    which does not advance ``__id__``), then the space's ``__local_id__``+1; a tag and an edge may not
    share a name (CreateEdgeProcessor: E_CONFLICT); an index needs its tag (CreateTagIndexProcessor)."""
    root, state = sb
    leader = state["meta"][0]
    sid = space_id(state, b"space1")
    before = raw_meta(state)
    glob = schema.from_i32(before[b"__id__"])
    first = create_tag(state, sid, b"person_new")
    if schema.local_id_key(sid) not in before:
        assert first == glob + 1
    assert schema.from_i32(raw_meta(state)[b"__id__"]) == glob
    r = call(leader, "createEdge", meta.CreateEdgeReq(space_id=sid, edge_name=b"person_new", schema=meta.Schema(columns=[])))
    assert r.code == EC.E_CONFLICT
    r = call(leader, "createTagIndex", meta.CreateTagIndexReq(space_id=sid, index_name=b"i_nope", tag_name=b"nope",
                                                               fields=[]))
    assert r.code == EC.E_TAG_NOT_FOUND
    r = call(leader, "createTagIndex", meta.CreateTagIndexReq(space_id=sid, index_name=b"i_person_new",
                                                               tag_name=b"person_new", fields=[]))
    assert r.code == EC.SUCCEEDED and r.id.get_index_id() == first + 1
    keys = raw_meta(state)
    assert schema.from_i32(keys[schema.local_id_key(sid)]) == first + 1
    assert schema.from_i32(keys[schema.name_key(schema.TAG, sid, b"person_new")]) == first
    tags = call(leader, "listTags", meta.ListTagsReq(space_id=sid)).tags
    assert b"person_new" in {t.tag_name for t in tags}
    idx = call(leader, "listTagIndexes", meta.ListTagIndexesReq(space_id=sid)).items
    assert {(i.index_name, i.schema_id.get_tag_id()) for i in idx} >= {(b"i_person_new", first)}


def test_load_creates_schema_and_backup_exports_it(sb):
    """`sandbox load` creates tags, edges and indexes (as an application would through graphd);
    createBackup of chosen spaces exports ``__tags__``, ``__edges__``, ``__indexes__``, ``__local_id__``
    filtered by space and the ``__index__`` name keys of those spaces (MetaServiceUtils::backupTables,
    backupIndex)."""
    root, state = sb
    sid1, sid2 = space_id(state, b"space1"), space_id(state, b"space2")
    for sid in (sid1, sid2):
        assert call(state["meta"][0], "listTags", meta.ListTagsReq(space_id=sid)).tags
        assert call(state["meta"][0], "listEdges", meta.ListEdgesReq(space_id=sid)).edges
        assert call(state["meta"][0], "listTagIndexes", meta.ListTagIndexesReq(space_id=sid)).items
    r = call(state["meta"][0], "createBackup", meta.CreateBackupReq(spaces=[b"space1"]))
    assert r.code == EC.SUCCEEDED
    files = {os.path.basename(f.decode()): f.decode() for f in r.meta.meta_files}
    assert {"__tags__.sst", "__edges__.sst", "__indexes__.sst", "__local_id__.sst"} <= set(files)
    for table in ("__tags__", "__edges__", "__indexes__", "__local_id__"):
        rows = sst_rows(files[f"{table}.sst"])
        assert rows and {schema.space_of(table.encode(), k) for k in rows} == {sid1}
    idx = sst_rows(files["__index__.sst"])
    assert b"__index__\x01space1" in idx and b"__index__\x01space2" not in idx
    assert all(schema.index_entry_space(k)[1] in (None, sid1) for k in idx)


def sst_rows(path: str) -> dict[bytes, bytes]:
    """The rows of one SST, read by ingesting it into a scratch RocksDB."""
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        copy = os.path.join(d, "x.sst")
        Path(copy).write_bytes(Path(path).read_bytes())
        db = rocksdict.Rdict(os.path.join(d, "db"), rocksdict.Options(raw_mode=True))
        db.ingest_external_file([copy])
        out = dict(db.items())
        db.close()
    return out


def test_drop_space_leaves_schema_and_never_calls_storaged(sb):
    """DropSpaceProcessor.cpp (3.0–3.8): the space key, its name key, parts, roles, stats and its
    ``__local_id__`` go; tags, edges, indexes, their ``__index__`` name keys stay. It never calls a
    storaged: each running storaged removes the space's dir itself once metad no longer has the space
    (NebulaStore::removeSpace, ``auto_remove_invalid_space`` default true)."""
    root, state = sb
    sid = space_id(state, b"space2")
    before = raw_meta(state)
    left_behind = {k for k in before if any(schema.space_of(t, k) == sid for t in (b"__tags__", b"__edges__", b"__indexes__"))
                   or (k.startswith(b"__index__") and k[9] != schema.SPACE and schema.index_entry_space(k)[1] == sid)}
    assert left_behind
    dirs = [layout.space_dir(dp, sid) for h in state["hosts"] if "storage" in h["roles"] for dp in h["data_paths"]]
    assert any(os.path.isdir(d) for d in dirs)
    assert call(state["meta"][0], "dropSpace", meta.DropSpaceReq(space_name=b"space2")).code == EC.SUCCEEDED
    after = raw_meta(state)
    assert left_behind <= set(after)
    assert schema.local_id_key(sid) not in after and b"__index__\x01space2" not in after
    assert not [k for k in after if schema.space_of(b"__parts__", k) == sid or schema.space_of(b"__spaces__", k) == sid]
    metad_log = Path(next(h for h in state["hosts"] if h["name"] == "meta1")["root"], "install", "logs")
    deadline = time.monotonic() + 20
    while any(os.path.isdir(d) for d in dirs) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(os.path.isdir(d) for d in dirs), "a running storaged removes a dropped space's dir"
    logs = "".join(p.read_text(errors="replace") for p in metad_log.glob("*"))
    assert "drop_space" not in logs
    storaged_logs = "".join(p.read_text(errors="replace") for h in state["hosts"] if "storage" in h["roles"]
                            for p in Path(h["root"], "install", "logs").glob("*"))
    assert f"space {sid} is gone from metad" in storaged_logs


def test_restore_meta_rolls_ids_back_and_leaves_hosts(sb, tmp_path):
    """RestoreProcessor.cpp ingests the backup's tables as they are: ``__id__`` (in every backup,
    MetaKeyUtils::systemInfoMaps) and the space's ``__local_id__`` come back at their backup-time
    values, so the next id handed out can be a live one; keys written since the backup stay; the host
    pairs rewrite parts, zones and machines but never ``__hosts__``."""
    root, state = sb
    leader = state["meta"][0]
    sid = space_id(state, b"space1")
    r = call(leader, "createBackup", meta.CreateBackupReq(spaces=[b"space1"]))
    assert r.code == EC.SUCCEEDED
    at_backup = raw_meta(state)
    later_tag = create_tag(state, sid, b"after_backup")
    created = call(leader, "createSpace", meta.CreateSpaceReq(properties=meta.SpaceDesc(
        space_name=b"later", partition_num=2, replica_factor=1, vid_type=meta.ColumnTypeDef(type=7, type_length=8))))
    assert created.code == EC.SUCCEEDED
    copies = []
    for f in r.meta.meta_files:
        dst = tmp_path / os.path.basename(f.decode())
        dst.write_bytes(Path(f.decode()).read_bytes())
        copies.append(str(dst).encode())
    storage = sorted(h["address"] for h in state["hosts"] if "storage" in h["roles"])
    moved = f"{storage[0]}:9779"
    hosts_before = {k for k in raw_meta(state) if k.startswith(b"__hosts__")}
    pair = meta.HostPair(from_host=control.host_addr(moved), to_host=control.host_addr("127.0.0.250:9779"))
    assert call(leader, "restoreMeta", meta.RestoreMetaReq(files=copies, hosts=[pair])).code == EC.SUCCEEDED
    after = raw_meta(state)
    assert after[b"__id__"] == at_backup[b"__id__"]
    assert after[schema.local_id_key(sid)] == at_backup[schema.local_id_key(sid)]
    assert schema.name_key(schema.TAG, sid, b"after_backup") in after  # ingest deletes nothing
    assert b"__hosts__" + moved.encode() in hosts_before
    assert {k for k in after if k.startswith(b"__hosts__")} >= hosts_before
    # the rolled-back local id hands out the id of the tag created after the backup again
    again = call(leader, "createTag", meta.CreateTagReq(space_id=sid, tag_name=b"next", schema=meta.Schema(columns=[])))
    assert again.code == EC.SUCCEEDED and again.id.get_tag_id() == later_tag
