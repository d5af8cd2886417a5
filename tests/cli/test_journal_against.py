"""`brsm journal verify --against` through the CLI entry point, on a real journal and a local storage:
what each anchor says, and the exit codes (0 all match, 6 otherwise), without a sandbox."""
import json
import sqlite3

import pytest
from journal import Journal
from journal.chain import canonical_json

from brsm.cli.app import main
from tests.journal.forge import edit_event_and_rechain


@pytest.fixture
def setup(tmp_path, monkeypatch):
    """Two operations; an anchor in a backup's manifest taken after the first, a restore record after both."""
    monkeypatch.setenv("BRSM_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("BRSM_CONFIG", raising=False)
    store = tmp_path / "store"
    j = Journal.open(tmp_path / "home" / "journal.db")
    ops = []
    for kind in ("backup", "restore"):
        op = j.create_operation(kind=kind, params={}, who="w", version="v")
        with j.driver(op.id) as w:
            w.append_batch([("T", {"n": n}) for n in range(3)])
        ops.append(op.id)
        a = j.anchor().to_dict()
        if kind == "backup":
            (store / "BACKUP_1").mkdir(parents=True)
            (store / "BACKUP_1" / "brsm-manifest.json").write_text(json.dumps({"format": 1, "journal_anchor": a}))
        else:
            d = store / "brsm-journal-anchors" / j.journal_id
            d.mkdir(parents=True)
            (d / f"restore-{op.id}.json").write_text(json.dumps({"journal_anchor": a}))
    jid = j.journal_id
    j.close()
    return tmp_path, f"local://{store}", store, jid


def test_every_anchor_matches_an_intact_journal(setup, capsys):
    _, uri, _, jid = setup
    assert main(["journal", "verify", "--against", uri]) == 0
    out = capsys.readouterr().out
    assert "hash chain intact" in out and f"2 anchor(s) of journal {jid}" in out and out.count(": matches") == 2
    assert "came after the newest anchor" not in out
    assert main(["journal", "verify", "--against", uri, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] and [a["operations"] for a in doc["against"]["anchors"]] == [1, 2]
    assert doc["against"]["not_covered"] is None


def test_operations_after_the_newest_anchor_are_said_to_be_unvouched(setup, capsys):
    root, uri, _, _ = setup
    j = Journal.open(root / "home" / "journal.db")
    for _ in range(2):
        j.create_operation(kind="gc", params={}, who="w", version="v")
    j.close()
    assert main(["journal", "verify", "--against", uri]) == 0
    assert "note: operations 3..4 came after the newest anchor here" in capsys.readouterr().out


def test_a_recomputed_edit_fails_only_the_anchors_that_covered_it(setup, capsys):
    root, uri, _, _ = setup
    raw = sqlite3.connect(root / "home" / "journal.db", isolation_level=None)
    edit_event_and_rechain(raw, 2, 2, canonical_json({"n": 99}))
    raw.close()
    assert main(["journal", "verify"]) == 0
    capsys.readouterr()
    assert main(["journal", "verify", "--against", uri, "--json"]) == 6
    doc = json.loads(capsys.readouterr().out)
    ok = {a["source"]: a["ok"] for a in doc["against"]["anchors"]}
    assert ok == {"BACKUP_1/brsm-manifest.json": True, f"brsm-journal-anchors/{doc['against']['journal_id']}/restore-2.json": False}
    assert not doc["ok"] and doc["exit_code"] == 6 and "does not match 1 of 2 anchors" in doc["error"]
    assert main(["journal", "verify", "1", "--against", uri]) == 0  # only operation 1's history: intact
    capsys.readouterr()


def test_an_unreadable_anchor_of_this_journal_fails_and_anothers_is_only_noted(setup, capsys):
    _, uri, store, jid = setup
    (store / "brsm-journal-anchors" / jid / "restore-2.json").write_text("{cut")
    (store / "BACKUP_2").mkdir()
    (store / "BACKUP_2" / "brsm-manifest.json").write_text("{cut")  # whose? cannot tell
    assert main(["journal", "verify", "--against", uri]) == 6
    cap = capsys.readouterr()
    assert "restore-2.json (unreadable): the anchor cannot be read" in cap.out
    assert "note: BACKUP_2/brsm-manifest.json" in cap.out
    assert "does not match 1 of 2 anchors" in cap.err


def test_a_storage_without_anchors_of_this_journal_is_a_failure(setup, tmp_path, capsys):
    assert main(["journal", "verify", "--against", f"local://{tmp_path / 'empty'}"]) == 6
    err = capsys.readouterr().err
    assert "no anchor of journal" in err and "nothing to check" in err and "other journals" not in err
    assert not (tmp_path / "empty").exists()  # only read: nothing created in the storage
