"""The journal file: opening it safely, appending durably, reading fast.

Writes take `BEGIN IMMEDIATE` so the write lock is held from the first statement (no deadlock-prone lock
upgrade), and WAL + synchronous=FULL make COMMIT wait for fsync: when append returns, the event survives a
crash or power loss. Reads use plain sqlite3 cursors; sqlite-utils' row dicts cost too much at 100k events.
"""
from __future__ import annotations

import json
import os
import secrets
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlite_utils

from . import anchor as anchors
from . import schema
from .anchor import Anchor
from .chain import canonical_json, check_operation, event_hash, genesis_hash, utc_now
from .errors import JournalCorrupt, JournalError, UnknownOperation
from .lock import OperationLock
from .model import Event, Operation, Problem, VerifyReport
from .redact import redact, scrub_text, suspect

_OP_COLS = "id, kind, created, params, who, version, target, head_seq, head_hash"
_EV_COLS = "op_id, seq, time, type, version, data, prev_hash, hash"
_READ_CHUNK = 2000
_loads = json.loads


# SQLite's primary result codes for a damaged file: SQLITE_CORRUPT, SQLITE_NOTADB.
_CORRUPT_CODES = frozenset({11, 26})


def _error(what: str, e: sqlite3.Error) -> JournalError:
    """A damaged file (truncated, overwritten, not SQLite) is JournalCorrupt; anything else JournalError."""
    code = getattr(e, "sqlite_errorcode", None)
    if isinstance(code, int) and code & 0xFF in _CORRUPT_CODES:
        return JournalCorrupt(f"{what}: {e}")
    return JournalError(f"{what}: {e}")


def _undecodable(what: str, e: Exception) -> JournalCorrupt:
    return JournalCorrupt(f"{what}: stored data is not JSON ({e}): the journal was edited outside brsm")


def _operation(row: tuple) -> Operation:
    try:
        params = _loads(row[3])
    except (TypeError, ValueError) as e:
        raise _undecodable(f"operation {row[0]}", e) from e
    return Operation(row[0], row[1], row[2], params, row[4], row[5], row[6], row[7], row[8])


def _types(types: str | Iterable[str] | None) -> list[str] | None:
    if types is None:
        return None
    return [types] if isinstance(types, str) else list(types)


@contextmanager
def _sql(what: str) -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as e:
        raise _error(what, e) from e


def _fsync_dir(parent: Path) -> None:
    dfd = os.open(parent, os.O_RDONLY)
    try:
        os.fsync(dfd)  # the new name itself must survive a crash
    finally:
        os.close(dfd)


def _private_dir(parent: Path) -> None:
    """The journal's directory, 0700 when brsm makes it (SQLite would use the umask for the files)."""
    if not parent.exists():
        parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(parent, 0o700)


def _configure(conn: sqlite3.Connection, p: Path) -> None:
    db = sqlite_utils.Database(conn, execute_plugins=False, recursive_triggers=False)
    db.enable_wal()
    if db.journal_mode != "wal":
        raise JournalError(f"journal {p}: cannot switch to WAL mode (journal_mode={db.journal_mode})")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")


