"""An operator's first day and a 3 a.m. night, run through the CLI against the sandbox.

- A restore killed (SIGKILL: a crash failpoint) in SET_ASIDE leaves the cluster down: `brsm check` and
  `brsm start backup` name the unfinished operation and the command that brings the cluster back
  before anything else, and `brsm rollback N` does bring it back.
- A second journal (another BRSM_HOME) locked out by the first's run is told where that run's journal
  is (user@host:BRSM_HOME); the run is REFUSED (finished, nothing to do), not ROLLED_BACK; its own
  `resume 1` says "nothing to do" and touches nothing; JSON errors carry op_id and state.
- A FIFO at the lease's holder.json never hangs brsm: an invalid lease, exit 3, with how to clear it.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from brsm.failpoints import CRASH_EXIT
from tests.e2e.test_backup_restore import leases
from tests.e2e.test_bad_input import run

pytestmark = pytest.mark.sandbox


def _first_line(p) -> str:
    return next(ln for ln in p.stderr.splitlines() if ln.strip())


def _meta_lease_dir(env) -> Path:
    meta_host = env.meta.rsplit(":", 1)[0]
    root = next(Path(h["install_dir"]) for h in env.info["hosts"] if h["address"] == meta_host)
    return root / "brsm.lease"


def test_a_restore_killed_in_set_aside_is_named_first_and_rollback_brings_the_cluster_back(sandbox, tmp_path):
    env = sandbox
    before = env.checksum()
    store = f"local://{tmp_path / 'b'}"
    name = env.ok("start", "backup", "--config", env.config, "--storage", store)["facts"]["backup_name"]
    typo = name[:-1] + ("0" if name[-1] != "0" else "1")
    p = run(env, "start", "restore", "--yes", "--config", env.config, "--storage", store, "--name", typo, "--json")
    assert p.returncode == 4, p.stdout + p.stderr[-2000:]
    doc = json.loads(p.stdout)
    assert doc["error"] == f"no backup named {typo} in {store} (closest: {name})", doc
    assert doc["hint"] == f"see `brsm show --storage {store}` for the backups there" and doc["state"] == "REFUSED"
    p = env.brsm("start", "restore", "--yes", "--config", env.config, "--storage", store, "--name", name,
                 failpoints="before:SET_ASIDE=crash")
    assert p.returncode == CRASH_EXIT, p.stderr[-2000:]
    op = env.ok("ops", "--limit", "1")[0]
    assert op["kind"] == "restore" and op["name"] == name
    want = f"operation {op['id']} (restore) unfinished at SET_ASIDE since "
    fix = f"the cluster is down; `brsm rollback {op['id']}` brings it back"

    c = run(env, "check", "--config", env.config)
    assert c.returncode != 0
    assert _first_line(c).startswith(f"brsm: {want}") and _first_line(c).endswith(fix), c.stderr[-2000:]
    # metad is down, and the lease (whichever journal holds it) still names the restore and its journal
    lease_line = next(ln for ln in c.stdout.splitlines() if " lease on " in ln)
    assert f"operation {op['id']} of journal " in lease_line and "(restore)" in lease_line, c.stdout
    assert f":{env.env['BRSM_HOME']}" in lease_line, lease_line

    b = run(env, "start", "backup", "--config", env.config, "--storage", store, "--json")
    assert b.returncode != 0
    assert _first_line(b).startswith(f"brsm: {want}") and fix in _first_line(b), b.stderr[-2000:]
    doc = json.loads(b.stdout)  # still one JSON document on stdout, naming the refused operation
    assert doc["op_id"] == op["id"] + 1 and doc["state"] in ("REFUSED", "FAILED", "ROLLED_BACK"), doc

    # another operator's journal knows nothing of it: the cluster lease still names it, and its journal
    other = run(env, "start", "backup", "--config", env.config, "--storage", store, home=tmp_path / "other")
    assert other.returncode == 4, other.stderr[-2000:]
    lease_said = next(ln for ln in other.stderr.splitlines() if ln.startswith("brsm: lease on "))
    assert f"operation {op['id']} of journal " in lease_said and "(restore)" in lease_said, other.stderr
    assert f":{env.env['BRSM_HOME']}" in lease_said and f"brsm rollback {op['id']}" in lease_said, lease_said
    assert "unfinished" not in other.stderr  # nothing unfinished in that journal

    assert env.ok("rollback", str(op["id"]))["state"] == "ROLLED_BACK"
    assert env.checksum() == before
    again = run(env, "check", "--config", env.config)
    assert again.returncode == 0 and "unfinished" not in again.stderr, again.stdout + again.stderr
    assert leases(env) == []


def test_a_second_journal_is_told_where_the_lease_holder_is_and_its_own_resume_is_refused(sandbox, tmp_path):
    env = sandbox
    first_home, second_home = tmp_path / "alice", tmp_path / "bob"
    store = f"local://{tmp_path / 'b'}"
    # bob's own operation 1: a finished backup
    p = run(env, "start", "backup", "--config", env.config, "--storage", store, "--json", home=second_home)
    assert p.returncode == 0, p.stderr[-2000:]
    # alice's backup, killed with its lease held (live until its expiry, ttl 300 s from now)
    p = run(env, "start", "backup", "--config", env.config, "--storage", store, "--json", home=first_home,
            extra={"BRSM_FAILPOINTS": "after:LOCKED=crash"})
    assert p.returncode == CRASH_EXIT, p.stderr[-2000:]
    holder_file = _meta_lease_dir(env) / "holder.json"
    holder = json.loads(holder_file.read_text())
    assert holder["home"] == str(first_home) and holder["ref"].endswith("-1")
    locked = run(env, "start", "backup", "--config", env.config, "--storage", store, "--json",
                 home=second_home)
    assert locked.returncode == 3, locked.stdout + locked.stderr[-2000:]
    doc = json.loads(locked.stdout)
    assert f"{holder['who']}:{first_home}" in doc["error"], doc
    assert f"BRSM_HOME={first_home}" in doc["hint"] and "brsm resume 1" in doc["hint"], doc
    assert doc["op_id"] == 2 and doc["state"] == "REFUSED", doc
    ops = json.loads(run(env, "ops", "--json", home=second_home).stdout)
    assert ops[0]["state"] == "REFUSED" and ops[0]["finished"], ops[0]
    # following the hint in the wrong journal: its operation 1 finished long ago
    again = run(env, "resume", "1", "--json", home=second_home)
    assert again.returncode == 0, again.stderr[-2000:]
    res = json.loads(again.stdout)
    assert res["nothing_to_do"] is True and res["state"] == "CLEANED"
    txt = run(env, "resume", "1", home=second_home)
    assert "finished at" in txt.stdout and "nothing to resume" in txt.stdout, txt.stdout
    assert json.loads(holder_file.read_text()) == holder, "the other journal's lease is untouched"
    # the refused run needs nothing: resume and rollback say so
    rb = run(env, "rollback", "2", home=second_home)
    assert rb.returncode == 0 and "was refused" in rb.stdout and "nothing to roll back" in rb.stdout, rb.stdout
    # alice closes her own run from her own journal
    done = run(env, "rollback", "1", "--json", home=first_home)
    assert done.returncode == 0, done.stderr[-2000:]
    assert leases(env) == []


def test_a_fifo_at_holder_json_is_an_invalid_lease_not_a_hang(sandbox, tmp_path):
    env = sandbox
    lease = _meta_lease_dir(env)
    lease.mkdir()
    os.mkfifo(lease / "holder.json")
    try:
        t0 = time.monotonic()
        p = run(env, "start", "backup", "--config", env.config, "--storage", f"local://{tmp_path / 'b'}",
                "--json", timeout=120)
        assert time.monotonic() - t0 < 60
        assert p.returncode == 3, p.stdout + p.stderr[-2000:]
        doc = json.loads(p.stdout)
        assert "is invalid" in doc["error"] and "not a regular file" in doc["error"], doc
        assert f"rm -r {lease}" in doc["hint"], doc
        assert doc["state"] == "REFUSED"
        gc = run(env, "gc", "--config", env.config, "--json")
        assert gc.returncode == 0, gc.stderr[-2000:]
        kinds = [o["kind"] for o in json.loads(gc.stdout)["orphans"]]
        assert "invalid_lease" in kinds
    finally:
        shutil.rmtree(lease)


def test_a_dead_runs_lease_taken_over_says_what_it_left_and_gc_removes_it(sandbox, tmp_path):
    env = sandbox
    store = tmp_path / "b"
    p = env.brsm("start", "backup", "--config", env.config, "--storage", f"local://{store}",
                 failpoints="after:COPIED=crash")
    assert p.returncode == CRASH_EXIT, p.stderr[-2000:]
    dead = env.ok("ops", "--limit", "1")[0]
    name = dead["name"]
    assert name and (store / name).exists()
    holder_file = _meta_lease_dir(env) / "holder.json"
    holder = json.loads(holder_file.read_text())
    holder["expires"] = time.time() - 5  # its process is gone (SIGKILL) and now its lease has expired
    holder_file.write_text(json.dumps(holder))

    p = run(env, "start", "backup", "--config", env.config, "--storage", f"local://{store}", "--json")
    assert p.returncode == 0, p.stderr[-2000:]
    note = next(ln for ln in p.stderr.splitlines() if "took over the cluster lease" in ln)
    assert f"operation {dead['id']}" in note and "its snapshot" in note and "partial backup" in note, note
    assert f"`brsm rollback {dead['id']}` removes them" in note, note

    gc = env.ok("gc", "--config", env.config, "--storage", f"local://{store}")
    found = {(o["kind"], o["name"]) for o in gc["orphans"] if o.get("name") == name}
    assert found == {("dead_run_snapshot", name), ("dead_run_backup", name)}, gc["orphans"]
    gone = env.ok("gc", "--config", env.config, "--storage", f"local://{store}", "--confirm")
    assert gone["removed"] >= 2
    assert not (store / name).exists() or not any((store / name).rglob("*"))
    from tests.e2e.test_backup_restore import snapshots

    assert name not in snapshots(env)
    assert env.ok("rollback", str(dead["id"]))["state"] == "ROLLED_BACK"
    assert leases(env) == []


def test_a_restore_of_a_damaged_backup_says_so_and_exits_6(sandbox, tmp_path):
    """Bytes changed in storage (same size: `verify --quick` and the restore's size check pass): the
    download's SHA-256 check finds it, the staged restore is undone before the cluster stops, and the
    error says which file is damaged and where to pick another backup, never "fix the cause"."""
    env = sandbox
    before = env.checksum()
    store = tmp_path / "b"
    name = env.ok("start", "backup", "--config", env.config, "--storage", f"local://{store}")["facts"]["backup_name"]
    victim = max((p for p in (store / name).rglob("*.sst") if p.is_file()), key=lambda p: p.stat().st_size)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    p = run(env, "start", "restore", "--yes", "--config", env.config, "--storage", f"local://{store}", "--name", name,
            "--json", timeout=300)
    assert p.returncode == 6, p.stdout + p.stderr[-2000:]
    doc = json.loads(p.stdout)
    key = str(victim.relative_to(store))
    assert doc["error"].startswith(f"this backup is damaged: file {key} "), doc
    assert doc["hint"] == f"restore another one: `brsm show --storage local://{store}`", doc
    assert "fix the cause" not in p.stdout + p.stderr
    assert doc["state"] == "ROLLED_BACK"
    assert env.checksum() == before
    assert leases(env) == []
