"""The meta Raft among three metads, as src/kvstore/raftex/RaftPart.cpp (Nebula v3.8.0) behaves for
what a backup tool sees: replication by the leader, late apply on followers, restoreMeta local, leader
changes. Raw meta keys are read from each metad's RocksDB opened read-only beside it."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import rocksdict
from nebula3.common import ttypes as common
from nebula3.meta import ttypes as meta

from brsm.sandbox import cluster, control, layout, meta_raft_faults, raft
from brsm.sandbox.hosts import Host, run_service
from brsm.sandbox.metad import K_CLUSTER_ID
from brsm.sandbox.storaged import read_cluster_id

pytestmark = pytest.mark.sandbox
EC = common.ErrorCode


@pytest.fixture(scope="module")
def sb(tmp_path_factory):
    root = tmp_path_factory.mktemp("raft")
    state, _ = cluster.up(str(root), meta_hosts=3, storage_hosts=1, agents=False)
    try:
        yield root, state
    finally:
        cluster.down(str(root))


def raw(state, name: str) -> dict[bytes, bytes]:
    dp = next(h for h in state["hosts"] if h["name"] == name)["data_paths"][0]
    db = rocksdict.Rdict(layout.meta_db_path(dp), rocksdict.Options(raw_mode=True),
                         access_type=rocksdict.AccessType.read_only())
    try:
        return dict(db.items())
    finally:
        db.close()


def name_of(state, addr: str) -> str:
    return next(h["name"] for h in state["hosts"] if f"{h['address']}:9559" == addr)


def rstate(state, name: str) -> dict:
    return meta_raft_faults.raft_states(state)[name]


def create_space(state, name: bytes) -> int:
    """createSpace on whichever metad leads; right after an election the storaged may not have
    heartbeated the new leader yet (E_NO_HOSTS for a moment), as on a real cluster."""
    deadline = time.monotonic() + 15
    while True:
        with control.MetaClient(state["meta"][0], timeout=30) as c:
            r = c.createSpace(meta.CreateSpaceReq(properties=meta.SpaceDesc(
                space_name=name, partition_num=1, replica_factor=1, vid_type=meta.ColumnTypeDef(type=7, type_length=8))))
        if r.code not in (EC.E_NO_HOSTS, EC.E_LEADER_CHANGED) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert r.code == EC.SUCCEEDED, r.code
    return r.id.get_space_id()


def test_pure_rules():
    """RaftPart::processAppendLogRequest commits min(lastMatched, committed_log_id);
    processAskForVoteRequest grants a newer term with a log at least as up to date."""
    assert raft.follower_commit(10, 9) == 9 and raft.follower_commit(7, 9) == 7
    assert raft.grants_vote(2, (2, 5), None, 3, (2, 5), "b", False)
    assert not raft.grants_vote(2, (2, 5), None, 3, (2, 4), "b", False)
    assert not raft.grants_vote(3, (2, 5), "a", 3, (2, 5), "b", False)
    assert not raft.grants_vote(2, (2, 5), None, 3, (2, 5), "b", True)


def test_every_metad_serves_with_the_cluster_id_the_leader_wrote_through_raft(sb):
    """MetaDaemonInit.cpp initKV (v3.8.0): before it serves, a metad waits for a leader; the leader
    creates the cluster id and writes it through Raft (ClusterIdMan::persistInKV), a follower waits
    until it has come through Raft. So every metad, and any follower elected later, holds the id the
    storaged learnt, and HBProcessor accepts that storaged's heartbeats whoever leads."""
    root, state = sb
    storage = Host.from_json(next(h for h in state["hosts"] if h["name"] == "storage1"))
    learnt = read_cluster_id(os.path.join(storage.install_dir, "cluster.id"))
    assert learnt
    for n in ("meta1", "meta2", "meta3"):
        h = next(h for h in state["hosts"] if h["name"] == n)
        assert control.status((h["address"], 19559))["cluster_id"] == learnt, n  # what it answers heartbeats with
        assert int.from_bytes(raw(state, n)[K_CLUSTER_ID], "big") == learnt, n  # the replicated key


def test_followers_apply_a_write_only_when_a_later_append_carries_the_commit(sb):
    """The leader replicates every write and applies it once a majority holds it; a follower holds the
    entry and applies it only when the next append or heartbeat carries the commit id (~2 s later)."""
    root, state = sb
    leader = meta_raft_faults.wait_leader(state)
    sid = create_space(state, b"raft_one")
    # one sweep over the three metads (not one per metad): the next heartbeat, at most 2 s away, carries
    # the commit, and on a loaded machine nine sequential status calls could straddle it
    states = meta_raft_faults.raft_states(state)
    lead = states[name_of(state, leader)]
    followers = [n for n in ("meta1", "meta2", "meta3") if f"{next(h['address'] for h in state['hosts'] if h['name'] == n)}:9559" != leader]
    now = {n: states[n] for n in followers}
    assert all(s["last_id"] >= lead["committed"] for s in now.values()), (lead, now)  # they hold it
    assert any(s["applied"] < lead["committed"] for s in now.values()), (lead, now)  # not yet applied
    key = b"__spaces__" + raft_i32(sid)
    assert key in raw(state, name_of(state, leader))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not all(key in raw(state, n) for n in followers):
        time.sleep(0.2)
    assert all(key in raw(state, n) for n in followers)


