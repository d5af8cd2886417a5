"""docs/cli-reference.md is generated from the typer app and must never go stale."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

# The reference documents `brsm sandbox` too, which exists only with the [sandbox] extra.
pytest.importorskip("brsm.sandbox.cli", reason="the [sandbox] extra is not installed")

ROOT = Path(__file__).resolve().parents[2]
GEN = ROOT / "scripts" / "gen_cli_reference.py"
REF = ROOT / "docs" / "cli-reference.md"


def _gen():
    spec = importlib.util.spec_from_file_location("gen_cli_reference", GEN)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_committed_reference_equals_generator_output():
    assert REF.read_text() == _gen().render(), "docs/cli-reference.md is stale: run scripts/gen-cli-reference"


def test_every_command_of_the_app_is_documented():
    gen = _gen()
    text = REF.read_text()
    paths = gen.command_paths()
    # the tree the generator walks is the app's: spot-check commands every operator needs
    for must in ("brsm start backup", "brsm start restore", "brsm resume", "brsm rollback", "brsm show",
                 "brsm verify", "brsm prune", "brsm cleanup", "brsm gc", "brsm ops", "brsm audit",
                 "brsm journal verify", "brsm config check"):
        assert must in paths
    for path in paths:
        assert f"`{path}`" in text, f"{path} is missing from docs/cli-reference.md"


def test_every_option_is_documented():
    gen = _gen()
    text = REF.read_text()
    for path, cmd, ctx in gen.walk():
        for p in cmd.get_params(ctx):
            if p.param_type_name == "option" and not getattr(p, "hidden", False) and p.name != "help":
                assert f"`{p.opts[0]}`" in text, f"{path}: {p.opts[0]} missing"


def test_check_mode_passes_on_the_committed_file():
    r = subprocess.run([sys.executable, str(GEN), "--check"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_each_usage_line_is_the_one_help_prints():
    """The reference's usage lines and `brsm … --help`'s name the arguments alike (it once read `OP_ID`
    where help said `{op_id}`)."""
    from typer.testing import CliRunner

    from brsm.cli.app import app

    text = REF.read_text()
    runner = CliRunner()
    for path in ("brsm resume", "brsm rollback", "brsm audit", "brsm cleanup", "brsm verify",
                 "brsm journal verify", "brsm config check"):
        r = runner.invoke(app, [*path.split()[1:], "--help"], prog_name="brsm", env={"COLUMNS": "200"})
        assert r.exit_code == 0, r.output
        usage = next(ln for ln in r.output.splitlines() if ln.startswith("Usage: ")).removeprefix("Usage: ")
        assert f"```\n{usage.strip()}\n```" in text, (path, usage)
        assert usage.split()[-1].strip("{}[]").isupper(), usage
