"""prune: keep-last, keep-within, both; incomplete and broken are neither counted nor deleted."""
import pytest

from brsm.errors import UsageError
from brsm.workflows.catalog import list_backups
from brsm.workflows.layout import manifest_key
from brsm.workflows.prune import DELETE, KEEP, SKIP, apply_prune, parse_duration, plan_prune

from .conftest import DAY_MS, decode_meta, make_backup, now_ms


async def _plan(storage, **kw):
    entries = await list_backups(storage, decode_meta=decode_meta)
    return plan_prune(entries, now_ms=now_ms(), **kw)


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
    assert why[n[2]] == ["among the 1 newest complete", "created within the window"]
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
    assert _names(plan, DELETE) == sorted(old) and plan.warnings  # every complete backup would go
    results = await apply_prune(storage, plan)
    assert [r["name"] for r in results if r["deleted"]] == sorted(old)
    left = {d.rstrip("/") for d in await storage.list_dirs("")}
    assert left == {inc, broken.name}


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
