"""Cluster identity and machines in the sandbox, as in Nebula's source (vesoft-inc/nebula 5d43e44):

- src/meta/processors/admin/HBProcessor.cpp (HBProcessor::process) and src/meta/ActiveHostsMan.cpp
  (machineRegistered): a STORAGE heartbeat from a host that is not a registered machine gets
  E_MACHINE_NOT_FOUND and registers nothing; with cluster id 0 it gets metad's id, with another
  non-zero id E_WRONGCLUSTER, and neither error records the heartbeat;
- src/meta/processors/zone/AddHostsProcessor.cpp (AddHostsProcessor::process): ADD HOSTS;
- src/clients/meta/MetaClient.cpp (heartbeat, waitForMetadReady), src/storage/StorageServer.cpp
  (start) and FileBasedClusterIdMan.cpp: storaged sends the id of ``cluster.id`` under its working
  directory (the install root), writes metad's id there (8 bytes, the machine's byte order) once a
  heartbeat is accepted, and opens no port until then — retrying forever, never exiting;
  graphd keeps no cluster.id (only STORAGE roles do);
- src/daemons/MetaDaemonInit.cpp: metad keeps its id in its data (``__meta_cluster_id_key__``, in no
  backed-up table) and makes a new random one on fresh data;
- src/meta/processors/admin/GetMetaDirInfoProcessor.cpp and MetaClientOptions.rootPath_: a daemon's
  DirInfo.root is its working directory.
Each test fails if the sandbox drifts from that.
"""
from __future__ import annotations

import os
import shutil
import sys
import time

import pytest
from nebula3.common import ttypes as common
from nebula3.meta import ttypes as meta

from brsm.sandbox import control
from brsm.sandbox.hosts import pid_alive, port_open

pytestmark = pytest.mark.sandbox
EC = common.ErrorCode
LIVENESS = 5.5  # the stand-in's heartbeat window (HOST_OFFLINE_AFTER_MS) and a little


@pytest.fixture(scope="module")
def cl(mini):
    """metad and graphd on meta1, storaged on storage1/2; nothing registered yet. The tests run in
    file order: the backup in the metad test must come before test_add_hosts registers machines that
    do not exist (createBackup would try to block writes on them)."""
    mini.kill_all()
    for name in ("metad", "graphd"):
        assert mini.svc("meta1", "start", name).returncode == 0
    mini.wait(lambda: port_open(mini.hosts["meta1"].address, 9559), what="metad listening")
    yield mini
    mini.kill_all()


def meta_addr(m) -> str:
    return m.meta_addrs[0]


def storage_addr(h) -> str:
    return f"{h.address}:9779"


def cluster_id(m) -> int:
    return control.status(m.hosts["meta1"].http_addr("metad"))["cluster_id"]


def hb(m, addr: str, role: int = meta.HostRole.STORAGE, cluster: int = 0):
    host, port = control.split_addr(addr)
    with control.MetaClient(meta_addr(m), follow_leader=False) as mc:
        return mc.heartBeat(meta.HBReq(role=role, host=common.HostAddr(host=host, port=port), cluster_id=cluster,
                                       git_info_sha=b"conformance"))


def add_hosts(m, *addrs: str):
    with control.MetaClient(meta_addr(m)) as mc:
        return mc.addHosts(meta.AddHostsReq(hosts=[control.host_addr(a) for a in addrs]))


def storage_hosts(m) -> dict[str, int]:
    with control.MetaClient(meta_addr(m)) as mc:
        resp = mc.listHosts(meta.ListHostsReq(type=meta.ListHostType.STORAGE))
    assert resp.code == EC.SUCCEEDED
    return {control.fmt_addr(h.hostAddr): h.status for h in resp.hosts or []}


def machines(m) -> list[str]:
    return control.http_call(m.hosts["meta1"].http_addr("metad"), "GET", "/hosts")["machines"]


def id_file(h) -> str:
    return os.path.join(h.install_dir, "cluster.id")


def read_id(path: str) -> int:
    with open(path, "rb") as fh:
        raw = fh.read()
    assert len(raw) == 8, raw  # FileBasedClusterIdMan writes the int64 as it is in memory
    return int.from_bytes(raw, sys.byteorder, signed=True)


