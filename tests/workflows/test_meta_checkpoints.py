"""The meta checkpoint a former meta leader keeps after dropSnapshot is removed by brsm.

DropSnapshotProcessor.cpp (v3.0.0 … v3.8.0) removes ``<meta data>/nebula/0/checkpoints/<NAME>`` only
on the metad that leads when the drop arrives ("TODO sky : need remove meta checkpoint from slave
hosts"); createBackup made it on the metad that led then. The fake metad does the same.
"""
from __future__ import annotations

import doctest
import posixpath

from brsm.fakes.cluster import FakeCluster
from brsm.fakes.hosts import FakeHosts
from brsm.fakes.meta import FakeMeta
from brsm.workflows import common, layout, meta_checkpoints


def test_doctests():
    assert doctest.testmod(common).failed == 0
    # meta_checkpoint_dir's doctest lives with the other paths, in layout
    assert doctest.testmod(layout).attempted > 0 and doctest.testmod(layout).failed == 0


def _meta_cps(c: FakeCluster, name: str) -> list[str]:
    out = []
    for a in c.meta_addrs:
        d = posixpath.join(c.meta_paths[a], "nebula", "0", "checkpoints", name)
        if c.host_of(a).is_dir(d) or c.host_of(a).under(d):
            out.append(str(a))
    return out


async def test_a_former_leaders_meta_checkpoint_is_removed_after_the_drop():
    c = FakeCluster(metas=3, storages=2)
    meta, hosts = FakeMeta(c), FakeHosts(c)
    c.add_space("s1")
    made = await meta.create_backup(None)
    assert _meta_cps(c, made.name) == [str(c.meta_addrs[0])]  # made where the leader was
    c.leader = c.meta_addrs[1]  # leadership moved before the drop
    await meta.drop_snapshots([made.name])
    assert _meta_cps(c, made.name) == [str(c.meta_addrs[0])]  # what Nebula leaves behind
    out = await meta_checkpoints.remove_meta_checkpoints(meta, hosts, [made.name])
    assert _meta_cps(c, made.name) == [] and len(out["removed"]) == 1 and out["left"] == []
    assert await meta_checkpoints.remove_meta_checkpoints(meta, hosts, [made.name]) == {"removed": [], "left": []}


async def test_only_backup_names_are_ever_removed():
    c = FakeCluster(metas=1, storages=1)
    meta, hosts = FakeMeta(c), FakeHosts(c)
    keep = posixpath.join(c.meta_paths[c.meta_addrs[0]], "nebula", "0", "checkpoints", "mine")
    c.host_of(c.meta_addrs[0]).put(keep + "/x.sst", b"x")
    for bad in ("mine", "../0", "BACKUP_1/../../x", ".."):
        await meta_checkpoints.remove_meta_checkpoints(meta, hosts, [bad])
    assert c.host_of(c.meta_addrs[0]).under(keep)


def test_a_backup_whose_meta_leader_moved_before_the_drop_leaves_no_meta_checkpoint():
    """The whole backup workflow on the fakes: the leader moves when dropSnapshot is sent (CLEANED),
    so metad drops only the new leader's (absent) copy; brsm removes the former leader's."""
    from property_tests.campaign_support import BACKUP_PARAMS, World, all_files

    w = World(seed=3)
    try:
        original = all_files(w.cluster)
        w.cluster.faults.add("leader_change", "dropSnapshot", 1)
        op = w.backup_runner.create(BACKUP_PARAMS)
        st = w.run(w.backup_runner.run(op))
        assert st.phase == "done" and w.cluster.leader == w.cluster.meta_addrs[1]
        assert _meta_cps(w.cluster, st.facts["backup_name"]) == []
        assert all_files(w.cluster) == original
    finally:
        w.close()
