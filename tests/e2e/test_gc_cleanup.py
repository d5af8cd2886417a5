"""`brsm gc` finds every kind of orphan planted here and removes them only with --confirm;
`brsm cleanup` deletes one backup and refuses one that an unfinished operation uses."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from nebula3.meta import ttypes as mt

from brsm.sandbox.control import MetaClient
from tests.e2e.test_backup_restore import snapshots

pytestmark = pytest.mark.sandbox


def plant(env, tmp_path):
    # 1. a snapshot nobody owns
    with MetaClient(env.meta) as c:
        c.createBackup(mt.CreateBackupReq())
    # 2. an incomplete backup in storage, old enough to be past the grace period
    store = tmp_path / "store"
    (store / "BACKUP_2020_01_01_00_00_00" / "data").mkdir(parents=True)
    (store / "BACKUP_2020_01_01_00_00_00" / "data" / "x.sst").write_bytes(b"x" * 100)
    # 3. a set-aside dir of a restore that finished (op 1 in this journal is a finished backup)
    env.ok("start", "backup", "--config", env.config, "--storage", f"local://{store}")
    finished = env.ok("ops")[0]["id"]
    storage_host = next(h for h in env.info["hosts"] if "storage" in h["roles"])
    import sqlite3
    con = sqlite3.connect(Path(env.env["BRSM_HOME"]) / "journal.db")
    jid = con.execute("SELECT value FROM journal_info WHERE key = 'journal_id'").fetchone()[0]
    con.close()
    aside = Path(storage_host["data_paths"][0]) / f"nebula_brsm_old_{jid}-{finished}"  # <journal id>-<op>
    aside.mkdir()
    (aside / "keep").write_text("old")
    # 3b. the staging dir (issue 15) of that finished operation, and one of an operation of another journal
    staging = Path(storage_host["data_paths"][0]) / f"nebula_brsm_new_{jid}-{finished}"
    (staging / "nebula" / "1").mkdir(parents=True)
    foreign = Path(storage_host["data_paths"][0]) / "nebula_brsm_new_0123456789ab-7"
    foreign.mkdir()
    # 4. a stale lease: expired, its process gone
    meta_host = next(h for h in env.info["hosts"] if "meta" in h["roles"])
    lease = Path(meta_host["install_dir"]) / "brsm.lease"
    lease.mkdir()
    (lease / "holder.json").write_text(json.dumps({"op_id": 999, "kind": "backup", "who": "x@y", "machine": os.uname().nodename,
                                                   "pid": 2**22 - 7, "expires": time.time() - 60}))
    return store, aside, lease, staging, foreign


def test_gc_dry_run_then_confirm(sandbox, tmp_path):
    env = sandbox
    store, aside, lease, staging, foreign = plant(env, tmp_path)
    args = ["gc", "--config", env.config, "--storage", f"local://{store}"]
    dry = env.ok(*args)
    kinds = sorted(o["kind"] for o in dry["orphans"])
    assert kinds == ["incomplete_backup", "set_aside", "snapshot", "staging", "staging_unknown", "stale_lease"], dry
    assert dry["dry_run"] and dry["removed"] == 0
    assert snapshots(env) and aside.exists() and lease.exists() and (store / "BACKUP_2020_01_01_00_00_00").exists()
    done = env.ok(*args, "--confirm")
    assert done["removed"] == 5
    assert snapshots(env) == [] and not aside.exists() and not lease.exists() and not staging.exists()
    assert foreign.exists(), "another journal's staging dir is never removed"
    foreign.rmdir()
    assert not (store / "BACKUP_2020_01_01_00_00_00").exists()
    assert env.ok(*args)["orphans"] == []
    ops = env.ok("ops", "--kind", "gc")
    assert len(ops) >= 3 and ops[0]["state"] == "CLEANED"  # gc runs are journaled operations


def test_cleanup_deletes_one_backup_and_refuses_one_in_use(sandbox, tmp_path):
    env = sandbox
    store = tmp_path / "store"
    name = env.ok("start", "backup", "--config", env.config, "--storage", f"local://{store}")["facts"]["backup_name"]
    res = env.ok("cleanup", "--yes", name, "--storage", f"local://{store}", "--config", env.config)
    assert res["objects_deleted"] > 0 and not (store / name).exists()
    # an unfinished backup (crashed after COPIED) is in use: cleanup refuses, nothing is deleted
    p = env.brsm("start", "backup", "--config", env.config, "--storage", f"local://{store}",
                 failpoints="after:COPIED=crash")
    assert p.returncode == 86
    op = env.ok("ops", "--kind", "backup")[0]
    live = env.ok("audit", str(op["id"]))
    name2 = next(e["data"]["facts"]["backup_name"] for e in live["events"]
                 if e["type"] == "StepCompleted" and e["data"]["step"] == "SNAPSHOTTED")
    p = env.brsm("cleanup", "--yes", name2, "--storage", f"local://{store}", "--config", env.config)
    assert p.returncode == 2 and f"operation {op['id']}" in p.stderr, p.stderr[-600:]
    assert (store / name2).exists()
    assert env.ok("rollback", str(op["id"]))["state"] == "ROLLED_BACK"
