"""Many small files end to end on the sandbox (real sshd, real RocksDB checkpoints): the path through
brsm lists each checkpoint dir page by page, reads small files in groups (one tar over one SSH exec
each), and a run killed half way resumes copying only what is not stored with its size."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from brsm.sandbox.data import load as sandbox_load
from tests.e2e import manifest_files
from tests.e2e.conftest import running_sandbox

pytestmark = pytest.mark.sandbox

FILES = 1500


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    with running_sandbox(tmp_path_factory.mktemp("sandbox"), tmp_path_factory.mktemp("home"), data_paths=1,
                         load=0) as env:
        sandbox_load(env.meta, spaces=1, size_bytes=3 << 20, seed=5, files=FILES)
        yield env


def events(env, op: int, t: str) -> list[dict]:
    return [e["data"] for e in env.ok("audit", str(op))["events"] if e["type"] == t]


def test_small_files_killed_half_way_resume_and_every_file_is_right(sandbox, tmp_path):
    env = sandbox
    target = tmp_path / "b"
    # two groups at a time: a crash loses at most the groups in flight (their events are journaled
    # together when a group ends)
    p = env.brsm("start", "backup", "--config", env.config, "--storage", f"local://{target}", "--concurrency", "2",
                 "--per-host", "1", failpoints="file:1200=crash")
    assert p.returncode == 86, p.stderr[-2000:]
    op = max(o["id"] for o in env.ok("ops"))
    (planned,) = events(env, op, "FilesPlanned")
    before = {d["key"] for d in events(env, op, "FileCopied")}
    assert planned["files"] > FILES // 2 and 0 < len(before) < 1200

    res = env.ok("resume", str(op))
    assert res["state"] == "CLEANED"
    name = res["facts"]["backup_name"]
    (copied,) = [e["data"]["facts"] for e in env.ok("audit", str(op))["events"]
                 if e["type"] == "StepCompleted" and e["data"].get("step") == "COPIED"]
    assert copied["files"] == planned["files"] and copied["bytes"] == planned["bytes"]
    assert copied["skipped_on_resume"] >= len(before) - 1  # each journaled file was there with its size
    again = [d["key"] for d in events(env, op, "FileCopied")][len(before):]
    assert not set(again) & before, "a file journaled and stored was copied again"

    manifest = manifest_files.load(target / name)
    assert len(manifest["files"]) == planned["files"]
    compared = 0
    for f in manifest["files"]:
        stored = (target / f["key"]).read_bytes()
        assert len(stored) == f["size"] and hashlib.sha256(stored).hexdigest() == f["sha256"], f["key"]
        live = Path(f["path"].replace(f"/checkpoints/{name}/", "/"))  # RocksDB never rewrites a file it named
        if "/checkpoints/" in f["path"] and live.is_file() and live.suffix == ".sst":
            assert hashlib.sha256(live.read_bytes()).hexdigest() == f["sha256"], f["key"]
            compared += 1
    assert compared > FILES // 4
    assert env.brsm("verify", name, "--storage", f"local://{target}", "--full").returncode == 0


def test_groups_stored_at_once_overwrite_on_resume_and_leave_no_temp_file(sandbox, tmp_path):
    """Small files go to local storage a group at a time (Storage.put_many: one durability barrier per
    group). Killed right after the first group was stored and before it was journaled, the resume
    stores that group again over the objects already there; the target ends with every file right,
    no temp file anywhere, and verify --full passing."""
    from brsm.adapters.storage.local_write import TMP_MARK

    env = sandbox
    target = tmp_path / "b"
    p = env.brsm("start", "backup", "--config", env.config, "--storage", f"local://{target}",
                 failpoints="file:3=crash")
    assert p.returncode == 86, p.stderr[-2000:]
    op = max(o["id"] for o in env.ok("ops"))
    journaled = {d["key"] for d in events(env, op, "FileCopied")}
    assert len(journaled) < 3  # the third file stored was not journaled, nor the group it came with
    stored_before = [f for _d, _s, fs in os.walk(target) for f in fs if not f.startswith(TMP_MARK)]
    assert len(stored_before) >= 3, "what was stored before the kill is in storage, whole"

    res = env.ok("resume", str(op))
    assert res["state"] == "CLEANED"
    name = res["facts"]["backup_name"]
    manifest = manifest_files.load(target / name)
    for f in manifest["files"]:
        stored = (target / f["key"]).read_bytes()
        assert len(stored) == f["size"] and hashlib.sha256(stored).hexdigest() == f["sha256"], f["key"]
    left = [os.path.join(d, f) for d, _s, fs in os.walk(target) for f in fs if f.startswith(TMP_MARK)]
    assert left == []
    assert env.brsm("verify", name, "--storage", f"local://{target}", "--full").returncode == 0
