"""prune: keep-last, keep-within, both; incomplete and broken are neither counted nor deleted;
``--confirm`` is a journaled operation (issue 14) that a resume finishes."""
import pytest

from brsm.engine.fold import PHASE_DONE, PHASE_FAILED
from brsm.engine.runner import Runner
from brsm.errors import StorageError, UsageError
from brsm.workflows.catalog import list_backups
from brsm.workflows.layout import manifest_key
from brsm.workflows.prune import (BACKUP_DELETED, BACKUP_DELETE_FAILED, DELETE, KEEP, PRUNE_SKIPPED, SKIP, PrunePorts,
                                  parse_duration, plan_prune, prune_workflow)
from journal import Journal

from .conftest import DAY_MS, decode_meta, make_backup, now_ms


async def _plan(storage, **kw):
    entries = await list_backups(storage, decode_meta=decode_meta)
    return plan_prune(entries, now_ms=now_ms(), **kw)


async def apply_prune(storage, plan, tmp_path=None, *, in_use=None):
    """``prune --confirm`` as the CLI runs it: a journaled operation over the same policy."""
    import tempfile
    from pathlib import Path

    d = Path(tmp_path or tempfile.mkdtemp())
    j = Journal.open(d / "journal.db")
    try:
        r = Runner(j, prune_workflow(), PrunePorts(storage=storage, decode_meta=decode_meta, in_use=in_use or {}))
        op = r.create({"keep_last": plan.keep_last, "keep_within": plan.keep_within, "now_ms": plan.now_ms})
        try:
            await r.run(op)
        except StorageError:
            pass
        deleted = {e.data["name"]: e.data for e in j.events(op, types=[BACKUP_DELETED])}
        failed = {e.data["name"]: e.data for e in j.events(op, types=[BACKUP_DELETE_FAILED])}
        return [{"name": n, "deleted": True, **deleted[n]} if n in deleted else {"name": n, "deleted": False, **failed[n]}
                for n in sorted({**deleted, **failed})]
    finally:
        j.close()


def _names(plan, action):
    return sorted(d.entry.name for d in plan.of(action))


async def _ages(storage, *ages, kind="brsm"):
    return [(await make_backup(storage, age_days=a, kind=kind, seed=i, files_per_space=1)).name
            for i, a in enumerate(ages)]


async def test_keep_last(storage):
    n = await _ages(storage, 5, 4, 3, 2, 1)
    plan = await _plan(storage, keep_last=2, keep_within=None)
    assert _names(plan, KEEP) == sorted(n[3:]) and _names(plan, DELETE) == sorted(n[:3])


async def test_keep_within(storage):
    n = await _ages(storage, 50, 40, 20, 10)
    plan = await _plan(storage, keep_last=None, keep_within=parse_duration("30d"))
    assert _names(plan, KEEP) == sorted(n[2:]) and _names(plan, DELETE) == sorted(n[:2])


async def test_both_is_a_union(storage):
    n = await _ages(storage, 50, 40, 5)
    plan = await _plan(storage, keep_last=1, keep_within=45 * 86400)
    assert _names(plan, KEEP) == sorted(n[1:]) and _names(plan, DELETE) == [n[0]]
    why = {d.entry.name: d.reasons for d in plan.decisions}
    assert why[n[2]] == ["among the 1 newest complete of all spaces", "created within the window"]
    assert why[n[1]] == ["created within the window"]


async def test_incomplete_and_broken_never_count_and_are_never_deleted(storage):
    old = await _ages(storage, 30, 20)
    inc = (await make_backup(storage, age_days=1, kind="incomplete", seed=7)).name
    broken = await make_backup(storage, age_days=0.5, seed=8)
    await storage.delete(broken.key(0))
    plan = await _plan(storage, keep_last=1, keep_within=None)
    assert _names(plan, KEEP) == [old[1]]  # the newest *complete* one
    assert _names(plan, SKIP) == sorted([inc, broken.name])
    assert _names(plan, DELETE) == [old[0]]
    plan = await _plan(storage, keep_last=None, keep_within=5 * 86400)
    # both are older than the window, but the newest complete one is the last backup of its spaces
    assert _names(plan, DELETE) == [old[0]] and _names(plan, KEEP) == [old[1]] and not plan.warnings
    results = await apply_prune(storage, plan)
    assert [r["name"] for r in results if r["deleted"]] == [old[0]]
    left = {d.rstrip("/") for d in await storage.list_dirs("")}
    assert left == {old[1], inc, broken.name}


