"""Issue 13, "the cluster left held": a signal, or a createBackup that never answers, ends a run the
way a failure does. brsm runs as a subprocess against the sandbox; a signal is sent once the
journal shows the run inside the step we want; then the exit code, the one error line, the journal
(`brsm audit --json`) and the cluster (snapshots, lease, checkpoint dirs, data) are checked, and the
next run must start at once (no lease left behind)."""
from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from brsm.sandbox import cluster, control
from tests.e2e.conftest import BRSM
from tests.e2e.test_backup_restore import aside_dirs, checkpoint_dirs, leases, snapshots
from tests.e2e.test_faults import assert_clean, meta_http

pytestmark = pytest.mark.sandbox

SLOW = ("--rate-limit", "2MiB/s")  # the sandbox's ~25 MiB of checkpoint files take ~12 s to copy
EXIT_WITHIN = 20.0  # seconds from the signal to the process's exit (rollback included)


RUNS: list["Run"] = []  # every background brsm of this module, stopped at its test's end


@pytest.fixture(autouse=True)
def no_run_left_behind():
    """A test that fails while its brsm still runs (waiting for an event that never came) kills it and
    rolls its operation back: left alone, it held the cluster lease and failed the five tests after
    it on the same sandbox (CI at stop 31)."""
    first = len(RUNS)
    yield
    for run in RUNS[first:]:
        if run.p.poll() is None:
            run.p.kill()
            run.p.communicate()
            if run.op:
                run.env.brsm("rollback", str(run.op), timeout=180)
    del RUNS[first:]


