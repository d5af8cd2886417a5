"""Edits made behind the journal's back (plain sqlite3) are found, and the first bad event is named."""
import sqlite3

import pytest

from journal import Journal, Problem, VerifyReport
from journal.chain import canonical_json, event_hash

N = 10


@pytest.fixture
def setup(jpath):
    """Three operations: `op` (N events) is tampered with, `before`/`after` must stay clean."""
    j = Journal.open(jpath)
    ids = {}
    for name in ("before", "op", "after"):
        op = j.create_operation(kind="backup", params={"name": name}, who="w@h", version="0.1.0", target="t")
        with j.driver(op.id) as w:
            w.append_batch([(f"T{s % 3}", {"s": s, "name": name}) for s in range(1, N + 1)])
        ids[name] = op.id
    j.close()
    raw = sqlite3.connect(jpath, isolation_level=None)
    yield jpath, ids, raw
    raw.close()


def row(raw, op_id, seq):
    return raw.execute("SELECT * FROM events WHERE op_id = ? AND seq = ?", (op_id, seq)).fetchone()


def edit_data(raw, op):
    raw.execute("UPDATE events SET data = '{\"name\":\"op\",\"s\":999}' WHERE op_id = ? AND seq = 4", (op,))
    return 4


def edit_data_whitespace_only(raw, op):
    raw.execute("UPDATE events SET data = replace(data, ',', ', ') WHERE op_id = ? AND seq = 6", (op,))
    return 6


def edit_type(raw, op):
    raw.execute("UPDATE events SET type = 'StepCompleted' WHERE op_id = ? AND seq = 5", (op,))
    return 5


def edit_time(raw, op):
    raw.execute("UPDATE events SET time = '2020-01-01T00:00:00.000000Z' WHERE op_id = ? AND seq = 2", (op,))
    return 2


def edit_version(raw, op):
    raw.execute("UPDATE events SET version = 2 WHERE op_id = ? AND seq = 7", (op,))
    return 7


def edit_data_and_rehash(raw, op):
    """A forger who recomputes the edited event's hash still breaks the link to the next event."""
    _, seq, t, ty, v, _, prev, _ = row(raw, op, 3)
    data = canonical_json({"name": "op", "s": 12345})
    raw.execute("UPDATE events SET data = ?, hash = ? WHERE op_id = ? AND seq = 3",
                (data, event_hash(prev, op, 3, t, ty, v, data), op))
    return 4


def delete_middle(raw, op):
    raw.execute("DELETE FROM events WHERE op_id = ? AND seq = 5", (op,))
    return 5


def delete_first(raw, op):
    raw.execute("DELETE FROM events WHERE op_id = ? AND seq = 1", (op,))
    return 1


def delete_last(raw, op):
    raw.execute("DELETE FROM events WHERE op_id = ? AND seq = ?", (op, N))
    return N


def delete_tail_of_three(raw, op):
    raw.execute("DELETE FROM events WHERE op_id = ? AND seq > ?", (op, N - 3))
    return N - 2


def delete_middle_and_renumber(raw, op):
    """Close the gap so seqs look contiguous: the renumbered event no longer matches its hash."""
    raw.execute("DELETE FROM events WHERE op_id = ? AND seq = 5", (op,))
    raw.execute("UPDATE events SET seq = seq + 1000 WHERE op_id = ? AND seq > 5", (op,))
    raw.execute("UPDATE events SET seq = seq - 1001 WHERE op_id = ? AND seq > 1000", (op,))
    return 5


def insert_middle(raw, op):
    raw.execute("UPDATE events SET seq = seq + 1000 WHERE op_id = ? AND seq >= 6", (op,))
    raw.execute("UPDATE events SET seq = seq - 999 WHERE op_id = ? AND seq > 1000", (op,))
    prev = row(raw, op, 5)[-1]
    raw.execute("INSERT INTO events VALUES (?, 6, '2026-01-01T00:00:00.000000Z', 'Forged', 1, '{}', ?, ?)",
                (op, prev, "0" * 64))
    return 6