def test_an_unregistered_storaged_gets_machine_not_found_and_never_listens(cl):
    """HBProcessor: ``if (!ActiveHostsMan::machineRegistered(...)) E_MACHINE_NOT_FOUND`` (leader set),
    nothing recorded; StorageServer::start waits in waitForMetadReady, ports closed, retrying."""
    s1 = cl.hosts["storage1"]
    resp = hb(cl, "127.0.0.254:9779")
    assert resp.code == EC.E_MACHINE_NOT_FOUND and control.fmt_addr(resp.leader) == meta_addr(cl)
    assert "127.0.0.254:9779" not in storage_hosts(cl) and "127.0.0.254:9779" not in machines(cl)
    assert cl.svc("storage1", "start", "storaged").returncode == 0
    pid = cl.pid("storage1", "storaged")
    time.sleep(2.5)  # a few heartbeats
    assert pid_alive(pid) and not port_open(s1.address, 9779) and not port_open(s1.address, 19779)
    r = cl.svc("storage1", "status", "storaged")
    assert r.returncode == 0 and r.stdout == (
        "[WARN] nebula-storaged after v3.0.0 will not start service until it is added to cluster.\n"
        "[WARN] See Manage Storage hosts:ADD HOSTS in https://docs.nebula-graph.io/\n"
        f"[INFO] nebula-storaged(sandbox): Running as {pid}, Listening on 9779\n")
    assert not os.path.exists(id_file(s1))
    assert storage_addr(s1) not in storage_hosts(cl)
    # ADD HOSTS, as an operator does: the next heartbeat is accepted, storaged persists the id and serves
    assert add_hosts(cl, storage_addr(s1)).code == EC.SUCCEEDED
    cl.wait(lambda: port_open(s1.address, 9779), 15, "storage1 listening after ADD HOSTS")
    assert storage_hosts(cl)[storage_addr(s1)] == meta.HostStatus.ONLINE
    assert read_id(id_file(s1)) == cluster_id(cl)
    assert not os.path.exists(os.path.join(os.path.dirname(s1.data_paths[0]), "cluster.id"))


def test_metad_keeps_its_id_in_its_data_and_makes_a_new_one_on_fresh_data(cl):
    """MetaDaemonInit: the id comes from __meta_cluster_id_key__ in metad's own data; with none (fresh
    data) the leader creates a new random one. restoreMeta brings tables, never that key."""
    meta1 = cl.hosts["meta1"]
    data = meta1.data_paths[0]
    s1 = cl.hosts["storage1"]
    cl.wait(lambda: port_open(s1.address, 9779), 15, "storage1 listening")
    with control.MetaClient(meta_addr(cl)) as mc:
        control.check(mc.createSpace(meta.CreateSpaceReq(properties=meta.SpaceDesc(
            space_name=b"conformance", partition_num=2), if_not_exists=True)), "createSpace")
        bm = control.check(mc.createBackup(meta.CreateBackupReq()), "createBackup").meta
    files = [f.decode() for f in bm.meta_files]
    original = cluster_id(cl)

    def restart_metad() -> None:
        pid = cl.pid("meta1", "metad")
        cl.svc("meta1", "stop", "metad")
        cl.wait(lambda: not pid_alive(pid) and not port_open(meta1.address, 9559), 15, "metad exit")
        assert cl.svc("meta1", "start", "metad").returncode == 0
        cl.wait(lambda: port_open(meta1.address, 9559) and port_open(*meta1.http_addr("metad")), 15, "metad listening")

    restart_metad()
    assert cluster_id(cl) == original  # kept in its data
    saved = os.path.join(os.path.dirname(data), "meta-original")
    dl = os.path.join(os.path.dirname(data), "download")
    shutil.copytree(os.path.dirname(files[0]), dl)
    pid = cl.pid("meta1", "metad")
    cl.svc("meta1", "stop", "metad")
    cl.wait(lambda: not pid_alive(pid) and not port_open(meta1.address, 9559), 15, "metad exit")
    os.rename(data, saved)
    try:
        assert cl.svc("meta1", "start", "metad").returncode == 0
        cl.wait(lambda: port_open(meta1.address, 9559) and port_open(*meta1.http_addr("metad")), 15,
                "metad listening on fresh data")  # its status port opens after the Thrift one
        fresh = cluster_id(cl)
        assert fresh not in (0, original)
        with control.MetaClient(meta_addr(cl)) as mc:
            resp = mc.restoreMeta(meta.RestoreMetaReq(files=[os.path.join(dl, os.path.basename(f)).encode()
                                                             for f in files], hosts=[]))
            assert resp.code == EC.SUCCEEDED
            assert b"conformance" in [s.name for s in mc.listSpaces(meta.ListSpacesReq()).spaces]
        assert cluster_id(cl) == fresh  # the backup's tables do not carry the id
    finally:
        pid = cl.pid("meta1", "metad")
        cl.svc("meta1", "stop", "metad")
        cl.wait(lambda: not pid_alive(pid) and not port_open(meta1.address, 9559), 15, "metad exit")
        shutil.rmtree(data)
        os.rename(saved, data)
        assert cl.svc("meta1", "start", "metad").returncode == 0
        cl.wait(lambda: port_open(meta1.address, 9559) and port_open(*meta1.http_addr("metad")), 15, "metad listening")
    assert cluster_id(cl) == original


