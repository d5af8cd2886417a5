"""Append/read round trips, filters, listing, redaction, file modes, pragmas, argument checks."""
import json
import os
import re
import sqlite3
import stat

import pytest

from journal import Event, Journal, JournalError, Operation, UnknownOperation


def mode(p):
    return stat.S_IMODE(os.stat(p).st_mode)


def test_append_read_round_trip(journal, new_op):
    op = new_op()
    with journal.driver(op.id) as w:
        e1 = w.append("StepStarted", {"step": "LOCKED"})
        e2 = w.append("StepCompleted", {"step": "LOCKED", "facts": {"lease": "abc", "n": [1, 2.5, None, True]}},
                      version=3)
    assert isinstance(e1, Event)
    assert (e1.op_id, e1.seq, e1.type, e1.version, e1.data) == (op.id, 1, "StepStarted", 1, {"step": "LOCKED"})
    assert e2.seq == 2 and e2.version == 3 and e2.data["facts"]["n"] == [1, 2.5, None, True]
    assert e1.prev_hash == op.head_hash and e2.prev_hash == e1.hash
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", e1.time)
    assert list(journal.events(op.id)) == [e1, e2]
    assert journal.operation(op.id).head_seq == 2
    assert journal.operation(op.id).head_hash == e2.hash
    with pytest.raises(Exception):
        e1.seq = 5  # frozen


def test_data_is_stored_as_canonical_json(journal, new_op, jpath):
    op = new_op()
    with journal.driver(op.id) as w:
        w.append("X", {"b": 1, "a": {"z": "é", "y": [1, 2]}})
    raw = sqlite3.connect(jpath).execute("SELECT data FROM events").fetchone()[0]
    assert raw == '{"a":{"y":[1,2],"z":"\\u00e9"},"b":1}'
    assert raw == json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":"))


def test_batch_is_one_contiguous_run(journal, new_op):
    op = new_op()
    with journal.driver(op.id) as w:
        w.append("A", {})
        evs = w.append_batch([("FileCopied", {"i": i}) for i in range(50)] + [("Done", {}, 2)])
        assert w.append_batch([]) == []
    assert [e.seq for e in evs] == list(range(2, 53))
    assert evs[-1].type == "Done" and evs[-1].version == 2
    assert list(journal.events(op.id))[1:] == evs
    assert journal.count_events(op.id) == 52


def test_extend_stores_what_append_batch_would_and_returns_the_first_seq(journal, new_op):
    """The cheap append of a ledger: the same rows and chain, the first seq back, no Events built;
    a batch is one transaction and its events carry its one time."""
    op = new_op()
    with journal.driver(op.id) as w:
        w.append("A", {})
        first = w.extend([("FileCopied", {"i": i, "key": f"k{i}"}) for i in range(40)], durable=False)
        assert w.extend([]) == 0
        after = w.append("B", {})
    assert first == 2 and after.seq == 42
    stored = list(journal.events(op.id))
    assert [e.data for e in stored[1:41]] == [{"i": i, "key": f"k{i}"} for i in range(40)]
    assert len({e.time for e in stored[1:41]}) == 1
    report = journal.verify(op.id)
    assert report.ok and report.checked == 42


def test_failed_batch_writes_nothing(journal, new_op):
    op = new_op()
    with journal.driver(op.id) as w:
        w.append("A", {})
        with pytest.raises(JournalError, match="not JSON-serialisable"):
            w.append_batch([("B", {"ok": 1}), ("C", {"bad": object()})])
        with pytest.raises(JournalError, match="JSON"):
            w.append("D", {"nan": float("nan")})
        assert w.append("E", {}).seq == 2
    assert [e.type for e in journal.events(op.id)] == ["A", "E"]
    assert journal.verify(op.id).ok


@pytest.mark.parametrize("bad", [("", {}), (None, {}), ("T", [1]), ("T", {}, 0), ("T", {}, "1"), ("T",)])
def test_malformed_events_are_refused(journal, new_op, bad):
    op = new_op()
    with journal.driver(op.id) as w, pytest.raises(JournalError):
        w.append_batch([bad])
    assert journal.count_events(op.id) == 0


