"""What only the fakes do: fault injection and Nebula semantics a workflow test leans on."""
from __future__ import annotations

import asyncio
import json

import pytest
from hypothesis import given, settings, strategies as st
from nebula3.common import ttypes as common

from brsm.adapters import remote_cmd
from brsm.adapters.meta_codec import decode_backup_meta
from brsm.errors import MetaError, RemoteError
from brsm.fakes import FakeCluster, FakeHosts, FakeMeta
from brsm.ports import HostAddr

EC = common.ErrorCode


@pytest.fixture
def c():
    c = FakeCluster(metas=3, storages=3, data_paths=2, seed=1)
    c.add_space("basketball")
    c.add_space("soccer")
    return c


async def test_concurrent_backup_refused_and_writes_blocked(c):
    meta = FakeMeta(c)
    writes = []

    async def writer():
        for _ in range(10):
            writes.append(c.write("basketball"))
            await asyncio.sleep(0)

    first, second, _ = await asyncio.gather(meta.create_backup(None), meta.create_backup(None), writer(),
                                            return_exceptions=True)
    assert first.name.startswith("BACKUP_")
    assert isinstance(second, MetaError) and second.code == EC.E_BACKUP_RUNNING_JOBS
    assert False in writes and writes[-1] is True  # blocked during the backup, open afterwards
    assert not c.write_blocked


async def test_failed_backup_leaves_invalid_snapshot_and_dirs(c):
    meta = FakeMeta(c)
    c.faults.add("meta_code", "createBackup", code=EC.E_BACKUP_FAILED, after_hosts=1)
    with pytest.raises(MetaError) as ei:
        await meta.create_backup(None)
    assert ei.value.code == EC.E_BACKUP_FAILED
    [snap] = await meta.list_snapshots()
    assert snap.status == "INVALID" and not c.write_blocked
    leftovers = [f for m in c.machines.values() for f in m.files if f"/checkpoints/{snap.name}/" in f]
    assert leftovers and all(f.startswith("/data/storage") for f in leftovers)
    assert {f for f in leftovers} <= set(c.machine(c.storage_addrs[0].host).files)  # only the first host
    await meta.drop_snapshots([snap.name])
    assert not [f for m in c.machines.values() for f in m.files if "/checkpoints/" in f]
    # a refused backup (no after_hosts) leaves nothing
    c.faults.add("meta_code", "createBackup", code=EC.E_BACKUP_RUNNING_JOBS)
    with pytest.raises(MetaError):
        await meta.create_backup(None)
    assert await meta.list_snapshots() == []


async def test_storage_host_down_fails_backup(c):
    meta = FakeMeta(c)
    c.faults.add("host_down", c.storage_addrs[2].host, count=None)
    with pytest.raises(MetaError) as ei:
        await meta.create_backup(None)
    assert ei.value.code == EC.E_BACKUP_FAILED
    assert [s.status for s in await meta.list_snapshots()] == ["INVALID"]


async def test_metad_down_and_leader_moves(c):
    meta = FakeMeta(c)
    hosts = FakeHosts(c)
    leader = c.leader
    c.faults.add("leader_change", "listSpaces", count=2)
    assert set(await meta.list_spaces()) == {"basketball", "soccer"}
    assert c.leader != leader
    await hosts.host(c.leader.host).service("kill", "metad", install_dir=c.install_dir)
    with pytest.raises(MetaError, match="cannot reach"):
        await meta.list_spaces()
    await hosts.host(c.leader.host).service("start", "metad", install_dir=c.install_dir)
    assert await meta.list_spaces()


async def test_restore_meta_round_trip_with_host_pairs(c):
    meta, hosts = FakeMeta(c), FakeHosts(c)
    cb = await meta.create_backup(None)
    bm = decode_backup_meta(cb.meta_bytes)
    # as the open-source metad (CreateBackupProcessor.cpp): no cluster_id, no storage_hosts
    assert bm.backup_name.decode() == cb.name and not bm.cluster_id and not bm.storage_hosts
    src = hosts.host(c.leader.host)
    mdir = f"{c.meta_paths[c.leader]}/nebula/0/checkpoints/{cb.name}"
    assert cb.meta_paths == tuple(f"{mdir}/{f}" for f in cb.meta_files)
    target = c.meta_addrs[2]
    dst = hosts.host(target.host)
    files = []
    for f in cb.meta_files:
        data = b"".join([x async for x in src.open_read(f"{mdir}/{f}")])

        async def one(d=data):
            yield d
        await dst.write_file(f"/restore/{f}", one())
        files.append(f"/restore/{f}")
    before = {s.id: dict(s.parts) for s in c.spaces.values()}
    await meta.drop_space("soccer")
    assert "soccer" not in await meta.list_spaces()
    pairs = [(a, HostAddr(f"10.0.0.{i}", 9779)) for i, a in enumerate(c.storage_addrs)]
    await meta.restore_meta(target, files, pairs)
    assert set(await meta.list_spaces()) == {"basketball", "soccer"}
    mapping = {str(a): str(b) for a, b in pairs}
    assert {s.id: dict(s.parts) for s in c.spaces.values()} == \
        {sid: {p: mapping[h] for p, h in parts.items()} for sid, parts in before.items()}
    with pytest.raises(MetaError) as ei:
        await meta.restore_meta(target, ["/restore/missing.sst"], pairs)
    assert ei.value.code == EC.E_RESTORE_FAILURE


