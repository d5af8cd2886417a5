"""storaged's WALs, free space and start-up in the sandbox, as in Nebula's source (v3.8.0):

- src/kvstore/NebulaStore.cpp (NebulaStore::createCheckpoint) and src/kvstore/wal/FileBasedWal.cpp
  (FileBasedWal::linkCurrentWAL): a checkpoint HARD-LINKS each part's WAL files (``link()``) under
  ``checkpoints/<name>/wal/<part>`` after closing the current file; a failed link (EXDEV for a
  --wal_path on another filesystem) fails the checkpoint with E_FAILED_TO_CHECKPOINT;
- src/kvstore/RocksEngineConfig.cpp (initRocksdbOptions): ``--rocksdb_wal_dir`` puts RocksDB's own WAL
  of space S at ``<dir>/rocksdb_wal/S``; with ``--rocksdb_disable_wal=false`` (the default there) RocksDB
  closes without flushing its memtables, so unflushed writes stay in that WAL for the next open;
- src/kvstore/DiskManager.cpp (DiskManager::hasEnoughSpace, refresh) and FileBasedWal::appendLog: a
  data path with less than ``--minimum_reserved_bytes`` (default 1 GiB) available takes no writes
  (RaftPart answers E_RAFT_WAL_FAIL);
- src/storage/StorageServer.cpp (StorageServer::start) and src/clients/meta/MetaClient.cpp
  (waitForMetadReady): the ports open only after the kvstore has loaded every part (the sandbox's
  ``--sandbox_load_parts_secs`` stands for a slow load), while the heartbeats, registered before the
  load, keep the storaged ONLINE in listHosts.
"""
from __future__ import annotations

import errno
import os
import random
import time
from pathlib import Path

import pytest
from nebula3.common import ttypes as common
from nebula3.meta import ttypes as meta

from brsm.sandbox import control, data
from brsm.sandbox.hosts import pid_alive, port_open, set_flag
from tests.sandbox_conformance.conftest import Mini

pytestmark = pytest.mark.sandbox
EC = common.ErrorCode


@pytest.fixture(scope="module")
def st(tmp_path_factory):
    m = Mini(tmp_path_factory.mktemp("storaged-disk"), storages=1)
    try:
        assert m.svc("meta1", "start", "metad").returncode == 0
        m.wait(lambda: port_open(m.hosts["meta1"].address, 9559), what="metad listening")
        s = m.hosts["storage1"]
        control.add_hosts(m.meta_addrs[0], [f"{s.address}:9779"])
        assert m.svc("storage1", "start", "storaged").returncode == 0
        m.wait(lambda: port_open(s.address, 9779), what="storaged listening")
        with control.MetaClient(m.meta_addrs[0]) as mc:
            m.sid = data.ensure_spaces(mc, ["disk"], partition_num=2)["disk"]
        yield m
    finally:
        m.close()


def host(m):
    return m.hosts["storage1"]


def write(m, size=64 << 10, seed=1):
    with control.MetaClient(m.meta_addrs[0]) as mc:
        data.write_space(mc, m.sid, size, rng=random.Random(seed), retry_timeout=5)


def restart(m, **flags):
    h = host(m)
    for k, v in flags.items():
        set_flag(h, "storaged", k, v)
    old = m.pid("storage1", "storaged")
    m.svc("storage1", "stop", "storaged")
    m.wait(lambda: not (old and pid_alive(old)) and not port_open(h.address, 9779), what="storaged stopped")
    assert m.svc("storage1", "start", "storaged").returncode == 0


def checkpoint(m, name):
    return control.http_call(host(m).http_addr("storaged"), "POST", "/checkpoint",
                             {"name": name, "spaces": {str(m.sid): [1, 2]}})


def test_checkpoint_hard_links_the_wal_and_the_next_log_starts_a_new_file(st):
    write(st)
    dp = Path(host(st).data_paths[0])
    checkpoint(st, "ck1")
    linked = sorted((dp / "nebula" / str(st.sid) / "checkpoints" / "ck1" / "wal").glob("*/*.wal"))
    assert linked
    sizes = {}
    for f in linked:
        live = dp / "nebula" / str(st.sid) / "wal" / f.parent.name / f.name
        assert os.stat(f).st_ino == os.stat(live).st_ino and os.stat(f).st_nlink >= 2, f"{f} is a hard link"
        sizes[f] = f.stat().st_size
    write(st, seed=2)
    assert {f: f.stat().st_size for f in linked} == sizes, "a linked file never grows after the checkpoint"
    live_files = list((dp / "nebula" / str(st.sid) / "wal").glob("*/*.wal"))
    assert len(live_files) > len(linked), "the logs after the checkpoint went to new files"


