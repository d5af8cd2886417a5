"""ThriftMeta against the metad/storaged stand-in processes (helper-3's), plus protocol errors."""
from __future__ import annotations

import http.server
import os
import socket
import threading
import time

import pytest
from nebula3.common import ttypes as common

from brsm.adapters.meta import ThriftMeta
from brsm.adapters.meta_codec import decode_backup_meta
from brsm.errors import MetaError
from brsm.ports import HostAddr, MetaPort
from brsm.sandbox import control, data

pytestmark = pytest.mark.sandbox
EC = common.ErrorCode


@pytest.fixture(scope="module")
def cluster(meta_cluster):
    return meta_cluster


@pytest.fixture(autouse=True)
def _clear(cluster):
    yield
    for n in ("meta1", "meta2"):
        control.clear_faults(cluster.procs[n].http)


def addr(p) -> HostAddr:
    return HostAddr(p.ip, p.port)


@pytest.fixture
async def mc(cluster):
    m = ThriftMeta([addr(cluster.meta)], timeout=20)
    yield m
    await m.close()


async def test_list_cluster_meta_dir_spaces(cluster, mc):
    assert isinstance(mc, MetaPort)
    svcs = await mc.list_cluster()
    storage = sorted(s.addr for s in svcs if s.role == "STORAGE")
    assert storage == sorted(addr(p) for p in cluster.storages)
    s1 = next(s for s in svcs if s.addr == addr(cluster.procs["storage1"]))
    assert s1.data_paths == tuple(str(p) for p in cluster.procs["storage1"].data_paths)
    assert any(s.role == "META" and s.addr == addr(cluster.meta) for s in svcs)
    md = await mc.meta_dir()
    assert md.role == "META" and md.data_paths == (str(cluster.meta.data_paths[0]),)
    spaces = await mc.list_spaces()
    assert set(spaces) == {"space1", "space2"} and all(isinstance(v, int) for v in spaces.values())


async def test_create_list_drop_backup(cluster, mc):
    cb = await mc.create_backup(None)
    assert cb.name.startswith("BACKUP_") and cb.all_spaces
    bm = decode_backup_meta(cb.meta_bytes)
    assert bm.backup_name.decode() == cb.name
    assert int.from_bytes(cb.meta_bytes[:4], "big") == len(cb.meta_bytes) - 4
    assert set(cb.spaces.values()) == {"space1", "space2"}
    assert set(cb.storage_hosts) == {addr(p) for p in cluster.storages}
    assert cb.meta_files and all("/" not in f for f in cb.meta_files)
    mdir = cluster.meta.data_paths[0] / "nebula" / "0" / "checkpoints" / cb.name
    assert sorted(os.listdir(mdir)) == sorted(cb.meta_files)
    assert cb.meta_paths == tuple(str(mdir / f) for f in cb.meta_files)  # metad's full paths
    dps = {str(d) for p in cluster.storages for d in p.data_paths}
    for host, cps in cb.checkpoints.items():
        for sid, dp, cdir in cps:
            assert dp in dps and cdir == f"{dp}/nebula/{sid}/checkpoints/{cb.name}"
            assert os.path.isdir(os.path.join(cdir, "data"))
    assert abs(cb.create_time_ms / 1000 - time.time()) < 120
    snaps = {s.name: s for s in await mc.list_snapshots()}
    assert snaps[cb.name].status == "VALID"
    await mc.drop_snapshots([cb.name])
    assert cb.name not in {s.name for s in await mc.list_snapshots()}
    assert not mdir.exists()
    for host, cps in cb.checkpoints.items():
        assert not any(os.path.exists(c) for _, _, c in cps)


async def test_partial_backup_and_unknown_space(cluster, mc):
    cb = await mc.create_backup(["space1"])
    try:
        assert list(cb.spaces.values()) == ["space1"] and not cb.all_spaces
    finally:
        await mc.drop_snapshots([cb.name])
    with pytest.raises(MetaError) as ei:
        await mc.create_backup(["nope"])
    assert ei.value.code == EC.E_BACKUP_SPACE_NOT_FOUND and "createBackup" in str(ei.value)
    assert "E_BACKUP_SPACE_NOT_FOUND" in str(ei.value)


