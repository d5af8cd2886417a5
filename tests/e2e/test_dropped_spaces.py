"""The most common disaster: a space dropped (or dropped and re-created) after its backup, then the
backup restored. Every restore must pass its checks, end with the backed-up data exact and the
cluster up, for a backup of all spaces and of chosen spaces alike."""
from __future__ import annotations

import pytest
from nebula3.meta import ttypes as mt

from brsm.sandbox.control import MetaClient, check
from tests.e2e.test_backup_restore import aside_dirs, leases

pytestmark = pytest.mark.sandbox


def space_ids(env) -> dict[str, int]:
    with MetaClient(env.meta) as c:
        return {s.name.decode(): s.id.get_space_id() for s in c.listSpaces(mt.ListSpacesReq()).spaces or []}


def drop_space(env, name: str) -> None:
    with MetaClient(env.meta) as c:
        check(c.dropSpace(mt.DropSpaceReq(space_name=name.encode(), if_exists=False)), f"dropSpace {name}")
    assert name not in space_ids(env)


def restore(env, loc, name):
    return env.ok("start", "restore", "--yes", "--config", env.config, *loc, "--name", name)


def test_drop_a_space_then_restore_a_full_backup(sandbox, tmp_path):
    env = sandbox
    loc = ["--storage", f"local://{tmp_path / 'b'}"]
    before, ids = env.checksum(), space_ids(env)
    name = env.ok("start", "backup", "--config", env.config, *loc)["facts"]["backup_name"]
    drop_space(env, "space1")
    restore(env, loc, name)
    assert env.checksum() == before and space_ids(env) == ids
    assert aside_dirs(env) == [] and leases(env) == []


def test_drop_a_space_then_restore_a_backup_of_that_space(sandbox, tmp_path):
    env = sandbox
    loc = ["--storage", f"local://{tmp_path / 'b'}"]
    before, ids = env.checksum(), space_ids(env)
    name = env.ok("start", "backup", "--config", env.config, *loc, "--spaces", "space1")["facts"]["backup_name"]
    drop_space(env, "space1")
    others = env.checksum()
    res = restore(env, loc, name)
    assert res["facts"]["all_spaces"] is False
    after = env.checksum()
    assert after["space1"] == before["space1"] and space_ids(env) == ids
    assert after["space2"] == others["space2"]
    assert aside_dirs(env) == [] and leases(env) == []


def test_recreate_a_space_then_restore_a_full_backup(sandbox, tmp_path):
    env = sandbox
    loc = ["--storage", f"local://{tmp_path / 'b'}"]
    before, ids = env.checksum(), space_ids(env)
    name = env.ok("start", "backup", "--config", env.config, *loc)["facts"]["backup_name"]
    drop_space(env, "space1")
    env.load(1 << 20, seed=21)  # re-creates space1 (another id) and writes into both spaces
    assert space_ids(env)["space1"] != ids["space1"]
    restore(env, loc, name)
    assert env.checksum() == before and space_ids(env) == ids
    assert aside_dirs(env) == [] and leases(env) == []


def test_recreate_a_space_then_restore_a_backup_of_that_space(sandbox, tmp_path):
    env = sandbox
    loc = ["--storage", f"local://{tmp_path / 'b'}"]
    before, ids = env.checksum(), space_ids(env)
    name = env.ok("start", "backup", "--config", env.config, *loc, "--spaces", "space1")["facts"]["backup_name"]
    drop_space(env, "space1")
    env.load(1 << 20, seed=22)
    recreated = space_ids(env)["space1"]
    assert recreated != ids["space1"]
    newer = env.checksum()
    res = restore(env, loc, name)
    assert res["facts"]["replaced_spaces"] == {str(recreated): "space1"}
    after = env.checksum()
    assert after["space1"] == before["space1"] and space_ids(env) == ids
    assert after["space2"] == newer["space2"], "the other space keeps its newer data"
    assert aside_dirs(env) == [] and leases(env) == []


# -- a second journal's deleters, and a restore that no longer needs its backup once stopped ----------------
def second_journal(env, tmp_path):
    from tests.e2e.conftest import Env

    home = tmp_path / "home-b"
    home.mkdir()
    return Env(env.root, env.info, home)


def test_a_second_journal_cannot_delete_a_backup_a_live_restore_uses(sandbox, tmp_path):
    env = sandbox
    other = second_journal(env, tmp_path)
    store = tmp_path / "b"
    loc = ["--storage", f"local://{store}"]
    before = env.checksum()
    name = env.ok("start", "backup", "--config", env.config, *loc)["facts"]["backup_name"]
    env.load(1 << 20, seed=31)
    newer = env.ok("start", "backup", "--config", env.config, *loc)["facts"]["backup_name"]
    assert newer != name
    p = env.brsm("start", "restore", "--yes", "--config", env.config, *loc, "--name", name, failpoints="after:STAGED=crash")
    assert p.returncode == 86, p.stderr[-2000:]
    op = env.ok("ops")[0]["id"]
    for args in (["prune", *loc, "--config", other.config, "--keep-last", "1", "--confirm"],
                 ["cleanup", "--yes", name, *loc, "--config", other.config]):
        q = other.brsm(*args)
        assert q.returncode == 3, (args, q.stdout, q.stderr[-2000:])
        assert f"the cluster lease is held by operation {op} of journal" in q.stderr and "(restore)" in q.stderr, q.stderr
        assert (store / name / "brsm-manifest.json").exists()
    env.ok("resume", str(op))
    assert env.checksum() == before and aside_dirs(env) == [] and leases(env) == []
    # the lease released, the same prune goes through
    assert other.ok("prune", *loc, "--config", other.config, "--keep-last", "1", "--confirm")["deleted"] == [name]


