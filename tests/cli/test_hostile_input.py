"""What an adversarial operator broke (issue 13), through the CLI entry point in this process: every bad
input is one `brsm: error:` line (plus a hint), a documented exit code, no traceback, no operation
created when the input is refused, and no credential anywhere brsm writes or prints."""
from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

from brsm.cli.app import main

CANARY = "cAnArY-" + "7d41b0"
UNREACHABLE = '[cluster]\nmeta = ["127.0.0.1:1"]\n'


@pytest.fixture
def home(tmp_path, monkeypatch):
    h = tmp_path / "home"
    monkeypatch.setenv("BRSM_HOME", str(h))
    monkeypatch.delenv("BRSM_CONFIG", raising=False)
    monkeypatch.delenv("BRSM_DEBUG", raising=False)
    return h


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def one_error(code: int, out: str, err: str, want: int) -> str:
    """Exit ``want``, one `brsm: error:` line and at most a hint, no traceback; returns the message."""
    assert code == want, (code, out, err)
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("brsm: error: ")]
    assert len(errors) == 1, err
    rest = lines[lines.index(errors[0]) + 1:]
    assert len(rest) <= 1 and all(ln.startswith("hint: ") for ln in rest), err
    return errors[0][len("brsm: error: "):]


def operations(home: Path) -> list:
    db = home / "journal.db"
    if not db.exists():
        return []
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT id, kind, params, target FROM operations").fetchall()
    finally:
        con.close()


def written(home: Path) -> bytes:
    return b"".join(p.read_bytes() for p in home.rglob("*") if p.is_file()) if home.exists() else b""


# -- 1. credentials in parameters: refused before anything is journaled, printed redacted ------------------
CRED_FORMS = {
    "userinfo_password": f"s3://KEYID:{CANARY}@bucket/x",
    "userinfo_token": f"https://{CANARY}@bucket/x",
    "query_secret": f"s3://bucket/x?secret={CANARY}",
    "query_access_key_secret": f"oss://bucket/x?access_key_secret={CANARY}",
    "presigned": f"s3://bucket/x?X-Amz-Signature={CANARY}",
    "signature": f"oss://bucket/x?Expires=1&Signature={CANARY}",
    "sas": f"s3://bucket/x?sig={CANARY}",
}
COMMANDS = {  # tag: argv with {uri} where the credential goes, and the flag the error names
    "backup": (["start", "backup", "--config", "{cfg}", "--storage", "{uri}"], "--storage"),
    "restore": (["start", "restore", "--yes", "--config", "{cfg}", "--storage", "{uri}", "--name", "BACKUP_1"], "--storage"),
    "cleanup": (["cleanup", "--yes", "BACKUP_1", "--storage", "{uri}"], "--storage"),
    "gc": (["gc", "--storage", "{uri}"], "--storage"),
    "s3_endpoint": (["start", "backup", "--config", "{cfg}", "--storage", "local:///tmp/x", "--s3-endpoint", "{uri}"],
                    "--s3-endpoint"),
    "oss_endpoint": (["start", "restore", "--yes", "--config", "{cfg}", "--storage", "local:///tmp/x", "--name", "BACKUP_1",
                      "--oss-endpoint", "{uri}"], "--oss-endpoint"),
    "show": (["show", "--storage", "{uri}"], None),  # reads only: no operation, but it must not echo it either
}


@pytest.mark.parametrize("form", list(CRED_FORMS))
@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_credential_in_any_parameter_is_refused_and_never_written_or_printed(home, tmp_path, capsys, form, command):
    cfg = tmp_path / "c.toml"
    cfg.write_text(UNREACHABLE)
    argv, flag = COMMANDS[command]
    argv = [a.format(cfg=cfg, uri=CRED_FORMS[form]) for a in argv]
    code, out, err = run(capsys, *argv)
    msg = one_error(code, out, err, 2)
    if flag:
        assert msg.startswith(f"{flag}: ") and "carries a credential" in msg and "<redacted>" in msg, msg
    code, jout, jerr = run(capsys, *argv, "--json")
    assert code == 2 and json.loads(jout)["exit_code"] == 2
    printed = out + err + jout + jerr
    for cmd in (["ops"], ["ops", "--json"]):
        printed += "".join(run(capsys, *cmd)[1:])
    assert CANARY not in printed
    assert operations(home) == [], "a refused input creates no operation"
    assert CANARY.encode() not in written(home), "nothing under BRSM_HOME (journal, log) holds it"