def test_types_filter_after_seq_and_count(journal, new_op):
    op = new_op()
    with journal.driver(op.id) as w:
        for i in range(1, 31):
            w.append(["A", "B", "C"][i % 3], {"i": i})
    assert [e.seq for e in journal.events(op.id, types=["A"])] == list(range(3, 31, 3))
    assert [e.seq for e in journal.events(op.id, types="B")] == list(range(1, 31, 3))
    assert [e.seq for e in journal.events(op.id, types=("A", "C"))] == [s for s in range(1, 31) if s % 3 != 1]
    assert list(journal.events(op.id, types=[])) == []
    assert [e.seq for e in journal.events(op.id, after_seq=27)] == [28, 29, 30]
    assert [e.seq for e in journal.events(op.id, types=["A"], after_seq=20)] == [21, 24, 27, 30]
    assert journal.count_events(op.id) == 30
    assert journal.count_events(op.id, types=["A", "B"]) == 20
    assert journal.count_events(op.id, types=[]) == 0


def test_events_cross_chunk_boundaries_in_order(journal, new_op):
    op = new_op()
    other = new_op()
    with journal.driver(op.id) as w, journal.driver(other.id) as w2:
        for k in range(3):
            w.append_batch([("E", {"i": i}) for i in range(k * 1700, (k + 1) * 1700)])
            w2.append("Other", {})
    seqs = [e.seq for e in journal.events(op.id)]
    assert seqs == list(range(1, 5101))
    assert [e.data["i"] for e in journal.events(op.id, after_seq=1999)][:2] == [1999, 2000]
    assert {e.op_id for e in journal.events(other.id)} == {other.id}


def test_half_consumed_iterator_does_not_block_appends(journal, new_op, jpath):
    op = new_op()
    with journal.driver(op.id) as w:
        w.append_batch([("E", {})] * 5000)
        it = journal.events(op.id)
        next(it)
        other = Journal.open(jpath)  # another connection writes meanwhile (a new operation)
        other.create_operation(kind="restore", who="x", version="1")
        other.close()
        w.append("After", {})  # would fail with BUSY_SNAPSHOT if `it` pinned an old snapshot
        assert sum(1 for _ in it) == 5000  # 4999 left plus the new one


def test_operations_listing(journal, new_op):
    a = new_op("backup")
    b = new_op("restore")
    c = new_op("backup")
    assert [o.id for o in journal.operations()] == [c.id, b.id, a.id]
    assert [o.id for o in journal.operations(kind="backup")] == [c.id, a.id]
    assert [o.id for o in journal.operations(limit=2)] == [c.id, b.id]
    assert [o.id for o in journal.operations(kind="backup", limit=1)] == [c.id]
    assert journal.operations(kind="cleanup") == []
    assert a.id < b.id < c.id
    got = journal.operation(b.id)
    assert isinstance(got, Operation) and got == b
    assert (got.kind, got.who, got.version, got.target) == ("restore", "tester@host", "0.1.0", "local:///backups")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", got.created)


def test_unknown_operation(journal):
    with pytest.raises(UnknownOperation) as ei:
        journal.operation(7)
    assert "7" in str(ei.value) and ei.value.op_id == 7
    for call in (lambda: journal.events(7), lambda: journal.count_events(7), lambda: journal.verify(7)):
        with pytest.raises(UnknownOperation):
            call()
    with pytest.raises(UnknownOperation):
        with journal.driver(7):
            pass
    assert issubclass(UnknownOperation, JournalError)


def test_ids_are_never_reused(jpath):
    j = Journal.open(jpath)
    first = j.create_operation(kind="backup", who="w", version="v")
    j.conn.execute("DELETE FROM operations WHERE id = ?", (first.id,))  # AUTOINCREMENT: no reuse
    assert j.create_operation(kind="backup", who="w", version="v").id == first.id + 1
    j.close()


