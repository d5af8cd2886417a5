"""The sandbox's nebula.service behaves as Nebula's own: vesoft-inc/nebula (5d43e44)
``scripts/nebula.service`` (start_daemon, stop_daemon, stop_by_pid_file, kill_daemon, restart_daemon,
status_daemon, the driver loop and its final ``exit 0``) and ``scripts/utils.sh`` (is_process_running,
wait_for_exit). Each test names the function it mirrors; if the sandbox drifts, it fails."""
from __future__ import annotations

import os
import signal
import time

import pytest

from brsm.sandbox.hosts import pid_alive

pytestmark = pytest.mark.sandbox


@pytest.fixture
def meta1(mini):
    """meta1 with nothing running at the start of the test (and at its end)."""
    mini.kill_all()
    yield mini
    for name in ("metad", "graphd"):
        pid = mini.pid("meta1", name)
        if pid and pid_alive(pid):
            os.kill(pid, signal.SIGCONT)
    mini.kill_all()


def started(mini, svc: str = "metad") -> int:
    r = mini.svc("meta1", "start", svc)
    assert r.returncode == 0, r.stdout + r.stderr
    pid = mini.pid("meta1", svc)
    assert pid and pid_alive(pid)
    return pid


def test_status_always_exits_0_and_only_its_text_tells(meta1):
    """status_daemon prints "Running as <pid>, Listening on <port>" or "Exited"; the driver then
    ends with ``exit 0`` whatever the daemon does."""
    r = meta1.svc("meta1", "status", "all")
    assert (r.returncode, r.stdout, r.stderr) == (
        0, "[INFO] nebula-metad(sandbox): Exited\n[INFO] nebula-graphd(sandbox): Exited\n", "")
    pid = started(meta1)
    r = meta1.svc("meta1", "status", "metad")
    assert (r.returncode, r.stdout) == (0, f"[INFO] nebula-metad(sandbox): Running as {pid}, Listening on 9559\n")


def test_start_returns_once_daemonized_and_the_daemon_runs_in_the_install_root(meta1):
    """start_daemon: ``cd ${INSTALL_ROOT}`` at the top of the script, then ``Starting …``, the daemon
    (which daemonizes: ProcessUtils::daemonize), ``Done``; the daemon's working directory is the
    install root wherever the script was run from."""
    r = meta1.svc("meta1", "start", "metad", cwd="/")
    assert (r.returncode, r.stdout, r.stderr) == (0, "[INFO] Starting nebula-metad...\n[INFO] Done\n", "")
    pid = meta1.pid("meta1", "metad")
    assert pid and pid_alive(pid)
    assert os.readlink(f"/proc/{pid}/cwd") == meta1.hosts["meta1"].install_dir


def test_start_of_a_running_daemon_is_an_error_and_all_stops_there(meta1):
    """start_daemon: ``ERROR "${daemon_name} already running: $(cat ${pid_file})"; exit 1`` — an exit
    of the whole script, so ``start all`` does not go on to the daemons after it."""
    pid = started(meta1)
    r = meta1.svc("meta1", "start", "metad")
    assert (r.returncode, r.stdout, r.stderr) == (1, "", f"[ERROR] nebula-metad already running: {pid}\n")
    r = meta1.svc("meta1", "start", "all")  # metad comes first and runs: graphd is never started
    assert (r.returncode, r.stderr) == (1, f"[ERROR] nebula-metad already running: {pid}\n")
    assert "nebula-graphd" not in r.stdout
    assert meta1.svc("meta1", "status", "graphd").stdout == "[INFO] nebula-graphd(sandbox): Exited\n"


def test_stop_sends_sigterm_and_returns_without_waiting(meta1):
    """stop_daemon → stop_by_pid_file: ``kill -s TERM <pid>``, then ``Done``; nothing waits for the
    process to exit. A daemon that cannot act on the signal yet (SIGSTOPped) is still running after
    stop returned."""
    pid = started(meta1)
    os.kill(pid, signal.SIGSTOP)
    t0 = time.monotonic()
    r = meta1.svc("meta1", "stop", "metad")
    assert (r.returncode, r.stdout, r.stderr) == (0, "[INFO] Stopping nebula-metad...\n[INFO] Done\n", "")
    assert time.monotonic() - t0 < 3
    assert pid_alive(pid)
    r = meta1.svc("meta1", "status", "metad")
    assert (r.returncode, r.stdout) == (0, f"[INFO] nebula-metad(sandbox): Running as {pid}, Listening on 9559\n")
    os.kill(pid, signal.SIGCONT)  # now it gets the SIGTERM and exits
    meta1.wait(lambda: not pid_alive(pid), what="metad exit after SIGTERM")
    assert meta1.svc("meta1", "status", "metad").stdout == "[INFO] nebula-metad(sandbox): Exited\n"
    r = meta1.svc("meta1", "stop", "metad")  # nothing running: the same lines, exit 0
    assert (r.returncode, r.stdout) == (0, "[INFO] Stopping nebula-metad...\n[INFO] Done\n")


def test_kill_sends_sigkill(meta1):
    """kill_daemon: ``Force killing …`` and ``stop_by_pid_file <pid file> KILL``."""
    pid = started(meta1)
    os.kill(pid, signal.SIGSTOP)  # SIGKILL needs no cooperation
    r = meta1.svc("meta1", "kill", "metad")
    assert (r.returncode, r.stdout) == (0, "[INFO] Force killing nebula-metad...\n[INFO] Done\n")
    meta1.wait(lambda: not pid_alive(pid), 5, what="metad gone after SIGKILL")


def test_restart_is_stop_then_at_most_5s_then_start(meta1):
    """restart_daemon: stop_daemon, wait_daemon_to_exit (utils.sh wait_for_exit, 5 s), start_daemon —
    which fails with "already running" when the daemon did not exit in those 5 s."""
    pid = started(meta1)
    r = meta1.svc("meta1", "restart", "metad")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout == ("[INFO] Stopping nebula-metad...\n[INFO] Done\n"
                        "[INFO] Starting nebula-metad...\n[INFO] Done\n")
    new = meta1.pid("meta1", "metad")
    assert new != pid and pid_alive(new) and not pid_alive(pid)
    os.kill(new, signal.SIGSTOP)
    t0 = time.monotonic()
    r = meta1.svc("meta1", "restart", "metad")
    assert 4.5 <= time.monotonic() - t0 < 15
    assert (r.returncode, r.stderr) == (1, f"[ERROR] nebula-metad already running: {new}\n")


def test_a_missing_config_and_bad_arguments_are_errors(meta1):
    """``[[ -f ${config} ]] || ERROR_AND_EXIT "${config} not found"``; usage on bad arguments, exit 1."""
    r = meta1.svc("storage1", "status", "metad")
    conf = os.path.join(meta1.hosts["storage1"].install_dir, "etc", "nebula-metad.conf")
    assert (r.returncode, r.stderr) == (1, f"[ERROR] {conf} not found\n")
    r = meta1.svc("meta1", "status", "nonsense")
    assert r.returncode == 1 and "Usage:" in r.stdout
