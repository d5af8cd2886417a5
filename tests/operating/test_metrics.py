"""Issue 17: Prometheus textfile metrics after every operation, from the journal, parsed by
prometheus_client's own text-format parser."""
from __future__ import annotations

import json
import os
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from brsm.cli import app as app_mod
from brsm.console.metrics import OpFigures, render

from .test_cli import backup


def parse(text: str) -> dict[str, list]:
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def value(fams, name, **labels):
    hits = [s.value for s in fams[name] if all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(hits) == 1, (name, labels, fams.get(name))
    return hits[0]


def test_render_is_valid_text_format_with_the_newest_success_and_failure():
    t = 1_767_000_000.0
    figs = [
        OpFigures(1, "backup", "prod", "CLEANED", "success", t, t + 60, bytes=1000, files=10),
        OpFigures(2, "backup", "prod", "ROLLED_BACK", "failure", t + 100, t + 130),
        OpFigures(3, "backup", "prod", "CLEANED", "success", t + 200, t + 290, bytes=2000, files=20),
        OpFigures(4, "restore", "prod", "CLEANED", "success", t + 300, t + 400, bytes=2000, files=20, downtime=7.5),
        OpFigures(5, "restore", 'we"ird\\name', "FAILED", "failure", t + 500, t + 510),
    ]
    fams = parse(render(figs, now=t + 1000))
    assert value(fams, "brsm_last_success_timestamp_seconds", kind="backup", cluster="prod") == t + 290
    assert value(fams, "brsm_last_failure_timestamp_seconds", kind="backup", cluster="prod") == t + 130
    assert value(fams, "brsm_last_bytes", kind="backup", cluster="prod") == 2000  # of the newest success
    assert value(fams, "brsm_last_duration_seconds", kind="backup", cluster="prod") == 90
    assert value(fams, "brsm_last_restore_downtime_seconds", cluster="prod") == 7.5
    assert value(fams, "brsm_last_state", kind="restore", cluster='we"ird\\name', state="FAILED") == 1
    assert value(fams, "brsm_operations", kind="backup", cluster="prod", outcome="failure") == 1
    assert value(fams, "brsm_last_operation_id", kind="backup", cluster="prod") == 3


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("BRSM_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("BRSM_METRICS_FILE", raising=False)
    return tmp_path


def test_a_confirmed_prune_writes_the_metrics_file_with_its_figures(home, capsys, local_uri):
    """Through the CLI, as cron would run it: --metrics-file before the command."""
    for i, age in enumerate((9, 8, 1)):
        backup(local_uri, age_days=age, seed=i, files_per_space=1)
    prom = home / "textfile" / "brsm.prom"
    prom.parent.mkdir()
    before = time.time()
    assert app_mod.main(["--metrics-file", str(prom), "prune", "--storage", local_uri, "--keep-last", "1",
                         "--confirm", "--json"]) == 0
    op = json.loads(capsys.readouterr().out)["op_id"]
    fams = parse(prom.read_text())
    assert value(fams, "brsm_last_operation_id", kind="prune", cluster="-") == op
    assert value(fams, "brsm_last_success_timestamp_seconds", kind="prune", cluster="-") >= before - 1
    assert value(fams, "brsm_last_state", kind="prune", cluster="-", state="CLEANED") == 1
    assert not [p for p in os.listdir(prom.parent) if p != "brsm.prom"]  # no temp file left
    # a failed one: the failure time appears, the success stays
    os.environ["BRSM_FAILPOINTS"] = "after:SCANNED=raise"
    try:
        assert app_mod.main(["--metrics-file", str(prom), "prune", "--storage", local_uri, "--keep-last", "1",
                             "--confirm"]) == 5
    finally:
        del os.environ["BRSM_FAILPOINTS"]
    fams = parse(prom.read_text())
    assert value(fams, "brsm_operations", kind="prune", cluster="-", outcome="failure") == 1
    assert value(fams, "brsm_last_failure_timestamp_seconds", kind="prune", cluster="-") >= before - 1
    assert value(fams, "brsm_operations", kind="prune", cluster="-", outcome="success") == 1


def test_an_unwritable_metrics_file_is_a_warning_not_a_failure(home, capsys, local_uri):
    backup(local_uri, age_days=2, seed=1, files_per_space=1)
    code = app_mod.main(["--metrics-file", str(home / "no" / "such" / "dir" / "m.prom"), "prune", "--storage",
                         local_uri, "--keep-last", "1", "--confirm"])
    err = capsys.readouterr().err
    assert code == 0 and "could not write the metrics file" in err


def test_the_metrics_temp_file_is_never_written_through_a_planted_link(tmp_path):
    """The temp name was once predictable (``.<name>.<pid>.tmp``): a symlink planted there made brsm
    write the metrics into its target and chmod it 0644. It is created exclusively now (mkstemp)."""
    from brsm.console.metrics import write_atomic

    victim = tmp_path / "victim"
    victim.write_text("precious")
    victim.chmod(0o600)
    path = tmp_path / "brsm.prom"
    (tmp_path / f".brsm.prom.{os.getpid()}.tmp").symlink_to(victim)
    write_atomic(str(path), "brsm_up 1\n")
    assert path.read_text() == "brsm_up 1\n" and not path.is_symlink()
    assert victim.read_text() == "precious" and victim.stat().st_mode & 0o777 == 0o600
    assert path.stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["victim", "brsm.prom", f".brsm.prom.{os.getpid()}.tmp"])
