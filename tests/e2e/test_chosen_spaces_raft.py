"""A restore of chosen spaces on three metads (the sandbox's meta Raft): the restored spaces come back
with exactly their backed-up data and schema, every metad agrees, a leader change and a restart of
every metad keep it so, the other spaces are untouched, and no live id is handed out again."""
from __future__ import annotations

import time

import pytest
import rocksdict
from nebula3.common.ttypes import ErrorCode
from nebula3.meta import ttypes as meta

from brsm.sandbox import cluster, control, layout, meta_raft_faults
from brsm.sandbox.hosts import Host, run_service
from tests.e2e.conftest import running_sandbox

pytestmark = pytest.mark.sandbox
META_TABLES = (b"__spaces__", b"__parts__", b"__tags__", b"__edges__", b"__indexes__", b"__index__", b"__local_id__",
               b"__id__")


@pytest.fixture(scope="module")
def raft3(tmp_path_factory):
    with running_sandbox(tmp_path_factory.mktemp("raft3"), tmp_path_factory.mktemp("home"), data_paths=1,
                         load=4 << 20, meta_hosts=3, agents=False) as env:
        yield env


def client(env) -> control.MetaClient:
    return control.MetaClient(env.meta, timeout=30)


def sid_of(env, name: str) -> int:
    with client(env) as c:
        return control.check(c.getSpace(meta.GetSpaceReq(space_name=name.encode())), "getSpace").item.space_id


def create_tag(env, space: str, name: str) -> int:
    sid = sid_of(env, space)
    with client(env) as c:
        r = control.check(c.createTag(meta.CreateTagReq(space_id=sid, tag_name=name.encode(),
                                                        schema=meta.Schema(columns=[]))), "createTag")
    return r.id.get_tag_id()


def live_ids(env) -> tuple[set[int], dict[int, set[int]]]:
    """(live space ids, {space id: live tag, edge and index ids})."""
    with client(env) as c:
        spaces = {s.id.get_space_id() for s in c.listSpaces(meta.ListSpacesReq()).spaces}
        ids = {}
        for sid in spaces:
            ids[sid] = ({t.tag_id for t in c.listTags(meta.ListTagsReq(space_id=sid)).tags}
                        | {e.edge_type for e in c.listEdges(meta.ListEdgesReq(space_id=sid)).edges}
                        | {i.index_id for i in c.listTagIndexes(meta.ListTagIndexesReq(space_id=sid)).items})
    return spaces, ids


def meta_rows(env, name: str) -> dict[bytes, bytes]:
    """That metad's schema and space keys (raw, read-only beside the daemon)."""
    dp = next(h for h in env.info["hosts"] if h["name"] == name)["data_paths"][0]
    db = rocksdict.Rdict(layout.meta_db_path(dp), rocksdict.Options(raw_mode=True),
                         access_type=rocksdict.AccessType.read_only())
    try:
        return {k: v for k, v in db.items() if k.startswith(META_TABLES)}
    finally:
        db.close()


def all_metads_agree(env, timeout: float = 20.0) -> dict[bytes, bytes]:
    names = [h["name"] for h in env.info["hosts"] if "meta" in h["roles"]]
    deadline = time.monotonic() + timeout
    while True:
        rows = {n: meta_rows(env, n) for n in names}
        if all(r == rows[names[0]] for r in rows.values()):
            return rows[names[0]]
        if time.monotonic() > deadline:
            diff = {n: sorted(set(r) ^ set(rows[names[0]]))[:5] for n, r in rows.items()}
            raise AssertionError(f"metads disagree on meta keys: {diff}")
        time.sleep(0.5)


def restart_every_metad(env) -> None:
    state = cluster.load_state(str(env.root))
    metas = [Host.from_json(h) for h in state["hosts"] if "metad" in h["services"]]
    for m in metas:
        run_service(m, "stop", "metad")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(meta_raft_faults.raft_states(state).values()):
        time.sleep(0.2)
    for m in metas:
        run_service(m, "start", "metad")
    meta_raft_faults.wait_leader(state, 60)


