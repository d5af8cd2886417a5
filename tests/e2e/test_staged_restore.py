"""Issue 15: a restore stages the backup's files beside the live data while the cluster serves, and
takes the cluster down only for the swap — measured from outside by polling every service port."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from brsm.sandbox import cluster

from .downtime import PortWatch, service_addrs
from .test_backup_restore import aside_dirs, leases
from .test_interrupts import SLOW, audit, error_line, no_run_left_behind, of_type, started  # noqa: F401 - the fixture stops its runs

pytestmark = pytest.mark.sandbox


def staging_dirs(env) -> list[str]:
    return [str(p) for h in env.info["hosts"] for dp in h["data_paths"] for p in Path(dp).glob("nebula_brsm_new_*")]


def _backup(env, store: str) -> str:
    return env.ok("start", "backup", "--config", env.config, "--storage", store)["facts"]["backup_name"]


def test_the_cluster_serves_while_the_files_stage_and_is_down_only_for_the_swap(sandbox, tmp_path):
    env = sandbox
    store = f"local://{tmp_path / 'b'}"
    name = _backup(env, store)
    backed = env.checksum()
    env.load(1 << 20, seed=21)  # the cluster moves on
    with PortWatch(service_addrs(str(env.root))) as watch:
        time.sleep(0.3)
        run = started(env, "start", "restore", "--yes", "--config", env.config, "--storage", store, "--name", name,
                      "--json", *SLOW)
        run.wait_for("StepStarted", "STAGED")
        staging_began = time.monotonic()
        run.wait_for("StepCompleted", "STAGED", timeout=120)
        staging_ended = time.monotonic()
        p = run.finish(timeout=180)
        time.sleep(0.3)
    assert p.returncode == 0, p.stderr[-3000:]
    assert env.checksum() == backed, "the backup's data is back"
    # the download (rate-limited to take seconds) ran while every port answered
    assert staging_ended - staging_began > 3, "the staging should take a while at 2 MiB/s"
    assert watch.all_up_between(staging_began, staging_ended), watch.windows()
    # one outage, short; the journaled downtime covers what a client saw
    result = json.loads(p.stdout.strip().splitlines()[-1])
    reported = result["facts"]["downtime_seconds"]
    assert result["facts"]["mode"] == "staged"
    assert len(watch.windows()) == 1, watch.windows()
    # the 10 s target is scripts/bench's to measure (a loaded test machine is no yardstick: two test
    # workers on 2 cores stretched it to 15 s); here: the outage a client saw is the one brsm reports,
    # and the download (above) was not part of it
    assert watch.longest() <= reported + 0.5, (watch.longest(), reported)
    assert reported < 45, reported
    events = audit(env, run.op)
    assert of_type(events, "DowntimeEnded")[0]["how"] == "restored"
    proofs = [d["how"] for d in of_type(events, "RestoredDataProved")]
    assert proofs == ["sha256sum of every staged file",
                      "fingerprint of the staged, re-hashed trees (every entry: path, type, size, mtime, ctime, "
                      "inode)"], proofs
    assert staging_dirs(env) == [] and aside_dirs(env) == [] and leases(env) == []
    text = env.brsm("audit", str(run.op)).stdout
    assert f"downtime {reported} s" in text


def test_an_offline_restore_stops_everything_first_and_reports_its_downtime(sandbox, tmp_path):
    env = sandbox
    store = f"local://{tmp_path / 'b'}"
    name = _backup(env, store)
    backed = env.checksum()
    env.load(1 << 20, seed=22)
    p = env.brsm("start", "restore", "--yes", "--config", env.config, "--storage", store, "--name", name, "--offline")
    assert p.returncode == 0, p.stderr[-3000:]
    assert "restore mode: offline (--offline" in p.stderr
    assert "the cluster was down" in p.stdout + p.stderr
    assert env.checksum() == backed
    op = env.ok("ops")[0]["id"]
    events = audit(env, op)
    done = {e["data"]["step"]: e["data"]["facts"] for e in events if e["type"] == "StepCompleted"}
    assert done["STAGED"] == {"staged": False} and done["DOWNLOADED"]["files"] > 0
    assert of_type(events, "RestoredDataProved")[0]["files"] > 0  # re-hashed in place before the start


def test_a_signal_while_staging_leaves_the_cluster_serving_and_rollback_removes_the_staging(sandbox, tmp_path):
    import signal

    env = sandbox
    store = f"local://{tmp_path / 'b'}"
    name = _backup(env, store)
    env.load(1 << 20, seed=23)
    before = env.checksum()
    with PortWatch(service_addrs(str(env.root))) as watch:
        run = started(env, "start", "restore", "--yes", "--config", env.config, "--storage", store, "--name", name, *SLOW)
        run.wait_for("FileRestored", timeout=60)
        assert staging_dirs(env), "files are staged beside the live data"
        run.kill(signal.SIGTERM)
        p = run.finish(timeout=30)
    assert p.returncode == 143, p.stderr[-2000:]
    assert "interrupted by SIGTERM during STAGED, and rolled back" in error_line(p)
    assert watch.windows() == [], "nothing was ever stopped"
    assert env.checksum() == before
    assert staging_dirs(env) == [] and aside_dirs(env) == [] and leases(env) == []
    assert not of_type(audit(env, run.op), "DowntimeBegan")


@pytest.mark.parametrize("tamper", ["append", "new file", "symlink", "byte with mtime put back"])
def test_a_staged_tree_changed_after_its_proof_is_never_started(sandbox, tmp_path, tamper):
    """Killed right after STAGED; someone writes into the staged tree; the resume swaps it in and
    refuses to start it (fingerprint differs, exit 6); the rollback brings the original data back."""
    env = sandbox
    store = f"local://{tmp_path / 'b'}"
    name = _backup(env, store)
    env.load(1 << 20, seed=24)
    before = env.checksum()
    p = env.brsm("start", "restore", "--yes", "--config", env.config, "--storage", store, "--name", name,
                 failpoints="after:STAGED=crash")
    assert p.returncode == 86, p.stderr[-2000:]
    op = str(env.ok("ops")[0]["id"])
    staged = sorted(Path(staging_dirs(env)[0]).rglob("*.sst"))
    assert staged
    if tamper == "append":
        with open(staged[0], "ab") as f:
            f.write(b"x")
    elif tamper == "new file":
        (staged[0].parent / "000999.sst").write_bytes(b"not from the backup")
    elif tamper == "symlink":  # only regular files were fingerprinted: a link passed
        (staged[0].parent / "000998.sst").symlink_to(staged[0])
    else:  # same size, same mtime, same inode: only the ctime tells
        import os

        st = staged[0].stat()
        with open(staged[0], "r+b") as f:
            f.seek(st.st_size // 2)
            b = f.read(1)
            f.seek(st.st_size // 2)
            f.write(bytes([b[0] ^ 0xFF]))
        os.utime(staged[0], ns=(st.st_atime_ns, st.st_mtime_ns))
    p = env.brsm("resume", op)
    assert p.returncode == 6, p.stderr[-2000:]
    assert "not as they were staged and re-hashed" in p.stderr
    events = env.ok("audit", op)["events"]
    assert not [e for e in events if e["type"] == "StepStarted" and e["data"]["step"] == "STARTED"
                and any(x["type"] == "StepCompleted" and x["data"]["step"] == "STARTED" for x in events)]
    st = env.ok("ops")[0]["state"]
    if st != "ROLLED_BACK":
        assert env.ok("rollback", op)["state"] == "ROLLED_BACK"
    assert env.checksum() == before
    assert staging_dirs(env) == [] and aside_dirs(env) == [] and leases(env) == []
    assert cluster.status(str(env.root))["all_up"]


@pytest.mark.parametrize("recovery", ["resume", "rollback"])
def test_a_restore_killed_after_it_started_the_daemons_resumes_or_rolls_back(sandbox, tmp_path, recovery):
    """Found by the sweep (a random kill in STARTED): the daemons the killed run started write into
    the restored data, as they must. The resume must neither re-prove that data (a false "not as
    staged", exit 6, the cluster left down) nor take its own daemons for ones started behind its back;
    the rollback must stop them and bring the original data back."""
    env = sandbox
    store = f"local://{tmp_path / 'b'}"
    name = _backup(env, store)
    backed = env.checksum()
    env.load(1 << 20, seed=25)
    before = env.checksum()
    p = env.brsm("start", "restore", "--yes", "--config", env.config, "--storage", store, "--name", name,
                 failpoints="started:1=crash")
    assert p.returncode == 86, p.stderr[-2000:]
    op = str(env.ok("ops")[0]["id"])
    assert of_type(audit(env, int(op)), "RestoredServicesStarting")
    done = env.ok(recovery, op)
    if recovery == "resume":
        assert done["state"] == "CLEANED"
        assert env.checksum() == backed
        assert done["facts"]["proved"]["how"].startswith("proved before the first start")
    else:
        assert done["state"] == "ROLLED_BACK"
        assert env.checksum() == before
    assert staging_dirs(env) == [] and aside_dirs(env) == [] and leases(env) == []
    assert cluster.status(str(env.root))["all_up"]
