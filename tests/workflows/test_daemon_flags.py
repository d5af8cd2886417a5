"""storaged's WAL dirs are found or the run stops: the running daemon's command line
(/proc/<pid>/cmdline, read as gflags reads it) must agree with the flagfile brsm reads and a restore
starts it with (brsm/workflows/daemon_flags.py). Pure parts directly; discovery on the fakes."""
from __future__ import annotations

import doctest

import pytest

from brsm.errors import PreflightFailed
from brsm.fakes.cluster import FakeCluster
from brsm.fakes.hosts import FakeHosts
from brsm.fakes.meta import FakeMeta
from brsm.workflows import daemon_flags, topology


def test_doctests():
    assert doctest.testmod(daemon_flags).failed == 0


async def _settings(argv, files):
    async def read(p):
        return files.get(p)
    return await daemon_flags.running_settings(argv, "/n", read, topology.parse_flagfile)


async def test_flags_are_taken_in_order_flagfiles_where_they_stand():
    files = {"/n/etc/a.conf": "--wal_path=/a\n--rocksdb_wal_dir=/r\n", "/etc/b.conf": "--wal_path=/b\n"}
    got = await _settings(["bin", "--wal_path=/first", "--flagfile", "etc/a.conf", "-flagfile=/etc/b.conf"], files)
    assert got["wal_path"] == daemon_flags.Setting("/b", "/etc/b.conf")  # the later flagfile wins
    assert got["rocksdb_wal_dir"] == daemon_flags.Setting("/r", "/n/etc/a.conf")
    got = await _settings(["bin", "--flagfile=etc/a.conf,/etc/b.conf", "--wal_path", "/cli"], files)
    assert got["wal_path"] == daemon_flags.Setting("/cli", "its command line")  # the command line after it wins


@pytest.mark.parametrize("argv,files,why", [
    (["bin", "--flagfile=/gone.conf"], {}, "/gone.conf is missing or unreadable"),
    (["bin", "--flagfile=/a.conf"], {"/a.conf": "--flagfile=/b.conf\n"}, "names another flagfile"),
])
async def test_a_flagfile_brsm_cannot_read_or_follow_is_said(argv, files, why):
    with pytest.raises(daemon_flags.CannotTell, match=why):
        await _settings(argv, files)


def test_defaults_and_spellings_are_no_drift():
    same = {"wal_path": daemon_flags.Setting("wal/", "x"), "cluster_id_path": daemon_flags.Setting("cluster.id", "x"),
            "minimum_reserved_bytes": daemon_flags.Setting(str(1 << 30), "x")}
    assert daemon_flags.drift(same, {"wal_path": "/n/wal"}, "/n") == []
    found = daemon_flags.drift({"rocksdb_wal_dir": daemon_flags.Setting("/r", "its command line")}, {}, "/n")
    assert [f for f, _, _ in found] == ["rocksdb_wal_dir"]


def _cluster():
    c = FakeCluster(metas=1, storages=2)
    a = c.storage_addrs[0]
    conf = topology.flagfile_path(c.host_of(a).install_dir, "storaged")
    c.host_of(a).put(conf, f"--data_path={','.join(c.storage_paths[a])}\n--wal_path=/wal\n".encode())
    return c, a


async def _discover(c):
    return await topology.discover(FakeMeta(c), FakeHosts(c), lambda h: c.machine(h).install_dir)


async def test_a_storaged_run_with_its_flagfile_is_found():
    c, a = _cluster()
    c.host_of(a).command_line_flags["storaged"] = ["--v=2", "--wal_path=/wal/"]  # same dir, other spelling
    topo = await _discover(c)
    assert {s["addr"]: s["wal_path"] for s in topo["storage"]}[str(a)] == "/wal"


@pytest.mark.parametrize("flag", ["--wal_path=/elsewhere", "--rocksdb_wal_dir=/rwal"])
async def test_a_wal_flag_on_the_command_line_that_the_flagfile_lacks_stops_the_run(flag):
    c, a = _cluster()
    c.host_of(a).command_line_flags["storaged"] = [flag]
    with pytest.raises(PreflightFailed) as e:
        await _discover(c)
    name = flag[2:].split("=")[0]
    assert f"storaged {a}" in str(e.value) and f"--{name}=" in str(e.value) and "its command line" in str(e.value)
    assert "nebula.service restart storaged" in e.value.hint


async def test_a_command_line_that_cannot_be_read_stops_the_run():
    c, a = _cluster()
    m = c.host_of(a)
    m.pids["storaged"] = 99999  # nebula.service reports a pid whose /proc entry cannot be read
    real = m.cmdline
    m.cmdline = lambda pid: None if pid == 99999 else real(pid)
    with pytest.raises(PreflightFailed, match="cannot tell where storaged .* /proc/99999/cmdline") as e:
        await _discover(c)
    assert "hidepid" in e.value.hint


async def test_a_storaged_that_does_not_run_is_taken_at_its_flagfile():
    """nebula.service starts it with the flagfile alone: that is what it will have."""
    c, a = _cluster()
    c.host_of(a).command_line_flags["storaged"] = ["--wal_path=/elsewhere"]
    c.host_of(a).running["storaged"] = c.host_of(a).listening["storaged"] = False
    topo = await _discover(c)
    assert {s["addr"]: s["wal_path"] for s in topo["storage"]}[str(a)] == "/wal"
