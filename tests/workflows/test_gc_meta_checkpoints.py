"""`brsm gc` finds the meta checkpoints a former meta leader keeps after dropSnapshot
(DropSnapshotProcessor.cpp removes ``<meta data>/nebula/0/checkpoints/<NAME>`` only on the metad that
leads at the drop) when brsm could not remove them at the time, and removes them with --yes; never
one an unfinished operation uses, one whose snapshot is still listed, or while a lease is held."""
from __future__ import annotations

import posixpath
from types import SimpleNamespace

from brsm.engine.definitions import GC
from brsm.engine.fold import new_state
from brsm.engine.state import STEP_COMPLETED
from brsm.fakes.cluster import FakeCluster
from brsm.fakes.hosts import FakeHosts
from brsm.fakes.meta import FakeMeta
from brsm.workflows import common, maintenance
from brsm.workflows.lease import Lease
from brsm.workflows.maintenance import LiveOps, MaintenancePorts


async def _stray(c: FakeCluster, meta: FakeMeta, *, drop: bool = True) -> tuple[str, str]:
    """A backup snapshot made on metad 0, leadership moved, then dropped: metad 0 keeps its meta
    checkpoint, as Nebula leaves it. Returns (its name, that dir)."""
    c.add_space("s1")
    made = await meta.create_backup(None)
    c.leader = c.meta_addrs[1]
    if drop:
        await meta.drop_snapshots([made.name])
    d = posixpath.join(c.meta_paths[c.meta_addrs[0]], "nebula", "0", "checkpoints", made.name)
    assert c.host_of(c.meta_addrs[0]).is_dir(d)
    return made.name, d


async def _scan(c: FakeCluster, live: LiveOps = LiveOps()) -> tuple[MaintenancePorts, list[dict]]:
    meta, hosts = FakeMeta(c), FakeHosts(c)
    p = MaintenancePorts(meta=meta, hosts=hosts, storage=None, live=live, install_dir=lambda h: c.install_dir)
    topo = await common.discover_topology(meta, hosts, p.install_dir)
    return p, await maintenance.find_orphans(p, grace_seconds=0, topology=topo)


class _Ctx:
    def __init__(self, p: MaintenancePorts, orphans: list[dict]) -> None:
        self.ports, self.ref, self.op_id, self.events = p, "aaaaaaaaaaaa-9", 9, []
        self.state = new_state(GC, maintenance.GcState)
        self.state.data.apply("OperationCreated", {"params": {"confirm": True}})
        self.state.data.apply(STEP_COMPLETED, {"step": "SCANNED", "facts": {"orphans": orphans}})

    @property
    def data(self):
        return self.state.data

    def record(self, t, d=None, **_kw):
        self.events.append((t, dict(d)))
        self.data.apply(t, dict(d))


async def test_a_stray_meta_checkpoint_is_listed_and_removed():
    c = FakeCluster(metas=2, storages=1)
    name, d = await _stray(c, FakeMeta(c))
    p, orphans = await _scan(c)
    assert [(o["kind"], o["name"], o["host"], o["path"]) for o in orphans] == \
        [("meta_checkpoint", name, c.meta_addrs[0].host, d)]
    ctx = _Ctx(p, orphans)
    assert (await maintenance.gc_remove(ctx))["removed"] == 1
    assert [t for t, _ in ctx.events] == [maintenance.REMOVED]
    assert not c.host_of(c.meta_addrs[0]).is_dir(d) and not c.host_of(c.meta_addrs[0]).under(d)
    assert (await _scan(c))[1] == []


async def test_one_an_unfinished_operation_names_is_in_use():
    c = FakeCluster(metas=2, storages=1)
    name, d = await _stray(c, FakeMeta(c))
    _, orphans = await _scan(c, LiveOps(op_ids=frozenset({4}), names={name: 4}))
    assert [(o["kind"], o["path"]) for o in orphans] == [("in_use", d)]
    assert "operation 4" in orphans[0]["why"]


async def test_one_whose_snapshot_is_still_listed_is_the_snapshots_orphan():
    """Handled as before: the snapshot is the orphan, and its removal takes every metad's copy."""
    c = FakeCluster(metas=2, storages=1)
    meta = FakeMeta(c)
    name, d = await _stray(c, meta, drop=False)
    p, orphans = await _scan(c)
    assert [(o["kind"], o["name"]) for o in orphans] == [("snapshot", name)]
    assert (await maintenance.gc_remove(_Ctx(p, orphans)))["removed"] == 1
    assert not c.host_of(c.meta_addrs[0]).is_dir(d) and not c.snapshots


async def test_a_held_lease_keeps_it_at_the_scan_and_at_the_removal():
    c = FakeCluster(metas=2, storages=1)
    meta, hosts = FakeMeta(c), FakeHosts(c)
    name, d = await _stray(c, meta)
    topo = await common.discover_topology(meta, hosts, lambda h: c.install_dir)
    m = topo["meta"][0]
    theirs = Lease([(hosts.host(m["host"]), f"{m['root']}/brsm.lease")], op_id=38, ref="bbbbbbbbbbbb-38",
                   kind="backup", who="other@box")
    p, free = await _scan(c)  # scanned before the lease was taken
    assert [o["kind"] for o in free] == ["meta_checkpoint"]
    await theirs.acquire()
    try:
        _, held = await _scan(c)
        assert [(o["kind"], o["path"]) for o in held] == [("in_use", d)]
        assert "bbbbbbbbbbbb" in held[0]["why"]
        ctx = _Ctx(p, free)  # taken between the scan and the removal: not removed
        assert (await maintenance.gc_remove(ctx))["removed"] == 0
        assert [t for t, _ in ctx.events] == [maintenance.NOT_REMOVED]
        assert c.host_of(c.meta_addrs[0]).is_dir(d)
    finally:
        await theirs.release()


async def test_one_whose_snapshot_is_listed_again_since_the_scan_is_not_removed():
    c = FakeCluster(metas=2, storages=1)
    name, d = await _stray(c, FakeMeta(c))
    p, orphans = await _scan(c)
    c.snapshots[name] = SimpleNamespace(status="VALID", hosts=[])  # one of that name since (names by the second)
    ctx = _Ctx(p, orphans)
    assert (await maintenance.gc_remove(ctx))["removed"] == 0
    assert [t for t, _ in ctx.events] == [maintenance.NOT_REMOVED] and c.host_of(c.meta_addrs[0]).is_dir(d)


async def test_only_backup_dirs_directly_under_checkpoints_are_judged():
    c = FakeCluster(metas=1, storages=1)
    root = posixpath.join(c.meta_paths[c.meta_addrs[0]], "nebula", "0", "checkpoints")
    h = c.host_of(c.meta_addrs[0])
    h.put(f"{root}/mine/x.sst", b"x")  # not a BACKUP_* name: never brsm's
    h.put(f"{root}/BACKUP_note", b"x")  # a file, not a checkpoint dir
    assert (await _scan(c))[1] == []
