"""Anchors kept outside the file catch what the unkeyed chain cannot: a rewrite with every hash
recomputed, a whole operation deleted with sqlite_sequence lowered, a tail cut with the head moved."""
import json
import sqlite3

import pytest

from journal import Anchor, Journal, JournalCorrupt
from journal.anchor import PREFIX_HEX
from journal.chain import canonical_json

from .forge import delete_last_operation, edit_event_and_rechain, rechain, truncate_operation


@pytest.fixture
def three(jpath):
    """Three operations of five events each."""
    j = Journal.open(jpath)
    for name in ("a", "b", "c"):
        op = j.create_operation(kind="backup", params={"name": name}, who="w@h", version="0.1.0", target="t")
        with j.driver(op.id) as w:
            w.append_batch([("T", {"s": s, "name": name}) for s in range(1, 6)])
    raw = sqlite3.connect(jpath, isolation_level=None)
    yield j, raw
    raw.close()
    j.close()


def problems(j, anchor):
    return j.check_anchors([anchor])[0]


def test_a_fresh_anchor_matches_and_survives_a_round_trip(three):
    j, _ = three
    a = j.anchor()
    assert a.journal_id == j.journal_id and a.operations == 3
    assert [h[0] for h in a.heads] == [5, 5, 5] and all(len(h[1]) == PREFIX_HEX for h in a.heads)
    again = Anchor.from_dict(json.loads(json.dumps(a.to_dict())))
    assert again == a
    assert problems(j, again) == []


def test_growth_after_the_anchor_is_fine(three):
    """Later events of anchored operations (a resume) and new operations are not the anchor's concern."""
    j, _ = three
    a = j.anchor()
    with j.driver(2) as w:
        w.append("Resumed", {})
    op = j.create_operation(kind="restore", who="w", version="v")
    with j.driver(op.id) as w:
        w.append("X", {})
    assert j.verify().ok
    assert problems(j, a) == []


def test_an_edit_with_the_chain_recomputed_is_caught(three):
    j, raw = three
    a = j.anchor()
    edit_event_and_rechain(raw, 2, 3, canonical_json({"name": "b", "s": 999}))
    assert j.verify().ok  # the chain alone cannot tell
    ps = problems(j, a)
    assert [(p.op_id, p.seq) for p in ps] == [(2, 5)]
    assert "changed since the anchor" in ps[0].reason


def test_an_edit_after_the_anchored_seq_is_not_the_anchors_concern(three):
    j, raw = three
    a = j.anchor()
    with j.driver(1) as w:
        w.append("Later", {"x": 1})
    edit_event_and_rechain(raw, 1, 6, canonical_json({"x": 2}))
    assert problems(j, a) == []


def test_an_edited_operation_row_with_the_chain_recomputed_is_caught(three):
    j, raw = three
    a = j.anchor()
    raw.execute("UPDATE operations SET who = 'someone@else' WHERE id = 1")
    rechain(raw, 1)
    assert j.verify().ok
    assert [(p.op_id, p.seq) for p in problems(j, a)] == [(1, 5)]


def test_the_whole_last_operation_deleted_is_caught(three):
    j, raw = three
    a = j.anchor()
    gone = delete_last_operation(raw)
    assert j.verify().ok  # sqlite_sequence lowered: no gap below the high-water mark
    ps = problems(j, a)
    assert [(p.op_id, p.seq) for p in ps] == [(gone, 0)]
    assert "deleted" in ps[0].reason


def test_a_cut_tail_with_the_head_moved_back_is_caught(three):
    j, raw = three
    a = j.anchor()
    truncate_operation(raw, 3, 2)
    assert j.verify().ok
    ps = problems(j, a)
    assert [(p.op_id, p.seq) for p in ps] == [(3, 3)]
    assert "events 3..5 missing" in ps[0].reason


def test_an_operation_without_events_is_anchored_by_its_genesis(jpath):
    j = Journal.open(jpath)
    j.create_operation(kind="backup", params={"a": 1}, who="w", version="v")
    a = j.anchor()
    assert a.heads[0][0] == 0
    raw = sqlite3.connect(jpath, isolation_level=None)
    raw.execute("UPDATE operations SET params = '{\"a\":2}' WHERE id = 1")
    rechain(raw, 1)
    assert j.verify().ok
    assert [(p.op_id, p.seq) for p in problems(j, a)] == [(1, 0)]
    raw.close()
    j.close()


def test_each_anchor_is_judged_on_what_it_covered(three):
    j, raw = three
    old = j.anchor()
    op = j.create_operation(kind="restore", who="w", version="v")
    with j.driver(op.id) as w:
        w.append("X", {"v": 1})
    new = j.anchor()
    edit_event_and_rechain(raw, op.id, 1, canonical_json({"v": 2}))
    assert j.check_anchors([old, new]) == [[], j.check_anchors([new])[0]]
    assert [(p.op_id, p.seq) for p in j.check_anchors([new])[0]] == [(op.id, 1)]


def test_an_anchor_whose_digest_was_altered_does_not_match(three):
    j, _ = three
    d = j.anchor().to_dict()
    d["digest"] = "0" * 64
    ps = problems(j, Anchor.from_dict(d))
    assert len(ps) == 1 and "digest" in ps[0].reason


def test_an_anchor_of_another_journal_is_not_taken_for_this_ones(three, tmp_path):
    j, _ = three
    other = Journal.open(tmp_path / "other" / "journal.db")
    a = other.anchor()
    other.close()
    ps = problems(j, a)
    assert len(ps) == 1 and "not of this journal" in ps[0].reason


def test_an_operation_missing_at_anchor_time_and_back_later_is_caught(three):
    j, raw = three
    raw.execute("DELETE FROM events WHERE op_id = 2")
    saved = raw.execute("SELECT * FROM operations WHERE id = 2").fetchone()
    raw.execute("DELETE FROM operations WHERE id = 2")
    a = j.anchor()
    assert a.heads[1] is None
    raw.execute(f"INSERT INTO operations VALUES ({','.join('?' * len(saved))})", saved)
    assert [(p.op_id, p.seq) for p in problems(j, a)] == [(2, 0)]


@pytest.mark.parametrize("bad", [
    None, [], {"format": 2}, {"format": 1, "journal_id": "x", "taken": "t", "digest": "z" * 64, "heads": []},
    {"format": 1, "journal_id": "x", "taken": "t", "digest": "0" * 64, "heads": [[1]]},
    {"format": 1, "journal_id": "x", "taken": "t", "digest": "0" * 64, "heads": [[-1, "0" * PREFIX_HEX]]},
    {"format": 1, "journal_id": "", "taken": "t", "digest": "0" * 64, "heads": []},
])
def test_a_malformed_stored_anchor_is_refused_naming_why(bad):
    with pytest.raises(ValueError, match="anchor"):
        Anchor.from_dict(bad)


def test_a_journal_with_a_malformed_head_cannot_be_anchored(three):
    j, raw = three
    raw.execute("UPDATE operations SET head_hash = 'x' WHERE id = 1")
    with pytest.raises(JournalCorrupt, match="malformed head"):
        j.anchor()


def test_an_event_deleted_inside_what_was_anchored_is_named(three):
    j, raw = three
    a = j.anchor()
    raw.execute("DELETE FROM events WHERE op_id = 1 AND seq = 2")
    ps = problems(j, a)
    assert [(p.op_id, p.seq) for p in ps] == [(1, 2)]
    assert ps[0].reason.startswith("event 2 missing: deleted")