async def test_host_faults(c):
    hosts = FakeHosts(c)
    name = c.storage_addrs[0].host
    h = hosts.host(name)
    m = c.machine(name)
    m.put("/big", bytes(10_000))
    c.faults.add("disconnect", name, after_bytes=2500)
    got = b""
    with pytest.raises(RemoteError, match="dropped"):
        async for chunk in h.open_read("/big", block_size=1000):
            got += chunk
    assert len(got) == 2500
    assert len(b"".join([x async for x in h.open_read("/big")])) == 10_000  # one-shot fault

    async def chunks():
        for _ in range(10):
            yield bytes(1000)
    c.faults.add("disconnect", name, after_bytes=3000)
    with pytest.raises(RemoteError, match="dropped"):
        await h.write_file("/out", chunks())
    assert "/out" not in m.files and "/out.brsm-tmp" not in m.files
    c.faults.add("disk_full", name)
    assert await h.free_bytes("/data") == 0
    with pytest.raises(RemoteError, match="No space left"):
        await h.write_file("/out", chunks())
    assert await h.write_file("/out", chunks()) == 10_000
    c.faults.add("host_down", name, count=None)
    for op in (h.check_login(), h.exists("/out"), h.walk("/data"), h.free_bytes("/data")):
        with pytest.raises(RemoteError, match="refused"):
            await op
    c.faults.clear("host_down")
    c.faults.add("verb_fail", name, verb="copy_tree", exit=1, stderr="cp: Input/output error")
    with pytest.raises(RemoteError, match="Input/output error"):
        await h.copy_tree("/out", "/out2")
    await h.copy_tree("/out", "/out2")
    assert "/out2" in m.files
    c.faults.add("verb_fail", name, verb="path_kind")  # a look that failed raises: never "nothing there"
    with pytest.raises(RemoteError, match="could not look at /out"):
        await h.path_kind("/out", timeout=5)
    c.faults.add("verb_fail", name, verb="list_named")  # find failing prints nothing: nothing found
    assert await h.list_named("/", ["out*"]) == []
    assert await h.list_named("/", ["out*"]) == ["/out", "/out2"]


async def test_service_all_and_unknown(c):
    h = FakeHosts(c).host(c.storage_addrs[0].host)
    r = await h.service("status", "metad", install_dir=c.install_dir)
    assert r.exit_status == 1 and "not found" in r.stderr
    await h.service("stop", "all", install_dir=c.install_dir)
    assert c.service_up(h.name, "storaged")  # stop returns at once; the process exits a little later
    r = await h.service("status", "all", install_dir=c.install_dir)
    assert (r.exit_status, r.stdout.strip().splitlines()[-1]) == (0, "[INFO] nebula-storaged(fake): Running as "
                                                                     "10779, Listening on 9779")
    r = await h.service("status", "all", install_dir=c.install_dir)
    assert (r.exit_status, r.stdout.strip().splitlines()[-1]) == (0, "[INFO] nebula-storaged(fake): Exited")
    assert not c.service_up(h.name, "storaged")
    r = await h.service("start", "storaged", install_dir="/opt/elsewhere")
    assert r.exit_status == 127


async def test_fake_nebula_service_follows_the_real_script(c):
    """scripts/nebula.service: status always exits 0; start of a running daemon exits 1 (already
    running); start and stop return before the daemon listens or exits; restart stops and starts."""
    host = c.storage_addrs[0].host
    h = FakeHosts(c).host(host)

    def port_open() -> bool:  # a connection attempt, as check_daemons makes (one observation)
        return h._port_open(host, 9779)
    r = await h.service("start", "storaged", install_dir=c.install_dir)
    pid = c.machine(host).pids["storaged"]
    assert (r.exit_status, r.stderr) == (1, f"[ERROR] nebula-storaged already running: {pid}\n")
    await h.service("stop", "storaged", install_dir=c.install_dir)
    assert port_open()  # the port still open, seen once
    r = await h.service("status", "storaged", install_dir=c.install_dir)
    assert (r.exit_status, r.stdout) == (0, "[INFO] nebula-storaged(fake): Exited\n")
    assert not port_open()
    r = await h.service("start", "storaged", install_dir=c.install_dir)
    assert (r.exit_status, r.stdout) == (0, "[INFO] Starting nebula-storaged...\n[INFO] Done\n")
    assert not port_open()  # forked, not listening yet
    assert port_open()
    r = await h.service("restart", "storaged", install_dir=c.install_dir)
    assert r.exit_status == 0 and "Stopping nebula-storaged" in r.stdout and "Starting nebula-storaged" in r.stdout
    assert c.machine(host).pids["storaged"] == pid + 2


