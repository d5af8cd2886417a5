"""Schema versions: older journals are migrated in place, newer ones are refused untouched."""
import sqlite3

import pytest

from journal import SCHEMA_VERSION, Journal, JournalError
from journal import schema
from journal.chain import canonical_json, event_hash, genesis_hash


def make_v1_journal(path):
    """What a brsm that knew only schema 1 would have left behind, with one operation of three events."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    schema.migrate(conn, path, target=1)
    created, params = "2025-01-01T00:00:00.000000Z", canonical_json({"space": "s1"})
    conn.execute("INSERT INTO operations (kind, created, params, who, version, target, head_hash) "
                 "VALUES ('backup', ?, ?, 'old@host', '0.0.9', 'local:///b', '')", (created, params))
    head = genesis_hash(1, "backup", created, params, "old@host", "0.0.9", "local:///b")
    for seq in (1, 2, 3):
        data = canonical_json({"seq": seq})
        h = event_hash(head, 1, seq, created, "Old", 1, data)
        conn.execute("INSERT INTO events VALUES (1, ?, ?, 'Old', 1, ?, ?, ?)", (seq, created, data, head, h))
        head = h
    conn.execute("UPDATE operations SET head_seq = 3, head_hash = ? WHERE id = 1", (head,))
    conn.close()


def indexes(path):
    conn = sqlite3.connect(path)
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    conn.close()
    return names


def test_new_journal_has_the_current_version(journal):
    assert SCHEMA_VERSION >= 2
    assert journal.schema_version == SCHEMA_VERSION


def test_older_journal_is_migrated_and_keeps_its_history(jpath):
    make_v1_journal(jpath)
    assert sqlite3.connect(jpath).execute("PRAGMA user_version").fetchone()[0] == 1
    assert "events_by_type" not in indexes(jpath)
    j = Journal.open(jpath)
    assert j.schema_version == SCHEMA_VERSION
    assert {"events_by_type", "operations_by_kind"} <= indexes(jpath)
    assert j.verify().ok
    assert [e.data for e in j.events(1)] == [{"seq": 1}, {"seq": 2}, {"seq": 3}]
    assert j.operation(1).who == "old@host"
    with j.driver(1) as w:
        assert w.append("New", {}).seq == 4
    assert j.verify().ok and j.count_events(1, types=["Old"]) == 3
    j.close()
    Journal.open(jpath).close()  # reopening a current journal is a no-op
    assert sqlite3.connect(jpath).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_newer_journal_is_refused_and_left_untouched(jpath):
    Journal.open(jpath).close()
    conn = sqlite3.connect(jpath, isolation_level=None)
    conn.execute("PRAGMA journal_mode = DELETE")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    before = jpath.read_bytes()
    with pytest.raises(JournalError) as ei:
        Journal.open(jpath)
    msg = str(ei.value)
    assert "upgrade brsm" in msg and str(SCHEMA_VERSION + 1) in msg
    assert jpath.read_bytes() == before  # not even switched to WAL
    assert not jpath.with_name(jpath.name + "-wal").exists()


def test_failed_migration_rolls_back(jpath, monkeypatch):
    make_v1_journal(jpath)

    def broken(conn):
        conn.execute("CREATE TABLE half_done (x)")
        raise RuntimeError("migration bug")

    monkeypatch.setattr(schema, "MIGRATIONS", [schema.MIGRATIONS[0], broken])
    with pytest.raises(RuntimeError):
        Journal.open(jpath)
    conn = sqlite3.connect(jpath)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'half_done'").fetchone()[0] == 0
    conn.close()
