"""Pure decisions of brsm/workflows/topology.py: flagfiles, paths, data<i>, versions."""
import doctest

import pytest

from brsm.errors import PreflightFailed
from brsm.workflows import topology


def test_doctests():
    assert doctest.testmod(topology).failed == 0


def test_flagfile_last_setting_wins_and_comments_are_ignored():
    text = "# x\n--data_path=a\n  --data_path = /b,/c \n--wal_path=\n-not_a_flag=1\n"
    assert topology.parse_flagfile(text) == {"data_path": "/b,/c", "wal_path": ""}


def test_relative_paths_resolve_against_the_install_root():
    assert topology.absolute("data/storage/../s2", "/usr/local/nebula") == "/usr/local/nebula/data/s2"


def test_data_path_index_matches_the_resolved_path_and_refuses_strangers():
    s = {"addr": "h:9779", "data_paths": ["/d1", "/link"], "real_paths": ["/d1", "/real/d2"]}
    assert topology.data_path_index(s, "/real/d2/") == 1 and topology.data_path_index(s, "/link") == 1
    with pytest.raises(PreflightFailed):
        topology.data_path_index(s, "/elsewhere")


@pytest.mark.parametrize("version,refused", [("3.8.0", False), ("3.4.1", False), ("3.6.0", False),
                                             ("3.2.1", False), ("3.0.0", False), ("3.8.0, 3.8.1", False),
                                             ("", True), ("2024.01.01-nightly", True), (", 3.8.0", True),
                                             ("3.9.0", True), ("3.3.0", True), ("3.1.0", True),
                                             ("2.6.2", True), ("v2.5.0", True), ("4.0.0", True),
                                             ("3.8.0, 2.6.2", True), ("3.2.0, 3.8.0", True)])
def test_unsupported_versions(version, refused):
    assert bool(topology.unsupported_version(version)) is refused


def test_restore_across_major_versions_is_refused_same_major_allowed():
    assert topology.version_mismatch("3.8.0", "3.0.0") is None
    assert topology.version_mismatch(None, "3.8.0") is None  # a nebula-br backup: unknown
    assert "4.0.0" in topology.version_mismatch("3.8.0", "4.0.0")


async def test_a_custom_cluster_id_path_is_read_from_storageds_flagfile():
    """MetaClient.cpp: storaged keeps metad's cluster id at ``--cluster_id_path`` (default
    "cluster.id" under its working directory); the restore sets that file aside, so topology says
    where it is: from the flagfile, relative paths against the install root."""
    from brsm.fakes.cluster import FakeCluster
    from brsm.fakes.hosts import FakeHosts
    from brsm.fakes.meta import FakeMeta
    from brsm.workflows.restore import placement

    c = FakeCluster(metas=1, storages=2)
    a, b = c.storage_addrs
    ma = c.host_of(a)
    conf = topology.flagfile_path(ma.install_dir, "storaged")
    ma.put(conf, f"--data_path={','.join(c.storage_paths[a])}\n--cluster_id_path=/ids/storaged.id\n".encode())
    topo = await topology.discover(FakeMeta(c), FakeHosts(c), lambda h: c.machine(h).install_dir)
    by = {s["addr"]: s for s in topo["storage"]}
    assert by[str(a)]["cluster_id_path"] == "/ids/storaged.id"
    assert by[str(b)]["cluster_id_path"] == f"{c.host_of(b).install_dir}/cluster.id"
    lives = {(f.host, f.live) for f in placement.cluster_id_files(topo, lambda s: s["root"], "j-1")}
    assert (a.host, "/ids/storaged.id") in lives and (b.host, f"{c.host_of(b).install_dir}/cluster.id") in lives
