"""The stand-ins speak the real meta protocol (nebula3's own client) and keep data like Nebula."""
from __future__ import annotations

import os
import shutil
import socket
import threading
import time

import pytest
import rocksdict
from nebula3.common import ttypes as common
from nebula3.meta import ttypes as meta

from brsm.sandbox import control, data, layout
from brsm.sandbox.flags import parse_flags

EC = common.ErrorCode
pytestmark = pytest.mark.sandbox


@pytest.fixture(scope="module")
def loaded(cluster):
    report = data.load(cluster.meta.addr, spaces=2, size_bytes=16 * 2**20, seed=1)
    assert set(report.spaces) == {"space1", "space2"}
    return report


def _client(cluster, transport="buffered", **kw):
    return control.MetaClient(cluster.meta.addr, transport=transport, **kw)


def test_flags_flagfile_and_overrides(tmp_path):
    f = tmp_path / "x.conf"
    f.write_text("# comment\n--local_ip=127.0.0.5\n--port=1\n\n--data_path=/a,/b\n--daemonize\n")
    flags = parse_flags([f"--flagfile={f}", "--port=2", "--nodaemonize"])
    assert flags.str("local_ip") == "127.0.0.5"
    assert flags.int("port") == 2
    assert flags.list("data_path") == ["/a", "/b"]
    assert flags.bool("daemonize") is False


def test_status_and_pid_files(cluster):
    for p in cluster.procs.values():
        st = control.status(p.http)
        assert st["status"] == "running"
        assert int(p.pid_file.read_text()) == st["pid"]
        assert layout.port_open(p.ip, p.port)


@pytest.mark.parametrize("transport", control.TRANSPORTS)
def test_transports_verify_and_list_cluster(cluster, transport):
    client, trans = control.open_meta_client(cluster.meta.addr, transport)
    try:
        resp = client.verifyClientVersion(meta.VerifyClientVersionReq(client_version=b"3.0.0", host=None))
        assert resp.code == EC.SUCCEEDED
        resp = client.listCluster(meta.ListClusterInfoReq())
        assert resp.code == EC.SUCCEEDED
        roles = {}
        for host, services in resp.host_services.items():
            for s in services:
                assert s.addr.host == host
                roles.setdefault(s.role, []).append(s)
        assert len(roles[meta.HostRole.META]) == 1
        assert len(roles[meta.HostRole.STORAGE]) == 3
        assert len(roles[meta.HostRole.GRAPH]) == 1
        for s in roles[meta.HostRole.STORAGE]:
            proc = next(p for p in cluster.storages if p.ip == s.addr.host)
            assert [d.decode() for d in s.dir.data] == [str(d) for d in proc.data_paths]
            assert s.dir.root.decode() == str(proc.flagfile.parent.parent)  # install root
        m = roles[meta.HostRole.META][0]
        assert m.dir is None  # ListClusterInfoProcessor.cpp: META comes from the Raft peers, without a dir
        assert len(roles[meta.HostRole.AGENT]) == len(resp.host_services)  # one agent per host
        d = client.getMetaDirInfo(meta.GetMetaDirInfoReq())
        assert d.code == EC.SUCCEEDED and [x.decode() for x in d.dir.data] == [str(cluster.meta.data_paths[0])]
    finally:
        trans.close()


