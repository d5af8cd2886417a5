"""Schema versions and forward migrations, tracked in PRAGMA user_version.

A journal outlives the brsm that wrote it, so older files are migrated in place (in one transaction), and a
file from a newer brsm is refused rather than misread or "migrated" backwards.
"""
from __future__ import annotations

import sqlite3
from collections.abc import Callable

from .errors import JournalError

_V1 = [
    """CREATE TABLE operations (
        id        INTEGER PRIMARY KEY AUTOINCREMENT,
        kind      TEXT NOT NULL,
        created   TEXT NOT NULL,
        params    TEXT NOT NULL,
        who       TEXT NOT NULL,
        version   TEXT NOT NULL,
        target    TEXT NOT NULL,
        head_seq  INTEGER NOT NULL DEFAULT 0,
        head_hash TEXT NOT NULL
    )""",
    # Clustered on (op_id, seq): reading one operation in order is one range scan; the key is the UNIQUE rule.
    """CREATE TABLE events (
        op_id     INTEGER NOT NULL REFERENCES operations(id),
        seq       INTEGER NOT NULL CHECK (seq >= 1),
        time      TEXT NOT NULL,
        type      TEXT NOT NULL,
        version   INTEGER NOT NULL DEFAULT 1,
        data      TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash      TEXT NOT NULL,
        PRIMARY KEY (op_id, seq)
    ) WITHOUT ROWID""",
]

_V2 = [
    # Type filters (views, `brsm status`) and kind filters (`brsm list --kind`) without scanning everything.
    "CREATE INDEX events_by_type ON events (op_id, type, seq)",
    "CREATE INDEX operations_by_kind ON operations (kind, id)",
]

_V3 = [
    # A random id made once per journal: with an operation's id it names what brsm leaves on a cluster
    # or in storage (`<journal_id>-<op>`), so two journals' operation 38 are never taken for each other.
    "CREATE TABLE journal_info (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID",
    "INSERT INTO journal_info (key, value) VALUES ('journal_id', lower(hex(randomblob(6))))",
]


def _steps(statements: list[str]) -> Callable[[sqlite3.Connection], None]:
    def apply(conn: sqlite3.Connection) -> None:
        for sql in statements:
            conn.execute(sql)
    return apply


# MIGRATIONS[i] takes a journal from version i to i + 1.
MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_steps(_V1), _steps(_V2), _steps(_V3)]
SCHEMA_VERSION = len(MIGRATIONS)


def user_version(conn: sqlite3.Connection) -> int:
    return conn.execute("PRAGMA user_version").fetchone()[0]


def has_tables(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT count(*) FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'").fetchone()[0] > 0


def check_not_newer(found: int, path: object) -> None:
    if found > SCHEMA_VERSION:
        raise JournalError(
            f"journal {path} has schema version {found}, newer than this brsm understands ({SCHEMA_VERSION}); "
            "upgrade brsm to read it (the file was left untouched)"
        )


def migrate(conn: sqlite3.Connection, path: object, target: int = SCHEMA_VERSION) -> int:
    """Bring the schema to `target` in one IMMEDIATE transaction; returns the version found before.

    The version is re-read inside the transaction, so two processes opening an old journal at once migrate it
    exactly once. The connection must be in autocommit mode (isolation_level=None).
    """
    found = user_version(conn)
    check_not_newer(found, path)
    if found >= target:
        return found
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = user_version(conn)
        check_not_newer(found, path)
        if found == 0:
            if has_tables(conn):
                raise JournalError(f"{path} is an SQLite database but not a journal (it has tables, no version)")
        for version in range(found, target):
            MIGRATIONS[version](conn)
        conn.execute(f"PRAGMA user_version = {int(target)}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return found
