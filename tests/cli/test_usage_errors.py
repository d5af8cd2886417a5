"""A wrong command line is a usage error (exit 2, one line and a hint), never a traceback: typer
parses with its own copy of click, whose exceptions brsm must recognise too."""
from __future__ import annotations

import json

import pytest

from brsm.cli.app import main


@pytest.mark.parametrize("argv, says", [
    (["show", "NAME", "--storage", "local:///nowhere"], "unexpected extra argument"),
    (["--no-such-option"], "No such option"),
    (["ops", "--limit", "many"], "--limit"),
])
def test_bad_command_lines_are_usage_errors(argv, says, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BRSM_HOME", str(tmp_path))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("brsm: error: ") and says in err and "hint:" in err
    assert "Traceback" not in err


def test_with_json_the_usage_error_is_one_json_object(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BRSM_HOME", str(tmp_path))
    assert main(["show", "a", "b", "--json"]) == 2
    out = json.loads(capsys.readouterr().out)
    assert out["exit_code"] == 2 and "unexpected extra argument" in out["error"]


def test_the_hint_names_the_subcommands_own_help(tmp_path, monkeypatch, capsys):
    """Issue 17: a flag brsm lacks (nebula-br's `--log`) on `start backup` is refused with a pointer to
    that subcommand's help, not the top-level one."""
    monkeypatch.setenv("BRSM_HOME", str(tmp_path))
    assert main(["start", "backup", "--log", "/tmp/br.log"]) == 2
    err = capsys.readouterr().err
    assert "No such option: --log" in err and "hint: see `brsm start backup --help`" in err, err


def test_every_flag_has_help():
    """Issue 17: no flag without help text (the CLI reference is generated from it)."""
    import typer.main

    from brsm.cli.app import app

    missing = []

    def walk(cmd, path):
        for p in getattr(cmd, "params", []):
            if p.param_type_name == "option" and not (p.help or "").strip():
                missing.append(f"{path} {p.opts[0]}")
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, f"{path} {name}")

    walk(typer.main.get_command(app), "brsm")
    assert missing == []
