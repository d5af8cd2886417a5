"""Every metad/storaged fault kind, seen through the meta protocol."""
from __future__ import annotations

import os
import threading
import time

import pytest
from nebula3.common import ttypes as common
from nebula3.meta import ttypes as meta

from brsm.sandbox import control, data, layout

EC = common.ErrorCode
pytestmark = pytest.mark.sandbox


@pytest.fixture(scope="module")
def loaded(cluster):
    return data.load(cluster.meta.addr, spaces=1, size_bytes=4 * 2**20, seed=3)


@pytest.fixture(autouse=True)
def _clear(cluster):
    yield
    for p in cluster.procs.values():
        if p.svc in ("metad", "storaged") and p.popen is not None:
            control.clear_faults(p.http)


@pytest.fixture(scope="module")
def follower(cluster):
    leader = cluster.meta.addr
    p = cluster.add("meta2", "metad", 12, 9559, meta_addrs=f"{leader},{cluster.ip(12)}:9559")
    with p.flagfile.open("a") as fh:  # a follower of the leader without Raft: the leader knows nothing of it
        fh.write("--sandbox_meta_raft=false\n")
    cluster.start("meta2")
    yield p
    cluster.stop("meta2")


def _snapshots(cluster):
    with control.MetaClient(cluster.meta.addr) as c:
        return {s.name.decode(): s for s in c.listSnapshots(meta.ListSnapshotsReq()).snapshots}


def test_code_fault(cluster, loaded):
    control.set_fault(cluster.meta.http, rpc="createBackup", code=EC.E_BACKUP_FAILED, count=1)
    assert control.get_faults(cluster.meta.http)["faults"][0]["rpc"] == "createBackup"
    with control.MetaClient(cluster.meta.addr, "framed") as c:
        resp = c.createBackup(meta.CreateBackupReq())
        assert resp.code == EC.E_BACKUP_FAILED and resp.meta is None
        assert control.fmt_addr(resp.leader) == cluster.meta.addr
        assert control.get_faults(cluster.meta.http)["faults"] == []
        assert _snapshots(cluster) == {}
        control.set_fault(cluster.meta.http, rpc="verifyClientVersion", code=EC.E_CLIENT_SERVER_INCOMPATIBLE)
        for _ in range(2):  # no count: until cleared
            assert c.verifyClientVersion(meta.VerifyClientVersionReq()).code == EC.E_CLIENT_SERVER_INCOMPATIBLE
        control.clear_faults(cluster.meta.http, rpc="verifyClientVersion")
        assert c.verifyClientVersion(meta.VerifyClientVersionReq()).code == EC.SUCCEEDED


def test_bad_fault_specs_are_rejected(cluster):
    for body in ({"code": 1}, {"rpc": "x"}, {"rpc": "x", "code": "a"}, {"rpc": "x", "leader_changed": "nohost"},
                 {"rpc": "x", "delay": 1, "hang": True}):
        with pytest.raises(control.HTTPStatusError) as ei:
            control.set_fault(cluster.meta.http, **body)
        assert ei.value.status == 400
    with pytest.raises(control.HTTPStatusError):
        control.set_fault(cluster.storages[0].http, explode=True)


def test_follower_answers_leader_changed(cluster, follower):
    with control.MetaClient(follower.addr, follow_leader=False) as c:
        resp = c.listSpaces(meta.ListSpacesReq())
        assert resp.code == EC.E_LEADER_CHANGED
        assert control.fmt_addr(resp.leader) == cluster.meta.addr
        # answered by every metad itself
        assert c.verifyClientVersion(meta.VerifyClientVersionReq()).code == EC.SUCCEEDED
        d = c.getMetaDirInfo(meta.GetMetaDirInfoReq())
        assert d.code == EC.SUCCEEDED and d.dir.data == [str(follower.data_paths[0]).encode()]
    with control.MetaClient(follower.addr) as c:  # follows the leader
        assert c.listSpaces(meta.ListSpacesReq()).code == EC.SUCCEEDED
        assert c.addr == (cluster.meta.ip, cluster.meta.port)
    # metad does not heartbeat: listCluster's META entries are the leader's Raft peers (its
    # --meta_server_addrs), without a dir (ListClusterInfoProcessor.cpp)
    with control.MetaClient(cluster.meta.addr) as c:
        svcs = [s for v in c.listCluster(meta.ListClusterInfoReq()).host_services.values() for s in v
                if s.role == meta.HostRole.META]
    assert [control.fmt_addr(s.addr) for s in svcs] == [cluster.meta.addr] and all(s.dir is None for s in svcs)


def test_leader_changed_fault(cluster, follower, loaded):
    control.set_fault(cluster.meta.http, rpc="listSpaces", leader_changed=follower.addr, count=1)
    with control.MetaClient(cluster.meta.addr, "header", follow_leader=False) as c:
        resp = c.listSpaces(meta.ListSpacesReq())
        assert resp.code == EC.E_LEADER_CHANGED and control.fmt_addr(resp.leader) == follower.addr
    control.set_fault(cluster.meta.http, rpc="listSpaces", leader_changed=follower.addr, count=1)
    with control.MetaClient(cluster.meta.addr) as c:  # leader -> follower -> back to the leader
        resp = c.listSpaces(meta.ListSpacesReq())
        assert resp.code == EC.SUCCEEDED and [s.name for s in resp.spaces] == [b"space1"]