def test_a_credential_in_the_configs_storage_section_is_a_config_error(home, tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(UNREACHABLE + f'[storage]\ndefault = "s3://KEYID:{CANARY}@b/p"\n'
                   f's3_endpoint = "https://{CANARY}@h"\n')
    code, out, err = run(capsys, "config", "check", str(cfg))
    assert code == 2 and "storage.default: s3://KEYID:<redacted>@b/p carries a credential" in err
    assert "storage.s3_endpoint: https://<redacted>@h carries a credential" in err
    code, out2, err2 = run(capsys, "start", "backup", "--config", str(cfg))
    assert code == 2, err2  # journaled as an attempt that failed before its first step, redacted
    audit = "".join(run(capsys, "audit", "1")[1:]) + "".join(run(capsys, "audit", "1", "--json")[1:])
    assert CANARY not in out + err + out2 + err2 + audit
    assert CANARY.encode() not in written(home)


def test_an_unexpected_error_with_a_secret_in_it_is_scrubbed_in_the_trace_and_the_log(home, capsys, monkeypatch):
    """Exit 1 prints the traceback and logs it: both pass through the same rules."""
    import brsm.cli.journal_commands as journal_commands

    def boom():
        raise RuntimeError(f"SDK said: GET https://h/b?X-Amz-Signature={CANARY} failed for s3://AK:{CANARY}@b")

    monkeypatch.setattr(journal_commands, "open_journal", boom)
    code, out, err = run(capsys, "ops")
    assert code == 1 and "Traceback" in err and "X-Amz-Signature=<redacted>" in err
    assert CANARY not in out + err
    log = (home / "logs" / "brsm.log").read_text()
    assert "RuntimeError" in log and CANARY not in log


# -- 2. BRSM_HOME: created 0700; one that is not a directory is one line, exit 2 -----------------------------
def test_brsm_home_is_created_private(tmp_path, monkeypatch, capsys):
    home = tmp_path / "new" / "brsm-home"
    monkeypatch.setenv("BRSM_HOME", str(home))
    old = os.umask(0o022)
    try:
        assert run(capsys, "ops")[0] == 0
    finally:
        os.umask(old)
    assert home.stat().st_mode & 0o777 == 0o700
    assert (home / "logs").stat().st_mode & 0o777 == 0o700
    assert (home / "journal.db").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("what", ["file", "inside_a_file", "dangling_symlink", "fifo"])
@pytest.mark.parametrize("command", [["ops"], ["start", "backup", "--storage", "local:///tmp/x"], ["resume", "1"]])
def test_brsm_home_that_is_not_a_directory_is_one_line(tmp_path, monkeypatch, capsys, what, command):
    f = tmp_path / "afile"
    f.write_text("x")
    home = {"file": f, "inside_a_file": f / "home"}.get(what)
    if what == "dangling_symlink":
        home = tmp_path / "link"
        home.symlink_to(tmp_path / "nowhere")
    if what == "fifo":
        home = tmp_path / "fifo"
        os.mkfifo(home)
    monkeypatch.setenv("BRSM_HOME", str(home))
    cfg = tmp_path / "c.toml"
    cfg.write_text(UNREACHABLE)
    code, out, err = run(capsys, *command, *(["--config", str(cfg)] if command[0] == "start" else []))
    msg = one_error(code, out, err, 2)
    assert msg.startswith(f"BRSM_HOME {home} ") and str(home) in msg
    assert f.read_text() == "x"


# -- 5. numbers out of range: refused at parse, naming the flag and the range --------------------------------
@pytest.mark.parametrize("argv, says", [
    (["start", "backup", "--concurrency", "0"], "--concurrency must be between 1 and 1024, not 0"),
    (["start", "backup", "--concurrency", "-5"], "--concurrency must be between 1 and 1024, not -5"),
    (["start", "backup", "--concurrency", "100000"], "--concurrency must be between 1 and 1024, not 100000"),
    (["start", "backup", "--per-host", "0"], "--per-host must be between 1 and 256, not 0"),
    (["start", "restore", "--yes", "--name", "BACKUP_1", "--per-host", "-1"], "--per-host must be between 1 and 256, not -1"),
    (["start", "restore", "--yes", "--name", "BACKUP_1", "--concurrency", "0"], "--concurrency must be between 1 and 1024"),
    (["start", "backup", "--rate-limit", "fast"], "--rate-limit: not a size: 'fast'"),
    (["start", "backup", "--rate-limit", "0"], "--rate-limit must be positive"),
    (["verify", "BACKUP_1", "--concurrency", "0"], "--concurrency must be between 1 and 1024, not 0"),
    (["ops", "--limit", "0"], "--limit must be at least 1, not 0"),
])
def test_numbers_out_of_range_are_refused_before_anything(home, tmp_path, capsys, argv, says):
    cfg = tmp_path / "c.toml"
    cfg.write_text(UNREACHABLE)
    extra = ["--config", str(cfg), "--storage", f"local://{tmp_path / 'b'}"] if argv[0] in ("start", "verify") else []
    code, out, err = run(capsys, *argv, *extra)
    assert says in one_error(code, out, err, 2)
    assert operations(home) == [] and not (tmp_path / "b").exists()


# -- 4. backup names: a usage error at parse, no operation -----------------------------------------------------
@pytest.mark.parametrize("name", ["../../etc", "BACKUP_1/../../x", "foo", "", "BACKUP_1/data", ".."])
def test_invalid_backup_names_create_no_operation(home, tmp_path, capsys, name):
    store = tmp_path / "b"
    store.mkdir()
    cfg = tmp_path / "c.toml"
    cfg.write_text(UNREACHABLE)
    for argv in (["cleanup", "--yes", name, "--storage", f"local://{store}"],
                 ["start", "restore", "--yes", "--config", str(cfg), "--storage", f"local://{store}", "--name", name],
                 ["verify", name, "--storage", f"local://{store}"]):
        code, out, err = run(capsys, *argv)
        assert "not a backup name" in one_error(code, out, err, 2), argv
    assert operations(home) == []
    assert list(store.iterdir()) == []


def test_a_cleanup_of_a_missing_backup_is_refused_before_its_step_and_rollback_closes_it(home, tmp_path, capsys):
    """It used to fail inside CLEANED: resume failed again, rollback refused ("finish it with resume")."""
    store = tmp_path / "b"
    store.mkdir()
    name = "BACKUP_2099_01_01_00_00_00"
    code, out, err = run(capsys, "cleanup", "--yes", name, "--storage", f"local://{store}")
    assert f"no backup named {name}" in one_error(code, out, err, 2)
    (op_id, kind, params, target), = operations(home)
    assert kind == "cleanup" and target == f"local://{store}"
    # refused before its step: finished, so resume and rollback have nothing to do (and say so)
    for mode, verb in (("resume", "resume"), ("rollback", "roll back")):
        code, out, err = run(capsys, mode, str(op_id))
        assert code == 0 and f"was refused" in out and f"no backup named {name}" in out, (out, err)
        assert f"nothing to {verb}" in out
    # a refusal before any step holds the name for nothing: the next cleanup is not "in use" by it
    code, out, err = run(capsys, "cleanup", "--yes", name, "--storage", f"local://{store}")
    assert "in use" not in one_error(code, out, err, 2)


# -- 3. the storage is pinned when the operation is created -----------------------------------------------------
def test_storage_from_the_config_is_pinned_and_resume_refuses_another(home, tmp_path, capsys):
    a, b = tmp_path / "A", tmp_path / "B"
    cfg = tmp_path / "c.toml"
    cfg.write_text(UNREACHABLE + f'[storage]\ndefault = "local://{a}"\n')
    code, out, err = run(capsys, "start", "backup", "--config", str(cfg), "--keep-on-failure")
    assert code == 4, err  # metad unreachable: preflight
    (op_id, _, params, target), = operations(home)
    assert target == f"local://{a}" and json.loads(params)["storage"] == f"local://{a}"
    rows = json.loads(run(capsys, "ops", "--json")[1])
    assert rows[0]["target"] == f"local://{a}"  # was "" for a storage taken from the config
    cfg.write_text(UNREACHABLE + f'[storage]\ndefault = "local://{b}"\n')
    for mode in ("resume", "rollback"):
        code, out, err = run(capsys, mode, str(op_id), "--storage", f"local://{b}")
        msg = one_error(code, out, err, 2)
        assert f"refusing to {mode} operation {op_id} on local://{b}: it was started on local://{a}" in msg
    code, out, err = run(capsys, "resume", str(op_id))  # refused at its start: nothing to resume, on A
    assert code == 0 and f"now says storage.default = local://{b}" in out and f"continues on local://{a}" in out
    assert "nothing to resume" in out
    code, out, err = run(capsys, "resume", str(op_id), "--storage", f"local://{a}/")
    assert code == 0, err  # the same storage: allowed
    assert not b.exists()


def test_the_storage_default_note_appears_only_when_the_config_changed(home, tmp_path, capsys):
    """Started with --storage B while the config said A: the config did not change since, so no note."""
    a, b = tmp_path / "A", tmp_path / "B"
    cfg = tmp_path / "c.toml"
    cfg.write_text(UNREACHABLE + f'[storage]\ndefault = "local://{a}"\n')
    run(capsys, "start", "backup", "--config", str(cfg), "--storage", f"local://{b}")
    (op_id, _, params, target), = operations(home)
    assert target == f"local://{b}" and json.loads(params)["storage_default"] == f"local://{a}"
    code, out, err = run(capsys, "resume", str(op_id))
    assert code == 0 and "storage.default" not in out, out
    cfg.write_text(UNREACHABLE + f'[storage]\ndefault = "local://{tmp_path / "C"}"\n')  # now it did change
    code, out, err = run(capsys, "resume", str(op_id))
    assert code == 0 and f"now says storage.default = local://{tmp_path / 'C'}" in out, out


# -- issue 13, class 4: a symlink named like a backup ---------------------------------------------------------
def test_cleanup_of_a_symlink_named_like_a_backup_deletes_nothing_through_it(home, tmp_path, capsys):
    """`cleanup` used to follow ``BACKUP_…`` → a directory outside the storage root and delete its files."""
    store, victim = tmp_path / "b", tmp_path / "victim"
    store.mkdir()
    (victim / "data").mkdir(parents=True)
    name = "BACKUP_2020_01_01_00_00_00"
    for rel in ("brsm-manifest.json", f"{name}.meta", "data/x"):
        (victim / rel).write_bytes(b"precious")
    (store / name).symlink_to(victim, target_is_directory=True)
    code, out, err = run(capsys, "show", "--storage", f"local://{store}", "--json")
    assert code == 0 and name not in out, out  # `show` lists no such backup
    code, out, err = run(capsys, "cleanup", "--yes", name, "--storage", f"local://{store}")
    assert f"no backup named {name}" in one_error(code, out, err, 2)
    assert sorted(p.name for p in victim.rglob("*") if p.is_file()) == [f"{name}.meta", "brsm-manifest.json", "x"]


@pytest.mark.parametrize("flag", ["--s3-endpoint", "--oss-endpoint"])
@pytest.mark.parametrize("url", ["http://127.0.0.1:9000#tok3n", "http://127.0.0.1:9000/?tok3n=1", "http://h\x1b[2J:9000"])
def test_an_endpoint_that_is_not_a_url_is_refused_before_anything(home, tmp_path, capsys, flag, url):
    code, out, err = run(capsys, "start", "backup", "--meta", "127.0.0.1:1", "--storage", f"local://{tmp_path}/s",
                         flag, url)
    msg = one_error(code, out, err, 2)
    assert flag in msg and "tok3n" not in err and "\x1b" not in err
    assert operations(home) == []