async def test_error_code_is_checked_and_named(cluster, mc):
    control.set_fault(cluster.meta.http, rpc="createBackup", code=EC.E_BACKUP_FAILED, count=1)
    with pytest.raises(MetaError) as ei:
        await mc.create_backup(None)
    assert ei.value.code == EC.E_BACKUP_FAILED
    assert "createBackup" in str(ei.value) and "E_BACKUP_FAILED" in str(ei.value) and ei.value.hint
    control.set_fault(cluster.meta.http, rpc="createBackup", code=EC.E_BACKUP_RUNNING_JOBS, count=1)
    with pytest.raises(MetaError) as ei:
        await mc.create_backup(None)
    assert ei.value.code == EC.E_BACKUP_RUNNING_JOBS and "job" in ei.value.hint
    # a name already gone is done (metad's E_SNAPSHOT_NOT_FOUND): dropping is idempotent
    await mc.drop_snapshots(["BACKUP_NOT_THERE"])
    control.set_fault(cluster.meta.http, rpc="dropSnapshot", code=EC.E_SNAPSHOT_FAILURE, count=1)
    with pytest.raises(MetaError) as ei:
        await mc.drop_snapshots(["BACKUP_NOT_THERE"])
    assert ei.value.code == EC.E_SNAPSHOT_FAILURE


async def test_drop_snapshots_drops_every_name(cluster, mc):
    """metad drops only the first name of a request (DropSnapshotProcessor.cpp): the adapter sends one per name."""
    a = await mc.create_backup(None)
    time.sleep(1.05)
    b = await mc.create_backup(None)
    await mc.drop_snapshots([a.name, b.name])
    assert not {a.name, b.name} & {s.name for s in await mc.list_snapshots()}


async def test_follows_leader_from_follower(cluster):
    m = ThriftMeta([addr(cluster.procs["meta2"])], timeout=20)
    try:
        assert set(await m.list_spaces()) == {"space1", "space2"}
        assert m._leader == addr(cluster.meta)
    finally:
        await m.close()


async def test_leader_change_fault_is_followed_then_bounded(cluster, mc):
    await mc.list_spaces()
    control.set_fault(cluster.meta.http, rpc="listSnapshots", leader_changed=cluster.procs["meta2"].addr, count=1)
    await mc.list_snapshots()  # meta1 -> meta2 (follower: leader is meta1) -> meta1
    control.set_fault(cluster.meta.http, rpc="listSnapshots", leader_changed=cluster.procs["meta2"].addr)
    with pytest.raises(MetaError) as ei:
        await mc.list_snapshots()
    assert ei.value.code == EC.E_LEADER_CHANGED and "leader changed" in str(ei.value)
    control.clear_faults(cluster.meta.http)
    assert await mc.list_snapshots() is not None


async def test_refused_address_is_skipped(cluster):
    dead = HostAddr(cluster.meta.ip, _free_port(cluster.meta.ip))
    m = ThriftMeta([dead, addr(cluster.meta)], timeout=10)
    try:
        assert "space1" in await m.list_spaces()
    finally:
        await m.close()
    m = ThriftMeta([dead], timeout=10)
    with pytest.raises(MetaError, match="cannot reach any metad") as ei:
        await m.list_spaces()
    assert str(dead) in str(ei.value) and "metad running" in ei.value.hint


async def test_restore_meta_goes_to_the_given_metad(cluster, mc, tmp_path):
    # meta2 is a follower: any other RPC there would be redirected; restoreMeta must be answered by it
    pairs = [(addr(cluster.procs["storage1"]), HostAddr("127.9.9.9", 9779))]
    with pytest.raises(MetaError) as ei:
        await mc.restore_meta(addr(cluster.procs["meta2"]), [str(tmp_path / "missing.sst")], pairs)
    assert ei.value.code == EC.E_RESTORE_FAILURE and str(addr(cluster.procs["meta2"])) in str(ei.value)


async def test_client_version_rejected(cluster, mc):
    control.set_fault(cluster.meta.http, rpc="verifyClientVersion", code=EC.E_CLIENT_SERVER_INCOMPATIBLE, count=1)
    m = ThriftMeta([addr(cluster.meta)], timeout=10)
    with pytest.raises(MetaError) as ei:
        await m.list_spaces()
    assert ei.value.code == EC.E_CLIENT_SERVER_INCOMPATIBLE and "rejects this client" in str(ei.value)
    assert "client_version" in ei.value.hint
    await m.close()


