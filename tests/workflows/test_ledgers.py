"""The per-file ledgers (files a backup copied, a restore restored): the same answers whether kept in
the journal (bound: queried) or folded from events handed in, and a fold of a journal holds nothing
per file."""
from __future__ import annotations

import gc
import tracemalloc

import pytest
from journal import Journal

from brsm.engine.fold import fold, fold_journal
from brsm.engine.state import STEP_COMPLETED
from brsm.workflows.backup.ledger import FILE_COPIED, PART_UPLOADED, CopiedFiles, FileCopied
from brsm.workflows.backup.state import BackupState
from brsm.workflows.restore.ledger import FILE_RESTORED, RestoredFiles
from brsm.workflows.restore.state import RestoreState


@pytest.fixture
def journal(tmp_path):
    j = Journal.open(tmp_path / "journal.db")
    yield j
    j.close()


def _op(journal, kind: str, events: list[tuple[str, dict]]) -> int:
    op = journal.create_operation(kind=kind, params={}, who="t@h", version="0").id
    with journal.driver(op) as w:
        w.append("OperationCreated", {"kind": kind, "params": {}})
        for i in range(0, len(events), 1000):
            w.append_batch(events[i:i + 1000])
    return op


def _both(journal, kind, state, events):
    """The ledger state bound to the journal, and the one folded from the same events in memory."""
    op = _op(journal, kind, events)
    return fold_journal(kind, journal, op, state).data, fold(kind, journal.events(op), state).data


def copied(key, size=1, **kw):
    return FILE_COPIED, {"key": key, "size": size, **kw}


def part(key, upload_id, n, size=8, etag=None):
    return PART_UPLOADED, {"key": key, "upload_id": upload_id, "part_size": 8, "n": n, "etag": etag or f"e{n}",
                           "size": size}


EVENTS = [
    copied("b/2", 5), copied("a/1", 1), copied("b/2", 7, sha256="f" * 64),  # b/2: the last one wins
    part("c/3", "u1", 1), part("c/3", "u1", 2), part("c/3", "u1", 1, etag="again"),  # part 1 sent again
    part("d/4", "old", 1), part("d/4", "old", 2), part("d/4", "new", 1),  # another upload: starts over
    part("e/5", "u", 1), copied("e/5", 9),  # copied whole: its upload ends
    part("f/6", "u", 1), part("f/6", "u", 2), copied("f/6", 16),
    (STEP_COMPLETED, {"step": "COPIED", "facts": {}}),
    part("e/5", "u2", 1),  # a later upload of a copied key is its own again
]


@pytest.mark.parametrize("bound", [True, False], ids=["journal", "memory"])
def test_the_backup_ledger_says_what_the_journal_says(journal, bound):
    states = _both(journal, "backup", BackupState, EVENTS)
    files: CopiedFiles = states[0 if bound else 1].files
    assert files.bound is bound
    assert [(f.key, f.size) for f in files] == [("a/1", 1), ("b/2", 7), ("e/5", 9), ("f/6", 16)]  # key order, last wins
    assert files.totals() == (4, 1 + 7 + 9 + 16)  # the last FileCopied of each key counts
    assert len(files) == 4 and files and files.done("b/2") and not files.done("c/3")
    assert files.get("b/2") == FileCopied(key="b/2", size=7, sha256="f" * 64) and files.get("zz") is None
    assert set(files.get_many(["a/1", "c/3", "b/2"])) == {"a/1", "b/2"}
    assert files.upload("c/3") == {"upload_id": "u1", "part_size": 8,
                                   "parts": [{"n": 2, "etag": "e2", "size": 8}, {"n": 1, "etag": "again", "size": 8}]}
    assert files.upload("d/4") == {"upload_id": "new", "part_size": 8, "parts": [{"n": 1, "etag": "e1", "size": 8}]}
    assert files.upload("e/5")["upload_id"] == "u2" and files.upload("a/1") is None and files.upload("f/6") is None
    assert [u["upload_id"] for u in files.uploads()] == ["u1", "new", "u2"]  # c/3, d/4, e/5