def _create_new(path: Path) -> None:
    """Make a complete, empty journal at ``path`` atomically: initialised (0600) under a temporary name,
    then linked into place. A crash leaves either no journal or a whole one, never the 0-byte or
    table-less file that ``Journal.open`` refuses; two processes creating it at once both end up using
    the one that was linked first."""
    _private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.new-{os.getpid()}-{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    os.close(fd)
    try:
        conn = sqlite3.connect(tmp, timeout=30.0, isolation_level=None)
        try:
            _configure(conn, tmp)
            schema.migrate(conn, tmp)
        finally:
            conn.close()  # checkpoints the WAL into the file and removes it
        fd = os.open(tmp, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)  # never replaces: a journal made meanwhile by another process wins
        except FileExistsError:
            pass
        except OSError:
            # a file system without hard links: rename, which would replace, so only onto nothing
            if not os.path.lexists(path):
                os.rename(tmp, path)
        _fsync_dir(path.parent)
    finally:
        for leftover in (tmp, tmp.with_name(tmp.name + "-wal"), tmp.with_name(tmp.name + "-shm")):
            try:
                os.unlink(leftover)
            except FileNotFoundError:
                pass


def _refuse_unusable(p: Path, what: str) -> JournalCorrupt:
    return JournalCorrupt(
        f"journal {p} {what}; brsm will not start a new journal over it (that would hide what it held): put "
        f"back a copy of it (with its -wal file) if you have one, or move {p.name} and its -wal/-shm files "
        "aside to start afresh")


class Journal:
    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self.locks_dir = path.with_name(path.name + ".locks")
        self._conn: sqlite3.Connection | None = conn
        self._mutex = threading.RLock()  # one connection, possibly shared by threads
        self._keyed: dict[tuple[str, str], Any] = {}

    # -- lifecycle ---------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Journal:
        p = Path(path).expanduser().absolute()
        try:
            if not os.path.lexists(p):
                wal = p.with_name(p.name + "-wal")
                if os.path.lexists(wal) and os.lstat(wal).st_size > 0:
                    # SQLite would replay the old journal's WAL onto a new file: a mix of both
                    raise _refuse_unusable(p, f"is missing but its WAL {wal.name} is not (the journal was deleted "
                                              "or moved without it)")
                _create_new(p)
            st = p.stat()
            if st.st_mode & 0o077 and st.st_uid == os.getuid():
                os.chmod(p, 0o600)  # SQLite gives -wal/-shm the main file's mode, so fix it first
        except OSError as e:
            raise JournalError(f"cannot create journal {p}: {e}") from e
        except sqlite3.Error as e:
            raise _error(f"cannot create journal {p}", e) from e
        if st.st_size == 0:
            raise _refuse_unusable(p, "is empty (0 bytes): truncated, or made by something other than brsm")
        conn = None
        try:
            conn = sqlite3.connect(p, timeout=30.0, isolation_level=None, check_same_thread=False)
            found = schema.user_version(conn)
            schema.check_not_newer(found, p)  # before WAL: don't touch a newer file
            if found == 0 and not schema.has_tables(conn):
                raise _refuse_unusable(p, "holds no journal (an SQLite file without a schema): damaged or "
                                          "truncated")
            _configure(conn, p)
            schema.migrate(conn, p)
        except sqlite3.Error as e:
            if conn is not None:
                conn.close()
            raise _error(f"cannot open journal {p}", e) from e
        except BaseException:
            if conn is not None:
                conn.close()
            raise
        return cls(p, conn)

    def close(self) -> None:
        with self._mutex:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise JournalError(f"journal {self.path} is closed")
        return self._conn

    @property
    def schema_version(self) -> int:
        with self._mutex, _sql("reading schema version"):
            return schema.user_version(self.conn)

    @property
    def journal_id(self) -> str:
        """This journal's random id (12 hex digits), made once when the journal was created or migrated."""
        with self._mutex, _sql("reading the journal id"):
            return self.conn.execute("SELECT value FROM journal_info WHERE key = 'journal_id'").fetchone()[0]

    @contextmanager
    def _transaction(self, what: str, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT; any failure rolls back and surfaces as JournalError.

        ``durable=False`` commits without the fsync (synchronous=NORMAL for this one transaction):
        the rows survive the process being killed (they are in the WAL file, written before COMMIT
        returns) but not a power loss until the next durable commit, whose fsync covers the whole
        WAL. So the chain never gets a hole: what can be lost is only a tail of non-durable rows."""
        with self._mutex:
            conn = self.conn
            try:
                if not durable:
                    conn.execute("PRAGMA synchronous = NORMAL")
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    try:
                        yield conn
                        conn.execute("COMMIT")
                    except BaseException:
                        if conn.in_transaction:
                            conn.execute("ROLLBACK")
                        raise
                finally:
                    if not durable:
                        conn.execute("PRAGMA synchronous = FULL")
            except sqlite3.Error as e:
                raise _error(what, e) from e

    # -- operations --------------------------------------------------------------------------------
    def create_operation(self, *, kind: str, params: Mapping[str, Any] | None = None, who: str,
                         version: str, target: str = "") -> Operation:
        """Durable at return; no driver lock needed since nobody else can know the new id yet."""
        for name, value in (("kind", kind), ("who", who), ("version", version), ("target", target)):
            if not isinstance(value, str):
                raise JournalError(f"operation {name} must be a string, not {type(value).__name__}")
        if not kind:
            raise JournalError("operation kind must not be empty")
        if params is not None and not isinstance(params, Mapping):
            raise JournalError("operation params must be a mapping")
        try:
            params_json = canonical_json(redact(dict(params or {})))
        except (TypeError, ValueError) as e:
            raise JournalError(f"operation params are not JSON-serialisable: {e}") from e
        target = scrub_text(target)
        created = utc_now()
        with self._transaction("creating an operation") as conn:
            cur = conn.execute(
                "INSERT INTO operations (kind, created, params, who, version, target, head_seq, head_hash) "
                "VALUES (?, ?, ?, ?, ?, ?, 0, '')", (kind, created, params_json, who, version, target))
            op_id = cur.lastrowid
            genesis = genesis_hash(op_id, kind, created, params_json, who, version, target)
            conn.execute("UPDATE operations SET head_hash = ? WHERE id = ?", (genesis, op_id))
        return Operation(op_id, kind, created, _loads(params_json), who, version, target, 0, genesis)

    def operation(self, op_id: int) -> Operation:
        with self._mutex, _sql(f"reading operation {op_id}"):
            row = self.conn.execute(f"SELECT {_OP_COLS} FROM operations WHERE id = ?", (op_id,)).fetchone()
        if row is None:
            raise UnknownOperation(op_id)
        return _operation(row)

    def operations(self, kind: str | None = None, limit: int | None = None) -> list[Operation]:
        """Newest first, as `brsm list` shows them."""
        sql = f"SELECT {_OP_COLS} FROM operations"
        args: list[Any] = []
        if kind is not None:
            sql += " WHERE kind = ?"
            args.append(kind)
        sql += " ORDER BY id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(int(limit))
        with self._mutex, _sql("listing operations"):
            rows = self.conn.execute(sql, args).fetchall()
        return [_operation(r) for r in rows]

    # -- events ------------------------------------------------------------------------------------
    def events(self, op_id: int, types: str | Iterable[str] | None = None, after_seq: int = 0, *,
               exclude: Iterable[str] = ()) -> Iterator[Event]:
        """Events in seq order, read in keyset-paginated chunks; ``exclude``: types left out (never decoded).

        No statement stays open between chunks, so a half-consumed iterator never pins an old WAL snapshot
        (which would block checkpoints and make this connection's next write fail with BUSY_SNAPSHOT).
        """
        self.operation(op_id)  # UnknownOperation now, not at the first next()
        return self._iter_events(op_id, _types(types), int(after_seq), list(exclude))

    def _iter_events(self, op_id: int, types: list[str] | None, after: int,
                     exclude: list[str] | None = None) -> Iterator[Event]:
        if types is not None and not types:
            return
        where = "op_id = ? AND seq > ?"
        if types is not None:
            where += f" AND type IN ({','.join('?' * len(types))})"
        if exclude:
            where += f" AND type NOT IN ({','.join('?' * len(exclude))})"
        sql = f"SELECT {_EV_COLS} FROM events WHERE {where} ORDER BY seq LIMIT {_READ_CHUNK}"
        extra = (types or []) + (exclude or [])
        loads, mk = _loads, Event
        while True:
            with self._mutex, _sql(f"reading events of operation {op_id}"):
                rows = self.conn.execute(sql, (op_id, after, *extra)).fetchall()
            for o, s, t, ty, v, d, p, h in rows:
                try:
                    data = loads(d)
                except (TypeError, ValueError) as e:
                    raise _undecodable(f"operation {o} event {s}", e) from e
                yield mk(o, s, t, ty, v, data, p, h)
            if len(rows) < _READ_CHUNK:
                return
            after = rows[-1][1]

    def keyed(self, type_: str, field: str) -> Any:
        """Lookups of ``type_`` events by ``data[field]`` (journal.keyed.Keyed), indexed on first use."""
        with self._mutex:
            found = self._keyed.get((type_, field))
            if found is None:
                from .keyed import Keyed

                found = self._keyed[(type_, field)] = Keyed(self, type_, field)
            return found

    def count_events(self, op_id: int, types: str | Iterable[str] | None = None) -> int:
        self.operation(op_id)
        ts = _types(types)
        sql, args = "SELECT count(*) FROM events WHERE op_id = ?", [op_id]
        if ts is not None:
            if not ts:
                return 0
            sql += f" AND type IN ({','.join('?' * len(ts))})"
            args += ts
        with self._mutex, _sql(f"counting events of operation {op_id}"):
            return self.conn.execute(sql, args).fetchone()[0]

    # -- driving -----------------------------------------------------------------------------------
    @contextmanager
    def driver(self, op_id: int) -> Iterator[Writer]:
        """The only way to append: holds the operation's OS lock for the block (JournalLocked if taken)."""
        self.operation(op_id)
        lock = OperationLock(self.locks_dir / f"{int(op_id)}.lock", op_id)
        lock.acquire()
        writer = None
        try:
            writer = Writer(self, op_id)
            yield writer
        finally:
            if writer is not None:
                writer.closed = True
            lock.release()

    # -- checking ----------------------------------------------------------------------------------
    def verify(self, op_id: int | None = None) -> VerifyReport:
        """Walk the chain(s) inside one read snapshot, so a concurrent append can't look like tampering."""
        with self._mutex:
            conn = self.conn
            try:
                conn.execute("BEGIN")
                try:
                    return self._verify(conn, op_id)
                finally:
                    conn.execute("COMMIT")
            except sqlite3.Error as e:
                raise _error("verifying the journal", e) from e

    def anchor(self) -> Anchor:
        """Every operation's head now (see journal.anchor): for the caller to keep outside this file."""
        return self._read("taking an anchor of the journal", lambda conn: anchors.take(conn, self.journal_id))

    def check_anchors(self, taken: Iterable[Anchor]) -> list[list[Problem]]:
        """For each anchor, what no longer matches it (an empty list: everything it covered is intact)."""
        taken = list(taken)
        return self._read("checking the journal against its anchors",
                          lambda conn: anchors.check(conn, self.journal_id, taken))

    def _read(self, what: str, fn: Any) -> Any:
        """``fn(conn)`` inside one read snapshot."""
        with self._mutex:
            conn = self.conn
            try:
                conn.execute("BEGIN")
                try:
                    return fn(conn)
                finally:
                    conn.execute("COMMIT")
            except sqlite3.Error as e:
                raise _error(what, e) from e
            except ValueError as e:
                raise JournalCorrupt(f"{what}: {e}") from e

    def _verify(self, conn: sqlite3.Connection, op_id: int | None) -> VerifyReport:
        ev_sql = "SELECT seq, time, type, version, data, prev_hash, hash FROM events WHERE op_id = ? ORDER BY seq"
        if op_id is None:
            ops = conn.execute(f"SELECT {_OP_COLS} FROM operations ORDER BY id").fetchall()
        else:
            ops = conn.execute(f"SELECT {_OP_COLS} FROM operations WHERE id = ?", (op_id,)).fetchall()
        checked, problems = 0, []
        for row in ops:
            n, ps = check_operation(row, conn.execute(ev_sql, (row[0],)))
            checked += n
            problems += ps
        orphan_sql = ("SELECT op_id, min(seq) FROM events WHERE op_id NOT IN (SELECT id FROM operations)"
                      + ("" if op_id is None else " AND op_id = ?") + " GROUP BY op_id ORDER BY op_id")
        orphans = conn.execute(orphan_sql, () if op_id is None else (op_id,)).fetchall()
        for oid, seq in orphans:
            problems.append(Problem(oid, 0, f"events from seq {seq} belong to no operation: operation row deleted"))
        if op_id is None:
            problems += self._missing_operations(conn, {r[0] for r in ops} | {o for o, _ in orphans})
        elif not ops and not orphans:
            raise UnknownOperation(op_id)
        problems.sort(key=lambda p: (p.op_id, p.seq))
        return VerifyReport(ok=not problems, checked=checked, problems=problems)

    @staticmethod
    def _missing_operations(conn: sqlite3.Connection, seen: set[int]) -> list[Problem]:
        """AUTOINCREMENT never reuses or skips a committed id, so a gap below the high-water mark is a deletion."""
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'operations'").fetchone()
        top = row[0] if row else 0
        ids = conn.execute("SELECT id FROM operations").fetchall()
        present = {i for (i,) in ids} | seen
        return [Problem(i, 0, "operation row missing: deleted") for i in range(1, top + 1) if i not in present]


class Writer:
    """Appends for one operation while its driver lock is held.

    It remembers the head it last wrote and refuses to append when the file's head moved underneath it:
    then its caller's in-memory view of the operation is stale, and guessing would fork the history.
    """

    def __init__(self, journal: Journal, op_id: int) -> None:
        self.journal = journal
        self.op_id = op_id
        self.closed = False
        op = journal.operation(op_id)
        self.head_seq, self.head_hash = op.head_seq, op.head_hash

    def append(self, type_: str, data: Mapping[str, Any] | None = None, version: int = 1, *,
               durable: bool = True) -> Event:
        return self.append_batch([(type_, data if data is not None else {}, version)], durable=durable)[0]

    def append_batch(self, items: Iterable[tuple], *, durable: bool = True) -> list[Event]:
        """All or nothing, in one transaction (one fsync), durable at return. ``durable=False`` is for
        progress hints whose loss costs only repeated work (e.g. a checkpoint inside a file): no fsync,
        still safe against the process dying (see ``Journal._transaction``)."""
        return [Event(*row[:5], _loads(row[5]), *row[6:]) for row in self._write(items, durable)]

    def extend(self, items: Iterable[tuple], *, durable: bool = True) -> int:
        """``append_batch`` for a caller that keeps its own copy of what it appended (a ledger of many
        files): the seq of the first event (0 if none), and no Event built. Parsing each stored text
        back was a fifth of what a 100,000-file backup spent in its journal."""
        rows = self._write(items, durable)
        return rows[0][1] if rows else 0

    def _write(self, items: Iterable[tuple], durable: bool) -> list[tuple]:
        """The rows appended, as stored. One batch is one transaction, so its events share one time."""
        if self.closed:
            raise JournalError(f"the driver of operation {self.op_id} has exited; take it again to append")
        prepared = [self._encode(item) for item in items]
        if not prepared:
            return []
        op_id, seq, prev = self.op_id, self.head_seq, self.head_hash
        rows = []
        t = utc_now()
        for type_, version, data_json in prepared:
            seq += 1
            h = event_hash(prev, op_id, seq, t, type_, version, data_json)
            rows.append((op_id, seq, t, type_, version, data_json, prev, h))
            prev = h
        with self.journal._transaction(f"appending to operation {op_id}", durable) as conn:
            head = conn.execute("SELECT head_seq, head_hash FROM operations WHERE id = ?", (op_id,)).fetchone()
            if head is None:
                raise UnknownOperation(op_id)
            if tuple(head) != (self.head_seq, self.head_hash):
                raise JournalError(
                    f"operation {op_id} was appended to by someone else (its head is now at seq {head[0]}, this "
                    f"driver expected {self.head_seq}); refusing to fork its history")
            conn.executemany(f"INSERT INTO events ({_EV_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
            conn.execute("UPDATE operations SET head_seq = ?, head_hash = ? WHERE id = ?", (seq, prev, op_id))
        self.head_seq, self.head_hash = seq, prev
        return rows

    @staticmethod
    def _encode(item: tuple) -> tuple[str, int, str]:
        if len(item) == 2:
            (type_, data), version = item, 1
        elif len(item) == 3:
            type_, data, version = item
        else:
            raise JournalError(f"an event is (type, data) or (type, data, version), not {item!r}")
        if not isinstance(type_, str) or not type_:
            raise JournalError(f"event type must be a non-empty string, not {type_!r}")
        if type(version) is not int or version < 1:
            raise JournalError(f"event version must be a positive int, not {version!r}")
        if not isinstance(data, Mapping):
            raise JournalError(f"event data must be a mapping (a JSON object), not {type(data).__name__}")
        try:
            text = canonical_json(data if type(data) is dict else dict(data))
            # Second line of defence, for events of every type: most (a file copied) hold nothing that
            # could be a secret, and one search over the document says so without walking it.
            if suspect(text):
                text = canonical_json(redact(_loads(text)))
            return type_, version, text
        except (TypeError, ValueError) as e:
            raise JournalError(f"event {type_} data is not JSON-serialisable: {e}") from e
