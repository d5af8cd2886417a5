"""Events looked up by a field of their payload (journal.keyed): indexed, right, and per operation."""
import sqlite3

import pytest

from journal import Journal, JournalError


def _fill(journal, op, items):
    with journal.driver(op) as w:
        w.append_batch(items)


def test_last_wins_per_value_and_operations_are_apart(journal, new_op):
    a, b = new_op().id, new_op().id
    _fill(journal, a, [("Copied", {"key": "x", "n": 1}), ("Other", {"key": "x"}), ("Copied", {"key": "y", "n": 2}),
                       ("Copied", {"key": "x", "n": 3})])
    _fill(journal, b, [("Copied", {"key": "x", "n": 9})])
    k = journal.keyed("Copied", "key")
    assert k.indexed
    assert k.last(a, "x").data == {"key": "x", "n": 3} and k.last(b, "x").data["n"] == 9
    assert k.last(a, "z") is None
    assert [e.data["n"] for e in k.all(a, "x")] == [1, 3] and [e.data["n"] for e in k.all(a, "x", after_seq=1)] == [3]
    assert {v: e.data["n"] for v, e in k.last_many(a, ["x", "z", "y", "x"]).items()} == {"x": 3, "y": 2}
    assert k.totals(a, "n") == (2, 5) and k.totals(b, "n") == (1, 9) and k.totals(b, "nothing") == (1, 0)
    assert k.count(a) == 2 and k.count(b) == 1 and k.any(a) and not journal.keyed("Nope", "key").any(a)


def test_latest_walks_values_in_python_order_across_chunks(journal, new_op, monkeypatch):
    import journal.keyed as keyed

    monkeypatch.setattr(keyed, "_CHUNK", 3)
    op = new_op().id
    keys = ["b", "a", "é", "B", "a/1", "ä", "Z", "b"]
    _fill(journal, op, [("Copied", {"key": key, "i": i}) for i, key in enumerate(keys)])
    k = keyed.Keyed(journal, "Copied", "key")
    got = [(e.data["key"], e.data["i"]) for e in k.latest(op)]
    assert got == sorted({key: i for i, key in enumerate(keys)}.items())


def test_lookups_use_the_index(journal, new_op):
    """The planner, left alone, takes the primary key's op_id prefix and scans the operation per lookup."""
    k = journal.keyed("Copied", "key")
    plan = journal.conn.execute("EXPLAIN QUERY PLAN " + k._last, (1, "x")).fetchall()
    assert any("USING INDEX events_Copied_by_key" in r[-1] for r in plan), plan
    plan = journal.conn.execute("EXPLAIN QUERY PLAN " + k._latest, (1, "")).fetchall()
    assert any("USING INDEX events_Copied_by_key" in r[-1] for r in plan), plan


def test_the_index_is_made_once_and_the_schema_version_stays(jpath, new_op, journal):
    before = journal.schema_version
    journal.keyed("Copied", "key")
    names = [r[0] for r in journal.conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")]
    assert names.count("events_Copied_by_key") == 1 and journal.schema_version == before
    journal.close()
    again = Journal.open(jpath)
    assert again.keyed("Copied", "key").indexed
    again.close()


def test_where_the_index_cannot_be_made_the_answers_are_the_same(journal, new_op, monkeypatch):
    """A read-only file (or a tampered row that is not JSON) cannot be indexed: queried without it."""
    op = new_op().id
    _fill(journal, op, [("Copied", {"key": "x", "n": 1}), ("Copied", {"key": "x", "n": 2}), ("Copied", {"key": "a"})])

    def refuse(what, durable=True):
        raise JournalError(f"{what}: attempt to write a readonly database")

    monkeypatch.setattr(journal, "_transaction", refuse)
    k = journal.keyed("Copied", "key")
    assert not k.indexed and "INDEXED BY" not in k._last
    assert k.last(op, "x").data["n"] == 2 and [e.data["key"] for e in k.latest(op)] == ["a", "x"]
    assert k.count(op) == 2 and set(k.last_many(op, ["x", "a"])) == {"x", "a"} and k.totals(op, "n") == (2, 2)


def test_names_that_would_be_sql_are_refused(journal):
    for bad in ("a'b", "x; DROP TABLE events", "", "a.b"):
        with pytest.raises(JournalError):
            journal.keyed(bad, "key")
        with pytest.raises(JournalError):
            journal.keyed("Copied", bad)


def test_events_can_leave_types_out(journal, new_op):
    op = new_op().id
    _fill(journal, op, [("A", {}), ("Copied", {"key": "x"}), ("B", {}), ("Part", {"key": "x"}), ("A", {})])
    assert [e.type for e in journal.events(op, exclude=["Copied", "Part"])] == ["A", "B", "A"]
    assert [e.seq for e in journal.events(op, after_seq=3, exclude=["Copied"])] == [4, 5]
    assert sqlite3.sqlite_version_info >= (3, 9)  # expression indexes