def test_delay_fault(cluster):
    control.set_fault(cluster.meta.http, rpc="listCluster", delay=1.0, count=1)
    with control.MetaClient(cluster.meta.addr) as c:
        t0 = time.monotonic()
        assert c.listCluster(meta.ListClusterInfoReq()).code == EC.SUCCEEDED
        assert time.monotonic() - t0 >= 1.0
        t0 = time.monotonic()
        c.listCluster(meta.ListClusterInfoReq())
        assert time.monotonic() - t0 < 0.5


def test_hang_fault_until_cleared(cluster):
    control.set_fault(cluster.meta.http, rpc="listCluster", hang=True)
    out = {}

    def call():
        with control.MetaClient(cluster.meta.addr, timeout=20) as c:
            out["resp"] = c.listCluster(meta.ListClusterInfoReq())

    t = threading.Thread(target=call)
    t.start()
    with control.MetaClient(cluster.meta.addr, timeout=1.0) as c:
        with pytest.raises(Exception):  # a client with a short timeout gives up
            c.listCluster(meta.ListClusterInfoReq())
    assert t.is_alive()
    control.clear_faults(cluster.meta.http)
    t.join(10)
    assert not t.is_alive() and out["resp"].code == EC.SUCCEEDED


def test_failed_checkpoint_leaves_invalid_snapshot(cluster, loaded):
    bad = cluster.storages[1]
    control.set_fault(bad.http, fail_checkpoint=True, count=1)
    with control.MetaClient(cluster.meta.addr) as c:
        resp = c.createBackup(meta.CreateBackupReq())
        assert resp.code == EC.E_BACKUP_FAILED
    snaps = _snapshots(cluster)
    assert len(snaps) == 1
    name, snap = next(iter(snaps.items()))
    assert snap.status == meta.SnapshotStatus.INVALID
    sid = 1
    left = [p for p in cluster.storages if p is not bad]
    for p in left:  # the others made their checkpoints: left behind, as Nebula does
        assert all(os.path.isdir(layout.space_checkpoint_dir(str(dp), sid, name)) for dp in p.data_paths)
    assert not any(os.path.exists(layout.space_checkpoint_dir(str(dp), sid, name)) for dp in bad.data_paths)
    for p in cluster.storages:  # writes were unblocked
        assert control.storage_stats(p.http)["blocked"] is False
    data.load(cluster.meta.addr, spaces=1, size_bytes=1 * 2**20, retry_timeout=1)
    with control.MetaClient(cluster.meta.addr) as c:
        assert c.dropSnapshot(meta.DropSnapshotReq(names=[name.encode()])).code == EC.SUCCEEDED
        for p in left:
            assert not any(os.path.exists(layout.space_checkpoint_dir(str(dp), sid, name)) for dp in p.data_paths)
        ok = c.createBackup(meta.CreateBackupReq())  # the fault was used up
        assert ok.code == EC.SUCCEEDED
        assert c.dropSnapshot(meta.DropSnapshotReq(names=[ok.meta.backup_name])).code == EC.SUCCEEDED


def test_storaged_down_fails_backup(cluster, loaded):
    name = "storage3"
    p = cluster.procs[name]
    cluster.stop(name)
    try:
        with control.MetaClient(cluster.meta.addr) as c:
            resp = c.createBackup(meta.CreateBackupReq())
            assert resp.code in (EC.E_BLOCK_WRITE_FAILURE, EC.E_BACKUP_FAILED)
        snaps = _snapshots(cluster)
        assert [s.status for s in snaps.values()] == [meta.SnapshotStatus.INVALID]
        for q in cluster.storages:
            if q is not p:
                assert control.storage_stats(q.http)["blocked"] is False
    finally:
        cluster.start(name)
        cluster.wait_registered([name])
    with control.MetaClient(cluster.meta.addr) as c:
        assert c.dropSnapshot(meta.DropSnapshotReq(names=[n.encode() for n in snaps])).code == EC.SUCCEEDED


def test_fail_writes_fault(cluster, loaded):
    for p in cluster.storages:
        control.set_fault(p.http, fail_writes=True, count=1)
    with pytest.raises(control.HTTPStatusError) as ei:
        data.load(cluster.meta.addr, spaces=1, size_bytes=256 * 1024)
    assert ei.value.status == 500


def test_sigterm_stops_metad_with_a_hung_rpc(cluster, follower):
    control.set_fault(follower.http, rpc="verifyClientVersion", hang=True)
    errors = []

    def call():
        try:
            with control.MetaClient(follower.addr, timeout=20) as c:
                c.verifyClientVersion(meta.VerifyClientVersionReq())
        except Exception as exc:  # noqa: BLE001 - the server went away
            errors.append(exc)

    t = threading.Thread(target=call)
    t.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    assert cluster.stop("meta2") == 0
    assert time.monotonic() - t0 < 5
    assert not follower.pid_file.exists()
    assert control.wait_port_closed(follower.ip, follower.port)
    t.join(20)
    assert not t.is_alive()
