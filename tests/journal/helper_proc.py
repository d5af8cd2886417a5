"""Subprocess side of the journal tests: a writer to SIGKILL, a lock holder, an open write transaction.

usage: python helper_proc.py JOURNAL OP_ID (append SEED | hold | open-txn)
Every line it prints is flushed, so whatever the test reads after a SIGKILL was really printed.
"""
import hashlib
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from journal import Journal  # noqa: E402
from journal.chain import canonical_json, event_hash, utc_now  # noqa: E402


def payload(seq: int) -> tuple[str, dict]:
    """What the writer appends as event `seq`: derivable from seq alone, so a reader can check every byte."""
    digest = hashlib.sha256(str(seq).encode()).hexdigest()
    return f"Event{seq % 3}", {"seq": seq, "digest": digest, "pad": "x" * (seq % 97), "nested": {"n": seq * 7}}


def say(*parts: object) -> None:
    # One write(2) per line: a pipe write under PIPE_BUF is atomic, so a SIGKILL never leaves half a line
    # (print() with several arguments writes them piecemeal, and CI once caught "committed " torn there).
    os.write(1, (" ".join(str(p) for p in parts) + "\n").encode())


def append_forever(j: Journal, op_id: int, seed: int) -> None:
    rng = random.Random(seed)
    with j.driver(op_id) as w:
        say("ready", os.getpid())
        while True:
            nxt = w.head_seq + 1
            if rng.random() < 0.3:
                say("intent", nxt)
                w.append(*payload(nxt))
                say("committed", nxt)
            else:
                n = rng.randint(2, 300)
                say("intent", nxt + n - 1)
                w.append_batch([payload(s) for s in range(nxt, nxt + n)])
                say("committed", nxt + n - 1)


def hold(j: Journal, op_id: int) -> None:
    with j.driver(op_id):
        say("locked", os.getpid())
        time.sleep(3600)


def open_txn(j: Journal, op_id: int) -> None:
    """Append one event inside a transaction and never commit: a writer stuck mid-append."""
    with j.driver(op_id) as w, j._transaction("stuck") as conn:
        seq = w.head_seq + 1
        type_, data = payload(seq)
        data_json = canonical_json(data)
        t = utc_now()
        h = event_hash(w.head_hash, op_id, seq, t, type_, 1, data_json)
        conn.execute("INSERT INTO events VALUES (?, ?, ?, ?, 1, ?, ?, ?)",
                     (op_id, seq, t, type_, data_json, w.head_hash, h))
        conn.execute("UPDATE operations SET head_seq = ?, head_hash = ? WHERE id = ?", (seq, h, op_id))
        say("in-transaction", os.getpid())
        time.sleep(3600)


if __name__ == "__main__":
    journal = Journal.open(sys.argv[1])
    op, mode = int(sys.argv[2]), sys.argv[3]
    if mode == "append":
        append_forever(journal, op, int(sys.argv[4]))
    elif mode == "hold":
        hold(journal, op)
    elif mode == "open-txn":
        open_txn(journal, op)
    else:
        raise SystemExit(f"unknown mode {mode}")
