"""`brsm journal verify --against STORAGE`: a forger who rewrites journal.db with the chain recomputed
passes the plain `journal verify`, and is caught by the anchors the backup's manifest and the
restore's record keep in the storage. Listing, gc and prune never take the anchor records for a backup."""
from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from journal.chain import canonical_json
from tests.journal.forge import delete_last_operation, edit_event_and_rechain

pytestmark = pytest.mark.sandbox


@pytest.fixture(scope="module")
def anchored(sandbox, tmp_path_factory):
    """A backup, then a restore of it, both to one local storage: two anchors of one journal there."""
    env = sandbox
    store = tmp_path_factory.mktemp("anchored") / "store"
    name = env.ok("start", "backup", "--config", env.config, "--storage", f"local://{store}")["facts"]["backup_name"]
    env.ok("start", "restore", "--yes", "--config", env.config, "--storage", f"local://{store}", "--name", name)
    return env, store, name


def copy_home(env, tmp_path: Path) -> tuple[dict, Path]:
    """The sandbox's journal copied (consistently, with its WAL) into a home of its own, to tamper with."""
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    src = sqlite3.connect(Path(env.env["BRSM_HOME"]) / "journal.db")
    dst = sqlite3.connect(home / "journal.db")
    src.backup(dst)
    src.close()
    dst.close()
    return dict(env.env, BRSM_HOME=str(home)), home / "journal.db"


def verify(env, e: dict, *args: str):
    import subprocess

    from tests.e2e.conftest import BRSM
    return subprocess.run([*BRSM, "journal", "verify", *args], env=e, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)


def test_an_intact_journal_matches_every_anchor(anchored, tmp_path):
    env, store, name = anchored
    e, _ = copy_home(env, tmp_path)
    p = verify(env, e, "--against", f"local://{store}", "--json")
    assert p.returncode == 0, p.stdout + p.stderr
    doc = json.loads(p.stdout)
    assert doc["ok"] and doc["against"]["other_journals"] == []
    sources = sorted(a["source"] for a in doc["against"]["anchors"])
    assert len(sources) == 2 and sources[0] == f"{name}/brsm-manifest.json"
    assert sources[1].startswith("brsm-journal-anchors/") and sources[1].endswith("/restore-2.json")
    assert all(a["ok"] and a["problems"] == [] for a in doc["against"]["anchors"])
    text = verify(env, e, "--against", f"local://{store}")
    assert text.returncode == 0 and text.stdout.count(": matches") == 2, text.stdout


def test_an_edit_with_the_chain_recomputed_is_caught_by_the_anchors(anchored, tmp_path):
    env, store, name = anchored
    e, db = copy_home(env, tmp_path)
    raw = sqlite3.connect(db, isolation_level=None)
    seq, data = raw.execute("SELECT seq, data FROM events WHERE op_id = 1 AND type = 'StepCompleted' "
                            "ORDER BY seq LIMIT 1").fetchone()
    edited = json.loads(data)
    edited["facts"]["forged"] = True
    edit_event_and_rechain(raw, 1, seq, canonical_json(edited))
    raw.close()
    plain = verify(env, e)
    assert plain.returncode == 0 and "hash chain intact" in plain.stdout  # the unkeyed chain cannot tell
    assert "--against STORAGE" in plain.stdout  # and says so
    p = verify(env, e, "--against", f"local://{store}")
    assert p.returncode == 6, p.stdout + p.stderr
    assert "does not match 2 of 2 anchors" in p.stderr
    assert "operation 1 event" in p.stderr and "changed since the anchor was taken" in p.stderr
    assert f"{name}/brsm-manifest.json" in p.stdout and "operation 1 event" in p.stdout


def test_the_whole_last_operation_deleted_is_caught_by_the_restores_anchor(anchored, tmp_path):
    env, store, _ = anchored
    e, db = copy_home(env, tmp_path)
    raw = sqlite3.connect(db, isolation_level=None)
    assert delete_last_operation(raw) == 2  # the restore, with sqlite_sequence lowered to hide it
    raw.close()
    assert verify(env, e).returncode == 0
    p = verify(env, e, "--against", f"local://{store}", "--json")
    assert p.returncode == 6
    doc = json.loads(p.stdout)
    by_source = {a["source"].rsplit("/", 1)[-1]: a for a in doc["against"]["anchors"]}
    assert by_source["brsm-manifest.json"]["ok"]  # the backup's anchor never covered the restore
    (problem,) = by_source["restore-2.json"]["problems"]
    assert problem["op_id"] == 2 and "operation row missing: deleted" in problem["reason"]
    assert doc["exit_code"] == 6 and "restore-2.json" in doc["error"]


def test_a_journal_replaced_by_a_new_one_is_told_by_the_storage(anchored, tmp_path):
    env, store, _ = anchored
    e, db = copy_home(env, tmp_path)
    for f in db.parent.iterdir():
        f.unlink() if f.is_file() else shutil.rmtree(f)
    p = verify(env, e, "--against", f"local://{store}")
    assert p.returncode == 6
    assert "no anchor of journal" in p.stderr and "holds anchors of other journals" in p.stderr


def test_the_anchor_records_are_never_taken_for_a_backup(anchored):
    env, store, name = anchored
    assert [b["name"] for b in env.ok("show", "--storage", f"local://{store}")["backups"]] == [name]
    gc = env.ok("gc", "--config", env.config, "--storage", f"local://{store}")
    assert not any("anchor" in json.dumps(o) for o in gc["orphans"]), gc
    plan = env.ok("prune", "--storage", f"local://{store}", "--keep-last", "1")
    assert "brsm-journal-anchors" not in json.dumps(plan)
    assert any((store / "brsm-journal-anchors").rglob("restore-2.json"))


def test_a_zero_byte_journal_is_refused_not_replaced(anchored, tmp_path):
    env, _, _ = anchored
    e, db = copy_home(env, tmp_path)
    db.write_bytes(b"")
    p = verify(env, e)
    assert p.returncode == 6
    assert "is empty (0 bytes)" in p.stderr and "will not start a new journal" in p.stderr
    assert db.stat().st_size == 0
