"""The sandbox's metad answers as Nebula's own metad does, point by point.

Each test names the file of vesoft-inc/nebula (at 5d43e44) or nebula-agent it mirrors. The sandbox
is the oracle brsm is tested against: when one of these fails, the sandbox drifted from Nebula and
must be fixed there, never brsm's expectations bent to it.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from nebula3.common import ttypes as common
from nebula3.meta import ttypes as meta

from brsm.sandbox import cluster, control
from brsm.sandbox.data import load as sandbox_load

pytestmark = pytest.mark.sandbox
EC = common.ErrorCode
ROLE = meta.HostRole


@pytest.fixture(scope="module")
def sb(tmp_path_factory):
    root = tmp_path_factory.mktemp("conf")
    state, _ = cluster.up(str(root), meta_hosts=3, storage_hosts=3, data_paths=2)
    try:
        sandbox_load(state["meta"][0], spaces=2, size_bytes=1 << 20, seed=3)
        yield root, state
    finally:
        cluster.down(str(root))


def call(addr: str, rpc: str, req):
    """One RPC on exactly that metad (no following of leader changes)."""
    with control.MetaClient(addr, timeout=30.0, follow_leader=False) as c:
        return c.call(rpc, req)


def install_dir(h: dict) -> str:
    return cluster.Host.from_json(h).install_dir


def leader(state) -> str:
    return state["meta"][0]


def test_list_cluster_meta_entries_have_no_dir_and_every_host_an_agent(sb):
    """ListClusterInfoProcessor.cpp: META from the Raft peers without a dir; GRAPH and STORAGE
    with their DirInfo; one AGENT per host."""
    root, state = sb
    r = call(leader(state), "listCluster", meta.ListClusterInfoReq())
    assert r.code == EC.SUCCEEDED
    hosts = {h["address"]: h for h in state["hosts"]}
    assert set(r.host_services) == set(hosts)
    for host, services in r.host_services.items():
        roles = sorted(ROLE._VALUES_TO_NAMES[s.role] for s in services)
        assert roles.count("AGENT") == 1, (host, roles)
        for s in services:
            if s.role == ROLE.META:
                assert s.dir is None, "listCluster never fills META's dir"
            elif s.role in (ROLE.STORAGE, ROLE.GRAPH):
                assert s.dir is not None and s.dir.root.decode() == install_dir(hosts[host])
                if s.role == ROLE.STORAGE:
                    assert [d.decode() for d in s.dir.data] == hosts[host]["data_paths"]
    metas = sorted(f"{h}:{s.addr.port}" for h, ss in r.host_services.items() for s in ss if s.role == ROLE.META)
    assert metas == sorted(state["meta"])


def test_get_meta_dir_info_on_each_metad(sb):
    """GetMetaDirInfoProcessor.cpp: no leader check; data = the absolute --data_path, root = the
    daemon's working directory (the install root: scripts/nebula.service cds there)."""
    root, state = sb
    for h in (h for h in state["hosts"] if "meta" in h["roles"]):
        r = call(f"{h['address']}:9559", "getMetaDirInfo", meta.GetMetaDirInfoReq())
        assert r.code == EC.SUCCEEDED
        assert [d.decode() for d in r.dir.data] == h["data_paths"]
        assert r.dir.root.decode() == install_dir(h)


def test_followers_answer_leader_changed_with_the_leader(sb):
    """A metad that does not lead answers E_LEADER_CHANGED with the leader's address
    (MetaBaseProcessor::handleLeaderChanged); the sandbox's leader is the first peer."""
    root, state = sb
    r = call(state["meta"][1], "listSpaces", meta.ListSpacesReq())
    assert r.code == EC.E_LEADER_CHANGED
    assert control.fmt_addr(r.leader) == leader(state)


def _backup(state, spaces=None):
    r = call(leader(state), "createBackup", meta.CreateBackupReq(spaces=spaces))
    assert r.code == EC.SUCCEEDED, r.code
    return r.meta


