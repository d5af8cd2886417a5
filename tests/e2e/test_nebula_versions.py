"""brsm on a cluster of an older Nebula release (`brsm sandbox up --nebula-version 3.2`), and on a
release it was not proven against.

On 3.0–3.2 metad reads ``DropSnapshotReq{1: binary name}`` (meta.thrift v3.2.0): the 3.3+ names list
nebula3-python generates is skipped and answered SUCCEEDED with nothing dropped
(DropSnapshotProcessor.cpp v3.2.0), so a backup that trusted that answer left its snapshot and every
checkpoint behind. After a backup, a restore and a rollback here no snapshot is listed and no
checkpoint dir is left on any storaged or metad.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.conftest import running_sandbox
from tests.e2e.test_backup_restore import aside_dirs, leases, snapshots

pytestmark = pytest.mark.sandbox


@pytest.fixture(scope="module")
def v32(tmp_path_factory):
    with running_sandbox(tmp_path_factory.mktemp("v32"), tmp_path_factory.mktemp("home32"), data_paths=1,
                         load=4 << 20, nebula_version="3.2") as env:
        yield env


def checkpoints_anywhere(env) -> list[str]:
    """Every ``checkpoints/BACKUP_*`` dir under any host's root: storaged's and metad's alike."""
    roots = {Path(h["install_dir"]).parent for h in env.info["hosts"]}
    return sorted(str(p) for r in roots for p in r.glob("**/checkpoints/BACKUP_*"))


def test_backup_and_restore_on_3_2_leave_no_snapshot(v32, tmp_path):
    env = v32
    assert env.info["nebula_version"] == "3.2.0"
    before = env.checksum()
    target = f"local://{tmp_path / 'b'}"
    res = env.ok("start", "backup", "--config", env.config, "--storage", target)
    assert res["state"] == "CLEANED"
    name = res["facts"]["backup_name"]
    manifest = json.loads((tmp_path / "b" / name / "brsm-manifest.json").read_text())
    assert manifest["topology"]["nebula_version"] == "3.2.0"
    assert snapshots(env) == [] and checkpoints_anywhere(env) == [] and leases(env) == []

    env.load(2 << 20, seed=4)
    assert env.checksum() != before
    res = env.ok("start", "restore", "--yes", "--config", env.config, "--storage", target, "--name", name)
    assert res["state"] == "CLEANED"
    assert env.checksum() == before
    assert snapshots(env) == [] and checkpoints_anywhere(env) == [] and leases(env) == [] and aside_dirs(env) == []


def test_rolled_back_backup_on_3_2_drops_its_snapshot(v32, tmp_path):
    """A backup that fails after createBackup rolls back: the snapshot it made is dropped for real."""
    env = v32
    p = env.brsm("start", "backup", "--config", env.config, "--storage", f"local://{tmp_path / 'b'}", "--json",
                 failpoints="after:COPIED=raise")
    assert p.returncode != 0, p.stdout
    assert snapshots(env) == [] and checkpoints_anywhere(env) == [] and leases(env) == []


@pytest.fixture(scope="module")
def v33(tmp_path_factory):
    with running_sandbox(tmp_path_factory.mktemp("v33"), tmp_path_factory.mktemp("home33"), data_paths=1,
                         load=1 << 20, nebula_version="3.3") as env:
        yield env


def test_unproven_release_is_refused_in_preflight(v33, tmp_path):
    """3.3.0 is a real release brsm was not proven against (its DropSnapshotReq is the list, but an
    unknown name still answers SUCCEEDED): refused with one line, exit 4, nothing touched."""
    env = v33
    before = env.checksum()
    for args in (["start", "backup", "--config", env.config, "--storage", f"local://{tmp_path / 'b'}"],
                 ["check", "--config", env.config]):
        p = env.brsm(*args)
        assert "Traceback" not in p.stderr, p.stderr
        errors = [ln for ln in p.stderr.splitlines() if ln.startswith("brsm: error: ")]
        if args[0] == "check":
            assert p.returncode != 0 and "3.3.0" in p.stdout + p.stderr, p.stdout + p.stderr
            continue
        assert p.returncode == 4, p.stdout + p.stderr
        assert len(errors) == 1 and "Nebula 3.3.0" in errors[0] and "not proven" in errors[0], p.stderr
        assert "3.0, 3.2, 3.4, 3.6, 3.8" in p.stderr
    assert snapshots(env) == [] and leases(env) == [] and checkpoints_anywhere(env) == []
    assert not (tmp_path / "b").exists() or not any((tmp_path / "b").iterdir())
    assert env.checksum() == before
    # journaled: the refused operation and its failure, and no step that touches anything
    ops = env.ok("ops")
    assert len(ops) == 1 and ops[0]["kind"] == "backup"
    events = env.ok("audit", str(ops[0]["id"]))["events"]
    kinds = {e["type"] for e in events}
    assert "OperationRefused" in kinds  # refused before any side effect
    assert not kinds & {"SnapshotRequested", "LeaseTaken", "StepCompleted", "SnapshotDropped"}, kinds
    started = [e for e in events if e["type"] == "StepStarted"]
    assert all(e["data"].get("step") in (None, "PREFLIGHT", "preflight") for e in started), started