async def test_nebula_br_backups_take_part_and_in_use_ones_stay(storage):
    n = await _ages(storage, 30, 20, 10, kind="nebula-br")
    plan = await _plan(storage, keep_last=1, keep_within=None, in_use={n[0]: 17})
    assert _names(plan, KEEP) == sorted([n[0], n[2]]) and _names(plan, DELETE) == [n[1]]
    assert "in use by unfinished operation 17" in {d.entry.name: d.reasons for d in plan.decisions}[n[0]]


async def test_apply_deletes_exactly_the_planned_ones(storage):
    n = await _ages(storage, 9, 8, 7, 6)
    await storage.put_bytes("other/keep.me", b"x")
    plan = await _plan(storage, keep_last=2, keep_within=None)
    before = {o.key for o in await storage.list("")}
    results = await apply_prune(storage, plan)
    assert all(r["deleted"] for r in results) and sorted(r["name"] for r in results) == sorted(n[:2])
    after = {o.key for o in await storage.list("")}
    assert before - after == {k for k in before if k.split("/")[0] in n[:2]}


async def test_a_half_deleted_backup_reads_as_incomplete(tmp_path):
    from brsm.adapters.storage.memory import MemoryStorage

    mem = MemoryStorage()
    a = await make_backup(mem, age_days=3, seed=1)
    await make_backup(mem, age_days=1, seed=2)
    plan = await _plan(mem, keep_last=1, keep_within=None)
    assert _names(plan, DELETE) == [a.name]
    mem.inject_fault("delete_prefix", count=-1, permanent=True)
    results = await apply_prune(mem, plan)
    assert results[0]["deleted"] is False and results[0]["error"]
    (e,) = [e for e in await list_backups(mem, decode_meta=decode_meta) if e.name == a.name]
    assert e.state == "incomplete" and manifest_key(a.name) not in e.objects


def test_policy_is_required_and_sane():
    with pytest.raises(UsageError, match="retention policy"):
        plan_prune([], keep_last=None, keep_within=None, now_ms=0)
    with pytest.raises(UsageError):
        plan_prune([], keep_last=0, keep_within=None, now_ms=0)
    with pytest.raises(UsageError):
        parse_duration("thirty days")
    assert parse_duration("30d") == 30 * DAY_MS / 1000 and parse_duration("2w") == 14 * 86400


async def test_a_failed_prune_is_journaled_and_resume_finishes_it(tmp_path):
    """Every deleted backup is an event of the prune operation (what `brsm audit` shows); one that
    could not be deleted fails the operation, and `brsm resume` deletes what the journaled plan still
    lists, but not a backup an unfinished operation started to use meanwhile."""
    from brsm.adapters.storage.memory import MemoryStorage

    mem = MemoryStorage()
    n = [(await make_backup(mem, age_days=a, seed=i, files_per_space=1)).name for i, a in enumerate((9, 8, 7, 1))]
    j = Journal.open(tmp_path / "journal.db")
    try:
        wf = prune_workflow()
        r = Runner(j, wf, PrunePorts(storage=mem, decode_meta=decode_meta, in_use={}))
        op = r.create({"keep_last": 1, "keep_within": None, "now_ms": now_ms()})
        mem.inject_fault("delete_prefix", count=1, permanent=True)
        with pytest.raises(StorageError, match="1 backup"):
            await r.run(op)
        st = r.state(op)
        assert st.phase == PHASE_FAILED and st.facts["delete"] == sorted(n[:3])
        assert [e.data["name"] for e in j.events(op, types=[BACKUP_DELETE_FAILED])] == [n[0]]
        assert sorted(e.data["name"] for e in j.events(op, types=[BACKUP_DELETED])) == sorted(n[1:3])
        # meanwhile a restore of n[0] began: the resumed prune leaves it
        r2 = Runner(j, wf, PrunePorts(storage=mem, decode_meta=decode_meta, in_use={n[0]: 99}))
        st = await r2.resume(op)
        assert st.phase == PHASE_DONE
        assert [e.data for e in j.events(op, types=[PRUNE_SKIPPED])] == [
            {"name": n[0], "why": "in use by unfinished operation 99"}]
        left = {d.rstrip("/") for d in await mem.list_dirs("")}
        assert left == {n[0], n[3]}
    finally:
        j.close()