def test_create_backup_meta_files_and_fields(sb):
    """CreateBackupProcessor.cpp + MetaServiceUtils::backupTables + RocksEngine::backupTable:
    meta_files are full paths ``<data_path>/nebula/0/checkpoints/<NAME>/<table>.sst``; an
    all-spaces backup has the system tables, every backup ``__id__`` and ``__last_update_time__``;
    storage_hosts and cluster_id are never set."""
    root, state = sb
    meta_dp = next(h for h in state["hosts"] if h["name"] == "meta1")["data_paths"][0]
    bm = _backup(state)
    name = bm.backup_name.decode()
    files = [f.decode() for f in bm.meta_files]
    assert all(os.path.dirname(f) == f"{meta_dp}/nebula/0/checkpoints/{name}" for f in files)
    assert all(os.path.isfile(f) for f in files)
    tables = {os.path.basename(f) for f in files}
    assert {"__spaces__.sst", "__parts__.sst", "__index__.sst", "__id__.sst", "__last_update_time__.sst",
            "__machines__.sst"} <= tables
    assert not tables & {"__hosts__.sst", "__snapshots__.sst"}
    assert not bm.storage_hosts and not bm.cluster_id
    one = _backup(state, [b"space1"])
    ptables = {os.path.basename(f.decode()) for f in one.meta_files}
    assert "__machines__.sst" not in ptables and {"__id__.sst", "__last_update_time__.sst"} <= ptables
    assert list(one.space_backups) == [next(iter(one.space_backups))] and not one.all_spaces
    for n in (name, one.backup_name.decode()):
        assert call(leader(state), "dropSnapshot", meta.DropSnapshotReq(names=[n.encode()])).code == 0


def test_checkpoint_info_paths_are_resolved_and_parts_carry_log_ids_only(sb):
    """NebulaStore::createCheckpoint: CheckpointInfo.data_path = realPath(<dp>/nebula/<sid>/checkpoints/<NAME>),
    one per data path; LogInfo has log_id and term_id only."""
    root, state = sb
    bm = _backup(state)
    name = bm.backup_name.decode()
    storage = {h["address"]: h for h in state["hosts"] if "storage" in h["roles"]}
    for sid, sb_ in bm.space_backups.items():
        for hb in sb_.host_backups:
            dps = storage[control.fmt_addr(hb.host).rpartition(":")[0]]["data_paths"]
            assert len(hb.checkpoints) == len(dps)
            for cp in hb.checkpoints:
                path = cp.data_path.decode()
                assert path == os.path.realpath(path) and os.path.isdir(path)
                assert any(path == os.path.realpath(f"{dp}/nebula/{sid}/checkpoints/{name}") for dp in dps)
                for li in (cp.parts or {}).values():
                    assert li.checkpoint_path is None and li.commit_log_id is None and li.log_id is not None
    call(leader(state), "dropSnapshot", meta.DropSnapshotReq(names=[name.encode()]))


def test_drop_snapshot_drops_only_the_first_name(sb):
    """DropSnapshotProcessor.cpp: "only the first one will be dropped"; no names → E_SNAPSHOT_FAILURE;
    an unknown name → E_SNAPSHOT_NOT_FOUND."""
    root, state = sb
    a = _backup(state).backup_name
    time.sleep(1.05)  # names have second resolution
    b = _backup(state).backup_name
    r = call(leader(state), "dropSnapshot", meta.DropSnapshotReq(names=[a, b]))
    assert r.code == EC.SUCCEEDED
    left = {s.name for s in call(leader(state), "listSnapshots", meta.ListSnapshotsReq()).snapshots}
    assert a not in left and b in left
    assert call(leader(state), "dropSnapshot", meta.DropSnapshotReq(names=[])).code == EC.E_SNAPSHOT_FAILURE
    assert call(leader(state), "dropSnapshot", meta.DropSnapshotReq(names=[a])).code == EC.E_SNAPSHOT_NOT_FOUND
    assert call(leader(state), "dropSnapshot", meta.DropSnapshotReq(names=[b])).code == EC.SUCCEEDED


def test_restore_meta_unlinks_its_input(sb, tmp_path):
    """RestoreProcessor.cpp: after ingesting, every input SST is unlink()ed, so the same call cannot
    be repeated with the same paths (it fails: E_RESTORE_FAILURE)."""
    root, state = sb
    bm = _backup(state, [b"space2"])
    copies = []
    for f in bm.meta_files:
        dst = tmp_path / os.path.basename(f.decode())
        dst.write_bytes(Path(f.decode()).read_bytes())
        copies.append(str(dst).encode())
    req = meta.RestoreMetaReq(files=copies, hosts=[])
    assert call(leader(state), "restoreMeta", req).code == EC.SUCCEEDED
    assert not [c for c in copies if os.path.exists(c)]
    assert call(leader(state), "restoreMeta", req).code == EC.E_RESTORE_FAILURE
    call(leader(state), "dropSnapshot", meta.DropSnapshotReq(names=[bm.backup_name]))


