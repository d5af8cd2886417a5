"""Backups under sandbox faults end in success (retries) or a clean failure that names the cause:
never a leaked snapshot, a leftover lease or checkpoint dir, or a write-blocked cluster."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from brsm.sandbox import cluster, control, store_faults
from tests.e2e.test_backup_restore import checkpoint_dirs, leases, snapshots

pytestmark = pytest.mark.sandbox


def meta_http(env) -> str:
    host, port = env.meta.rsplit(":", 1)
    return f"{host}:{int(port) + 10000}"


def assert_clean(env) -> None:
    assert snapshots(env) == [], "no snapshot may be left behind"
    assert leases(env) == [], "no lease may be left behind"
    assert checkpoint_dirs(env) == [], "no checkpoint dir may be left behind"
    env.load(1 << 20, seed=99)  # the cluster takes writes: it was not left write-blocked


def backup(env, target: Path, *extra: str):
    return env.brsm("start", "backup", "--config", env.config, "--storage", f"local://{target}", *extra)


def test_meta_error_code_fails_cleanly_and_names_it(sandbox, tmp_path):
    env = sandbox
    control.set_fault(meta_http(env), rpc="createBackup", code=-24, count=1)
    try:
        p = backup(env, tmp_path / "b")
    finally:
        control.clear_faults(meta_http(env))
    assert p.returncode == 5, p.stderr[-1500:]
    assert "createBackup" in p.stderr and "E_BACKUP_FAILED" in p.stderr
    assert env.ok("ops")[0]["state"] == "ROLLED_BACK"
    assert_clean(env)


def test_failed_checkpoint_leaves_nothing_behind(sandbox, tmp_path):
    """metad leaves an INVALID snapshot and partial checkpoints on failure; our rollback drops them."""
    env = sandbox
    st = cluster.require_state(str(env.root))
    storage1 = next(h for h in st["hosts"] if h["name"] == "storage1")
    control.set_fault(f"{storage1['address']}:19779", fail_checkpoint=True, count=1)
    p = backup(env, tmp_path / "b")
    assert p.returncode == 5, p.stderr[-1500:]
    assert_clean(env)


def test_leader_change_is_followed(sandbox, tmp_path):
    env = sandbox
    control.set_fault(meta_http(env), rpc="createBackup", leader_changed=env.meta, count=1)
    try:
        p = backup(env, tmp_path / "b", "--json")
    finally:
        control.clear_faults(meta_http(env))
    assert p.returncode == 0, p.stderr[-1500:]
    assert json.loads(p.stdout)["state"] == "CLEANED"
    assert_clean(env)


def test_s3_503s_are_ridden_over(sandbox):
    env = sandbox
    store_faults.inject(env.info["s3"]["endpoint"], kind="error", status=503, count=3)
    try:
        p = env.brsm("start", "backup", "--config", env.config, *env.s3("faulty"), "--json")
    finally:
        store_faults.clear(env.info["s3"]["endpoint"])
    assert p.returncode == 0, p.stderr[-1500:]
    assert_clean(env)


def test_ssh_drop_mid_file_fails_cleanly_then_resume_after_the_fault_clears(sandbox, tmp_path):
    env = sandbox
    cluster.ssh_fault(str(env.root), "storage2", "drop", after_bytes=256 << 10)
    try:
        p = backup(env, tmp_path / "b", "--keep-on-failure")
        assert p.returncode == 5, p.stderr[-1500:]
        assert "storage2" in p.stderr or "127." in p.stderr
        op = env.ok("ops")[0]
        assert op["state"] == "FAILED"
    finally:
        cluster.ssh_fault(str(env.root), "storage2", "clear")
    res = env.ok("resume", str(op["id"]))
    assert res["state"] == "CLEANED"
    assert_clean(env)


def test_host_down_is_a_preflight_failure(sandbox, tmp_path):
    env = sandbox
    cluster.host_down(str(env.root), "storage3")
    try:
        p = backup(env, tmp_path / "b")
        assert p.returncode == 4, p.stderr[-1500:]
        assert "storage" in p.stderr.lower() or "127." in p.stderr
    finally:
        cluster.host_up(str(env.root), "storage3")
    assert snapshots(env) == [] and leases(env) == []
    op = env.ok("ops")[0]
    assert op["state"] == "REFUSED"  # the attempt is journaled: PLANNED -> REFUSED with the cause


def test_second_run_is_refused_while_the_lease_is_held(sandbox, tmp_path):
    env = sandbox
    p = backup(env, tmp_path / "a", "--keep-on-failure")
    # hold the lease by crashing a run right after LOCKED; the crashed process is gone, but the lease
    # has not expired, so another run is refused and told who holds it
    p = env.brsm("start", "backup", "--config", env.config, "--storage", f"local://{tmp_path / 'b'}",
                 failpoints="after:LOCKED=crash")
    assert p.returncode == 86
    holder = env.ok("ops")[0]["id"]
    p = backup(env, tmp_path / "c")
    assert p.returncode == 3, p.stderr[-1500:]
    assert f"operation {holder}" in p.stderr
    assert env.ok("rollback", str(holder))["state"] == "ROLLED_BACK"
    assert_clean(env)