class Run:
    """One `brsm` command in the background, watched through its journal."""

    def __init__(self, env, *args: str, op: int | None = None) -> None:
        self.env = env
        self.db = Path(env.env["BRSM_HOME"]) / "journal.db"
        self.before = self.last_op()  # a new operation has a higher id
        self.op = op
        self.skip = len(self.events()) if op is not None else 0  # what an earlier run journaled
        self.p = subprocess.Popen([*BRSM, *args], env=env.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, stdin=subprocess.DEVNULL)
        RUNS.append(self)
        self.sent = 0.0

    def last_op(self) -> int:
        if not self.db.exists():
            return 0
        with contextlib.closing(sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=5)) as con:
            if not con.execute("SELECT 1 FROM sqlite_master WHERE name = 'operations'").fetchone():
                return 0
            return con.execute("SELECT max(id) FROM operations").fetchone()[0] or 0

    def events(self) -> list[tuple[str, dict]]:
        if not self.db.exists():
            return []
        con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=5)
        try:
            if not con.execute("SELECT 1 FROM sqlite_master WHERE name = 'events'").fetchone():
                return []  # brsm is still creating the journal
            if self.op is None:
                newest = con.execute("SELECT max(id) FROM operations").fetchone()[0] or 0
                if newest <= self.before:
                    return []
                self.op = newest
            return [(t, json.loads(d)) for t, d in con.execute(
                "SELECT type, data FROM events WHERE op_id = ? ORDER BY seq", (self.op,))]
        finally:
            con.close()

    def wait_for(self, what: str, step: str | None = None, timeout: float = 90) -> None:
        """Until the journal holds an event ``what`` (of ``step``), the run being alive."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.p.poll() is None, f"brsm ended early ({self.p.returncode}): {self.p.communicate()}"
            if any(t == what and (step is None or d.get("step") == step) for t, d in self.events()[self.skip:]):
                return
            time.sleep(0.1)
        raise AssertionError(f"no {what} {step or ''} in the journal after {timeout} s: {self.events()[-5:]}")

    def kill(self, sig: int) -> None:
        self.sent = self.sent or time.monotonic()
        self.p.send_signal(sig)

    def finish(self, timeout: float = EXIT_WITHIN) -> subprocess.CompletedProcess:
        try:
            out, err = self.p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            out, err = self.p.communicate()
            raise AssertionError(f"brsm did not exit within {timeout} s of the signal:\n{err[-3000:]}")
        self.seconds = time.monotonic() - self.sent if self.sent else None
        return subprocess.CompletedProcess(self.p.args, self.p.returncode, out, err)


def started(env, *args: str) -> Run:
    run = Run(env, *args)
    run.wait_for("OperationCreated")
    return run


def error_line(p: subprocess.CompletedProcess) -> str:
    """The one `brsm: error:` line, and no hint or traceback after it."""
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    errors = [ln for ln in p.stderr.splitlines() if ln.startswith("brsm: error: ")]
    assert len(errors) == 1, p.stderr[-3000:]
    assert "hint:" not in p.stderr, p.stderr[-3000:]
    return errors[0]


def audit(env, op: int) -> list[dict]:
    return env.ok("audit", str(op))["events"]


def of_type(events: list[dict], t: str) -> list[dict]:
    return [e["data"] for e in events if e["type"] == t]


def state(env, op: int) -> str:
    return next(o["state"] for o in env.ok("ops") if o["id"] == op)


def backup(env, target: Path, *extra: str) -> Run:
    return started(env, "start", "backup", "--config", env.config, "--storage", f"local://{target}", *extra)


def next_backup_starts_at_once(env, target: Path) -> None:
    t0 = time.monotonic()
    p = env.brsm("start", "backup", "--config", env.config, "--storage", f"local://{target}", "--json")
    assert p.returncode == 0, p.stderr[-1500:]
    assert time.monotonic() - t0 < 60
    assert json.loads(p.stdout)["state"] == "CLEANED"


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143)])
def test_signal_during_backup_copy_rolls_back_and_frees_the_cluster(sandbox, tmp_path, sig, code):
    """SIGTERM (systemd stop, kill: nobody at a terminal to resume) during the copy rolls back. Ctrl-C
    keeps what was uploaded (next test); before anything is uploaded it rolls back too
    (tests/cli/test_interrupt_policy.py, and the SIGINT during createBackup below)."""
    env = sandbox
    run = backup(env, tmp_path / "b", *SLOW)
    run.wait_for("FilesPlanned")
    time.sleep(1.0)
    run.kill(sig)
    p = run.finish()
    assert p.returncode == code, p.stderr[-2000:]
    line = error_line(p)
    assert f"operation {run.op} (backup) interrupted by {sig.name} during COPIED, and rolled back" in line, line
    events = audit(env, run.op)
    assert of_type(events, "OperationFailed") == [{"step": "COPIED", "error": f"interrupted by {sig.name}",
                                                   "error_type": "Interrupted", "hint": None, "signal": sig.name}]
    assert of_type(events, "RolledBack") == [{}]
    assert state(env, run.op) == "ROLLED_BACK"
    assert not any((tmp_path / "b").glob("BACKUP_*/*")), "the rollback deletes what was copied"
    assert_clean(env)
    next_backup_starts_at_once(env, tmp_path / "next")


def test_ctrl_c_during_backup_copy_keeps_the_uploads_frees_the_cluster_and_resume_finishes(sandbox, tmp_path):
    """Ctrl-C three hours into a backup used to roll back and delete every uploaded file. Now the lease is
    released (another run can start at once) and the uploads, journaled parts and the snapshot they came
    from stay: `brsm resume` continues from there and the backup verifies in full."""
    env = sandbox
    store = tmp_path / "b"
    run = backup(env, store, *SLOW)
    deadline = time.monotonic() + 90
    while not [t for t, _ in run.events() if t in ("FileCopied", "PartUploaded")]:
        assert time.monotonic() < deadline and run.p.poll() is None, "nothing uploaded"
        time.sleep(0.1)
    time.sleep(1.0)
    run.kill(signal.SIGINT)
    p = run.finish()
    op = run.op
    assert p.returncode == 130, p.stderr[-2000:]
    line = error_line(p)
    assert f"operation {op} (backup) interrupted by SIGINT during COPIED: the cluster is released; " in line, line
    assert (f"already uploaded are kept, with snapshot" in line and f"`brsm resume {op}` continues from there, "
            f"`brsm rollback {op}` removes them and drops the snapshot") in line, line
    events = audit(env, op)
    assert of_type(events, "RolledBack") == [] and state(env, op) == "FAILED"
    assert of_type(events, "LeaseReleased") == [{"why": "kept for a resume after an interruption"}]
    assert not leases(env), "the cluster lease is released at once"
    assert len(snapshots(env)) == 1, "the snapshot the uploads came from stays for the resume"
    kept = [f for f in store.rglob("*") if f.is_file() and "data" in f.parts]
    assert kept, "what was uploaded is still there"
    next_backup_starts_at_once(env, tmp_path / "next")  # the cluster is free for another run meanwhile
    done = env.ok("resume", str(op))
    assert done["state"] == "CLEANED"
    copied = next(d for d in of_type(audit(env, op), "StepCompleted") if d["step"] == "COPIED")["facts"]
    assert copied["skipped_on_resume"] > 0 or copied["bytes_sent"] < copied["bytes"], copied
    p = env.brsm("verify", done["facts"]["backup_name"], "--storage", f"local://{store}", "--full")
    assert p.returncode == 0, p.stderr[-1500:]
    assert_clean(env)


def test_sigint_in_createbackup_drops_the_snapshot_metad_finishes_after(sandbox, tmp_path):
    """SIGINT while metad is inside createBackup (its storaged checkpoints are slow: the snapshot is
    INVALID and writes are blocked). The call is abandoned and journaled; the rollback waits for
    metad to finish that snapshot, then drops it, so it does not come back once metad is done."""
    env = sandbox
    cluster.storage_fault(str(env.root), None, checkpoint_delay=6.0, count=1)
    run = backup(env, tmp_path / "b")
    run.wait_for("SnapshotRequested")
    time.sleep(1.5)
    assert snapshots(env), "metad has recorded its (INVALID) snapshot"
    run.kill(signal.SIGINT)
    p = run.finish()
    assert p.returncode == 130, p.stderr[-2000:]
    assert f"interrupted by SIGINT during SNAPSHOTTED, and rolled back" in error_line(p)
    events = audit(env, run.op)
    assert [d["why"] for d in of_type(events, "CreateBackupAbandoned")] == ["interrupted"]
    assert of_type(events, "OperationFailed")[0]["signal"] == "SIGINT"
    assert len(of_type(events, "SnapshotDropped")) == 1
    time.sleep(2)  # past the checkpoints' delay: a snapshot dropped too early would be back by now
    assert_clean(env)
    next_backup_starts_at_once(env, tmp_path / "next")


def test_signal_with_keep_on_failure_then_during_resume_then_resume_finishes(sandbox, tmp_path):
    env = sandbox
    run = backup(env, tmp_path / "b", "--keep-on-failure", *SLOW)
    run.wait_for("FilesPlanned")
    time.sleep(1.0)
    run.kill(signal.SIGINT)
    p = run.finish()
    op = run.op
    assert p.returncode == 130, p.stderr[-2000:]
    line = error_line(p)
    assert (f"interrupted by SIGINT during COPIED; kept as it was (--keep-on-failure): `brsm resume {op}` "
            f"continues it, `brsm rollback {op}` undoes it") in line, line
    assert state(env, op) == "FAILED"
    assert len(snapshots(env)) == 1 and leases(env), "kept as it was: its snapshot, and its lease until resumed"
    # a signal during `brsm resume` ends it the same way (resume never rolls back by itself)
    run = Run(env, "resume", str(op), op=op)
    run.wait_for("StepStarted", "COPIED")
    time.sleep(1.0)
    run.kill(signal.SIGTERM)
    p = run.finish()
    assert p.returncode == 143, p.stderr[-2000:]
    assert f"interrupted by SIGTERM during COPIED; kept as it was: `brsm resume {op}`" in error_line(p)
    assert [d["signal"] for d in of_type(audit(env, op), "OperationFailed")] == ["SIGINT", "SIGTERM"]
    done = env.ok("resume", str(op))
    assert done["state"] == "CLEANED"
    p = env.brsm("verify", done["facts"]["backup_name"], "--storage", f"local://{tmp_path / 'b'}", "--full")
    assert p.returncode == 0, p.stderr[-1500:]
    assert_clean(env)


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_during_restore_download_puts_the_original_data_back(sandbox, tmp_path, sig, code):
    env = sandbox
    store = f"local://{tmp_path / 'b'}"
    name = env.ok("start", "backup", "--config", env.config, "--storage", store)["facts"]["backup_name"]
    env.load(1 << 20, seed=7)  # the cluster moves on: a restore would change it back
    before = env.checksum()
    # --offline: the download happens with every service stopped (a staged one: test_staged_restore.py)
    run = started(env, "start", "restore", "--yes", "--config", env.config, "--storage", store, "--name", name, *SLOW,
                  "--offline")
    run.wait_for("StepStarted", "DOWNLOADED")
    time.sleep(1.0)
    run.kill(sig)
    p = run.finish(timeout=60)  # the rollback restarts every service
    assert p.returncode == code, p.stderr[-2000:]
    assert (f"operation {run.op} (restore) interrupted by {sig.name} during DOWNLOADED, and rolled back"
            in error_line(p))
    events = audit(env, run.op)
    assert of_type(events, "OperationFailed")[0]["signal"] == sig.name and of_type(events, "RolledBack")
    assert env.checksum() == before, "the original data is back"
    assert aside_dirs(env) == [] and leases(env) == []
    assert cluster.status(str(env.root))["all_up"], "every service runs again"
    next_backup_starts_at_once(env, tmp_path / "next")


def test_second_signal_stops_the_rollback_and_rollback_finishes_it(sandbox, tmp_path):
    """The rollback after a SIGTERM hangs (metad never answers dropSnapshot); a SIGINT stops it there:
    journaled, ROLLING_BACK, and `brsm rollback` finishes it once metad answers again."""
    env = sandbox
    control.set_fault(meta_http(env), rpc="dropSnapshot", hang=True)
    try:
        run = backup(env, tmp_path / "b", *SLOW)
        run.wait_for("FilesPlanned")
        run.kill(signal.SIGTERM)
        run.wait_for("UndoStarted", "SNAPSHOTTED", timeout=EXIT_WITHIN)
        time.sleep(0.5)
        run.p.send_signal(signal.SIGINT)
        p = run.finish()
    finally:
        control.clear_faults(meta_http(env))
    op = run.op
    assert p.returncode == 143, p.stderr[-2000:]  # the first signal's code
    line = error_line(p)
    assert (f"interrupted by SIGTERM during COPIED; SIGINT stopped its rollback before SNAPSHOTTED was undone: "
            f"`brsm rollback {op}` finishes it") in line, line
    fails = of_type(audit(env, op), "OperationFailed")
    assert [(f["signal"], f.get("during_rollback", False)) for f in fails] == [("SIGTERM", False), ("SIGINT", True)]
    assert state(env, op) == "ROLLING_BACK"
    assert env.ok("rollback", str(op))["state"] == "ROLLED_BACK"
    assert_clean(env)


def short_config(env, tmp_path: Path, seconds: int) -> str:
    text = Path(env.config).read_text().replace("[cluster]\n", f"[cluster]\ncreate_backup_timeout = {seconds}\n", 1)
    path = tmp_path / "cluster.toml"
    path.write_text(text)
    return str(path)


def test_createbackup_that_never_answers_is_bounded_noted_and_rolled_back(sandbox, tmp_path):
    env = sandbox
    config = short_config(env, tmp_path, 7)
    control.set_fault(meta_http(env), rpc="createBackup", hang=True)
    try:
        t0 = time.monotonic()
        p = env.brsm("start", "backup", "--config", config, "--storage", f"local://{tmp_path / 'b'}", timeout=60)
        took = time.monotonic() - t0
        assert p.returncode == 5, p.stderr[-2000:]
        assert took < 30, took
        # a note while waiting (non-tty: one line each on stderr), then one error naming metad
        assert f"brsm: waiting on metad at {env.meta}: createBackup has not answered for 5 s" in p.stderr, p.stderr
        assert (f"brsm: error: metad at {env.meta} did not answer createBackup within 7 s "
                "([cluster] create_backup_timeout)") in p.stderr, p.stderr
        op = env.ok("ops")[0]["id"]
        events = audit(env, op)
        assert [d["why"] for d in of_type(events, "CreateBackupAbandoned")] == ["timeout"]
        assert state(env, op) == "ROLLED_BACK" and leases(env) == []  # no 5-minute wait for the next run
    finally:
        control.clear_faults(meta_http(env))
    # Released, the abandoned call goes on in metad and makes a snapshot after brsm has rolled back:
    # the residual case, which `brsm gc` finds and removes.
    deadline = time.monotonic() + 20
    while not snapshots(env) and time.monotonic() < deadline:
        time.sleep(0.2)
    late = snapshots(env)
    if late:
        found = env.ok("gc", "--config", env.config, "--storage", f"local://{tmp_path / 'b'}")
        assert {o["name"] for o in found["orphans"] if o["kind"] == "snapshot"} == set(late)
        env.ok("gc", "--config", env.config, "--storage", f"local://{tmp_path / 'b'}", "--confirm")
    assert_clean(env)
    next_backup_starts_at_once(env, tmp_path / "next")


def test_createbackup_slower_than_the_bound_fails_and_its_late_snapshot_is_dropped(sandbox, tmp_path):
    """metad answers after the bound: the snapshot it is making (INVALID, writes blocked) is waited for
    by the rollback and dropped once finished, so nothing is left when metad is done."""
    env = sandbox
    config = short_config(env, tmp_path, 6)
    cluster.storage_fault(str(env.root), None, checkpoint_delay=9.0, count=1)
    p = env.brsm("start", "backup", "--config", config, "--storage", f"local://{tmp_path / 'b'}", timeout=60)
    assert p.returncode == 5, p.stderr[-2000:]
    assert f"metad at {env.meta} did not answer createBackup within 6 s" in p.stderr
    assert "(INVALID) for the createBackup brsm gave up on" in p.stderr, p.stderr  # the rollback said why it waits
    op = env.ok("ops")[0]["id"]
    events = audit(env, op)
    assert len(of_type(events, "SnapshotDropped")) == 1 and state(env, op) == "ROLLED_BACK"
    time.sleep(1)
    assert_clean(env)
    assert checkpoint_dirs(env) == []


# -- issue 14: a lost lease stops the run ------------------------------------------------------------
def _short_lease_config(env, tmp_path: Path, ttl: int = 10) -> str:
    """The sandbox's cluster.toml with `[cluster] lease_ttl`: refreshed every ttl/5 s."""
    text = Path(env.config).read_text().replace("[cluster]\n", f"[cluster]\nlease_ttl = {ttl}\n", 1)
    path = tmp_path / "short-lease.toml"
    path.write_text(text)
    return str(path)