async def test_drop_space(cluster, mc):
    data.load(cluster.meta.addr, spaces=3, size_bytes=1 << 16, seed=9)
    assert "space3" in await mc.list_spaces()
    await mc.drop_space("space3")
    assert "space3" not in await mc.list_spaces()
    await mc.drop_space("space3")  # if_exists


def _free_port(ip: str) -> int:
    with socket.socket() as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


async def test_http_port_gives_one_clear_error(cluster):
    # metad's own HTTP port
    m = ThriftMeta([HostAddr(cluster.meta.ip, cluster.meta.http_port)], timeout=3)
    with pytest.raises(MetaError, match="does not speak the Nebula meta protocol \\(is it an HTTP port\\?\\)"):
        await m.list_spaces()
    await m.close()


@pytest.mark.parametrize("eager", [True, False])
async def test_tiny_http_server_gives_one_clear_error(eager):
    ip = f"127.{os.getpid() % 200 + 20}.7.{8 + eager}"

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"hello")

        def log_message(self, *a):
            pass

    if eager:  # like a real HTTP server: answers garbage with 400 at once
        srv_sock = socket.create_server((ip, 0))
        port = srv_sock.getsockname()[1]

        def serve():
            while True:
                try:
                    c, _ = srv_sock.accept()
                except OSError:
                    return
                with c:
                    try:
                        c.recv(100)
                        c.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                    except OSError:
                        pass
        t = threading.Thread(target=serve, daemon=True)
        stop = srv_sock.close
    else:  # http.server waits for a whole request line: the client times out, then probes HTTP
        srv = http.server.ThreadingHTTPServer((ip, 0), H)
        port = srv.server_address[1]
        t = threading.Thread(target=srv.serve_forever, daemon=True)

        def stop():
            srv.shutdown()
            srv.server_close()
    t.start()
    try:
        m = ThriftMeta([HostAddr(ip, port)], timeout=2)
        t0 = time.monotonic()
        with pytest.raises(MetaError) as ei:
            await m.list_spaces()
        assert str(ei.value).startswith(f"{ip}:{port} does not speak the Nebula meta protocol (is it an HTTP port?)")
        assert "9559" in ei.value.hint
        assert time.monotonic() - t0 < 10
        await m.close()
    finally:
        stop()


async def test_pooled_connection_survives_metad_restart(cluster, tmp_path):
    """Restore restarts metad and then calls restoreMeta on the same address: the stale pooled
    connection is noticed and replaced, not reported as an error."""
    m2 = cluster.procs["meta2"]
    m = ThriftMeta([addr(cluster.meta)], timeout=20)
    try:
        for _ in range(2):
            with pytest.raises(MetaError) as ei:
                await m.restore_meta(addr(m2), [str(tmp_path / "missing.sst")], [])
            assert ei.value.code == EC.E_RESTORE_FAILURE
            cluster.stop("meta2")
            cluster.start("meta2")
        with pytest.raises(MetaError) as ei:
            await m.restore_meta(addr(m2), [str(tmp_path / "missing.sst")], [])
        assert ei.value.code == EC.E_RESTORE_FAILURE
        cluster.stop("meta2")
        with pytest.raises(MetaError, match=f"cannot reach metad at {addr(m2)}"):
            await m.restore_meta(addr(m2), [str(tmp_path / "missing.sst")], [])
    finally:
        if cluster.procs["meta2"].popen is None:
            cluster.start("meta2")
        await m.close()


async def test_list_schema(cluster, mc):
    """listTags, listEdges, listTagIndexes and listEdgeIndexes of one space, as ids, names, versions."""
    data.load(cluster.meta.addr, spaces=1, size_bytes=1 << 16, seed=4)
    sid = (await mc.list_spaces())["space1"]
    s = await mc.list_schema(sid)
    assert {n for _, n, _ in s.tags} >= {"person", "company"} and {n for _, n, _ in s.edges} >= {"follow"}
    assert "i_person_name" in {n for _, n in s.indexes}
    ids = [i for i, _, _ in s.tags] + [i for i, _, _ in s.edges] + [i for i, _ in s.indexes]
    assert len(ids) == len(set(ids)) and all(v == 0 for _, _, v in s.tags)
