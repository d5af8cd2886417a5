"""Events of one type looked up by one field of their payload, in SQL, without reading the others.

A caller that keeps a ledger of many small events (one per file) need not fold them into memory: it
asks for the last event with a given value, or walks the last event of every value in value order.
The journal knows nothing of which types these are; the caller names the type and the field.

Each (type, field) gets a partial expression index, ``(op_id, json_extract(data, '$.<field>'), seq)``
over that type's rows only, made the first time it is asked for (one transaction: a crash leaves it
whole or absent, and an older reader of the file is not disturbed by an extra index, so the schema
version stays). SQLite's planner, without statistics, prefers the primary key's ``op_id`` prefix to an
expression index, so the queries name the index (INDEXED BY). Where it cannot be made (a read-only
file), the same queries run without it: right, only slower.
"""
from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from .errors import JournalError
from .model import Event
from .store import _loads, _sql, _undecodable

if TYPE_CHECKING:
    from .store import Journal

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}\Z")
_CHUNK = 2000
_MANY = 500  # values per IN (...) of last_many (SQLite's bound-parameter limit is 32766 nowadays, 999 before)
_COLS = "op_id, seq, time, type, version, data, prev_hash, hash"


def index_name(type_: str, field: str) -> str:
    """
    >>> index_name("FileCopied", "key")
    'events_FileCopied_by_key'
    """
    return f"events_{type_}_by_{field}"


class Keyed:
    """Lookups of events of ``type_`` by ``data[field]`` (a string), within one operation."""

    def __init__(self, journal: "Journal", type_: str, field: str) -> None:
        for what, name in (("event type", type_), ("field", field)):
            if not isinstance(name, str) or not _NAME.match(name):
                raise JournalError(f"{what} {name!r} cannot be indexed: letters, digits and _ only")
        self.journal = journal
        self.type = type_
        self.field = field
        self.index = index_name(type_, field)
        self._expr = f"json_extract(data, '$.{field}')"
        self.indexed = self._make_index()
        by = f" INDEXED BY {self.index}" if self.indexed else ""
        # type_ is a literal, not a parameter: a partial index serves only a query that names its WHERE
        where = f"FROM events{by} WHERE op_id = ? AND type = '{type_}'"
        self._last = f"SELECT {_COLS} {where} AND {self._expr} = ? ORDER BY seq DESC LIMIT 1"
        self._exists = f"SELECT 1 {where} AND {self._expr} = ? LIMIT 1"
        self._all = f"SELECT {_COLS} {where} AND {self._expr} = ? AND seq > ? ORDER BY seq"
        self._latest = (f"SELECT {self._expr}, max(seq), {_COLS} {where} AND {self._expr} > ? "
                        f"GROUP BY {self._expr} ORDER BY {self._expr} LIMIT {_CHUNK}")
        self._count = f"SELECT count(DISTINCT {self._expr}) {where}"
        self._any = f"SELECT 1 {where} LIMIT 1"

    def _make_index(self) -> bool:
        j = self.journal
        sql = (f"CREATE INDEX IF NOT EXISTS {self.index} ON events (op_id, {self._expr}, seq) "
               f"WHERE type = '{self.type}'")
        with j._mutex:
            conn = j.conn
            try:
                if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?",
                                (self.index,)).fetchone():
                    return True
            except sqlite3.Error:
                return False
            try:
                with j._transaction(f"indexing {self.type} events by {self.field}") as c:
                    c.execute(sql)
            except JournalError:
                return False  # read-only, or a row that is not JSON (verify says which): unindexed queries
            return True

    def _rows(self, sql: str, args: tuple) -> list[tuple]:
        with self.journal._mutex, _sql(f"reading {self.type} events of operation {args[0]}"):
            return self.journal.conn.execute(sql, args).fetchall()

    def last(self, op_id: int, value: str) -> Event | None:
        """The last ``type_`` event whose ``field`` is ``value`` (O(log n)), or None."""
        rows = self._rows(self._last, (op_id, value))
        return _event(rows[0]) if rows else None

    def exists(self, op_id: int, value: str) -> bool:
        """Whether a ``type_`` event has ``field`` = ``value`` (the index alone: no row is read)."""
        return bool(self._rows(self._exists, (op_id, value)))

    def last_many(self, op_id: int, values: Iterable[str]) -> dict[str, Event]:
        """``last`` of each value (the ones with an event), a few hundred per query."""
        out: dict[str, Event] = {}
        vals = list(dict.fromkeys(values))
        for i in range(0, len(vals), _MANY):
            chunk = vals[i:i + _MANY]
            sql = (f"SELECT {self._expr}, max(seq), {_COLS} FROM events"
                   f"{' INDEXED BY ' + self.index if self.indexed else ''} WHERE op_id = ? AND type = '{self.type}' "
                   f"AND {self._expr} IN ({','.join('?' * len(chunk))}) GROUP BY {self._expr}")
            for row in self._rows(sql, (op_id, *chunk)):
                out[row[0]] = _event(row[2:])
        return out

    def all(self, op_id: int, value: str, after_seq: int = 0) -> list[Event]:
        """Every ``type_`` event whose ``field`` is ``value``, after ``after_seq``, in seq order."""
        return [_event(r) for r in self._rows(self._all, (op_id, value, int(after_seq)))]

    def latest(self, op_id: int) -> Iterator[Event]:
        """The last event of every value, in value order (SQLite's BINARY order: code points, as Python
        sorts str), read in chunks: no statement stays open between them, nothing is kept."""
        after = ""
        while True:
            rows = self._rows(self._latest, (op_id, after))
            for r in rows:
                yield _event(r[2:])
            if len(rows) < _CHUNK:
                return
            after = rows[-1][0]

    def count(self, op_id: int) -> int:
        """How many distinct values (a scan of the index: not for every file)."""
        return self._rows(self._count, (op_id,))[0][0]

    def totals(self, op_id: int, field: str) -> tuple[int, int | float]:
        """(distinct values, the sum of ``field`` over the last event of each), in SQL: nothing decoded."""
        if not _NAME.match(field):
            raise JournalError(f"field {field!r} cannot be summed: letters, digits and _ only")
        inner = (f"SELECT max(seq), data FROM events{' INDEXED BY ' + self.index if self.indexed else ''} "
                 f"WHERE op_id = ? AND type = '{self.type}' GROUP BY {self._expr}")
        n, total = self._rows(f"SELECT count(*), total(json_extract(data, '$.{field}')) FROM ({inner})", (op_id,))[0]
        return n, int(total) if float(total).is_integer() else total

    def any(self, op_id: int) -> bool:
        return bool(self._rows(self._any, (op_id,)))


def _event(row: tuple) -> Event:
    o, s, t, ty, v, d, p, h = row
    try:
        data = _loads(d)
    except (TypeError, ValueError) as e:
        raise _undecodable(f"operation {o} event {s}", e) from e
    return Event(o, s, t, ty, v, data, p, h)