def test_unknown_protocol_is_dropped(cluster):
    with socket.create_connection((cluster.meta.ip, cluster.meta.port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(100) == b""
    assert control.is_running(cluster.meta.http)


def test_spaces_and_parts(cluster, loaded):
    with _client(cluster) as c:
        spaces = c.listSpaces(meta.ListSpacesReq()).spaces
        assert sorted(s.name for s in spaces) == [b"space1", b"space2"]
        item = c.getSpace(meta.GetSpaceReq(space_name=b"space1")).item
        assert item.properties.partition_num == 10
        parts = c.getPartsAlloc(meta.GetPartsAllocReq(space_id=item.space_id)).parts
        owners = {control.fmt_addr(h[0]) for h in parts.values()}
        assert owners == {p.addr for p in cluster.storages}  # round robin over the 3 hosts
        assert c.getSpace(meta.GetSpaceReq(space_name=b"nope")).code == EC.E_SPACE_NOT_FOUND
        hosts = c.listHosts(meta.ListHostsReq(type=meta.ListHostType.STORAGE)).hosts
        assert {h.status for h in hosts} == {meta.HostStatus.ONLINE} and len(hosts) == 3
    # data lives where Nebula keeps it: <dp>/nebula/<spaceId>/{data,wal/<part>}
    for p in cluster.storages:
        for dp in p.data_paths:
            assert os.path.isfile(os.path.join(layout.space_data_dir(str(dp), item.space_id), "CURRENT"))
        wal_parts = {int(x) for dp in p.data_paths
                     for x in os.listdir(layout.space_wal_dir(str(dp), item.space_id))}
        mine = {pid for pid, h in parts.items() if control.fmt_addr(h[0]) == p.addr}
        assert wal_parts == mine
        for pid in mine:
            dp = p.data_paths[layout.data_path_for_part([str(d) for d in p.data_paths], pid)]
            wal_files = os.listdir(layout.space_wal_dir(str(dp), item.space_id, pid))
            assert wal_files and all(f.endswith(".wal") and len(f) == 23 for f in wal_files)


def _check_backup_on_disk(cluster, bm):
    name = bm.backup_name.decode()
    assert name.startswith("BACKUP_") and len(name) == len("BACKUP_2024_01_01_00_00_00")
    meta_dir = layout.meta_checkpoint_dir(str(cluster.meta.data_paths[0]), name)
    for f in bm.meta_files:  # absolute paths on the metad host, as Nebula gives them
        assert os.path.dirname(f.decode()) == meta_dir and os.path.isfile(f.decode()), f
    assert not bm.storage_hosts  # never set by metad: the hosts are those of space_backups
    assert {control.fmt_addr(hb.host) for sb in bm.space_backups.values() for hb in sb.host_backups} == \
        {p.addr for p in cluster.storages}
    with _client(cluster) as c:
        for sid, sb in bm.space_backups.items():
            parts = c.getPartsAlloc(meta.GetPartsAllocReq(space_id=sid)).parts
            seen = {}
            for hb in sb.host_backups:
                addr = control.fmt_addr(hb.host)
                proc = next(p for p in cluster.storages if p.addr == addr)
                assert len(hb.checkpoints) == len(proc.data_paths)
                for i, cp in enumerate(hb.checkpoints):
                    assert cp.space_id == sid
                    path = cp.data_path.decode()
                    assert path == os.path.realpath(layout.space_checkpoint_dir(str(proc.data_paths[i]), sid, name))
                    assert os.path.isfile(os.path.join(path, "data", "CURRENT"))
                    for pid, li in cp.parts.items():
                        assert pid not in seen
                        seen[pid] = addr
                        assert li.log_id >= 1 and li.commit_log_id is None and li.term_id >= 1  # log_id and term_id only
                        assert os.listdir(os.path.join(path, "wal", str(pid)))
            assert seen == {pid: control.fmt_addr(h[0]) for pid, h in parts.items()}
            assert sb.space.space_name in (b"space1", b"space2", b"space3")


@pytest.mark.parametrize("transport", control.TRANSPORTS)
def test_create_backup_list_and_drop(cluster, loaded, transport):
    with _client(cluster, transport) as c:
        resp = c.createBackup(meta.CreateBackupReq())
        assert resp.code == EC.SUCCEEDED, resp
        bm = resp.meta
        assert bm.full and bm.all_spaces and not bm.cluster_id and not bm.storage_hosts  # CreateBackupProcessor.cpp
        assert abs(bm.create_time - time.time() * 1000) < 60_000
        assert sorted(s.space.space_name for s in bm.space_backups.values()) == [b"space1", b"space2"]
        assert sorted(os.path.basename(f.decode()) for f in bm.meta_files) == sorted(
            ["__spaces__.sst", "__index__.sst", "__parts__.sst", "__id__.sst", "__machines__.sst",
             "__zones__.sst", "__last_update_time__.sst",
             # the schema `sandbox load` creates in each space (MetaKeyUtils' space tables)
             "__tags__.sst", "__edges__.sst", "__indexes__.sst", "__local_id__.sst"])
        _check_backup_on_disk(cluster, bm)
        name = bm.backup_name
        snaps = {s.name: s for s in c.listSnapshots(meta.ListSnapshotsReq()).snapshots}
        assert snaps[name].status == meta.SnapshotStatus.VALID
        assert sorted(snaps[name].hosts.decode().split(", ")) == sorted(p.addr for p in cluster.storages)

        assert c.dropSnapshot(meta.DropSnapshotReq(names=[name])).code == EC.SUCCEEDED
        assert name not in {s.name for s in c.listSnapshots(meta.ListSnapshotsReq()).snapshots}
        assert not os.path.exists(layout.meta_checkpoint_dir(str(cluster.meta.data_paths[0]), name.decode()))
        for p in cluster.storages:
            for dp in p.data_paths:
                for sid in bm.space_backups:
                    assert not os.path.exists(layout.space_checkpoint_dir(str(dp), sid, name.decode()))
        assert c.dropSnapshot(meta.DropSnapshotReq(names=[name])).code == EC.E_SNAPSHOT_NOT_FOUND


def test_partial_backup_and_unknown_space(cluster, loaded):
    with _client(cluster) as c:
        resp = c.createBackup(meta.CreateBackupReq(spaces=[b"space2"]))
        assert resp.code == EC.SUCCEEDED
        bm = resp.meta
        assert not bm.all_spaces
        assert [s.space.space_name for s in bm.space_backups.values()] == [b"space2"]
        # MetaKeyUtils.cpp: __id__ and __last_update_time__ go into every backup, system tables only into all-spaces ones
        assert sorted(os.path.basename(f.decode()) for f in bm.meta_files) == [
            "__edges__.sst", "__id__.sst", "__index__.sst", "__indexes__.sst", "__last_update_time__.sst",
            "__local_id__.sst", "__parts__.sst", "__spaces__.sst", "__tags__.sst"]
        _check_backup_on_disk(cluster, bm)
        # the exported SST holds only space2
        sst = os.path.join(layout.meta_checkpoint_dir(str(cluster.meta.data_paths[0]), bm.backup_name.decode()),
                           "__index__.sst")
        tmp = str(cluster.base / "sstcheck")
        db = rocksdict.Rdict(tmp, rocksdict.Options(raw_mode=True))
        db.ingest_external_file([sst])
        sid2 = resp.meta.space_backups and next(iter(bm.space_backups))
        keys = list(db.keys())  # space2's name key and the name keys of its tags, edges and indexes
        assert b"__index__\x01space2" in keys and b"__index__\x01space1" not in keys
        assert all(k[9] == 1 or int.from_bytes(k[10:14], "little") == sid2 for k in keys)
        db.close()
        shutil.rmtree(tmp)
        assert c.dropSnapshot(meta.DropSnapshotReq(names=[bm.backup_name])).code == EC.SUCCEEDED
        bad = c.createBackup(meta.CreateBackupReq(spaces=[b"space2", b"nope"]))
        assert bad.code == EC.E_BACKUP_SPACE_NOT_FOUND
        assert c.listSnapshots(meta.ListSnapshotsReq()).snapshots == []


def test_write_blocking_and_concurrent_backup_refused(cluster, loaded):
    s1 = cluster.storages[0]
    control.set_fault(s1.http, checkpoint_delay=1.5, count=1)
    results = {}
    with data.BackgroundWriter(cluster.meta.addr, "space1") as writer:
        time.sleep(0.3)
        ok_before = writer.ok

        def backup():
            with _client(cluster) as c:
                results["first"] = c.createBackup(meta.CreateBackupReq())

        t = threading.Thread(target=backup)
        t.start()
        time.sleep(0.5)
        assert control.storage_stats(s1.http)["blocked"] is True
        with _client(cluster, "framed") as c2:
            assert c2.createBackup(meta.CreateBackupReq()).code == EC.E_BACKUP_RUNNING_JOBS
        # a loader retries through the blocked window
        rep = data.load(cluster.meta.addr, spaces=1, size_bytes=2 * 2**20, seed=7)
        t.join(30)
        time.sleep(0.3)
    assert ok_before > 0
    assert writer.refused > 0, "writes during createBackup must be refused"
    assert writer.ok > ok_before
    assert not writer.errors
    assert rep.counters["refused"] > 0
    assert results["first"].code == EC.SUCCEEDED
    assert control.storage_stats(s1.http)["blocked"] is False
    with _client(cluster) as c:
        assert c.dropSnapshot(meta.DropSnapshotReq(names=[results["first"].meta.backup_name])).code == 0


def test_backup_names_unique_within_a_second(cluster, loaded):
    with _client(cluster) as c:
        a = c.createBackup(meta.CreateBackupReq(spaces=[b"space1"])).meta.backup_name
        b = c.createBackup(meta.CreateBackupReq(spaces=[b"space1"])).meta.backup_name
        assert a != b and a < b
        assert c.dropSnapshot(meta.DropSnapshotReq(names=[a, b])).code == 0


def test_storaged_restart_keeps_data_and_load_changes_it(cluster, loaded):
    before = data.checksum(cluster.meta.addr)
    s2 = cluster.storages[1]
    name = next(n for n, p in cluster.procs.items() if p is s2)
    assert cluster.stop(name) == 0
    assert not s2.pid_file.exists()
    assert control.wait_port_closed(s2.ip, s2.port)
    with pytest.raises(data.DataError) as ei:
        data.checksum(cluster.meta.addr)
    assert ei.value.hint
    cluster.start(name)
    cluster.wait_registered([name])
    assert data.checksum(cluster.meta.addr) == before
    data.load(cluster.meta.addr, spaces=2, size_bytes=4 * 2**20, seed=99)
    after = data.checksum(cluster.meta.addr)
    assert set(after) == set(before)
    assert all(after[k] != before[k] for k in before)


def test_metad_restart_keeps_state(cluster, loaded):
    with _client(cluster) as c:
        spaces = c.listSpaces(meta.ListSpacesReq()).spaces
    cid = control.status(cluster.meta.http)["cluster_id"]
    assert cluster.stop("meta1") == 0
    cluster.start("meta1")
    with _client(cluster) as c:
        assert c.listSpaces(meta.ListSpacesReq()).spaces == spaces
    assert control.status(cluster.meta.http)["cluster_id"] == cid


def test_restore_meta_on_fresh_metad(cluster, loaded, tmp_path):
    with _client(cluster) as c:
        bm = c.createBackup(meta.CreateBackupReq()).meta
        orig_parts = {sid: c.getPartsAlloc(meta.GetPartsAllocReq(space_id=sid)).parts for sid in bm.space_backups}
    name = bm.backup_name.decode()
    fresh = cluster.add("meta9", "metad", 12, 9559, meta_addrs=f"{cluster.ip(12)}:9559")
    # brsm would download the SSTs to the new metad host; copy them next to its data dir
    dl = tmp_path / "download" / name
    shutil.copytree(layout.meta_checkpoint_dir(str(cluster.meta.data_paths[0]), name), dl)
    files = [str(dl / os.path.basename(f.decode())).encode() for f in bm.meta_files]
    cluster.start("meta9")
    try:
        new_hosts = {p.addr: f"{cluster.ip(40 + i)}:9779" for i, p in enumerate(cluster.storages)}
        pairs = [meta.HostPair(from_host=control.host_addr(a), to_host=control.host_addr(b))
                 for a, b in new_hosts.items()]
        with control.MetaClient(fresh.addr, "framed") as c:
            assert c.listSpaces(meta.ListSpacesReq()).spaces == []
            bad = c.restoreMeta(meta.RestoreMetaReq(files=[str(tmp_path / "missing.sst").encode()], hosts=pairs))
            assert bad.code == EC.E_RESTORE_FAILURE
            (tmp_path / "junk.sst").write_bytes(b"not an sst")
            bad = c.restoreMeta(meta.RestoreMetaReq(files=[str(tmp_path / "junk.sst").encode()], hosts=pairs))
            assert bad.code == EC.E_RESTORE_FAILURE
            resp = c.restoreMeta(meta.RestoreMetaReq(files=files, hosts=pairs))
            assert resp.code == EC.SUCCEEDED
            names = sorted(s.name for s in c.listSpaces(meta.ListSpacesReq()).spaces)
            assert names == [b"space1", b"space2"]
            for sid, parts in orig_parts.items():
                got = c.getPartsAlloc(meta.GetPartsAllocReq(space_id=sid)).parts
                assert {p: [control.fmt_addr(h) for h in hs] for p, hs in got.items()} == \
                    {p: [new_hosts[control.fmt_addr(h)] for h in hs] for p, hs in parts.items()}
                assert {pi.part_id: [control.fmt_addr(h) for h in pi.hosts] for pi in resp.part_hosts[sid]} == \
                    {p: [control.fmt_addr(h) for h in hs] for p, hs in got.items()}
            # the id counter came back: a new space does not reuse an old id
            hosts = c.listHosts(meta.ListHostsReq(type=meta.ListHostType.STORAGE)).hosts
            assert sorted(control.fmt_addr(h.hostAddr) for h in hosts) == sorted(new_hosts.values())
            assert all(h.status == meta.HostStatus.OFFLINE for h in hosts)
    finally:
        cluster.stop("meta9")
    with _client(cluster) as c:
        assert c.dropSnapshot(meta.DropSnapshotReq(names=[bm.backup_name])).code == 0


def test_drop_space_removes_storage_data(cluster, loaded):
    with _client(cluster) as c:
        data.ensure_spaces(c, ["space3"])
        sid = c.getSpace(meta.GetSpaceReq(space_name=b"space3")).item.space_id
        data.write_space(c, sid, 1 * 2**20)
        dirs = [layout.space_data_dir(str(dp), sid) for p in cluster.storages for dp in p.data_paths]
        assert all(os.path.isdir(d) for d in dirs)
        assert c.dropSpace(meta.DropSpaceReq(space_name=b"space3")).code == EC.SUCCEEDED
        assert c.getSpace(meta.GetSpaceReq(space_name=b"space3")).code == EC.E_SPACE_NOT_FOUND
        # metad never calls storaged (DropSpaceProcessor.cpp): each storaged notices the space is gone
        # and removes its dir itself (NebulaStore::removeSpace), about a heartbeat later
        deadline = time.monotonic() + 15
        while any(os.path.exists(d) for d in dirs) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(os.path.exists(d) for d in dirs)
        assert c.dropSpace(meta.DropSpaceReq(space_name=b"space3")).code == EC.E_SPACE_NOT_FOUND
        assert c.dropSpace(meta.DropSpaceReq(space_name=b"space3", if_exists=True)).code == EC.SUCCEEDED


def test_nebula3_mclient_meta_cache(cluster, loaded):
    """nebula3's own MetaCache (unframed buffered transport) loads spaces, parts and hosts."""
    from nebula3.mclient import MetaCache

    cache = MetaCache([(cluster.meta.ip, cluster.meta.port)], timeout=5000)
    try:
        sid = cache.get_space_id("space1")
        assert sid == loaded.spaces["space1"]
        alloc = cache.get_part_alloc("space1")
        assert sorted(alloc) == list(range(1, 11))
        assert sorted(control.fmt_addr(h) for h in cache.get_all_storage_addrs()) == \
            sorted(p.addr for p in cluster.storages)
    finally:
        cache.close()


def test_storaged_checkpoint_short_form(cluster, loaded):
    p = cluster.storages[0]
    sid = loaded.spaces["space1"]
    res = control.http_call(p.http, "POST", "/checkpoint", {"space_id": sid, "name": "BACKUP_MANUAL"})
    entries = res["spaces"][str(sid)]
    assert len(entries) == len(p.data_paths)
    parts = sorted(int(x) for e in entries for x in e["parts"])
    with _client(cluster) as c:
        alloc = c.getPartsAlloc(meta.GetPartsAllocReq(space_id=sid)).parts
    assert parts == sorted(pid for pid, h in alloc.items() if control.fmt_addr(h[0]) == p.addr)
    with pytest.raises(control.HTTPStatusError) as ei:  # same name twice
        control.http_call(p.http, "POST", "/checkpoint", {"space_id": sid, "name": "BACKUP_MANUAL"})
    assert ei.value.status == 409
    removed = control.http_call(p.http, "POST", "/drop_checkpoint", {"name": "BACKUP_MANUAL"})["removed"]
    assert sorted(removed) == sorted(e["data_path"] for e in entries)


def test_bulk_load_200mib_is_fast(cluster, loaded):
    with _client(cluster) as c:
        sid = data.ensure_spaces(c, ["bulk"])["bulk"]
        t0 = time.monotonic()
        out = data.write_space(c, sid, 200 * 2**20)
        elapsed = time.monotonic() - t0
        assert out["bytes"] == 200 * 2**20
        sizes = sum(os.path.getsize(os.path.join(d, f)) for p in cluster.storages for dp in p.data_paths
                    for d, _, fs in os.walk(layout.space_data_dir(str(dp), sid)) for f in fs)
        assert sizes >= 180 * 2**20  # incompressible values: the bytes are really on disk
        assert c.dropSpace(meta.DropSpaceReq(space_name=b"bulk")).code == EC.SUCCEEDED
    assert elapsed < 30, f"200 MiB took {elapsed:.1f}s"
