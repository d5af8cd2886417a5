"""A journal is created whole or not at all, and an existing file that holds no journal (0 bytes,
an SQLite file without a schema) is refused rather than silently replaced by a new, empty journal."""
import os
import sqlite3

import pytest

from journal import Journal, JournalCorrupt, JournalError
from journal import schema


def leftovers(d):
    return sorted(n for n in os.listdir(d) if ".new-" in n)


def test_a_zero_byte_journal_is_refused_and_left_as_it_is(jpath):
    jpath.parent.mkdir(parents=True)
    jpath.write_bytes(b"")
    with pytest.raises(JournalCorrupt, match=r"is empty \(0 bytes\).*will not start a new journal.*move "
                                             r"journal.db.*aside") as ei:
        Journal.open(jpath)
    assert "put back a copy" in str(ei.value)
    assert jpath.stat().st_size == 0
    assert sorted(os.listdir(jpath.parent)) == ["journal.db"]


def test_an_sqlite_file_without_a_schema_is_refused(jpath):
    """What an interrupted creation by an older brsm (or a damaged file) leaves: WAL set, no tables."""
    jpath.parent.mkdir(parents=True)
    c = sqlite3.connect(jpath)
    c.execute("PRAGMA journal_mode = WAL")
    c.close()
    assert jpath.stat().st_size > 0
    with pytest.raises(JournalCorrupt, match="holds no journal"):
        Journal.open(jpath)
    c = sqlite3.connect(jpath)
    assert c.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0  # not migrated
    c.close()


def test_a_new_journal_is_whole_when_it_appears(jpath):
    j = Journal.open(jpath)
    j.close()
    c = sqlite3.connect(jpath)
    assert c.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION
    c.close()
    assert leftovers(jpath.parent) == []
    assert Journal.open(jpath).journal_id == Journal.open(jpath).journal_id  # reopened, not recreated


def test_a_creation_that_fails_leaves_no_journal_behind(jpath, monkeypatch):
    def boom(conn, path, target=schema.SCHEMA_VERSION):
        raise OSError("disk full")

    monkeypatch.setattr(schema, "migrate", boom)
    with pytest.raises(JournalError, match="disk full"):
        Journal.open(jpath)
    assert not jpath.exists()
    assert leftovers(jpath.parent) == []
    monkeypatch.undo()
    Journal.open(jpath).close()  # the next attempt creates it


def test_a_journal_created_meanwhile_by_another_process_is_used_not_replaced(jpath, monkeypatch):
    """Both saw no journal; the other linked its journal first: ours is discarded, theirs used."""
    from journal import store

    theirs = {}
    real = store._create_new

    def racing(path):
        if not theirs:
            theirs["id"] = None
            real(path)  # the other process, first to link
            c = sqlite3.connect(path)
            theirs["id"] = c.execute("SELECT value FROM journal_info").fetchone()[0]
            c.close()
        real(path)

    monkeypatch.setattr(store, "_create_new", racing)
    monkeypatch.setattr(store.os.path, "lexists", lambda p: False)
    j = Journal.open(jpath)
    assert j.journal_id == theirs["id"]
    j.close()
    assert leftovers(jpath.parent) == []


def test_a_journal_missing_beside_its_wal_is_refused_not_recreated(jpath):
    """SQLite would replay the left-over WAL onto a new file: refused, and nothing is created."""
    j = Journal.open(jpath)
    op = j.create_operation(kind="backup", who="w", version="v")
    with j.driver(op.id) as w:
        w.append("A", {})
    wal = jpath.with_name("journal.db-wal")
    assert wal.stat().st_size > 0  # still open: the events are in the WAL
    os.unlink(jpath)
    with pytest.raises(JournalCorrupt, match="is missing but its WAL journal.db-wal is not"):
        Journal.open(jpath)
    j.close()
    assert not jpath.exists()


def test_a_truncated_journal_is_refused_when_read_never_replaced(jpath):
    j = Journal.open(jpath)
    for _ in range(200):
        op = j.create_operation(kind="backup", params={"pad": "x" * 500}, who="w", version="v")
        with j.driver(op.id) as w:
            w.append("A", {"pad": "y" * 500})
    j.close()
    size = jpath.stat().st_size
    assert size > 64 * 1024
    os.truncate(jpath, 8192)
    with pytest.raises(JournalCorrupt):
        Journal.open(jpath).verify()
    assert jpath.stat().st_size == 8192
