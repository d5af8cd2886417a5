"""The command line as a terminal or cron sees it, in a real process: help readable at 80 columns, flags
where a user puts them, nothing on stderr but brsm's own lines, --quiet for cron."""
from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

BRSM = Path(sys.executable).with_name("brsm")


def brsm(*argv: str, home: Path, columns: int = 80, timeout: float = 60) -> subprocess.CompletedProcess:
    cmd = [str(BRSM)] if BRSM.exists() else [sys.executable, "-c", "from brsm.cli.app import run; run()"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BRSM_", "PYTHONWARNINGS"))}
    env.update(BRSM_HOME=str(home), COLUMNS=str(columns), TERM="xterm-256color")
    return subprocess.run(cmd + list(argv), capture_output=True, text=True, env=env, timeout=timeout)


@pytest.fixture
def home(tmp_path):
    return tmp_path / "home"


def _flat(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def test_restore_help_at_80_columns_gives_help_texts_room(home):
    r = brsm("start", "restore", "--help", home=home)
    assert r.returncode == 0, r.stderr
    assert max(len(line) for line in r.stdout.splitlines()) <= 80, r.stdout
    # Typer's rich panels left each help text a column of ~20 characters: this sentence took 6 lines
    assert "Stop the cluster before the download instead" in r.stdout, r.stdout
    assert "│" not in r.stdout


def test_square_brackets_in_help_are_text_not_markup(home):
    r = brsm("start", "backup", "--help", home=home)
    assert r.returncode == 0, r.stderr
    assert "(overrides [ssh] user)" in _flat(r.stdout), r.stdout
    assert "(overrides [ssh] identity)" in _flat(r.stdout)


def test_metrics_file_after_the_subcommand_is_taken(home, tmp_path):
    metrics = tmp_path / "brsm.prom"
    r = brsm("start", "backup", "--meta", "127.0.0.1:1", "--storage", f"local://{tmp_path}/store",
             "--metrics-file", str(metrics), home=home)
    assert "No such option" not in r.stderr, r.stderr
    assert r.returncode == 4, r.stderr  # metad unreachable: the operation fails, and is counted
    assert 'brsm_operations{kind="backup"' in metrics.read_text()


def test_no_library_warning_reaches_stderr(home):
    r = brsm("check", "--meta", "127.0.0.1:1", home=home)
    assert r.returncode == 4
    assert "Warning" not in r.stderr and "warnings.warn" not in r.stderr, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert lines and all(ln.startswith(("brsm: error:", "hint:")) for ln in lines), r.stderr
    # kept where they can be read, not lost
    assert "CryptographyDeprecationWarning" in (home / "logs" / "brsm.log").read_text()


def test_quiet_prints_errors_only_anywhere_on_the_line(home, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[cluster]\nmeta = ["127.0.0.1:9559"]\n')
    for argv in (("--quiet", "config", "check", str(cfg)), ("config", "check", str(cfg), "--quiet")):
        r = brsm(*argv, home=home)
        assert r.returncode == 0 and r.stdout == "" and r.stderr == "", r
    loud = brsm("config", "check", str(cfg), home=home)
    assert loud.returncode == 0 and "ok:" in loud.stdout  # the same command says something without it
    bad = tmp_path / "bad.toml"
    bad.write_text('[cluster]\nmeta = ["127.0.0.1:9559"]\ncreate_backup_timeout = inf\n')
    r = brsm("config", "check", str(bad), "--quiet", home=home)
    assert r.returncode == 2 and r.stdout == "" and "create_backup_timeout" in r.stderr, r
    r = brsm("start", "backup", "--meta", "127.0.0.1:1", "--storage", f"local://{tmp_path}/store", "--quiet",
             home=home)
    assert r.returncode == 4 and r.stdout == "" and "brsm: error:" in r.stderr, r
    r = brsm("config", "check", str(cfg), "--quiet", "--json", home=home)
    assert r.returncode == 0 and r.stdout.startswith("{")  # --json is the result: printed either way


@pytest.mark.parametrize("uri", ["local:///tmp/brsm-x#tok3n", "s3://bucket/prefix#tok3n", "local:///tmp/x?tok3n=1"])
def test_a_storage_uri_with_a_fragment_is_refused_before_anything_is_journaled(home, uri):
    r = brsm("start", "backup", "--meta", "127.0.0.1:1", "--storage", uri, home=home)
    assert r.returncode == 2, r.stderr
    assert "tok3n" not in r.stderr and "no '?' or '#'" in r.stderr
    db = home / "journal.db"
    if db.exists():
        con = sqlite3.connect(db)
        try:
            assert con.execute("SELECT count(*) FROM operations").fetchone() == (0,)
        finally:
            con.close()
    assert b"tok3n" not in b"".join(p.read_bytes() for p in home.rglob("*") if p.is_file())


def test_a_fragment_in_the_configs_storage_default_is_refused_the_same_way(home, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[cluster]\nmeta = ["127.0.0.1:1"]\n[storage]\ndefault = "local:///tmp/brsm-y#tok3n"\n')
    r = brsm("start", "backup", "--config", str(cfg), home=home)
    assert r.returncode == 2 and "tok3n" not in r.stderr, r.stderr
    assert b"tok3n" not in b"".join(p.read_bytes() for p in home.rglob("*") if p.is_file())


def test_a_grace_beyond_a_float_is_one_usage_error(home):
    r = brsm("gc", "--meta", "127.0.0.1:1", "--grace", "9" * 400, home=home)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "--grace" in r.stderr, r.stderr


def test_what_a_library_logs_goes_to_the_log_not_stderr(home):
    """asyncio and aiohttp log "Unclosed client session" and the like at ERROR: with no handler configured
    Python's last resort prints them on stderr, where cron mails them."""
    code = ("import logging, sys\n"
            "from brsm.cli.app import main\n"
            "rc = main(['version'])\n"
            "logging.getLogger('asyncio').error('Unclosed client session')\n"
            "sys.exit(rc)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRSM_")}
    env["BRSM_HOME"] = str(home)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert "Unclosed client session" in (home / "logs" / "brsm.log").read_text()
