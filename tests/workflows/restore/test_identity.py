"""Restore and cluster identity, on the in-process fakes (the real restore workflow, journal and runner).

Nebula: metad keeps its cluster id in its data and makes a new one on fresh data
(src/daemons/MetaDaemonInit.cpp); storaged keeps the id metad gave it in ``<install>/cluster.id``
(src/clients/meta/MetaClient.cpp) and a heartbeat with another id is refused (HBProcessor.cpp:
E_WRONGCLUSTER), so that storaged never comes up. A restore of all spaces starts metad on fresh data:
the ``cluster.id`` files have to go aside with the data (nebula-br pkg/restore/restore.go) and come
back on rollback; STARTED holds only once every storaged is ONLINE.
"""
from __future__ import annotations

import pytest

from brsm.engine.step_context import op_ref
from brsm.errors import OperationFailed
from brsm.fakes.cluster import CLUSTER_ID_FILE, decode_cluster_id, encode_cluster_id
from brsm.workflows.restore import swap as restore_swap
from property_tests.campaign_support import World, all_files, fast_sleeps, space_data


@pytest.fixture
def world():
    with fast_sleeps():
        w = World()
        try:
            yield w
        finally:
            w.close()


def ids(c) -> dict[str, int | None]:
    out = {}
    for a in c.storage_addrs:
        raw = c.host_of(a).files.get(f"{c.install_dir}/{CLUSTER_ID_FILE}")
        out[a.host] = decode_cluster_id(raw) if raw is not None else None
    return out


def restore(w, name, **params):
    """Run a restore as `brsm start restore` does (a failed step rolls the run back, then raises)."""
    op = w.restore_runner.create({"name": name, "verify": "quick", "service_timeout": 5, **params})
    try:
        w.run(w.restore_runner.run(op, auto_rollback=True))
    except OperationFailed:
        pass
    return op, w.restore_runner.state(op)


def test_restore_moves_cluster_id_aside_and_storaged_takes_the_new_metads_id(world):
    w, c = world, world.cluster
    name = w.make_backup()
    old = c.cluster_id
    assert set(ids(c).values()) == {old}
    op, st = restore(w, name)
    assert st.phase == "done", st.failure
    assert c.cluster_id != old  # metad started on fresh data
    assert set(ids(c).values()) == {c.cluster_id}
    assert st.facts["storage_online"] == sorted(str(a) for a in c.storage_addrs)
    moved = st.facts["cluster_ids"]
    assert {(x["host"], x["state"]) for x in moved} >= {(a.host, "moved") for a in c.storage_addrs}
    for h, m in c.machines.items():  # CLEANED removed what was set aside, markers included
        ref = op_ref(w.inner.journal_id, op)
        assert not [p for p in m.files if f"brsm_old_{ref}" in p or f"brsm_absent_{ref}" in p], h


def test_without_the_set_aside_the_storaged_never_comes_up_and_the_run_rolls_back(world, monkeypatch):
    """Issue 12 on the fakes: brsm used to leave cluster.id in place; the restored metad (fresh data,
    new id) refuses every storaged. STARTED must fail and the rollback bring back the original."""
    async def leave_them(ctx):
        return []

    w, c = world, world.cluster
    name = w.make_backup()
    c.write("basketball")
    before, before_data = all_files(c), space_data(c)
    monkeypatch.setattr(restore_swap, "_set_aside_cluster_ids", leave_them)
    op, st = restore(w, name)
    assert st.phase == "rolled_back"
    assert "STARTED" in st.undone and "CLEANED" not in st.started
    failure = st.failure or {}
    assert failure.get("step") == "STARTED" and "storaged did not start" in failure.get("error", "")
    assert space_data(c) == before_data and all_files(c) == before
    assert all(c.service_listening(a.host, "storaged") for a in c.storage_addrs)


def test_a_storaged_that_cannot_come_up_fails_started_and_the_original_comes_back(world):
    w, c = world, world.cluster
    name = w.make_backup()
    c.write("football")
    before = all_files(c)
    bad = c.storage_addrs[0].host

    def wrong_id():  # something on that host leaves another cluster's id where storaged looks
        c.machine(bad).put(f"{c.install_dir}/{CLUSTER_ID_FILE}", encode_cluster_id(123456789))

    w.restore_box["at_step"]["STARTED"] = [wrong_id]
    op, st = restore(w, name)
    assert st.phase == "rolled_back"
    assert bad in st.failure["error"] and "cluster.id" in st.failure["hint"]
    assert all_files(c) == before  # the original cluster.id back, the stray one gone


def test_cluster_id_put_back_is_repeatable_and_keeps_an_absent_file_absent(world):
    """graphd roots get the same treatment; graphd never writes cluster.id (MetaClient persists it for
    STORAGE roles only), so theirs is journaled "absent" and stays absent."""
    w, c = world, world.cluster
    name = w.make_backup()
    before = all_files(c)
    op = w.restore_runner.create({"name": name, "verify": "quick"})
    w.restore_box["at_step"]["DOWNLOADED"] = [lambda: (_ for _ in ()).throw(OperationFailed("stop here"))]
    with pytest.raises(OperationFailed, match="stop here"):
        w.run(w.restore_runner.run(op))
    st = w.restore_runner.state(op)
    assert st.phase == "failed" and "SET_ASIDE" in st.completed
    states = {x["host"]: x["state"] for x in st.facts["cluster_ids"]}
    assert states == {**{a.host: "moved" for a in c.storage_addrs}, **{a.host: "absent" for a in c.meta_addrs}}
    assert not any(f"{c.install_dir}/{CLUSTER_ID_FILE}" in c.host_of(a).files for a in c.storage_addrs)
    st = w.run(w.restore_runner.rollback(op))
    assert st.phase == "rolled_back" and all_files(c) == before
    w.run(w.restore_runner.rollback(op))  # again: nothing changes
    assert all_files(c) == before
