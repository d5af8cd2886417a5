"""Issue 13, the adversary's classes that need a running cluster: services started behind brsm's back
during a restore, operation ids that collide across journals, gc and a live lease, and backups that
carry no checksums. Each test fails on the old behaviour (main at dad4952) and passes now."""
from __future__ import annotations

import json
from pathlib import Path

from brsm.sandbox import control

from .test_backup_restore import aside_dirs, leases, snapshots


def services_up(env) -> bool:
    from nebula3.meta import ttypes as meta
    with control.MetaClient(env.meta) as c:
        hosts = c.call("listHosts", meta.ListHostsReq(type=meta.ListHostType.STORAGE)).hosts
    return bool(hosts) and all(h.status == meta.HostStatus.ONLINE for h in hosts)


# -- 5. a backup without checksums --------------------------------------------------------------------------
def test_a_backup_whose_manifest_was_deleted_and_a_file_changed_is_neither_ok_nor_restored(sandbox, tmp_path):
    """The manifest deleted and one SST changed, same size: `show` said `complete* nebula-br`, `verify
    --full` said ok (0 re-hashed) and the restore finished rc 0 with wrong data. Now verify exits 6
    saying it could re-hash nothing, and the restore is refused (exit 6) before anything is stopped."""
    env = sandbox
    store = tmp_path / "b"
    name = env.ok("start", "backup", "--config", env.config, "--storage", f"local://{store}")["facts"]["backup_name"]
    (store / name / "brsm-manifest.json").unlink()
    sst = max((p for p in (store / name / "data").rglob("*.sst")), key=lambda p: p.stat().st_size)
    data = bytearray(sst.read_bytes())
    data[len(data) // 2] ^= 0xFF
    sst.write_bytes(bytes(data))
    p = env.brsm("verify", name, "--storage", f"local://{store}", "--full")
    assert p.returncode == 6 and f"{name}: ok" not in p.stdout, (p.stdout, p.stderr)
    assert "re-hashed 0 objects" in p.stderr and "no checksums" in p.stdout
    before = env.checksum()
    p = env.brsm("start", "restore", "--yes", "--config", env.config, "--storage", f"local://{store}", "--name", name)
    assert p.returncode == 6, (p.returncode, p.stderr[-2000:])
    assert "has no checksums" in p.stderr and "--allow-unverified" in p.stderr
    assert env.checksum() == before and services_up(env)
    assert aside_dirs(env) == [] and leases(env) == []


# -- 2 and 3. operation ids across journals; gc and a live lease -------------------------------------------------
def other_journal(env, home: Path):
    import copy
    other = copy.copy(env)
    other.env = dict(env.env, BRSM_HOME=str(home))
    return other


def journal_id(env) -> str:
    import sqlite3
    con = sqlite3.connect(Path(env.env["BRSM_HOME"]) / "journal.db")
    try:
        return con.execute("SELECT value FROM journal_info WHERE key = 'journal_id'").fetchone()[0]
    finally:
        con.close()


def test_other_journals_neither_take_the_lease_nor_gc_what_a_live_backup_owns(sandbox, tmp_path):
    """Journal A's backup (op 2) is cut in COPIED: it holds the cluster lease, its snapshot and an
    incomplete upload. Journal C's op 2 is a restore: it took A's lease over as its own (same op id);
    now it is refused (exit 3) and nothing is stopped. Journal B's `gc --grace 1s --confirm` dropped
    A's snapshot and deleted its upload; now it leaves both (the lease is live) and also leaves a
    set-aside dir named by another journal's ref and one named by a bare op id. A's resume finishes."""
    a = other_journal(sandbox, tmp_path / "A")
    b = other_journal(sandbox, tmp_path / "B")
    c = other_journal(sandbox, tmp_path / "C")
    s1, s2 = tmp_path / "s1", tmp_path / "s2"
    done = a.ok("start", "backup", "--config", a.config, "--storage", f"local://{s1}")["facts"]["backup_name"]
    p = a.brsm("start", "backup", "--config", a.config, "--storage", f"local://{s2}", failpoints="file:3=crash")
    assert p.returncode == 86, p.stderr[-2000:]
    (cut,) = [d.name for d in s2.iterdir()]
    assert snapshots(a) == [cut] and len(leases(a)) == 1
    holder = json.loads((Path(leases(a)[0]) / "holder.json").read_text())
    assert holder["op_id"] == 2 and holder["ref"] == f"{journal_id(a)}-2"

    # C: op 1 refused at preflight, op 2 a restore: the same op id as A's backup, another journal
    c.brsm("cleanup", "--yes", "BACKUP_2000_01_01_00_00_00", "--storage", f"local://{s1}")
    before = sandbox.checksum()
    p = c.brsm("start", "restore", "--yes", "--config", c.config, "--storage", f"local://{s1}", "--name", done)
    assert p.returncode == 3 and "cluster is locked by operation 2 of journal" in p.stderr, p.stderr[-2000:]
    assert json.loads((Path(leases(a)[0]) / "holder.json").read_text())["ref"] == holder["ref"]
    assert services_up(sandbox) and sandbox.checksum() == before and aside_dirs(sandbox) == []

    # B: gc from a journal whose op ids overlap A's (and whose "finished" ops include 1 and 2)
    b.brsm("cleanup", "--yes", "BACKUP_2000_01_01_00_00_00", "--storage", f"local://{s1}")
    host = next(h for h in b.info["hosts"] if "storage" in h["roles"])
    foreign = Path(host["data_paths"][0]) / "nebula_brsm_old_0123456789ab-2"
    legacy = Path(host["data_paths"][0]) / "nebula_brsm_old_1"
    for d in (foreign, legacy):
        d.mkdir()
        (d / "keep").write_text("someone's original data")
    try:
        res = b.ok("gc", "--config", b.config, "--storage", f"local://{s2}", "--grace", "1s", "--confirm")
        kinds = {(o["kind"], o.get("name") or o.get("path")) for o in res["orphans"]}
        assert ("in_use", cut) in kinds and not any(k in ("snapshot", "incomplete_backup", "set_aside")
                                                    for k, _ in kinds), res
        assert ("set_aside_unknown", str(foreign)) in kinds and ("set_aside_unknown", str(legacy)) in kinds
        assert snapshots(a) == [cut] and (s2 / cut).exists() and foreign.exists() and legacy.exists()
    finally:
        for d in (foreign, legacy):
            (d / "keep").unlink()
            d.rmdir()
    a.ok("resume", "2")
    assert a.brsm("verify", cut, "--storage", f"local://{s2}", "--full").returncode == 0
    assert snapshots(a) == [] and leases(a) == []


# -- 1. a service started behind brsm's back during a restore ---------------------------------------------------
def nebula_service(host: dict, action: str, svc: str) -> str:
    import subprocess
    p = subprocess.run([str(Path(host["install_dir"]) / "scripts" / "nebula.service"), action, svc],
                       capture_output=True, text=True, timeout=120)
    return p.stdout + p.stderr


def test_a_storaged_started_behind_brsms_back_stops_resume_and_rollback_until_it_is_down(sandbox, tmp_path):
    """A restore cut after DOWNLOADED (services stopped, originals aside, the backup's files in place);
    then storaged is started on one host behind brsm's back. `brsm resume` finished CLEANED rc 0 and
    deleted the originals; a rollback reported success over whatever that storaged had done. Now both
    refuse (exit 5) naming the host and storaged, journal ServiceFoundRunning and touch nothing; once it
    is stopped by hand, the rollback brings the original data back."""
    env = sandbox
    store = tmp_path / "b"
    name = env.ok("start", "backup", "--config", env.config, "--storage", f"local://{store}")["facts"]["backup_name"]
    env.load(1 << 20, seed=77)
    before = env.checksum()
    p = env.brsm("start", "restore", "--yes", "--config", env.config, "--storage", f"local://{store}", "--name", name,
                 failpoints="after:DOWNLOADED=crash")
    assert p.returncode == 86, p.stderr[-2000:]
    op = str(env.ok("ops")[0]["id"])
    host = next(h for h in env.info["hosts"] if "storage" in h["roles"])
    nebula_service(host, "start", "storaged")
    try:
        assert "Running as" in nebula_service(host, "status", "storaged")
        for mode in ("resume", "rollback"):
            p = env.brsm(mode, op)
            assert p.returncode == 5, (mode, p.returncode, p.stderr[-2000:])
            assert "refusing to go on with" in p.stderr and "storaged is running as pid" in p.stderr, p.stderr
            assert host["address"] in p.stderr if "address" in host else True
            assert "nebula.service stop" in p.stderr  # the hint says what to do
            assert aside_dirs(env), "the original data is still set aside, untouched"
        found = [e for e in env.ok("audit", op)["events"] if e["type"] == "ServiceFoundRunning"]
        assert found and all(e["data"]["service"] == "storaged" for e in found), found
    finally:
        nebula_service(host, "stop", "storaged")
    import time
    for _ in range(50):
        if "Exited" in nebula_service(host, "status", "storaged"):
            break
        time.sleep(0.2)
    env.ok("rollback", op)
    assert env.checksum() == before and services_up(env)
    assert aside_dirs(env) == [] and leases(env) == []


def status_pid(host: dict, svc: str) -> int | None:
    import re
    m = re.search(r"Running as (\d+)", nebula_service(host, "status", svc))
    return int(m[1]) if m else None


def stop_by_hand(host: dict, svc: str) -> None:
    import time
    nebula_service(host, "stop", svc)
    for _ in range(100):
        if "Exited" in nebula_service(host, "status", svc):
            return
        time.sleep(0.2)
    raise AssertionError(f"{svc} on {host['address']} did not stop")


def test_a_storaged_restarted_by_hand_during_started_is_named_and_refused(sandbox, tmp_path):
    """A restore cut in STARTED right after its starts (`started:1`); then storaged is restarted by hand
    on one host (another pid). `brsm resume` took `already running: P` as its own start, and a storaged
    that never came ONLINE was blamed on ADD HOSTS. Now the resume names that daemon (host, pid, how to
    stop it), exits 5, journals ServiceFoundRunning with its pid and starts nothing on top of it; once
    it is stopped by hand, the resume finishes and the data is the backup's exactly."""
    env = sandbox
    store = tmp_path / "b"
    at_backup = env.checksum()
    name = env.ok("start", "backup", "--config", env.config, "--storage", f"local://{store}")["facts"]["backup_name"]
    env.load(1 << 20, seed=78)
    p = env.brsm("start", "restore", "--yes", "--config", env.config, "--storage", f"local://{store}", "--name", name,
                 failpoints="started:1=crash")
    assert p.returncode == 86, p.stderr[-2000:]
    op = str(env.ok("ops")[0]["id"])
    ours = {(e["data"]["host"], e["data"]["pid"]) for e in env.ok("audit", op)["events"]
            if e["type"] == "RestoreDaemonStarted" and e["data"]["service"] == "storaged"}
    host = next(h for h in env.info["hosts"] if "storage" in h["roles"])
    assert (host["address"], status_pid(host, "storaged")) in ours, ours
    stop_by_hand(host, "storaged")
    nebula_service(host, "start", "storaged")  # an operator, while brsm is not running
    foreign = status_pid(host, "storaged")
    assert foreign is not None and (host["address"], foreign) not in ours
    try:
        p = env.brsm("resume", op)
        assert p.returncode == 5, (p.returncode, p.stderr[-2000:])
        assert (f"storaged on {host['address']} is running as pid {foreign}, not started by this restore "
                "(someone started it while the cluster was down): stop it (`") in p.stderr, p.stderr
        assert f"scripts/nebula.service stop storaged` on {host['address']}), then `brsm resume {op}` / " \
               f"`brsm rollback {op}`" in p.stderr, p.stderr
        assert "ADD HOSTS" not in p.stderr
        assert status_pid(host, "storaged") == foreign, "nothing started on top of it, nor stopped"
        assert aside_dirs(env), "not rolled back: the originals are still set aside"
        found = [e["data"] for e in env.ok("audit", op)["events"] if e["type"] == "ServiceFoundRunning"]
        assert any(d.get("foreign_pid") == foreign and d["host"] == host["address"] for d in found), found
    finally:
        stop_by_hand(host, "storaged")
    env.ok("resume", op)
    assert env.checksum() == at_backup and services_up(env)
    assert aside_dirs(env) == [] and leases(env) == []


# -- 6. progress while daemons stop and start and set-aside data is removed ---------------------------------------
def test_restore_reports_progress_for_stops_starts_and_the_set_aside_removal(sandbox, tmp_path):
    env = sandbox
    store = tmp_path / "b"
    name = env.ok("start", "backup", "--config", env.config, "--storage", f"local://{store}")["facts"]["backup_name"]
    p = env.brsm("start", "restore", "--yes", "--config", env.config, "--storage", f"local://{store}", "--name", name, "--json")
    assert p.returncode == 0, p.stderr[-2000:]
    lines = [json.loads(ln) for ln in p.stderr.splitlines() if ln.startswith("{")]
    final = {d["progress"] for d in lines if d.get("final")}
    for task in ("stop graphd", "stop storaged", "stop metad", "start metad", "start storaged", "start graphd",
                 "re-hash restored files", "remove set-aside data"):
        assert task in final, (task, sorted(final))