async def test_fake_storaged_with_another_clusters_id_never_listens(c):
    """HBProcessor: a storaged heartbeat with another non-zero cluster id gets E_WRONGCLUSTER; the
    storaged keeps running and retrying but never listens, and listHosts shows it OFFLINE."""
    from brsm.fakes.cluster import CLUSTER_ID_FILE, encode_cluster_id

    meta = FakeMeta(c)
    host = c.storage_addrs[1].host
    h = FakeHosts(c).host(host)
    await h.service("kill", "storaged", install_dir=c.install_dir)
    c.machine(host).put(f"{c.install_dir}/{CLUSTER_ID_FILE}", encode_cluster_id(c.cluster_id + 1))
    await h.service("start", "storaged", install_dir=c.install_dir)
    for _ in range(3):
        r = await h.service("status", "storaged", install_dir=c.install_dir)
        assert r.exit_status == 0 and "Running as" in r.stdout and "ADD HOSTS" in r.stdout
    offline = [x.addr.host for x in await meta.list_hosts() if not x.online]
    assert offline == [host]
    # without the file (restore moves it aside) storaged takes metad's id and comes up
    await h.service("kill", "storaged", install_dir=c.install_dir)
    c.machine(host).remove_tree(f"{c.install_dir}/{CLUSTER_ID_FILE}")
    await h.service("start", "storaged", install_dir=c.install_dir)
    await h.service("status", "storaged", install_dir=c.install_dir)
    assert all(x.online for x in await meta.list_hosts())
    assert c.machine(host).files[f"{c.install_dir}/{CLUSTER_ID_FILE}"] == encode_cluster_id(c.cluster_id)


async def test_fake_metad_on_fresh_data_makes_a_new_cluster_id(c):
    """MetaDaemonInit: no __meta_cluster_id_key__ in the data → a new random id."""
    h = FakeHosts(c).host(c.leader.host)
    old = c.cluster_id
    await h.service("kill", "metad", install_dir=c.install_dir)
    h.m.move(f"{c.meta_paths[c.leader]}/nebula", f"{c.meta_paths[c.leader]}/nebula_aside")
    await h.service("start", "metad", install_dir=c.install_dir)
    assert c.cluster_id not in (0, old)


names = st.text(st.characters(min_codepoint=32, max_codepoint=0x2FF, exclude_characters="/"), min_size=1,
                max_size=12).filter(lambda n: n not in (".", ".."))  # path segments, not "." or ".."


@settings(max_examples=40, deadline=None)
@given(tree=st.dictionaries(st.lists(names, min_size=1, max_size=3).map("/".join), st.binary(max_size=50),
                            max_size=8),
       move=st.booleans())
def test_fake_fs_walk_move_remove(tree, move):
    """The fake file tree stays consistent under put/mv/rm (walk sees exactly what was put)."""
    async def go():
        c = FakeCluster(metas=1, storages=1)
        h = FakeHosts(c).host(c.meta_addrs[0].host)
        m = c.machine(h.name)
        put = {}
        for rel, data in tree.items():
            p = remote_cmd.checked_path("/t/" + rel)
            if any(q.startswith(p + "/") or p.startswith(q + "/") for q in put):
                continue  # a path cannot be both a file and a directory
            m.put(p, data)
            put[p] = data
        root = "/t"
        if move and put:
            await h.rename("/t", "/u")
            put = {"/u" + p[2:]: d for p, d in put.items()}
            root = "/u"
        if put:
            files = await h.walk(root)
            assert {f.path: f.size for f in files} == {p: len(d) for p, d in put.items()}
        await h.remove_tree(root)
        assert not await h.exists(root) and not m.under(root)
    asyncio.run(go())


def test_fake_meta_sst_files_are_json(c):
    async def go():
        cb = await FakeMeta(c).create_backup(["soccer"])
        m = c.machine(c.leader.host)
        d = json.loads(m.files[f"{c.meta_paths[c.leader]}/nebula/0/checkpoints/{cb.name}/__spaces__.sst"])
        assert [v["name"] for v in d.values()] == ["soccer"]
        # MetaKeyUtils.cpp: system tables only in an all-spaces backup; __id__ in every backup
        assert "__machines__.sst" not in cb.meta_files and "__id__.sst" in cb.meta_files
    asyncio.run(go())
