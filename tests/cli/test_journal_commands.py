"""`brsm ops`, `brsm audit`, `brsm journal verify` on a real journal, through the CLI entry point."""
import asyncio
import json
import sqlite3

import pytest
from journal import Journal

from brsm.cli.app import main
from brsm.engine.runner import Runner
from tests.engine.toy import World, make_workflow


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("BRSM_HOME", str(tmp_path))
    j = Journal.open(tmp_path / "journal.db")
    world = World(fail_once={"COPIED"})
    r = Runner(j, make_workflow(world))
    failed = r.create({"storage": "s3://b/p", "secret_access_key": "hunter2"}, target="s3://b/p")
    with pytest.raises(Exception, match="on purpose"):
        asyncio.run(r.run(failed))
    done = r.create({"storage": "local:///x"}, target="local:///x")
    asyncio.run(r.run(done))
    j.close()
    return tmp_path, failed, done


def test_ops_lists_state_and_target(home, capsys):
    _, failed, done = home
    assert main(["ops", "--json"]) == 0
    rows = {r["id"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows[failed]["state"] == "FAILED" and rows[done]["state"] == "CLEANED"
    assert rows[done]["finished"] and not rows[failed]["finished"]
    assert "@" in rows[done]["who"]


def test_audit_shows_every_event_and_no_secret(home, capsys):
    _, failed, _ = home
    assert main(["audit", str(failed)]) == 0
    text = capsys.readouterr().out
    assert "journal: verified" in text and "OperationFailed" in text and "COPIED failed on purpose" in text
    assert "hunter2" not in text
    assert main(["audit", str(failed), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["chain"] == "verified" and [e["seq"] for e in doc["events"]] == list(range(1, len(doc["events"]) + 1))


def test_unknown_operation_is_a_usage_error(home, capsys):
    assert main(["audit", "999"]) == 2
    assert "999" in capsys.readouterr().err


def test_tampering_is_detected_and_named(home, capsys):
    root, failed, done = home
    assert main(["journal", "verify"]) == 0
    capsys.readouterr()
    con = sqlite3.connect(root / "journal.db")
    row = con.execute("SELECT seq, data FROM events WHERE op_id=? ORDER BY seq LIMIT 1 OFFSET 3", (done,)).fetchone()
    con.execute("UPDATE events SET data=? WHERE op_id=? AND seq=?", (row[1].replace("}", ',"x":1}', 1), done, row[0]))
    con.commit()
    con.close()
    assert main(["journal", "verify"]) == 6
    err = capsys.readouterr().err
    assert f"operation {done} event {row[0]}" in err
    assert main(["journal", "verify", "--json"]) == 6
    doc = json.loads(capsys.readouterr().out)  # exactly one document
    assert doc["ok"] is False and doc["problems"][0]["seq"] == row[0]


def test_audit_summary_and_log_file(home, capsys):
    root, failed, done = home
    assert main(["audit", str(done), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc["summary"]["steps"]) == {"LOCKED", "SNAPSHOTTED", "COPIED", "UPLOADED", "CLEANED"}
    assert all(s["seconds"] >= 0 for s in doc["summary"]["steps"].values())
    assert main(["audit", str(failed)]) == 0
    assert "failed at event" in capsys.readouterr().out
    log = root / "logs" / "brsm.log"
    assert oct(log.stat().st_mode & 0o777) == "0o600"
    assert "exit 0" in log.read_text() and "hunter2" not in log.read_text()


def test_an_operation_that_never_started_can_be_closed_without_its_config(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BRSM_HOME", str(tmp_path))
    missing = tmp_path / "gone.toml"
    code = main(["start", "backup", "--config", str(missing), "--storage", f"local://{tmp_path}/b", "--json"])
    assert code == 2
    capsys.readouterr()
    assert main(["ops", "--json"]) == 0
    op = json.loads(capsys.readouterr().out)[0]
    assert op["state"] == "REFUSED" and op["finished"]  # refused before anything: finished, no action needed
    assert main(["rollback", str(op["id"]), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["state"] == "REFUSED" and res["nothing_to_do"] is True


def test_the_log_file_is_never_opened_through_a_planted_link(tmp_path, monkeypatch, capsys):
    """A symlink at logs/brsm.log made brsm chmod its target 0600 and append its log there."""
    monkeypatch.setenv("BRSM_HOME", str(tmp_path / "home"))
    (tmp_path / "home" / "logs").mkdir(parents=True)
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    victim.chmod(0o644)
    (tmp_path / "home" / "logs" / "brsm.log").symlink_to(victim)
    assert main(["ops", "--json"]) == 0
    capsys.readouterr()
    assert victim.read_text() == "precious\n" and victim.stat().st_mode & 0o777 == 0o644