def test_a_staged_restore_stopped_needs_no_backup_to_finish(sandbox, tmp_path):
    """Once the cluster is stopped, the restore works from what CHECKED journaled and STAGED put on the
    hosts: its backup deleted meanwhile (by hand, or by a tool that ignored the lease) changes nothing."""
    import shutil

    env = sandbox
    store = tmp_path / "b"
    loc = ["--storage", f"local://{store}"]
    before = env.checksum()
    name = env.ok("start", "backup", "--config", env.config, *loc)["facts"]["backup_name"]
    env.load(1 << 20, seed=32)
    p = env.brsm("start", "restore", "--yes", "--config", env.config, *loc, "--name", name, failpoints="after:STOPPED=crash")
    assert p.returncode == 86, p.stderr[-2000:]
    op = env.ok("ops")[0]["id"]
    shutil.rmtree(store / name)
    env.ok("resume", str(op))
    assert env.checksum() == before and aside_dirs(env) == [] and leases(env) == []


def test_an_offline_restore_whose_backup_went_names_rollback_and_rollback_brings_the_cluster_up(sandbox, tmp_path):
    import shutil

    env = sandbox
    store = tmp_path / "b"
    loc = ["--storage", f"local://{store}"]
    name = env.ok("start", "backup", "--config", env.config, *loc)["facts"]["backup_name"]
    env.load(1 << 20, seed=33)
    current = env.checksum()
    p = env.brsm("start", "restore", "--yes", "--config", env.config, *loc, "--name", name, "--offline",
                 failpoints="after:SET_ASIDE=crash")
    assert p.returncode == 86, p.stderr[-2000:]
    op = env.ok("ops")[0]["id"]
    shutil.rmtree(store / name)
    q = env.brsm("resume", str(op))
    assert q.returncode == 5, q.stderr[-2000:]
    assert f"`brsm rollback {op}` brings it back up" in q.stderr, q.stderr[-2000:]
    env.ok("rollback", str(op))
    assert env.checksum() == current and aside_dirs(env) == [] and leases(env) == []


# -- gc and a restore's kept original data -------------------------------------------------------------------
def test_gc_never_removes_what_a_restore_kept_with_keep_old(sandbox, tmp_path):
    import sqlite3
    from pathlib import Path

    env = sandbox
    store = tmp_path / "b"
    loc = ["--storage", f"local://{store}"]
    before = env.checksum()
    name = env.ok("start", "backup", "--config", env.config, *loc)["facts"]["backup_name"]
    res = env.ok("start", "restore", "--yes", "--config", env.config, *loc, "--name", name, "--keep-old")
    assert env.checksum() == before
    kept = aside_dirs(env)
    ids = [str(p) for h in env.info["hosts"] for p in Path(h["install_dir"]).glob("cluster.id.brsm_old_*")]
    assert kept and ids, res
    try:
        args = ["gc", "--config", env.config]
        found = {(o["kind"], o["path"]) for o in env.ok(*args)["orphans"] if o.get("path")}
        assert {p for k, p in found if k == "kept_old"} >= set(kept) | set(ids), found
        assert not any(k in ("set_aside", "staging") for k, _ in found), found
        assert env.ok(*args, "--confirm")["removed"] == 0
        assert aside_dirs(env) == kept and all(Path(p).exists() for p in ids)
        # a finished restore's cluster.id left aside (no --keep-old: a crash in CLEANED) is gc's
        con = sqlite3.connect(Path(env.env["BRSM_HOME"]) / "journal.db")
        jid = con.execute("SELECT value FROM journal_info WHERE key = 'journal_id'").fetchone()[0]
        con.close()
        backup_op = env.ok("ops", "--kind", "backup")[0]["id"]
        host = next(h for h in env.info["hosts"] if "storage" in h["roles"])
        left = Path(host["install_dir"]) / f"cluster.id.brsm_old_{jid}-{backup_op}"
        left.write_text("old cluster id")
        found = {(o["kind"], o["path"]) for o in env.ok(*args)["orphans"] if o.get("path")}
        assert ("set_aside", str(left)) in found
        assert env.ok(*args, "--confirm")["removed"] == 1 and not left.exists()
        assert aside_dirs(env) == kept
    finally:
        import shutil
        for p in kept:
            shutil.rmtree(p)
        for p in ids:
            Path(p).unlink()