def _lost_line(p: subprocess.CompletedProcess) -> str:
    """The one error line of a run that lost its lease; its hint says how to go on."""
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    errors = [ln for ln in p.stderr.splitlines() if ln.startswith("brsm: error: ")]
    assert len(errors) == 1 and "\nhint: " in p.stderr, p.stderr[-3000:]
    return errors[0]


def _take_over(env, who: str = "eve@elsewhere") -> Path:
    """Another run's holder.json in brsm's lease dir (as a brsm that judged it stale would write)."""
    lease = Path(leases(env)[0]) / "holder.json"
    info = json.loads(lease.read_text())
    info.update(op_id=999, ref="ffffffffffff-999", who=who, machine="elsewhere", pid=1, expires=time.time() + 3600)
    tmp = lease.with_suffix(".tmp")
    tmp.write_text(json.dumps(info))
    tmp.replace(lease)
    return lease.parent


@pytest.mark.parametrize("how", ["taken_over", "expired"])
def test_a_lost_lease_stops_a_backup_within_one_refresh_and_resume_finishes_it(sandbox, tmp_path, how):
    """restic's rule: the run's lease taken over by another holder, or not refreshable until it would
    expire (holder.json jammed: a directory in its place), stops the copy within one refresh period
    (ttl 10 s: every 2 s), journals LeaseLost naming the holder, keeps the operation (never rolled back
    by itself: the cluster may be another run's now), exits 3; resume after the holder is gone
    finishes it and the backup verifies."""
    env = sandbox
    cfg = _short_lease_config(env, tmp_path)
    store = f"local://{tmp_path / 'b'}"
    run = started(env, "start", "backup", "--config", cfg, "--storage", store, *SLOW)
    run.wait_for("StepStarted", "COPIED")
    time.sleep(0.5)
    run.sent = time.monotonic()
    if how == "taken_over":
        lease_dir = _take_over(env)
    else:
        lease_dir = Path(leases(env)[0])
        (lease_dir / "holder.json").unlink()
        (lease_dir / "holder.json").mkdir()
    p = run.finish(timeout=30)
    assert p.returncode == 3, p.stderr[-2000:]
    line = _lost_line(p)
    assert f"operation {run.op} lost its cluster lease" in line and "was not rolled back" in line
    if how == "taken_over":
        assert run.seconds < 2 + 3, run.seconds  # one refresh period, plus the exit
        assert "operation 999 of journal ffffffffffff (backup) by eve@elsewhere" in line
    else:
        assert run.seconds < 10, run.seconds  # before the 10 s ttl ran out since the last good refresh
        assert "not refreshed for" in line
    events = audit(env, run.op)
    lost = of_type(events, "LeaseLost")
    assert len(lost) == 1 and (lost[0]["holder_ref"] == "ffffffffffff-999") == (how == "taken_over")
    assert of_type(events, "OperationFailed")[-1]["error_type"] == "LeaseLost"
    assert not of_type(events, "RollbackStarted") and state(env, run.op) == "FAILED"
    copied_before = len(of_type(events, "FileCopied"))
    time.sleep(3)  # nothing more is copied: the run is over
    assert len(of_type(audit(env, run.op), "FileCopied")) == copied_before
    # while the other holder is there, resume waits its turn
    if how == "taken_over":
        p = env.brsm("resume", str(run.op))
        assert p.returncode == 3 and "locked by operation 999" in p.stderr, p.stderr[-1500:]
    import shutil
    shutil.rmtree(lease_dir)  # the other run is gone (or the jam cleared by hand)
    done = env.ok("resume", str(run.op))
    assert done["state"] == "CLEANED"
    p = env.brsm("verify", done["facts"]["backup_name"], "--storage", store, "--full")
    assert p.returncode == 0, p.stderr[-1500:]
    assert leases(env) == [] and snapshots(env) == []