def wait_checksum(env, want: dict, timeout: float = 60.0) -> dict:
    """The checksum once storaged and graphd have found the (new) leader: heartbeats may be refused
    for a moment after an election."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            got = env.checksum()
            if got == want or time.monotonic() > deadline:
                return got
        except Exception:  # noqa: BLE001 - a storaged not yet registered with the new leader
            if time.monotonic() > deadline:
                raise
        time.sleep(1.0)


@pytest.mark.parametrize("host_map", [False, True], ids=["default-pairing", "host-map-to-itself"])
def test_chosen_spaces_restore_survives_leader_change_and_restart(raft3, tmp_path, host_map):
    env = raft3
    loc = ["--storage", f"local://{tmp_path / 'b'}"]
    backed = env.checksum()
    name = env.ok("start", "backup", "--config", env.config, *loc, "--spaces", "space1")["facts"]["backup_name"]
    # after the backup: schema in the restored space and in the other one, a new space, newer data
    late_tag = create_tag(env, "space1", f"late_{int(host_map)}")
    create_tag(env, "space2", f"kept_{int(host_map)}")
    extra = f"extra_{int(host_map)}"
    with client(env) as c:
        control.check(c.createSpace(meta.CreateSpaceReq(properties=meta.SpaceDesc(
            space_name=extra.encode(), partition_num=3, replica_factor=1,
            vid_type=meta.ColumnTypeDef(type=7, type_length=8)))), "createSpace")
    env.load(2 << 20, seed=21 + host_map)
    newer = env.checksum()
    assert newer["space1"] != backed["space1"] and newer["space2"] != backed["space2"]
    want = dict(newer, space1=backed["space1"])
    spaces_before, ids_before = live_ids(env)
    args = ["start", "restore", "--yes", "--config", env.config, *loc, "--name", name]
    if host_map:
        storage = sorted(f"{h['address']}:9779" for h in env.info["hosts"] if "storage" in h["roles"])
        args += ["--host-map", ",".join(f"{a}={a}" for a in storage)]
    env.ok(*args)
    assert wait_checksum(env, want) == want, "restored space as backed up (data and schema), the others as they were"
    rows = all_metads_agree(env)
    assert not [k for k in rows if k.startswith(b"__index__\x02") and k.endswith(f"late_{int(host_map)}".encode())]
    # a forced leader change, then a restart of every metad: the same everywhere
    state = cluster.load_state(str(env.root))
    meta_raft_faults.force_leader_change(state, hold=15)
    assert wait_checksum(env, want) == want
    restart_every_metad(env)
    assert wait_checksum(env, want) == want
    all_metads_agree(env)
    # no live id is handed out again
    spaces_now, ids_now = live_ids(env)
    assert spaces_now == spaces_before
    new_tag = create_tag(env, "space1", f"after_{int(host_map)}")
    assert new_tag not in ids_now[sid_of(env, "space1")] and new_tag > late_tag
    # after a restart of every metad, createSpace answers E_NO_HOSTS until the storageds' heartbeats
    # reach the new leader (CreateSpaceProcessor asks ActiveHostsMan): wait for them as an operator would
    deadline = time.monotonic() + 60
    while True:
        with client(env) as c:
            r = c.createSpace(meta.CreateSpaceReq(properties=meta.SpaceDesc(
                space_name=f"after_{int(host_map)}".encode(), partition_num=1, replica_factor=1,
                vid_type=meta.ColumnTypeDef(type=7, type_length=8))))
        if r.code != ErrorCode.E_NO_HOSTS or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    control.check(r, "createSpace")
    assert r.id.get_space_id() not in spaces_now


def test_chosen_spaces_restore_refuses_to_move_a_host_of_the_cluster(raft3, tmp_path):
    """restoreMeta's host pairs rewrite the parts of every space: moving a host of the cluster in a
    restore of chosen spaces would take the other spaces off it. Refused before anything stops."""
    env = raft3
    loc = ["--storage", f"local://{tmp_path / 'b'}"]
    name = env.ok("start", "backup", "--config", env.config, *loc, "--spaces", "space1")["facts"]["backup_name"]
    before = env.checksum()
    storage = sorted(f"{h['address']}:9779" for h in env.info["hosts"] if "storage" in h["roles"])
    swap = [(storage[0], storage[1]), (storage[1], storage[0]), (storage[2], storage[2])]
    p = env.brsm("start", "restore", "--yes", "--config", env.config, *loc, "--name", name,
                 "--host-map", ",".join(f"{o}={n}" for o, n in swap))
    assert p.returncode == 4, p.stderr[-1500:]
    assert "cannot move a storage host of this cluster" in p.stderr
    assert env.checksum() == before

