"""Anchors: the journal's state at one moment, kept outside the file, so a rewrite can be caught.

The hash chain alone is unkeyed: whoever can write the file can edit an event and recompute every hash
after it, or delete a whole operation and lower ``sqlite_sequence``, and ``verify`` then passes. An anchor
is a small record of, for every operation 1..N at the moment it was taken, its head seq and the hash of
the chain at that seq (a prefix per operation, and one SHA-256 digest over the full hashes). brsm puts
one into every backup's manifest and every restore's record in storage; checking the journal against
them later proves that nothing an anchor covered was changed or removed since, whatever the file says.

Chains keep growing after an anchor (a later resume appends): an anchor covers each operation only up
to the seq it recorded, and operations created after it are not its concern.

Checking never trusts the stored hashes: each chain is recomputed from the events' content, from the
operation row's genesis, so a recomputed chain yields different hashes than the ones anchored.
"""
from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from hashlib import sha256
from typing import Any

from .chain import event_hash, genesis_hash, utc_now
from .model import Problem

FORMAT = 1
# Per operation the anchor keeps 64 bits of the hash: enough to name the operation that differs;
# the digest over the full hashes is what proves the whole (256 bits).
PREFIX_HEX = 16
_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True)
class Anchor:
    """heads[i] is operation i + 1: (head seq, hash prefix), or None when that id was already missing."""

    journal_id: str
    taken: str
    heads: tuple[tuple[int, str] | None, ...]
    digest: str

    @property
    def operations(self) -> int:
        return len(self.heads)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "journal_id": self.journal_id, "taken": self.taken,
                "heads": [None if h is None else [h[0], h[1]] for h in self.heads], "digest": self.digest}

    @classmethod
    def from_dict(cls, d: Any) -> Anchor:
        """Raises ValueError naming what is wrong with a stored anchor (it came from storage)."""
        if not isinstance(d, Mapping):
            raise ValueError("an anchor is a JSON object")
        if d.get("format") != FORMAT:
            raise ValueError(f"anchor format {d.get('format')!r}, this journal reads format {FORMAT}")
        jid, taken, digest, heads = d.get("journal_id"), d.get("taken"), d.get("digest"), d.get("heads")
        if not isinstance(jid, str) or not jid:
            raise ValueError("anchor has no journal_id")
        if not isinstance(taken, str):
            raise ValueError("anchor has no time taken")
        if not _is_hex(digest, 64):
            raise ValueError("anchor digest is not a SHA-256")
        if not isinstance(heads, list):
            raise ValueError("anchor has no list of heads")
        out: list[tuple[int, str] | None] = []
        for i, h in enumerate(heads, 1):
            if h is None:
                out.append(None)
                continue
            if (not isinstance(h, list) or len(h) != 2 or type(h[0]) is not int or h[0] < 0
                    or not _is_hex(h[1], PREFIX_HEX)):
                raise ValueError(f"anchor head of operation {i} is not [seq, hash prefix]")
            out.append((h[0], h[1]))
        return cls(jid, taken, tuple(out), digest)


def _is_hex(value: Any, n: int) -> bool:
    return isinstance(value, str) and len(value) == n and set(value) <= _HEX


def digest_of(journal_id: str, hashes: Sequence[tuple[int, str] | None]) -> str:
    """One SHA-256 over every operation's (id, seq, full chain hash at seq), or its absence.

    >>> digest_of("ab12", [(0, "0" * 64), None])[:12]
    '7f7410068853'
    """
    h = sha256(f"journal-anchor:{journal_id}".encode())
    for op_id, entry in enumerate(hashes, 1):
        h.update(f"\n{op_id}:missing".encode() if entry is None else f"\n{op_id}:{entry[0]}:{entry[1]}".encode())
    return h.hexdigest()