def test_kept_in_the_journal_or_in_memory_the_ledgers_are_equal(journal):
    bound, mem = _both(journal, "backup", BackupState, EVENTS)
    assert bound.files.bound and not mem.files.bound
    assert bound == mem
    other = fold("backup", [type("E", (), {"seq": 1, "type": t, "data": d})() for t, d in EVENTS[:-1]],
                 BackupState).data
    assert other.files != bound.files  # one event fewer (e/5's last upload): not the same rows


@pytest.mark.parametrize("bound", [True, False], ids=["journal", "memory"])
def test_the_restore_ledger_says_what_the_journal_says(journal, bound):
    def restored(dest, size, host="h1"):
        return FILE_RESTORED, {"key": f"k{dest}", "host": host, "dest": dest, "size": size, "sha256": None}

    states = _both(journal, "restore", RestoreState,
                   [restored("/d/b", 1), restored("/d/a", 2), restored("/d/b", 3, "h2")])
    files: RestoredFiles = states[0 if bound else 1].restored
    assert [(f.dest, f.size, f.host) for f in files] == [("/d/a", 2, "h1"), ("/d/b", 3, "h2")]
    assert len(files) == 2 and files and files.done("/d/a") and not files.done("/d/c")
    assert files.get("/d/b").size == 3 and set(files.get_many(["/d/a", "/x"])) == {"/d/a"}
    assert states[0] == states[1]


def test_a_bound_ledger_sees_what_is_journaled_after_the_fold(journal):
    """The runner folds a recorded event after appending it: the ledger answers it at once."""
    op = _op(journal, "backup", [])
    st = fold_journal("backup", journal, op, BackupState)
    files = st.data.files
    assert not files and files.get("a") is None and files.upload("a") is None  # asks nothing yet
    with journal.driver(op) as w:
        for t, d in (part("a", "u", 1), copied("b")):
            e = w.append(t, d)
            st.data.apply(e.type, e.data)
    assert files.upload("a")["upload_id"] == "u" and files.done("b") and len(files) == 1


def test_the_fold_of_a_journal_reads_no_file_event_and_keeps_its_seq(journal):
    op = _op(journal, "backup", [copied("a"), (STEP_COMPLETED, {"step": "LOCKED", "facts": {}}), copied("b")])
    seen = []
    real = journal.events

    def events(op_id, *a, **kw):
        for e in real(op_id, *a, **kw):
            seen.append(e.type)
            yield e

    journal.events = events
    st = fold_journal("backup", journal, op, BackupState)
    assert FILE_COPIED not in seen and st.completed == ["LOCKED"]
    assert st.seq == 4 and len(st.data.files) == 2  # the last event (a file) counts, as in a full fold


def _retained(make) -> tuple[int, object]:
    """Bytes of Python objects ``make()`` allocated and its result still holds."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = make()
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before, kept
    finally:
        tracemalloc.stop()


def test_a_folded_backup_holds_nothing_per_file(journal):
    """10,000 files copied: the fold of the journal holds what it held for 100 (the events stay in the
    journal), while the fold of the same events in memory holds every one of them."""
    ops = {n: _op(journal, "backup", [copied(f"BACKUP_1/data/{i:08d}.sst", i, sha256=f"{i:064x}", host="h1",
                                             path=f"/data/{i:08d}.sst") for i in range(n)])
           for n in (100, 10_000)}
    small, st_small = _retained(lambda: fold_journal("backup", journal, ops[100], BackupState))
    big, st_big = _retained(lambda: fold_journal("backup", journal, ops[10_000], BackupState))
    assert len(st_small.data.files) == 100 and len(st_big.data.files) == 10_000
    assert st_big.data.files.done("BACKUP_1/data/00009999.sst")
    assert big - small < 16_384, (small, big)
    assert big < 200_000, big
    # the same measurement sees what a fold in memory keeps: it would have failed before
    in_memory, st_mem = _retained(lambda: fold("backup", journal.events(ops[10_000]), BackupState))
    assert len(st_mem.data.files) == 10_000 and in_memory > 2_000_000, in_memory