def raft_i32(n: int) -> bytes:
    from brsm.sandbox import schema
    return schema.i32(n)


def test_a_forced_leader_change_elects_a_follower_that_serves_everything(sb):
    """A leader change (sandbox fault: the leader steps down): a follower is elected with its log, answers
    every RPC, the others answer E_LEADER_CHANGED naming it; writes go on."""
    root, state = sb
    sid = create_space(state, b"raft_two")
    r = meta_raft_faults.force_leader_change(state, hold=20)
    assert r["new_leader"] != r["old_leader"]
    with control.MetaClient(r["old_leader"], timeout=30, follow_leader=False) as c:
        resp = c.listSpaces(meta.ListSpacesReq())
        assert resp.code == EC.E_LEADER_CHANGED and control.fmt_addr(resp.leader) == r["new_leader"]
    with control.MetaClient(r["new_leader"], timeout=30, follow_leader=False) as c:
        names = {s.name for s in c.listSpaces(meta.ListSpacesReq()).spaces}
    assert {b"raft_one", b"raft_two"} <= names
    assert create_space(state, b"raft_three") > sid


def test_stopping_the_leader_metad_elects_another(sb):
    """A metad that stops: the two left are a majority and elect one of them."""
    root, state = sb
    old = meta_raft_faults.wait_leader(state)
    meta_raft_faults.stop_metad(state, name_of(state, old))
    try:
        new = meta_raft_faults.wait_leader(state, 60, not_=old)
        assert new != old
        create_space(state, b"raft_four")
    finally:
        meta_raft_faults.start_metad(state, name_of(state, old))
    # the stopped one comes back as a follower and catches up
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        s = rstate(state, name_of(state, old))
        if s and s["leader"] == new and b"__index__\x01raft_four" in raw(state, name_of(state, old)):
            break
        time.sleep(0.3)
    else:
        raise AssertionError(f"{old} did not catch up: {meta_raft_faults.raft_states(state)}")


def test_restore_meta_writes_locally_and_a_restart_of_every_metad_keeps_the_data(sb, tmp_path):
    """RestoreProcessor.cpp ingests into the local engine, outside Raft: a restoreMeta on one metad
    changes that metad only. A restart of every metad keeps what each had and a leader is elected."""
    root, state = sb
    with control.MetaClient(state["meta"][0], timeout=60) as c:
        bm = control.check(c.createBackup(meta.CreateBackupReq(spaces=[b"raft_one"])), "createBackup").meta
        control.check(c.dropSpace(meta.DropSpaceReq(space_name=b"raft_one")), "dropSpace")
    time.sleep(5)  # every metad applied the drop
    leader = meta_raft_faults.wait_leader(state)
    follower = next(n for n in ("meta1", "meta2", "meta3") if n != name_of(state, leader))
    files = []
    for f in bm.meta_files:
        dst = tmp_path / os.path.basename(f.decode())
        src = Path(f.decode())
        if not src.exists():  # the SSTs are on the metad that made the backup
            continue
        dst.write_bytes(src.read_bytes())
        files.append(str(dst).encode())
    h = next(h for h in state["hosts"] if h["name"] == follower)
    with control.MetaClient(f"{h['address']}:9559", timeout=60, follow_leader=False) as c:
        assert c.restoreMeta(meta.RestoreMetaReq(files=files, hosts=[])).code == EC.SUCCEEDED
    time.sleep(5)
    assert b"__index__\x01raft_one" in raw(state, follower)
    assert b"__index__\x01raft_one" not in raw(state, name_of(state, leader))  # never replicated
    metas = [Host.from_json(h) for h in state["hosts"] if "metad" in h["services"]]
    for m in metas:
        run_service(m, "stop", "metad")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(meta_raft_faults.raft_states(state).values()):
        time.sleep(0.2)
    for m in metas:
        run_service(m, "start", "metad")
    meta_raft_faults.wait_leader(state, 60)
    with control.MetaClient(state["meta"][0], timeout=30) as c:
        names = {s.name for s in c.listSpaces(meta.ListSpacesReq()).spaces}
    assert {b"raft_two", b"raft_three", b"raft_four"} <= names