def test_a_wal_link_that_fails_with_exdev_fails_the_checkpoint(st):
    control.set_fault(host(st).http_addr("storaged"), wal_link_exdev=True, count=1)
    with pytest.raises(control.HTTPStatusError) as e:
        checkpoint(st, "ck-exdev")
    assert e.value.body["code"] == EC.E_FAILED_TO_CHECKPOINT and e.value.body["errno"] == errno.EXDEV
    checkpoint(st, "ck-after")  # the fault was for one link only


def test_writes_are_refused_below_minimum_reserved_bytes(st):
    free = os.statvfs(host(st).data_paths[0])
    avail = free.f_bavail * free.f_frsize
    restart(st, minimum_reserved_bytes=str(avail + (1 << 40)))
    st.wait(lambda: port_open(host(st).address, 9779), what="storaged listening")
    with pytest.raises(control.HTTPStatusError) as e:
        write(st, seed=3)
    assert e.value.status == 507 and e.value.body["code"] == EC.E_RAFT_WAL_FAIL
    restart(st, minimum_reserved_bytes=None)  # the default, 1 GiB: this machine has more free
    st.wait(lambda: port_open(host(st).address, 9779), what="storaged listening")
    write(st, seed=4)


def test_the_port_opens_only_after_the_parts_are_loaded(st):
    restart(st, sandbox_load_parts_secs="3")
    t0 = time.monotonic()
    st.wait(lambda: st.pid("storage1", "storaged") and pid_alive(st.pid("storage1", "storaged")), what="running")
    time.sleep(1.5)
    assert not port_open(host(st).address, 9779), "still loading: the port is closed, the process alive"
    with control.MetaClient(st.meta_addrs[0]) as mc:  # and its heartbeats go on: ONLINE while it loads
        hosts = mc.listHosts(meta.ListHostsReq(type=meta.ListHostType.STORAGE)).hosts
    assert [h.status for h in hosts if control.fmt_addr(h.hostAddr) == f"{host(st).address}:9779"] == [
        meta.HostStatus.ONLINE]
    st.wait(lambda: port_open(host(st).address, 9779), timeout=20, what="storaged listening")
    assert port_open(*host(st).http_addr("storaged")), "the web service starts before the storage server"
    assert time.monotonic() - t0 >= 2.5
    restart(st, sandbox_load_parts_secs=None)
    st.wait(lambda: port_open(host(st).address, 9779), what="storaged listening")


def test_rocksdb_wal_dir_holds_rocksdbs_own_wal(st, tmp_path):
    rwal = tmp_path / "rwal"
    restart(st, rocksdb_wal_dir=str(rwal))
    st.wait(lambda: port_open(host(st).address, 9779), what="storaged listening")
    data_dir = Path(host(st).data_paths[0]) / "nebula" / str(st.sid) / "data"
    before = {f.name: f.stat().st_size for f in data_dir.glob("*.log")}  # from before the flag
    write(st, seed=5)
    logs = list((rwal / "rocksdb_wal" / str(st.sid)).glob("*.log"))
    assert logs and any(f.stat().st_size for f in logs), "RocksDB's WAL is under <dir>/rocksdb_wal/<sid>"
    assert {f.name: f.stat().st_size for f in data_dir.glob("*.log")} == before, "and not in the db dir"
    # closed without a flush while RocksDB's WAL is on: the writes stay in that WAL, replayed at the next open
    sums = data.checksum(st.meta_addrs[0])
    old = st.pid("storage1", "storaged")
    st.svc("storage1", "stop", "storaged")
    st.wait(lambda: not (old and pid_alive(old)), what="storaged stopped")
    assert any(f.stat().st_size for f in (rwal / "rocksdb_wal" / str(st.sid)).glob("*.log")), "unflushed at close"
    assert st.svc("storage1", "start", "storaged").returncode == 0
    st.wait(lambda: port_open(host(st).address, 9779), what="storaged listening")
    assert data.checksum(st.meta_addrs[0]) == sums, "replayed from RocksDB's WAL at open"
    restart(st, rocksdb_wal_dir=None)
    st.wait(lambda: port_open(host(st).address, 9779), what="storaged listening")
