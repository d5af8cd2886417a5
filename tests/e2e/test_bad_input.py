"""Bad and hostile input, run as a user runs it: the `brsm` CLI in a subprocess, against the sandbox
cluster where one is involved (issue 7, "Bad input and hostile input").

Every case asserts the exit code docs/exit-codes.md gives it, exactly one `brsm: error: ...` line that
names what is wrong (and its `hint:` line), that `--json` prints one JSON error object instead, and
that nothing was lost: no snapshot, lease or checkpoint dir left on the cluster, its data unchanged,
backups in storage untouched. docs/reliability.md ("Bad input and hostile input") maps every input
of the issue to the tests that prove it, here and elsewhere.
"""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import BRSM
from tests.e2e.test_backup_restore import aside_dirs, checkpoint_dirs, leases, snapshots

pytestmark = pytest.mark.sandbox


# -- running brsm and reading what it says ------------------------------------------------------------
def run(env, *args: str, home: Path | None = None, extra: dict[str, str] | None = None,
        unset: tuple[str, ...] = (), timeout: float = 120) -> subprocess.CompletedProcess:
    e = dict(env.env)
    if home is not None:
        e["BRSM_HOME"] = str(home)
    for k in unset:
        e.pop(k, None)
    e.update(extra or {})
    return subprocess.run([*BRSM, *args], env=e, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def the_error(p: subprocess.CompletedProcess) -> tuple[str, str | None]:
    """The one `brsm: error:` line and its `hint:` (text mode); never a traceback."""
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    errors = [i for i, ln in enumerate(lines) if ln.startswith("brsm: error: ")]
    assert len(errors) == 1, f"want one error line, got:\n{p.stderr[-3000:]}"
    i = errors[0]
    rest = lines[i + 1:]
    assert len(rest) <= 1 and all(ln.startswith("hint: ") for ln in rest), \
        f"the error must be one line, then at most a hint:\n{p.stderr[-3000:]}"
    return lines[i][len("brsm: error: "):], rest[0][len("hint: "):] if rest else None


def the_json_error(p: subprocess.CompletedProcess) -> dict:
    """With --json: exactly one JSON document on stdout, carrying error, hint and exit_code."""
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    docs = [ln for ln in p.stdout.splitlines() if ln.strip()]
    assert len(docs) == 1, f"want one JSON document, got:\n{p.stdout[-3000:]}"
    doc = json.loads(docs[0])
    assert isinstance(doc, dict) and doc["exit_code"] == p.returncode and doc["error"], doc
    assert "hint" in doc
    return doc


TEXT, JSON, BOTH = ("text",), ("json",), ("text", "json")


def fails(env, *args: str, code: int, says: tuple[str, ...] = (), hint: str | None = "",
          never: tuple[str, ...] = ("Incorrect frame size",), modes: tuple[str, ...] = BOTH, **kw) -> str:
    """Run ``brsm ARGS`` as text and/or with ``--json``: exit ``code``; one error line (or the JSON
    document's ``error``) containing each of ``says``; a hint containing ``hint`` ("" = any hint,
    None = none required); none of ``never`` anywhere in the output. Returns the message.

    A brsm process costs ~0.4 s to start, so cases that repeat a command shape check one mode each
    and every input gets both modes somewhere."""
    msg = ""
    for mode in modes:
        p = run(env, *args, *(["--json"] if mode == "json" else []), **kw)
        where = f"brsm {' '.join(args)}{' --json' if mode == 'json' else ''}"
        assert p.returncode == code, f"{where} -> {p.returncode}, want {code}\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}"
        if mode == "json":
            doc = the_json_error(p)
            msg, h = doc["error"], doc["hint"]
        else:
            msg, h = the_error(p)
        for s in says:
            assert s in msg, f"{where}: {s!r} not in the error {msg!r}"
        for s in never:
            assert s not in p.stderr + p.stdout, f"{where}: {s!r} must never be shown: {msg!r}"
        if hint is not None:
            assert h and hint in h, f"{where}: hint {h!r} lacks {hint!r} (error: {msg!r})"
    return msg


# -- what must be left as it was -----------------------------------------------------------------------
def cluster_clean(env) -> None:
    assert snapshots(env) == [], "no snapshot may be left"
    assert leases(env) == [], "no lease may be left"
    assert checkpoint_dirs(env) == [], "no checkpoint dir may be left"
    assert aside_dirs(env) == [], "no set-aside dir may be left"


def tree(root: Path) -> dict[str, str]:
    """Every file under root (symlinks as their target) with its SHA-256: a storage's exact content."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = "-> " + os.readlink(p)
        elif p.is_file():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def events_of(home: Path, op_id: int) -> list[tuple]:
    con = sqlite3.connect(home / "journal.db")
    try:
        return con.execute("SELECT seq, type, data FROM events WHERE op_id = ? ORDER BY seq", (op_id,)).fetchall()
    finally:
        con.close()


def last_op(env, home: Path | None = None) -> dict:
    p = run(env, "ops", "--json", "--limit", "1", home=home)
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(p.stdout)[0]


# -- the journal: corrupted, edited, locked ------------------------------------------------------------
@pytest.fixture(scope="module")
def journal_with_failed_op(sandbox, tmp_path_factory):
    """A journal of its own holding one real operation that failed its preflight (unknown space).
    Resuming it as journaled would fail again; edited to name a real space, it would back that space
    up into ``<dir>/b``."""
    env = sandbox
    d = tmp_path_factory.mktemp("failed-op")
    p = run(env, "start", "backup", "--config", env.config, "--storage", f"local://{d / 'b'}",
            "--spaces", "nope", home=d / "home")
    assert p.returncode == 4, p.stderr[-2000:]
    op = last_op(env, d / "home")
    assert op["state"] == "FAILED"
    con = sqlite3.connect(d / "home" / "journal.db")
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the whole journal in one file, to copy
    con.close()
    return d, op["id"]


@pytest.fixture
def failed_op(journal_with_failed_op, tmp_path):
    """A fresh copy of that journal: (home, op id)."""
    d, op = journal_with_failed_op
    home = tmp_path / "home"
    home.mkdir()
    (home / "journal.db").write_bytes((d / "home" / "journal.db").read_bytes())
    return home, op


def test_edited_journal_row_is_named_and_refused(sandbox, journal_with_failed_op, failed_op):
    env = sandbox
    journal_dir = journal_with_failed_op[0]
    home, op = failed_op
    con = sqlite3.connect(home / "journal.db")
    con.execute("UPDATE events SET data = replace(data, '\"nope\"', '\"space1\"') WHERE op_id = ? AND seq = 1", (op,))
    con.commit()
    con.close()
    before = events_of(home, op)
    where = f"operation {op} was tampered with at event 1"
    # every reader names the first edited event and exits 6; `ops` still lists, then fails
    fails(env, "journal", "verify", code=6, says=(f"operation {op} event 1", "edited"), home=home)
    fails(env, "audit", str(op), code=6, says=(where,), hint="keep a copy", home=home, modes=TEXT)
    p = run(env, "ops", home=home)
    assert p.returncode == 6 and "backup" in p.stdout and where in the_error(p)[0]
    p = run(env, "ops", "--json", home=home)
    assert p.returncode == 6 and the_json_error(p)["operations"][0]["id"] == op
    # resume and rollback refuse to act on edited facts: nothing runs, nothing is appended
    fails(env, "resume", str(op), code=6, says=(f"refusing to resume operation {op}", where), hint="brsm audit",
          home=home)
    fails(env, "rollback", str(op), code=6, says=(f"refusing to rollback operation {op}", where), home=home,
          modes=TEXT)
    assert events_of(home, op) == before
    assert not (journal_dir / "b").exists(), "the edited resume must not have backed anything up"
    cluster_clean(env)


def test_undecodable_journal_row_is_a_damaged_journal(sandbox, failed_op):
    env = sandbox
    home, op = failed_op
    con = sqlite3.connect(home / "journal.db")
    con.execute("UPDATE events SET data = '{not json' WHERE op_id = ? AND seq = 2", (op,))
    con.commit()
    con.close()
    for args, modes in ((["ops"], TEXT), (["audit", str(op)], JSON)):
        fails(env, *args, code=6, says=("journal is damaged", f"operation {op} event 2", "not JSON"),
              hint="keep a copy", home=home, modes=modes)
    fails(env, "journal", "verify", code=6, says=(f"operation {op} event 2",), home=home, modes=TEXT)
    fails(env, "resume", str(op), code=6, says=("refusing to resume",), home=home, modes=JSON)


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_damaged_journal_file_gives_one_clear_error(sandbox, failed_op, damage):
    env = sandbox
    home, op = failed_op
    db = home / "journal.db"
    con = sqlite3.connect(db)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    if damage == "truncated":
        os.truncate(db, db.stat().st_size // 2)
        says = "database disk image is malformed"
    else:
        db.write_bytes(os.urandom(64 << 10))
        says = "file is not a database"
    damaged = db.read_bytes()
    commands = [["ops"], ["resume", str(op)]]
    if damage == "truncated":  # the other commands open the journal the same way: once is enough
        commands += [["audit", str(op)], ["rollback", str(op)], ["journal", "verify"],
                     ["start", "backup", "--config", env.config, "--storage", f"local://{home / 'b'}"]]
    for i, args in enumerate(commands):
        fails(env, *args, code=6, says=("the journal is damaged", str(db), says), hint="move", home=home,
              modes=(TEXT, JSON)[i % 2])
    assert not (home / "b").exists()
    assert db.read_bytes() == damaged, "a damaged journal is evidence: brsm must not rewrite it"
    cluster_clean(env)


HOLD = """
import sys, time
from journal import Journal
j = Journal.open(sys.argv[1])
with j.driver(int(sys.argv[2])):
    print("held", flush=True)
    time.sleep(120)
"""


def test_journal_locked_by_another_process_names_it(sandbox, failed_op):
    env = sandbox
    home, op = failed_op
    before = events_of(home, op)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(home / "journal.db"), str(op)],
                              stdout=subprocess.PIPE, text=True, env=env.env)
    try:
        assert holder.stdout.readline().strip() == "held"
        import socket

        for mode, modes in (("resume", BOTH), ("rollback", TEXT)):
            fails(env, mode, str(op), code=3, says=(f"operation {op}", f"pid {holder.pid}",
                                                     f"host {socket.gethostname()}"), hint="wait", home=home,
                  modes=modes)
    finally:
        holder.kill()
        holder.wait()
    assert events_of(home, op) == before
    cluster_clean(env)
