"""brsm.workflows.restore.placement: where a restore puts things, and whether it can stage (issue 15)."""
from __future__ import annotations

import pytest

from brsm.errors import PreflightFailed
from brsm.workflows.restore import placement as pl

TOPO = {
    "storage": [{"addr": "10.0.0.2:9779", "host": "10.0.0.2", "data_paths": ["/d0", "/d1"], "wal_path": "/wal"},
                {"addr": "10.0.0.1:9779", "host": "10.0.0.1", "data_paths": ["/d0", "/d1"]}],
    "meta": [{"addr": "10.0.0.9:9559", "host": "10.0.0.9", "data_paths": ["/m"]}],
    "graph": [{"addr": "10.0.0.9:9669", "host": "10.0.0.9", "root": "/opt/nebula"}],
}
PAIRS = [("o1:9779", "10.0.0.1:9779"), ("o2:9779", "10.0.0.2:9779")]


def test_hosts_pair_in_sorted_order_or_as_mapped():
    assert pl.pair_hosts(["o2:1", "o1:1"], ["n2:1", "n1:1"], None) == [("o1:1", "n1:1"), ("o2:1", "n2:1")]
    assert pl.pair_hosts(["o1:1", "o2:1"], ["n1:1", "n2:1"], "o1:1=n2:1,o2:1=n1:1") == [("o1:1", "n2:1"),
                                                                                         ("o2:1", "n1:1")]
    with pytest.raises(PreflightFailed, match="distinct"):
        pl.pair_hosts(["o1:1", "o2:1"], ["n1:1", "n2:1"], "o1:1=n1:1,o2:1=n1:1")
    with pytest.raises(PreflightFailed, match="not old=new"):
        pl.pair_hosts(["o1:1"], ["n1:1"], "o1:1")


def test_targets_follow_the_pairing_the_data_path_index_and_the_wal_path():
    assert pl.target("B", "B/data/o1:9779/data1/5/data/1.sst", PAIRS, TOPO) == ("10.0.0.1", "/d1/nebula/5/data/1.sst", "/d1")
    assert pl.target("B", "B/data/o2:9779/data0/5/wal/3/00.wal", PAIRS, TOPO) == ("10.0.0.2", "/wal/nebula/5/wal/3/00.wal", "/wal")
    assert pl.target("B", "B/data/o1:9779/data0/5/wal/3/00.wal", PAIRS, TOPO)[2] == "/d0"  # no --wal_path there
    assert pl.target("B", "B/meta/x.sst", PAIRS, TOPO) is None


def test_a_staged_file_sits_in_its_roots_staging_dir_at_the_same_relative_path():
    host, dest, root = pl.target("B", "B/data/o2:9779/data0/5/wal/3/00.wal", PAIRS, TOPO)
    assert pl.staged_path(dest, root, "7") == "/wal/nebula_brsm_new_7/nebula/5/wal/3/00.wal"


def test_every_staged_tree_is_swapped_onto_its_live_path_and_nothing_else():
    all_spaces = pl.swaps(TOPO, "7", None)
    assert ("10.0.0.2", "/wal/nebula_brsm_new_7/nebula", "/wal/nebula") in all_spaces
    assert len(all_spaces) == 5  # two data paths on each storage host, and one --wal_path; no meta dir
    chosen = pl.swaps(TOPO, "7", ["5", "12"])
    assert ("10.0.0.1", "/d1/nebula_brsm_new_7/nebula/12", "/d1/nebula/12") in chosen
    assert len(chosen) == 10
    # every swap's staged dir is where the staged files of that root and space are
    host, dest, root = pl.target("B", "B/data/o1:9779/data1/12/data/1.sst", PAIRS, TOPO)
    assert any(pl.staged_path(dest, root, "7").startswith(s + "/") and h == host for h, s, _ in chosen)


def test_moves_set_aside_whole_trees_or_chosen_spaces_and_copy_meta_for_chosen_spaces():
    full = pl.moves(TOPO, "7", None)
    assert ("10.0.0.9", "/m/nebula", "/m/nebula_brsm_old_7", "move") in full
    chosen = pl.moves(TOPO, "7", ["5"])
    assert ("10.0.0.9", "/m/nebula", "/m/nebula_brsm_old_7", "copy") in chosen
    assert ("10.0.0.2", "/wal/nebula/5", "/wal/nebula_brsm_old_7/5", "move") in chosen
    # the staging dir is never inside what goes aside, nor the other way round
    for _h, live, aside, _m in full + chosen:
        for _h2, staged, _l in pl.swaps(TOPO, "7", None):
            assert not staged.startswith(live + "/") and not aside.startswith(staged)


def test_cluster_id_files_of_storage_and_graph_roots():
    files = pl.cluster_id_files(TOPO, lambda s: s.get("root") or "/usr/local/nebula", "7")
    assert [(c.host, c.live) for c in files] == [("10.0.0.1", "/usr/local/nebula/cluster.id"),
                                                 ("10.0.0.2", "/usr/local/nebula/cluster.id"),
                                                 ("10.0.0.9", "/opt/nebula/cluster.id")]


GiB, MiB = 1 << 30, 1 << 20


@pytest.mark.parametrize("free, offline, mode", [
    (100 * GiB, False, pl.STAGED),
    (100 * GiB, True, pl.OFFLINE),                         # asked for
    (10 * GiB + 600 * MiB, False, pl.OFFLINE),             # offline fits (10.5 GiB + 64 MiB), staging does not
    (10 * GiB + 500 * MiB, False, None),                   # not even offline
])
def test_the_mode_is_staged_unless_asked_or_it_does_not_fit(free, offline, mode):
    need = {("h", "/d"): 10 * GiB, ("h", "/e"): 1 * MiB}
    c = pl.choose_mode(need, {("h", "/d"): free, ("h", "/e"): 100 * GiB}, offline)
    assert c.mode == mode
    if mode is None:
        assert c.short == (f"h:/d needs {pl.offline_need(10 * GiB) >> 20} MiB, has {free >> 20} MiB free",)
    if mode == pl.OFFLINE and not offline:
        assert "h:/d" in c.why and "h:/e" not in c.why


def test_staging_always_needs_more_than_offline():
    for size in (0, 1, 100 * MiB, 10 * GiB, 5 << 40):
        assert pl.staged_need(size) >= pl.offline_need(size) + pl.SERVING_HEADROOM_MIN


def test_the_examples_in_the_docstrings_hold():
    import doctest

    from brsm.workflows.restore import proof

    for mod in (pl, proof):
        assert doctest.testmod(mod).failed == 0, mod.__name__