def test_a_lease_taken_over_during_a_restore_stops_it_and_rollback_puts_the_data_back(sandbox, tmp_path):
    env = sandbox
    cfg = _short_lease_config(env, tmp_path)
    store = f"local://{tmp_path / 'b'}"
    name = env.ok("start", "backup", "--config", cfg, "--storage", store)["facts"]["backup_name"]
    env.load(1 << 20, seed=11)
    before = env.checksum()
    run = started(env, "start", "restore", "--yes", "--config", cfg, "--storage", store, "--name", name, *SLOW, "--offline")
    run.wait_for("StepStarted", "DOWNLOADED")
    time.sleep(1.0)
    run.sent = time.monotonic()
    lease_dir = _take_over(env)
    p = run.finish(timeout=30)
    assert p.returncode == 3 and run.seconds < 5, (run.seconds, p.stderr[-2000:])
    assert f"operation {run.op} lost its cluster lease" in _lost_line(p)
    events = audit(env, run.op)
    assert of_type(events, "LeaseLost") and not of_type(events, "RollbackStarted")
    import shutil
    shutil.rmtree(lease_dir)
    done = env.ok("rollback", str(run.op))
    assert done["state"] == "ROLLED_BACK"
    assert env.checksum() == before and aside_dirs(env) == [] and leases(env) == []
    assert cluster.status(str(env.root))["all_up"]
