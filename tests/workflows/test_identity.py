"""Issue 13, class 2: operation ids collide across journals, so everything brsm leaves on a cluster carries
``<journal id>-<op id>`` and is judged by it."""
from __future__ import annotations

import doctest
import sqlite3

import pytest

from brsm.engine import step_context
from brsm.errors import LockHeld
from brsm.fakes.cluster import FakeCluster
from brsm.fakes.hosts import FakeHosts
from brsm.workflows import maintenance
from brsm.workflows.lease import Lease, read_holder
from brsm.workflows.maintenance import LiveOps, judge_set_aside
from journal import Journal


def test_doctests():
    assert doctest.testmod(step_context).failed == 0
    assert doctest.testmod(maintenance).failed == 0


def test_each_journal_has_its_own_id_kept_across_opens_and_given_to_an_old_journal(tmp_path):
    ids = []
    for d in ("a", "b"):
        with Journal.open(tmp_path / f"{d}.db") as j:
            ids.append(j.journal_id)
        with Journal.open(tmp_path / f"{d}.db") as j:
            assert j.journal_id == ids[-1]
    assert ids[0] != ids[1] and all(len(i) == 12 and int(i, 16) >= 0 for i in ids)
    old = tmp_path / "old.db"  # a journal of schema version 2 (an older brsm) gets one when opened
    from journal import schema
    con = sqlite3.connect(old, isolation_level=None)
    schema.migrate(con, old, target=2)
    con.close()
    with Journal.open(old) as j:
        assert len(j.journal_id) == 12


def test_set_aside_dirs_are_judged_by_their_ref():
    live = LiveOps(op_ids=frozenset({3}), refs=frozenset({"aaaaaaaaaaaa-3"}),
                   known_refs=frozenset({"aaaaaaaaaaaa-1", "aaaaaaaaaaaa-2", "aaaaaaaaaaaa-3"}))
    assert judge_set_aside("aaaaaaaaaaaa-2", live)[0] == "set_aside"  # this journal's finished restore
    assert judge_set_aside("aaaaaaaaaaaa-3", live)[0] == "in_use"  # this journal's unfinished one
    assert judge_set_aside("bbbbbbbbbbbb-2", live)[0] == "set_aside_unknown"  # another journal's op 2
    assert judge_set_aside("2", live)[0] == "set_aside_unknown"  # an older brsm's: not provably ours
    assert judge_set_aside("bbbbbbbbbbbb-2", live, frozenset({"bbbbbbbbbbbb-2"}))[0] == "in_use"  # holds the lease


async def test_a_lease_held_by_the_same_op_id_of_another_journal_is_not_ours():
    c = FakeCluster(metas=1, storages=1)
    hosts = FakeHosts(c)
    h = hosts.host(c.meta_addrs[0].host)
    path = f"{c.install_dir}/brsm.lease"
    theirs = Lease([(h, path)], op_id=38, ref="aaaaaaaaaaaa-38", kind="backup", who="x@y")
    await theirs.acquire()
    try:
        ours = Lease([(h, path)], op_id=38, ref="bbbbbbbbbbbb-38", kind="restore", who="z@w")
        with pytest.raises(LockHeld, match="operation 38 of journal aaaaaaaaaaaa"):
            await ours.acquire()
        await ours.release()  # never removes a lease that names another journal's op 38
        holder = await read_holder(h, path)
        assert theirs.mine(holder) and not ours.mine(holder)
        legacy = Lease([(h, path)], op_id=38, kind="backup", who="x@y")  # an older brsm's op 38: not it either
        with pytest.raises(LockHeld):
            await legacy.acquire()
    finally:
        await theirs.release()
    assert not await h.exists(path)
