"""brsm/workflows/restore/disk.py and the flagfile facts it reads (topology.storage_flag_facts)."""
from __future__ import annotations

import doctest

import pytest

from brsm.errors import PreflightFailed
from brsm.workflows import topology
from brsm.workflows.restore import disk, placement

GiB, MiB = 1 << 30, 1 << 20
TOPO = {"storage": [{"addr": "a:9779", "host": "a", "data_paths": ["/d"], "minimum_reserved_bytes": 2 * GiB},
                    {"addr": "b:9779", "host": "b", "data_paths": ["/d"]}]}  # a journal from before: the default


def test_doctests():
    assert doctest.testmod(disk).failed == 0


def test_the_files_must_fit_above_the_reserve_of_each_host():
    need = {("a", "/d"): 100 * MiB, ("b", "/d"): 100 * MiB}
    room = placement.offline_need(100 * MiB)
    free = {("a", "/d"): 2 * GiB + room - 1, ("b", "/d"): GiB + room}
    with pytest.raises(PreflightFailed) as e:
        disk.usable(need, free, TOPO)
    assert "a:/d" in e.value.message and "b:/d" not in e.value.message
    assert "--minimum_reserved_bytes (2048 MiB)" in e.value.message and "nothing was changed" in e.value.message


def test_what_is_usable_is_the_free_space_less_the_reserve():
    need = {("a", "/d"): MiB, ("b", "/d"): MiB}
    free = {("a", "/d"): 10 * GiB, ("b", "/d"): 10 * GiB}
    assert disk.usable(need, free, TOPO) == {("a", "/d"): 8 * GiB, ("b", "/d"): 9 * GiB}


def test_a_rocksdb_wal_dir_that_is_also_a_data_path_is_refused():
    topo = {"storage": [{"addr": "a:9779", "host": "a", "data_paths": ["/d"], "rocksdb_wal_dir": "/d/"}]}
    with pytest.raises(PreflightFailed, match="rocksdb_wal_dir /d/ is also one of its data paths"):
        disk.usable({}, {}, topo)


def test_flagfile_facts_default_reserve_and_cannot_tell_without_a_flagfile():
    assert topology.storage_flag_facts({}, "/n", "a:1", "h:/f") == {
        "wal_path": "", "rocksdb_wal_dir": "", "minimum_reserved_bytes": GiB}
    assert topology.storage_flag_facts({"rocksdb_wal_dir": "rw"}, "/n", "a:1", "h:/f")["rocksdb_wal_dir"] == "/n/rw"
    with pytest.raises(PreflightFailed, match="cannot tell where storaged a:1 keeps its WALs"):
        topology.storage_flag_facts(None, "/n", "a:1", "h:/f")
    with pytest.raises(PreflightFailed, match="not a byte count"):
        topology.storage_flag_facts({"minimum_reserved_bytes": "1G"}, "/n", "a:1", "h:/f")


def test_the_rocksdb_wal_goes_aside_with_the_data_and_comes_back_on_undo():
    topo = {"storage": [{"addr": "a:9779", "host": "a", "data_paths": ["/d"], "rocksdb_wal_dir": "/rw"}],
            "meta": [{"addr": "m:9559", "host": "m", "data_paths": ["/m"]}]}
    assert ("a", "/rw/rocksdb_wal", "/rw/nebula_brsm_old_7", "move") in placement.moves(topo, "7", None)
    assert ("a", "/rw/rocksdb_wal/3", "/rw/nebula_brsm_old_7/3", "move") in placement.moves(topo, "7", ["3"])
    assert ("a", "/rw") in placement.data_dirs(topo)  # CLEANED removes its set-aside dir
    assert all(root != "/rw" for _h, root in placement.storage_dirs(topo))  # nothing is staged there
