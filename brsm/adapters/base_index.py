"""``BaseIndex`` on a scratch SQLite file: an incremental backup looks its base's files up by content
and by host identity without holding them (a million-file base costs its rows on disk, not ~300 MB
of dicts). The file lives in a directory made for it alone (``mkdtemp``: exclusive, mode 0700) and
goes with it when the index is closed; a crash leaves only a ``brsm-base-*`` dir in the temp dir.
"""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Sequence

from brsm.errors import OperationFailed
from brsm.ports import BaseFile, FileIdentity

_AT_ONCE = 500  # SQLite binds at most 999 variables: pairs go two per row


class SqliteBaseIndex:
    def __init__(self, scratch_dir: str | None = None) -> None:
        self._dir = tempfile.mkdtemp(prefix="brsm-base-", dir=scratch_dir)
        self._db = sqlite3.connect(os.path.join(self._dir, "index.sqlite"), isolation_level=None)
        # scratch: lost with a crash by design, so no journal and no fsync
        self._db.executescript(
            "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA temp_store=FILE;"
            "CREATE TABLE f(key TEXT, size INTEGER, sha TEXT, host TEXT, dev INTEGER, ino INTEGER, ident TEXT);")
        self._indexed = False

    def add(self, files: Sequence[BaseFile]) -> None:
        if self._indexed:
            raise ValueError("a base index takes its files before its first lookup")
        rows = [(f.key, f.size, f.sha256, f.host, f.ident.dev if f.ident else None, f.ident.ino if f.ident else None,
                 json.dumps(f.ident.as_list()) if f.ident else None) for f in files]
        try:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT INTO f VALUES (?,?,?,?,?,?,?)", rows)
            self._db.execute("COMMIT")
        except sqlite3.Error as e:  # a full disk, most likely: the caller sends every file instead
            raise OperationFailed(f"the base's index in {self._dir} could not be written: {e}",
                                  hint="free space where BRSM_HOME is") from None

    def _index(self) -> None:
        # built once, after the bulk load: cheaper than keeping them up to date row by row
        if not self._indexed:
            self._db.executescript("CREATE INDEX f_content ON f(size, sha); CREATE INDEX f_inode ON f(host, dev, ino);")
            self._indexed = True

    def sizes(self, sizes: Sequence[int]) -> set[int]:
        self._index()
        out: set[int] = set()
        todo = sorted(set(sizes))
        for i in range(0, len(todo), _AT_ONCE):
            part = todo[i:i + _AT_ONCE]
            q = f"SELECT DISTINCT size FROM f WHERE size IN ({','.join('?' * len(part))})"
            out.update(r[0] for r in self._db.execute(q, part))
        return out

    def by_content(self, pairs: Sequence[tuple[int, str]]) -> dict[tuple[int, str], str]:
        self._index()
        out: dict[tuple[int, str], str] = {}
        for size, sha in set(pairs):
            row = self._db.execute("SELECT key FROM f WHERE size=? AND sha=? ORDER BY key LIMIT 1", (size, sha)).fetchone()
            if row:
                out[(size, sha)] = row[0]
        return out

    def by_inode(self, host: str, inodes: Sequence[tuple[int, int]]) -> dict[tuple[int, int], list[BaseFile]]:
        self._index()
        out: dict[tuple[int, int], list[BaseFile]] = {}
        for dev, ino in set(inodes):
            for key, size, sha, ident in self._db.execute(
                    "SELECT key, size, sha, ident FROM f WHERE host=? AND dev=? AND ino=? ORDER BY key", (host, dev, ino)):
                out.setdefault((dev, ino), []).append(
                    BaseFile(key, size, sha, host, FileIdentity.from_list(json.loads(ident))))
        return out

    def close(self) -> None:
        try:
            self._db.close()
        finally:
            shutil.rmtree(self._dir, ignore_errors=True)