def test_secrets_are_redacted_recursively(journal, jpath):
    params = {
        "storage": "s3://bucket/p", "password": "hunter2", "Secret_Key": "s", "nested": {
            "accessKeyId": "AKIA", "aws-secret-access-key": "x", "ssh_private_key": "-----BEGIN",
            "list": [{"api_token": "t", "keep": 1}, "plain"], "credentials": {"user": "u"},
            "passwd": 1, "harmless": "value"},
        "endpoint": "https://user:pa55@oss.example.com/x",
    }
    op = journal.create_operation(kind="backup", params=params, who="w", version="v",
                                  target="s3://AKIA:sekret@host/bucket")
    expect = {
        "storage": "s3://bucket/p", "password": "<redacted>", "Secret_Key": "<redacted>", "nested": {
            "accessKeyId": "<redacted>", "aws-secret-access-key": "<redacted>", "ssh_private_key": "<redacted>",
            "list": [{"api_token": "<redacted>", "keep": 1}, "plain"], "credentials": "<redacted>",
            "passwd": "<redacted>", "harmless": "value"},
        "endpoint": "https://user:<redacted>@oss.example.com/x",
    }
    assert op.params == expect
    assert journal.operation(op.id).params == expect
    assert journal.operation(op.id).target == "s3://AKIA:<redacted>@host/bucket"
    raw = jpath.read_bytes() + jpath.with_name(jpath.name + "-wal").read_bytes()
    for secret in (b"hunter2", b"AKIA\"", b"pa55", b"sekret", b"-----BEGIN"):
        assert secret not in raw
    assert params["password"] == "hunter2"  # the caller's dict is not modified


def test_files_are_private(tmp_path):
    old = os.umask(0o022)  # a loose umask: SQLite alone would create 0644 files
    try:
        p = tmp_path / "fresh" / "deeper" / "journal.db"
        j = Journal.open(p)
        op = j.create_operation(kind="backup", who="w", version="v")
        with j.driver(op.id):
            lock = p.with_name("journal.db.locks") / f"{op.id}.lock"
            assert mode(lock) == 0o600
            assert json.loads(lock.read_text())["pid"] == os.getpid()
        assert mode(p) == 0o600
        assert mode(p.with_name("journal.db-wal")) == 0o600
        assert mode(p.with_name("journal.db-shm")) == 0o600
        assert mode(p.parent) == 0o700
        assert mode(p.with_name("journal.db.locks")) == 0o700
        j.close()
    finally:
        os.umask(old)


def test_loose_existing_file_is_tightened(jpath):
    Journal.open(jpath).close()
    os.chmod(jpath, 0o644)
    Journal.open(jpath).close()
    assert mode(jpath) == 0o600


def test_pragmas(journal):
    assert journal.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert journal.conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert journal.conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1


def test_closed_journal_and_exited_driver_refuse(journal, new_op):
    op = new_op()
    with journal.driver(op.id) as w:
        w.append("A", {})
    with pytest.raises(JournalError, match="exited"):
        w.append("B", {})
    journal.close()
    journal.close()  # idempotent
    with pytest.raises(JournalError, match="closed"):
        journal.operations()


def test_not_a_journal(tmp_path):
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(JournalError) as ei:
        Journal.open(garbage)
    assert isinstance(ei.value.__cause__, sqlite3.Error)
    other = tmp_path / "other.db"
    c = sqlite3.connect(other)
    c.execute("CREATE TABLE t (x)")
    c.commit()
    c.close()
    with pytest.raises(JournalError, match="not a journal"):
        Journal.open(other)


def test_sqlite_errors_are_translated(journal, new_op):
    op = new_op()
    journal.conn.execute("DROP INDEX events_by_type")
    journal.conn.execute("DROP TABLE events")
    with pytest.raises(JournalError) as ei:
        list(journal.events(op.id))
    assert isinstance(ei.value.__cause__, sqlite3.OperationalError)


def test_journal_does_not_import_brsm():
    import subprocess
    import sys
    code = "import sys, journal; journal.Journal; print(sorted(m for m in sys.modules if m.split('.')[0] == 'brsm'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert out.stdout.strip() == "[]"


def test_a_non_durable_append_is_chained_read_and_leaves_full_sync_on(jpath):
    """Progress hints skip the fsync; they are still in the chain, visible to other readers, and the
    next append is durable again (synchronous back to FULL)."""
    j = Journal.open(jpath)
    op = j.create_operation(kind="backup", who="w@h", version="0.1.0")
    with j.driver(op.id) as w:
        w.append("StepStarted", {"step": "COPIED"})
        w.append("PartUploaded", {"n": 1}, durable=False)
        w.append_batch([("PartUploaded", {"n": 2}), ("PartUploaded", {"n": 3})], durable=False)
        w.append("StepCompleted", {"step": "COPIED"})
    assert j.conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    other = Journal.open(jpath)
    assert [e.type for e in other.events(op.id)] == ["StepStarted"] + ["PartUploaded"] * 3 + ["StepCompleted"]
    assert other.verify().ok
    other.close()
    j.close()