def test_list_cluster_fails_without_an_agent_and_leaves_stale_services_out(sb):
    """ListClusterInfoProcessor.cpp: a host without a live agent fails the whole call with
    E_LIST_CLUSTER_NO_AGENT_FAILURE (-2072); a service whose heartbeat is older than the liveness
    window is left out (isAlive)."""
    root, state = sb
    st = cluster.load_state(str(root))
    i = next(i for i, h in enumerate(st["hosts"]) if h["name"] == "storage3")
    cluster.stop_agent(st["hosts"][i])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        r = call(leader(state), "listCluster", meta.ListClusterInfoReq())
        if r.code != EC.SUCCEEDED:
            break
        time.sleep(0.5)
    assert r.code == EC.E_LIST_CLUSTER_NO_AGENT_FAILURE == -2072
    cluster.start_agent(st, i)
    cluster.save_state(str(root), st)
    cluster._wait_agents(st, 30)
    # storaged of storage3 stops: once its heartbeat is stale it is left out
    h = cluster.Host.from_json(st["hosts"][i])
    from brsm.sandbox.hosts import run_service
    run_service(h, "stop", "storaged")
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            r = call(leader(state), "listCluster", meta.ListClusterInfoReq())
            roles = [s.role for s in r.host_services.get(h.address, [])]
            if ROLE.STORAGE not in roles:
                break
            time.sleep(0.5)
        assert r.code == EC.SUCCEEDED and ROLE.STORAGE not in roles and ROLE.AGENT in roles
    finally:
        run_service(h, "start", "storaged")
        cluster._wait_cluster(state["meta"][0], [f"{h.address}:9779"], 30)
        # StorageServer::start heartbeats before its admin port listens: ONLINE is not yet ready
        cluster.wait_listening([h], 30)


def test_agent_heartbeat_answers_the_services_on_its_host(sb):
    """AgentHBProcessor.cpp: the reply lists the other live services of the agent's host with their dirs."""
    root, state = sb
    h = next(h for h in state["hosts"] if h["name"] == "storage1")
    r = call(leader(state), "agentHeartbeat", meta.AgentHBReq(host=common.HostAddr(host=h["address"], port=8888),
                                                              git_info_sha=b"t", version=b"3.8.0"))
    assert r.code == EC.SUCCEEDED
    assert [(s.role, [d.decode() for d in s.dir.data]) for s in r.service_list] == [(ROLE.STORAGE, h["data_paths"])]
    assert json.dumps(cluster.summary(cluster.load_state(str(root)))["hosts"])  # state file stays readable


def test_replica_factor_places_each_part_on_that_many_hosts_and_log_ids_come_from_leaders(sb):
    """CreateSpaceProcessor.cpp: replica_factor hosts per part (more than there are: refused);
    NebulaStore::createCheckpoint reports LogInfo only for the parts a host leads."""
    root, state = sb
    from brsm.sandbox.data import ensure_spaces
    with control.MetaClient(leader(state)) as c:
        sid = ensure_spaces(c, ["rf3"], partition_num=6, replica_factor=3)["rf3"]
        parts = c.call("getPartsAlloc", meta.GetPartsAllocReq(space_id=sid)).parts
        assert len(parts) == 6 and all(len({control.fmt_addr(h) for h in hs}) == 3 for hs in parts.values())
        bad = meta.SpaceDesc(space_name=b"rf4", partition_num=1, replica_factor=4,
                             vid_type=meta.ColumnTypeDef(type=7, type_length=8))
        assert c.call("createSpace", meta.CreateSpaceReq(properties=bad)).code == EC.E_INVALID_PARM
    bm = _backup(state, [b"rf3"])
    leaders = {pid: control.fmt_addr(hs[0]) for pid, hs in parts.items()}
    seen = {}
    for hb in bm.space_backups[sid].host_backups:
        for cp in hb.checkpoints:
            for pid in cp.parts or {}:
                assert leaders[pid] == control.fmt_addr(hb.host)
                seen[pid] = True
    assert sorted(seen) == sorted(parts)
    assert len(bm.space_backups[sid].host_backups) == 3
    call(leader(state), "dropSnapshot", meta.DropSnapshotReq(names=[bm.backup_name]))
    call(leader(state), "dropSpace", meta.DropSpaceReq(space_name=b"rf3", if_exists=True))
