"""One rule for the commands that delete or take the cluster down (start restore, cleanup, prune, gc): on
a terminal they show what they will do and ask; off a terminal (cron, scripts, stdin closed) they need
--yes (prune and gc also take their old --confirm); without it nothing is deleted and no operation is
created. Real processes: stdin closed, and a pseudo-terminal (pty) for the question."""
from __future__ import annotations

import os
import pty
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from brsm.cli.confirm import decide, is_yes

BRSM = Path(sys.executable).with_name("brsm")
NAME = "BACKUP_2020_01_01_00_00_00"
OLDER = "BACKUP_2019_01_01_00_00_00"


def _cmd() -> list[str]:
    return [str(BRSM)] if BRSM.exists() else [sys.executable, "-c", "from brsm.cli.app import run; run()"]


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BRSM_", "PYTHONWARNINGS"))}
    env.update(BRSM_HOME=str(home), COLUMNS="120")
    return env


def closed_stdin(*argv: str, home: Path) -> subprocess.CompletedProcess:
    return subprocess.run(_cmd() + list(argv), capture_output=True, text=True, env=_env(home), timeout=60,
                          stdin=subprocess.DEVNULL)


def on_a_pty(*argv: str, home: Path, answer: str) -> subprocess.CompletedProcess:
    """stdin is a terminal (the pty's slave end); ``answer`` is typed on it; stdout/stderr are pipes."""
    master, slave = pty.openpty()
    try:
        p = subprocess.Popen(_cmd() + list(argv), stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=_env(home))
        os.write(master, answer.encode())
        out, err = p.communicate(timeout=60)
        return subprocess.CompletedProcess(p.args, p.returncode, out, err)
    finally:
        os.close(slave)
        os.close(master)


def operations(home: Path) -> list[tuple[int, str]]:
    db = home / "journal.db"
    if not db.exists():
        return []
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT id, kind FROM operations").fetchall()
    finally:
        con.close()


def make_backup(store: Path, name: str) -> Path:
    """Enough of a backup for cleanup and prune to see it (a manifest, its .meta and a data file)."""
    d = store / name
    (d / "data").mkdir(parents=True)
    for rel in ("brsm-manifest.json", f"{name}.meta", "data/x"):
        (d / rel).write_bytes(b"x")
    return d


@pytest.fixture
def home(tmp_path):
    return tmp_path / "home"


def test_the_rule():
    assert decide(yes=True, interactive=False) == decide(yes=True, interactive=True) == "yes"
    assert decide(yes=False, interactive=True) == "ask"
    assert decide(yes=False, interactive=False) == "refuse"
    assert [is_yes(a) for a in ("y\n", "Yes", "", "\n", "no", "yess")] == [True, True, False, False, False, False]


def test_cleanup_off_a_terminal_needs_yes(home, tmp_path):
    store = tmp_path / "b"
    d = make_backup(store, NAME)
    r = closed_stdin("cleanup", NAME, "--storage", f"local://{store}", home=home)
    assert r.returncode == 2, r.stderr
    assert "refusing without --yes" in r.stderr and "add --yes" in r.stderr, r.stderr
    assert d.exists() and operations(home) == []  # nothing deleted, no operation
    r = closed_stdin("cleanup", NAME, "--storage", f"local://{store}", "--yes", home=home)
    assert r.returncode == 0 and f"deleted {NAME}" in r.stdout, r.stderr
    assert not d.exists()


def test_start_restore_off_a_terminal_needs_yes_and_creates_nothing(home, tmp_path):
    store = tmp_path / "b"
    make_backup(store, NAME)
    for extra in ([], ["--json"]):
        r = closed_stdin("start", "restore", "--meta", "127.0.0.1:1", "--storage", f"local://{store}", "--name", NAME,
                         *extra, home=home)
        assert r.returncode == 2, (r.stdout, r.stderr)
        assert "refusing without --yes" in (r.stdout + r.stderr)
    assert operations(home) == []
    # with --yes it goes on (and fails its preflight: no metad there), an operation exists
    r = closed_stdin("start", "restore", "--yes", "--meta", "127.0.0.1:1", "--storage", f"local://{store}",
                     "--name", NAME, home=home)
    assert r.returncode == 4, r.stderr
    assert [k for _, k in operations(home)] == ["restore"]


def test_start_restore_on_a_terminal_shows_what_it_will_do_and_a_no_does_nothing(home, tmp_path):
    store = tmp_path / "b"
    make_backup(store, NAME)
    r = on_a_pty("start", "restore", "--meta", "127.0.0.1:1", "--storage", f"local://{store}", "--name", NAME,
                 home=home, answer="n\n")
    assert r.returncode == 2, r.stderr
    assert f"restore {NAME} from local://{store}" in r.stderr and "stops" in r.stderr and "[y/N]" in r.stderr
    assert "not confirmed; nothing was done" in r.stderr
    assert operations(home) == []


def test_cleanup_on_a_terminal_asks_and_a_yes_deletes(home, tmp_path):
    store = tmp_path / "b"
    d = make_backup(store, NAME)
    r = on_a_pty("cleanup", NAME, "--storage", f"local://{store}", home=home, answer="\n")  # Enter: the default, no
    assert r.returncode == 2 and d.exists() and operations(home) == [], r.stderr
    r = on_a_pty("cleanup", NAME, "--storage", f"local://{store}", home=home, answer="y\n")
    assert r.returncode == 0 and f"deleted {NAME}" in r.stdout, r.stderr
    assert f"delete {NAME} from local://{store}" in r.stderr
    assert not d.exists()


def test_prune_dry_run_off_a_terminal_asks_on_one_and_yes_or_confirm_deletes(home, tmp_path):
    import asyncio

    from brsm.adapters.storage import open_storage
    from tests.operating.conftest import make_backup as make_complete

    store = tmp_path / "b"
    store.mkdir()

    async def two():
        st = open_storage(f"local://{store}")
        try:
            return [await make_complete(st, age_days=3, seed=1), await make_complete(st, age_days=1, seed=2)]
        finally:
            await st.close()

    old, new = (store / b.name for b in asyncio.run(two()))
    r = closed_stdin("prune", "--storage", f"local://{store}", "--keep-last", "1", home=home)
    assert r.returncode == 0 and "would delete" in r.stdout, r.stderr
    assert "add --yes to delete them" in r.stdout and old.exists()
    r = on_a_pty("prune", "--storage", f"local://{store}", "--keep-last", "1", home=home, answer="no\n")
    assert r.returncode == 0 and "delete these 1 backup(s)? [y/N]" in r.stderr and old.exists(), r.stderr
    assert operations(home) == []  # a dry run is not journaled
    r = on_a_pty("prune", "--storage", f"local://{store}", "--keep-last", "1", home=home, answer="y\n")
    assert r.returncode == 0 and not old.exists() and new.exists(), r.stderr
    assert [k for _, k in operations(home)] == ["prune"]


def test_prune_and_gc_take_confirm_as_yes(home, tmp_path):
    r = closed_stdin("prune", "--help", home=home)
    assert "--yes, --confirm, -y" in r.stdout or ("--yes" in r.stdout and "--confirm" in r.stdout), r.stdout
    r = closed_stdin("gc", "--help", home=home)
    assert "--yes" in r.stdout and "--confirm" in r.stdout, r.stdout