def _entry(name: str, days_old: float, spaces: list[str], all_spaces: bool):
    from brsm.workflows.catalog import COMPLETE, BackupEntry

    return BackupEntry(name=name, state=COMPLETE, made_by="brsm", checksums=True,
                       created_ms=now_ms() - int(days_old * DAY_MS), spaces=spaces, all_spaces=all_spaces)


def test_keep_last_counts_each_space_set_apart():
    """A one-off `--spaces space1` backup is a series of its own: it neither pushes a nightly full backup
    out nor is pushed out by them (keep-last 2 kept 1 full backup and the one-off before)."""
    full = [_entry(f"BACKUP_F{i}", 10 - i, ["space1", "space2"], True) for i in range(4)]
    oneoff = _entry("BACKUP_ONEOFF", 0.5, ["space1"], False)
    plan = plan_prune([*full, oneoff], keep_last=2, keep_within=None, now_ms=now_ms())
    assert _names(plan, KEEP) == ["BACKUP_F2", "BACKUP_F3", "BACKUP_ONEOFF"]
    assert _names(plan, DELETE) == ["BACKUP_F0", "BACKUP_F1"]
    why = {d.entry.name: d.reasons for d in plan.decisions}
    assert why["BACKUP_ONEOFF"] == ["among the 2 newest complete of spaces space1"]
    assert why["BACKUP_F0"] == ["not among the 2 newest complete of all spaces"]


def test_prune_never_leaves_a_space_without_its_newest_backup():
    """A policy that would delete every backup holding a space keeps the newest of them."""
    old_space3 = _entry("BACKUP_S3", 40, ["space3"], False)
    full = [_entry(f"BACKUP_F{i}", 30 - i, ["space1", "space2"], True) for i in range(3)]
    plan = plan_prune([old_space3, *full], keep_last=None, keep_within=7 * 86400, now_ms=now_ms())
    assert _names(plan, KEEP) == ["BACKUP_F2", "BACKUP_S3"]
    why = {d.entry.name: d.reasons for d in plan.decisions}
    assert why["BACKUP_S3"] == ["the newest backup of space3"]
    assert why["BACKUP_F2"] == ["the newest backup of space1, space2"]


async def test_a_prune_refuses_while_another_journal_holds_the_cluster_lease(storage, tmp_path):
    """A live restore of another journal may use any of these backups (its lease does not say which):
    prune deletes nothing and names the holder; without a cluster config it says it could not look."""
    from brsm.errors import LockHeld
    from brsm.fakes.cluster import FakeCluster
    from brsm.fakes.hosts import FakeHosts
    from brsm.fakes.meta import FakeMeta
    from brsm.workflows import common
    from brsm.workflows.lease import Lease
    from brsm.workflows.prune import NO_LEASE_CHECK

    names = await _ages(storage, 5, 4, 3)
    c = FakeCluster(metas=1, storages=1)
    hosts, meta = FakeHosts(c), FakeMeta(c)
    topo = await common.discover_topology(meta, hosts, lambda h: c.install_dir)
    m = topo["meta"][0]
    theirs = Lease([(hosts.host(m["host"]), f"{m['root']}/brsm.lease")], op_id=1, ref="bbbbbbbbbbbb-1",
                   kind="restore", who="other@box")
    params = {"keep_last": 1, "keep_within": None, "now_ms": now_ms()}
    await theirs.acquire()
    try:
        with Journal.open(tmp_path / "a.db") as j:
            r = Runner(j, prune_workflow(), PrunePorts(storage=storage, decode_meta=decode_meta, in_use={}, meta=meta,
                                                       hosts=hosts, install_dir=lambda h: c.install_dir))
            op = r.create(params)
            with pytest.raises(LockHeld) as e:
                await r.run(op)
            assert "operation 1 of journal bbbbbbbbbbbb (restore) by other@box" in e.value.message
            assert not list(j.events(op, types=[BACKUP_DELETED]))
        assert sorted(b.name for b in await list_backups(storage, decode_meta=decode_meta)) == sorted(names)
    finally:
        await theirs.release()
    with Journal.open(tmp_path / "b.db") as j:
        r = Runner(j, prune_workflow(), PrunePorts(storage=storage, decode_meta=decode_meta, in_use={}))
        st = await r.run(r.create(params))
        assert NO_LEASE_CHECK in st.facts["warnings"] and len(st.facts["deleted"]) == 2