def insert_middle_with_valid_hash(raw, op):
    """A forger who knows the algorithm links the new row correctly; the next event's seq then mismatches."""
    raw.execute("UPDATE events SET seq = seq + 1000 WHERE op_id = ? AND seq >= 6", (op,))
    raw.execute("UPDATE events SET seq = seq - 999 WHERE op_id = ? AND seq > 1000", (op,))
    prev = row(raw, op, 5)[-1]
    t = "2026-01-01T00:00:00.000000Z"
    raw.execute("INSERT INTO events VALUES (?, 6, ?, 'Forged', 1, '{}', ?, ?)",
                (op, t, prev, event_hash(prev, op, 6, t, "Forged", 1, "{}")))
    return 7


def append_at_end_with_valid_hash(raw, op):
    """Appending behind the journal's back without moving the head: the head check catches it."""
    last = row(raw, op, N)[-1]
    t = "2026-01-01T00:00:00.000000Z"
    raw.execute("INSERT INTO events VALUES (?, ?, ?, 'Forged', 1, '{}', ?, ?)",
                (op, N + 1, t, last, event_hash(last, op, N + 1, t, "Forged", 1, "{}")))
    return N + 1


def swap_seq(raw, op):
    raw.execute("UPDATE events SET seq = 1003 WHERE op_id = ? AND seq = 3", (op,))
    raw.execute("UPDATE events SET seq = 3 WHERE op_id = ? AND seq = 4", (op,))
    raw.execute("UPDATE events SET seq = 4 WHERE op_id = ? AND seq = 1003", (op,))
    return 3


def swap_seq_late(raw, op):
    raw.execute("UPDATE events SET seq = 1008 WHERE op_id = ? AND seq = 8", (op,))
    raw.execute("UPDATE events SET seq = 8 WHERE op_id = ? AND seq = 9", (op,))
    raw.execute("UPDATE events SET seq = 9 WHERE op_id = ? AND seq = 1008", (op,))
    return 8


def edit_prev_hash(raw, op):
    raw.execute("UPDATE events SET prev_hash = ? WHERE op_id = ? AND seq = 6", ("f" * 64, op))
    return 6


def edit_hash(raw, op):
    raw.execute("UPDATE events SET hash = ? WHERE op_id = ? AND seq = 8", ("a" * 64, op))
    return 8


def edit_last_hash(raw, op):
    raw.execute("UPDATE events SET hash = ? WHERE op_id = ? AND seq = ?", ("a" * 64, op, N))
    return N


def edit_operation_params(raw, op):
    raw.execute("UPDATE operations SET params = '{\"name\":\"evil\"}' WHERE id = ?", (op,))
    return 0


def edit_operation_who(raw, op):
    raw.execute("UPDATE operations SET who = 'someone@else' WHERE id = ?", (op,))
    return 0


def edit_operation_created(raw, op):
    raw.execute("UPDATE operations SET created = '2000-01-01T00:00:00.000000Z' WHERE id = ?", (op,))
    return 0


def edit_head_seq(raw, op):
    raw.execute("UPDATE operations SET head_seq = head_seq - 1 WHERE id = ?", (op,))
    return N


def move_event_to_other_op(raw, op):
    raw.execute("UPDATE events SET op_id = 999 WHERE op_id = ? AND seq = 9", (op,))
    return 9


TAMPERS = [edit_data, edit_data_whitespace_only, edit_type, edit_time, edit_version, edit_data_and_rehash,
           delete_middle, delete_first, delete_last, delete_tail_of_three, delete_middle_and_renumber,
           insert_middle, insert_middle_with_valid_hash, append_at_end_with_valid_hash, swap_seq, swap_seq_late,
           edit_prev_hash, edit_hash, edit_last_hash, edit_operation_params, edit_operation_who, edit_operation_created, edit_head_seq,
           move_event_to_other_op]