def _top(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'operations'").fetchone()
    top = conn.execute("SELECT max(id) FROM operations").fetchone()[0] or 0
    return max(top, row[0] if row else 0)


def take(conn: sqlite3.Connection, journal_id: str) -> Anchor:
    """The anchor of the journal as it is now (call inside one read transaction). It records the heads
    the operation rows carry: an intact journal's heads are its chains' hashes (``verify`` says so)."""
    heads = {i: (s, h) for i, s, h in conn.execute("SELECT id, head_seq, head_hash FROM operations")}
    full = [heads.get(i) for i in range(1, _top(conn) + 1)]
    for i, entry in enumerate(full, 1):
        if entry is not None and (type(entry[0]) is not int or not _is_hex(entry[1], 64)):
            raise ValueError(f"operation {i} has a malformed head: the journal was edited outside brsm")
    return Anchor(journal_id, utc_now(), tuple(None if e is None else (e[0], e[1][:PREFIX_HEX]) for e in full),
                  digest_of(journal_id, full))


def _recompute(conn: sqlite3.Connection, op_id: int, seqs: set[int]) -> tuple[dict[int, str], int, bool] | None:
    """The chain hash at each wanted seq, recomputed from the content alone; the last seq reached
    without a gap; and whether the chain stopped at a gap (a later event exists). None when the
    operation row is gone."""
    row = conn.execute("SELECT id, kind, created, params, who, version, target FROM operations WHERE id = ?",
                       (op_id,)).fetchone()
    if row is None:
        return None
    try:
        h = genesis_hash(*row)
    except (TypeError, ValueError):
        h = "malformed operation row"
    found: dict[int, str] = {0: h} if 0 in seqs else {}
    upto = max(seqs)
    reached, gap = 0, False
    cur = conn.execute("SELECT seq, time, type, version, data FROM events WHERE op_id = ? AND seq <= ? "
                       "ORDER BY seq", (op_id, upto))
    for seq, time, type_, version, data in cur:
        if seq != reached + 1:
            gap = True  # nothing after it can match what was anchored
            break
        try:
            h = event_hash(h, op_id, seq, time, type_, version, data)
        except (TypeError, ValueError, UnicodeError):
            h = f"malformed event {seq}"
        reached = seq
        if seq in seqs:
            found[seq] = h
    return found, reached, gap


def check(conn: sqlite3.Connection, journal_id: str, anchors: Iterable[Anchor]) -> list[list[Problem]]:
    """For each anchor, what in the journal no longer matches it (empty: it still matches). Each chain is
    walked once for all the anchors; call inside one read transaction."""
    anchors = list(anchors)
    wanted: dict[int, set[int]] = {}
    for a in anchors:
        if a.journal_id == journal_id:
            for op_id, head in enumerate(a.heads, 1):
                if head is not None:
                    wanted.setdefault(op_id, set()).add(head[0])
    chains = {op_id: _recompute(conn, op_id, seqs) for op_id, seqs in sorted(wanted.items())}
    present = {i for (i,) in conn.execute("SELECT id FROM operations")}
    return [_check_one(a, journal_id, chains, present) for a in anchors]


def _check_one(a: Anchor, journal_id: str, chains: Mapping[int, tuple[dict[int, str], int, bool] | None],
               present: set[int]) -> list[Problem]:
    if a.journal_id != journal_id:
        return [Problem(0, 0, f"the anchor is of journal {a.journal_id}, not of this journal ({journal_id})")]
    problems: list[Problem] = []
    full: list[tuple[int, str] | None] = []
    for op_id, head in enumerate(a.heads, 1):
        if head is None:
            full.append(None)
            if op_id in present:
                problems.append(Problem(op_id, 0, "operation row inserted: the id was missing when the anchor "
                                                  "was taken"))
            continue
        seq, prefix = head
        chain = chains.get(op_id)
        if chain is None:
            problems.append(Problem(op_id, 0, f"operation row missing: deleted (the anchor recorded it up to "
                                              f"event {seq})"))
            full.append((seq, "deleted"))
            continue
        hashes, reached, gap = chain
        if reached < seq:
            first = reached + 1
            what = f"event {first}" if first == seq or gap else f"events {first}..{seq}"
            problems.append(Problem(op_id, first, f"{what} missing: deleted (the anchor recorded events up to "
                                                  f"{seq})"))
            full.append((seq, "deleted"))
            continue
        h = hashes[seq]
        full.append((seq, h))
        if h[:PREFIX_HEX] != prefix:
            span = "the operation row" if seq == 0 else "the operation row or an event up to this one"
            problems.append(Problem(op_id, seq, f"{span} changed since the anchor was taken (the chain "
                                                "recomputed from the content differs from the anchored one)"))
    if not problems and digest_of(journal_id, full) != a.digest:
        problems.append(Problem(0, 0, "the anchor's digest does not match the journal: the journal or the "
                                      "anchor was changed"))
    return problems
