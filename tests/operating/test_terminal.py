"""What reaches a terminal: names from metad and the storage with their control characters shown, never
obeyed; tables that stay whole at 80 columns; --json untouched and parseable.

A space name is whatever `CREATE SPACE` took (metad keeps the bytes; `.meta` carries them): an escape
sequence there recoloured or cleared the operator's terminal and a newline forged a line of `brsm show`."""
import json

from brsm.console.output import visible
from brsm.workflows.layout import meta_file_key

from .conftest import meta_bytes
from .test_cli import backup, on_storage, run, run_json

EVIL = {1: "nba\x1b[2J\x1b]0;pwned\x07", 2: "social\nBACKUP_FAKE  complete  brsm", 3: "[bold]x[/bold]\u202egpj"}


def _evil_backup(uri):
    b = backup(uri, kind="nebula-br", seed=4)
    on_storage(uri, lambda st: st.put_bytes(meta_file_key(b.name), meta_bytes(b.name, create_ms=b.create_ms,
                                                                                 spaces=EVIL)))
    return b


def test_visible_writes_out_every_control_and_invisible_format_character():
    assert visible("a\x1b[31mb\nc\rd\te\x00\x7f\x9b\u202e\u2028") == \
        "a\\x1b[31mb\\nc\\rd\\te\\x00\\x7f\\x9b\\u202e\\u2028"
    assert visible("line1\nline\x1b2", newlines=True) == "line1\nline\\x1b2"
    assert visible("nebula 空间 ok") == "nebula 空间 ok"  # printable text of any script stays as it is


def test_show_renders_hostile_space_names_visibly_and_json_keeps_them(capsys, local_uri, monkeypatch):
    b = _evil_backup(local_uri)
    for columns in ("250", "80"):
        monkeypatch.setenv("COLUMNS", columns)
        code, out, err = run(capsys, "show", "--storage", local_uri)
        assert code == 0, err
        assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
        assert "\\x1b[2J" in out and "\\u202e" in out
        assert not any(line.lstrip().startswith("BACKUP_FAKE") for line in out.splitlines()), out
        assert "[bold]x[/bold]" in out.replace("\n", "").replace(" ", "")  # not eaten as rich markup
    code, doc = run_json(capsys, "show", "--storage", local_uri)
    assert code == 0 and doc["backups"][0]["name"] == b.name
    assert doc["backups"][0]["spaces"] == list(EVIL.values())  # JSON carries the names exactly


def test_show_at_80_columns_keeps_the_spaces_column_and_whole_names(capsys, local_uri, monkeypatch):
    b = backup(local_uri, seed=1)
    monkeypatch.setenv("COLUMNS", "80")
    code, out, _ = run(capsys, "show", "--storage", local_uri)
    assert code == 0
    assert "spaces" in out and "nba" in out and b.name in out
    table = [line for line in out.splitlines() if local_uri not in line]  # the title names the storage whole
    assert max(len(line.rstrip()) for line in table) <= 80, out


def test_config_check_renders_a_hostile_cluster_name_and_keeps_addresses_whole(capsys, tmp_path, monkeypatch):
    long_addr = "storaged-0.storaged-headless.nebula-prod.svc.cluster.local:9779"
    cfg = tmp_path / "c.toml"
    cfg.write_text('[cluster]\nname = "prod\\u001b[2J\\nok: fake"\nmeta = ["127.0.0.1:9559"]\n'
                   f'[[hosts]]\naddress = "{long_addr}"\nssh_host = "10.0.0.7"\nuser = "nebula"\n'
                   'data_paths = ["/data/nebula/storage1", "/data/nebula/storage2"]\n')
    monkeypatch.setenv("COLUMNS", "80")
    code, out, err = run(capsys, "config", "check", str(cfg))
    assert code == 0, err
    assert "\x1b" not in out and "prod\\x1b[2J\\nok: fake" in out
    assert [line for line in out.splitlines() if line.startswith("ok:")] == [f"ok: {cfg}"]
    assert long_addr in out  # whole, on one line
    code, doc = run_json(capsys, "config", "check", str(cfg))
    assert code == 0 and doc["name"] == "prod\x1b[2J\nok: fake" and doc["hosts"][0]["address"] == long_addr


def test_prune_at_80_columns_does_not_wrap_why_one_word_per_line(capsys, local_uri, monkeypatch):
    for i, age in enumerate((40, 35, 2)):
        backup(local_uri, age_days=age, seed=i, files_per_space=1)
    monkeypatch.setenv("COLUMNS", "80")
    code, out, _ = run(capsys, "prune", "--storage", local_uri, "--keep-last", "1")
    assert code == 0
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert not [ln for ln in lines if len(ln.split()) == 1], out  # a line of one word is a squeezed column
    assert sum("would delete" in ln for ln in lines) == 2, out


def test_ops_at_80_columns_shows_whole_times_and_the_backup_name(capsys, local_uri, monkeypatch):
    b = backup(local_uri, seed=1)
    run(capsys, "cleanup", "--yes", b.name, "--storage", local_uri)
    monkeypatch.setenv("COLUMNS", "80")
    code, out, _ = run(capsys, "ops")
    assert code == 0 and b.name in out, out
    import re

    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", out), out
    assert max(len(line.rstrip()) for line in out.splitlines()) <= 80, out
    code, doc = run_json(capsys, "ops")
    assert code == 0 and doc[0]["name"] == b.name and doc[0]["started"].endswith("Z")
    assert json.dumps(doc)


def test_an_error_keeps_brsms_own_lines_and_its_hint_stays_one_line(capsys):
    from brsm.console.output import Output

    Output(as_json=False).error("2 problem(s) in the config:\n  a\x1b[2J\n  b", "fix space 'x\nhint: fake'", 2)
    err = capsys.readouterr().err.splitlines()
    assert err == ["brsm: error: 2 problem(s) in the config:", "  a\\x1b[2J", "  b", "hint: fix space 'x\\nhint: fake'"]
