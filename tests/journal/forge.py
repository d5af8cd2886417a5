"""What a forger with write access to journal.db can do with plain sqlite3 and the (public) algorithm:
rewrite an operation's chain so that ``verify`` passes again. Shared by the journal and e2e tests."""
import sqlite3

from journal.chain import event_hash, genesis_hash


def rechain(raw: sqlite3.Connection, op_id: int) -> None:
    """Recompute every hash of one operation from its (edited) content, and its head to match."""
    row = raw.execute("SELECT id, kind, created, params, who, version, target FROM operations WHERE id = ?",
                      (op_id,)).fetchone()
    h = genesis_hash(*row)
    seq = 0
    for seq, t, ty, v, d in raw.execute("SELECT seq, time, type, version, data FROM events WHERE op_id = ? "
                                        "ORDER BY seq", (op_id,)).fetchall():
        new = event_hash(h, op_id, seq, t, ty, v, d)
        raw.execute("UPDATE events SET prev_hash = ?, hash = ? WHERE op_id = ? AND seq = ?", (h, new, op_id, seq))
        h = new
    raw.execute("UPDATE operations SET head_seq = ?, head_hash = ? WHERE id = ?", (seq, h, op_id))


def edit_event_and_rechain(raw: sqlite3.Connection, op_id: int, seq: int, data_json: str) -> None:
    raw.execute("UPDATE events SET data = ? WHERE op_id = ? AND seq = ?", (data_json, op_id, seq))
    rechain(raw, op_id)


def delete_last_operation(raw: sqlite3.Connection) -> int:
    """Delete the newest operation, its events, and lower sqlite_sequence so no id looks skipped."""
    op_id = raw.execute("SELECT max(id) FROM operations").fetchone()[0]
    raw.execute("DELETE FROM events WHERE op_id = ?", (op_id,))
    raw.execute("DELETE FROM operations WHERE id = ?", (op_id,))
    raw.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = 'operations'", (op_id - 1,))
    return op_id


def truncate_operation(raw: sqlite3.Connection, op_id: int, keep: int) -> None:
    """Delete the events after ``keep`` and move the head back to match."""
    raw.execute("DELETE FROM events WHERE op_id = ? AND seq > ?", (op_id, keep))
    rechain(raw, op_id)
