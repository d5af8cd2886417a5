"""Journals an earlier brsm wrote (kept here by make_fixtures.py) still fold, resume and roll back.

Every scenario is loaded twice (the world is changed by a drive): once resumed to the end, once rolled
back, and the outcome is checked on the fakes the journal's run left behind.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from brsm.errors import UsageError
from property_tests.campaign_support import World, all_files, check_journal, fast_sleeps, leases_left, manifests, space_data

HERE = Path(__file__).parent


@pytest.fixture
def load():
    worlds: list[World] = []

    def make(scenario: str) -> tuple[World, dict]:
        saved = pickle.loads((HERE / scenario / "world.pickle").read_bytes())
        w = World(cluster=saved["cluster"], journal_file=HERE / scenario / "journal.db", objects=saved["objects"])
        worlds.append(w)
        return w, saved["expected"]

    with fast_sleeps():
        yield make
        for w in worlds:
            w.close()


def test_a_finished_backup_folds_and_needs_nothing(load):
    w, exp = load("backup_done")
    st = w.backup_runner.state(exp["op"])
    assert st.phase == "done" and st.facts["backup_name"] == exp["backup_name"]
    assert exp["backup_name"] in manifests(w.storage)
    assert w.run(w.backup_runner.resume(exp["op"])).phase == "done"
    with pytest.raises(UsageError):
        w.run(w.backup_runner.rollback(exp["op"]))


@pytest.mark.parametrize("drive", ["resume", "rollback"])
def test_a_failed_backup_resumes_or_rolls_back(load, drive):
    w, exp = load("backup_failed")
    op = exp["op"]
    assert w.backup_runner.state(op).phase == "failed"
    st = w.run(getattr(w.backup_runner, drive)(op))
    w.run(check_journal(w.inner, op, w.backup_wf, st))
    if drive == "resume":
        assert st.phase == "done" and st.facts["backup_name"] in manifests(w.storage)
    else:
        assert st.phase == "rolled_back" and not manifests(w.storage) and not mem_keys(w)
        assert not w.cluster.snapshots
    assert all_files(w.cluster) == exp["files_before"] and not leases_left(w.cluster)


def mem_keys(w: World) -> list[str]:
    return [k for k in w.storage.inner.objects if "/BACKUP_" in k]


@pytest.mark.parametrize("scenario", ["restore_killed_after_set_aside", "restore_failed_after_started"])
def test_an_unfinished_restore_resumes_to_the_backup(load, scenario):
    w, exp = load(scenario)
    op = exp["op"]
    assert w.restore_runner.state(op).phase in ("running", "failed")
    st = w.run(w.restore_runner.resume(op))
    w.run(check_journal(w.inner, op, w.restore_wf, st))
    assert st.phase == "done"
    now = space_data(w.cluster)
    for sid, files in exp["backup_data"].items():
        if any(files.values()) and sid in now:
            assert now[sid] == files, sid
    assert not leases_left(w.cluster)
    assert not any("nebula_brsm_old_" in p for h, p in all_files(w.cluster))


@pytest.mark.parametrize("scenario", ["restore_killed_after_set_aside", "restore_failed_after_started"])
def test_an_unfinished_restore_rolls_back_to_the_files_before(load, scenario):
    w, exp = load(scenario)
    op = exp["op"]
    st = w.run(w.restore_runner.rollback(op))
    w.run(check_journal(w.inner, op, w.restore_wf, st))
    assert st.phase == "rolled_back"
    assert all_files(w.cluster) == exp["files_before"]
    assert not leases_left(w.cluster)


@pytest.mark.parametrize("scenario,ledger", [("backup_done", "files"), ("restore_killed_after_set_aside", "restored")])
def test_an_old_journal_gets_its_ledger_index_and_the_same_answers(load, scenario, ledger):
    """A journal written before the ledgers were kept in it: the first fold indexes it (in place, in
    one transaction) and the ledger, now queried, says what the fold of every event says."""
    from brsm.engine.fold import fold

    w, exp = load(scenario)
    op = exp["op"]
    runner = w.backup_runner if ledger == "files" else w.restore_runner
    index = "events_FileCopied_by_key" if ledger == "files" else "events_FileRestored_by_dest"

    def indexes():
        return {r[0] for r in w.inner.conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}

    assert index not in indexes()
    bound = getattr(runner.state(op).data, ledger)
    in_memory = getattr(fold(runner.workflow.kind, w.inner.events(op), runner.workflow.state).data, ledger)
    assert index in indexes() and bound.bound and not in_memory.bound
    assert len(bound) == len(in_memory) > 0 and bound == in_memory
    assert [f for f in bound] == sorted(in_memory, key=lambda f: f.key if ledger == "files" else f.dest)