@pytest.mark.parametrize("tamper", TAMPERS, ids=[t.__name__ for t in TAMPERS])
def test_tampering_is_found_at_the_first_bad_event(setup, tamper):
    jpath, ids, raw = setup
    op = ids["op"]
    j = Journal.open(jpath)
    assert j.verify().ok
    first_bad = tamper(raw, op)
    for report in (j.verify(op), j.verify()):
        assert isinstance(report, VerifyReport)
        assert not report.ok
        p = report.problems[0]
        assert isinstance(p, Problem)
        assert (p.op_id, p.seq) == (op, first_bad), report.problems
        assert p.reason
    assert all(p.op_id in (op, 999) for p in j.verify().problems)
    assert j.verify(ids["before"]).ok and j.verify(ids["after"]).ok
    j.close()


def test_deleted_operation_row_is_found(setup):
    jpath, ids, raw = setup
    raw.execute("DELETE FROM operations WHERE id = ?", (ids["op"],))
    j = Journal.open(jpath)
    for report in (j.verify(), j.verify(ids["op"])):
        assert not report.ok
        assert (report.problems[0].op_id, report.problems[0].seq) == (ids["op"], 0)
    j.close()


def test_deleted_operation_row_without_events_is_found(jpath):
    j = Journal.open(jpath)
    ops = [j.create_operation(kind="backup", who="w", version="v") for _ in range(3)]
    raw = sqlite3.connect(jpath, isolation_level=None)
    raw.execute("DELETE FROM operations WHERE id = ?", (ops[1].id,))
    report = j.verify()
    assert not report.ok and [(p.op_id, p.seq) for p in report.problems] == [(ops[1].id, 0)]
    raw.close()
    j.close()


def test_edited_operation_without_events_is_found(jpath):
    j = Journal.open(jpath)
    op = j.create_operation(kind="backup", params={"a": 1}, who="w", version="v")
    assert j.verify(op.id).ok
    raw = sqlite3.connect(jpath, isolation_level=None)
    raw.execute("UPDATE operations SET kind = 'restore' WHERE id = ?", (op.id,))
    report = j.verify(op.id)
    assert not report.ok and (report.problems[0].op_id, report.problems[0].seq) == (op.id, 0)
    raw.close()
    j.close()


def test_clean_journal_counts_every_event(setup):
    jpath, ids, _ = setup
    j = Journal.open(jpath)
    report = j.verify()
    assert report == VerifyReport(ok=True, checked=3 * N, problems=[])
    assert j.verify(ids["op"]).checked == N
    j.close()


def test_appending_after_a_row_was_slipped_in_is_refused(setup):
    """A second writer that bypassed the lock (and the head): UNIQUE(op_id, seq) stops the fork."""
    from journal import JournalError
    jpath, ids, raw = setup
    op = ids["op"]
    j = Journal.open(jpath)
    with j.driver(op) as w:
        raw.execute("INSERT INTO events VALUES (?, ?, 't', 'Sneaky', 1, '{}', 'p', 'h')", (op, N + 1))
        with pytest.raises(JournalError, match="UNIQUE") as ei:
            w.append("Mine", {})
        assert isinstance(ei.value.__cause__, sqlite3.IntegrityError)
    assert j.operation(op).head_seq == N  # nothing half-written
    j.close()


def test_a_writer_whose_head_moved_is_refused(journal, new_op):
    from journal import JournalError, Writer
    op = new_op()
    with journal.driver(op.id) as w:
        w.append("A", {})
        rogue = Writer(journal, op.id)  # bypasses the lock
        rogue.append("B", {})
        with pytest.raises(JournalError, match="someone else"):
            w.append("C", {})
    assert [e.type for e in journal.events(op.id)] == ["A", "B"]
    assert journal.verify(op.id).ok