def test_add_hosts(cl):
    """AddHostsProcessor: empty or (std::unique) adjacent duplicates → E_INVALID_PARM; a host that
    heartbeats in another role → E_HOST_CAN_NOT_BE_ADDED; a registered one → E_EXISTED (nothing of
    the request written); otherwise every machine key."""
    assert add_hosts(cl).code == EC.E_INVALID_PARM
    assert add_hosts(cl, "127.0.0.250:9779", "127.0.0.250:9779").code == EC.E_INVALID_PARM
    graphd = f"{cl.hosts['meta1'].address}:9669"
    cl.wait(lambda: hb(cl, graphd, meta.HostRole.GRAPH).code == EC.SUCCEEDED, what="graph heartbeat")
    assert add_hosts(cl, graphd).code == EC.E_HOST_CAN_NOT_BE_ADDED
    assert graphd not in machines(cl)
    assert add_hosts(cl, "127.0.0.251:9779").code == EC.SUCCEEDED
    assert add_hosts(cl, "127.0.0.252:9779", "127.0.0.251:9779").code == EC.E_EXISTED
    assert "127.0.0.252:9779" not in machines(cl)  # all or nothing
    # only duplicates next to each other are refused (std::unique on the list as given)
    assert add_hosts(cl, "127.0.0.253:9779", "127.0.0.252:9779", "127.0.0.253:9779").code == EC.SUCCEEDED
    assert {"127.0.0.251:9779", "127.0.0.252:9779", "127.0.0.253:9779"} <= set(machines(cl))
    # a registered machine without heartbeats is listed OFFLINE (ListHostsProcessor)
    assert storage_hosts(cl)["127.0.0.251:9779"] == meta.HostStatus.OFFLINE


def test_cluster_id_of_a_heartbeat(cl):
    """HBProcessor: peer id 0 → metad's id in the answer; another non-zero id → E_WRONGCLUSTER, no
    leader, nothing recorded; the right id → accepted (the answer carries no id)."""
    addr = "127.0.0.249:9779"
    assert add_hosts(cl, addr).code == EC.SUCCEEDED
    cid = cluster_id(cl)
    wrong = hb(cl, addr, cluster=cid + 1)
    assert wrong.code == EC.E_WRONGCLUSTER and not (wrong.leader and wrong.leader.host)
    assert storage_hosts(cl)[addr] == meta.HostStatus.OFFLINE
    first = hb(cl, addr)
    assert first.code == EC.SUCCEEDED and first.cluster_id == cid
    assert storage_hosts(cl)[addr] == meta.HostStatus.ONLINE
    again = hb(cl, addr, cluster=cid)
    assert again.code == EC.SUCCEEDED and not again.cluster_id
    graph = hb(cl, "127.0.0.249:9669", meta.HostRole.GRAPH, cluster=cid + 7)  # not checked for GRAPH
    assert graph.code == EC.SUCCEEDED and not graph.cluster_id


def test_a_storaged_with_another_clusters_id_keeps_retrying_and_never_listens(cl):
    """MetaClient: a storaged sends the id in <working dir>/cluster.id; E_WRONGCLUSTER → not ready,
    waitForMetadReady loops forever (the process does not exit); listHosts: OFFLINE."""
    s2 = cl.hosts["storage2"]
    assert add_hosts(cl, storage_addr(s2)).code == EC.SUCCEEDED
    with open(id_file(s2), "wb") as fh:
        fh.write((cluster_id(cl) + 1).to_bytes(8, sys.byteorder, signed=True))
    assert cl.svc("storage2", "start", "storaged").returncode == 0
    pid = cl.pid("storage2", "storaged")
    time.sleep(LIVENESS)
    assert pid_alive(pid) and not port_open(s2.address, 9779) and not port_open(s2.address, 19779)
    assert storage_hosts(cl).get(storage_addr(s2)) == meta.HostStatus.OFFLINE
    log = open(os.path.join(s2.install_dir, "logs", "nebula-storaged.log")).read()
    assert log.count("E_WRONGCLUSTER") >= 3  # retried
    assert read_id(id_file(s2)) == cluster_id(cl) + 1  # left as it was
    # what a restore does: the file aside, storaged restarted → takes metad's id and comes up
    assert cl.svc("storage2", "stop", "storaged").returncode == 0
    cl.wait(lambda: not pid_alive(pid), 15, "storage2 exit")
    os.rename(id_file(s2), id_file(s2) + ".aside")
    assert cl.svc("storage2", "start", "storaged").returncode == 0
    cl.wait(lambda: port_open(s2.address, 9779), 15, "storage2 listening")
    assert read_id(id_file(s2)) == cluster_id(cl)
    assert storage_hosts(cl)[storage_addr(s2)] == meta.HostStatus.ONLINE


def test_roots_are_working_directories_and_graphd_keeps_no_cluster_id(cl):
    """GetMetaDirInfoProcessor and MetaClientOptions.rootPath_ (StorageServer, GraphService):
    root = current_path() = the install root nebula.service cds to; only STORAGE roles keep cluster.id."""
    meta1 = cl.hosts["meta1"]
    with control.MetaClient(meta_addr(cl)) as mc:
        d = mc.getMetaDirInfo(meta.GetMetaDirInfoReq()).dir
    assert d.root.decode() == meta1.install_dir
    hosts = control.http_call(meta1.http_addr("metad"), "GET", "/hosts")["hosts"]
    s1 = cl.hosts["storage1"]
    cl.wait(lambda: port_open(s1.address, 9779), 15, "storage1 listening")
    hosts = control.http_call(meta1.http_addr("metad"), "GET", "/hosts")["hosts"]
    assert hosts[storage_addr(s1)]["root"] == s1.install_dir
    assert hosts[f"{meta1.address}:9669"]["root"] == meta1.install_dir
    assert not os.path.exists(id_file(meta1))
