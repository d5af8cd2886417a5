"""Without OpenSSH's sshd the hosts run an asyncssh server: same keys, same behaviour for clients
(exec with exit codes and binary streams, SFTP, nebula.service, refused logins, host down/up)."""
from __future__ import annotations

import os

import pytest

from .conftest import brsm, brsm_json, start_sandbox, stop_sandbox

pytestmark = pytest.mark.sandbox


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    root = tmp_path_factory.mktemp("sandbox-asyncssh")
    sb = start_sandbox(root, "--storage-hosts", "1", env={"BRSM_SANDBOX_SSHD": "asyncssh"})
    try:
        yield sb
    finally:
        stop_sandbox(sb)


def test_fallback_server_is_used(sandbox):
    assert {h["sshd"]["kind"] for h in sandbox.state()["hosts"]} == {"asyncssh"}


def test_exec_streams_and_exit_codes(sandbox):
    r = sandbox.ssh("storage1", "head -c 3000000 /dev/zero")
    assert r.returncode == 0 and len(r.stdout) == 3000000
    assert sandbox.ssh("storage1", "exit 7").returncode == 7
    r = sandbox.ssh("storage1", sandbox.service_script("storage1"), "restart", "storaged", timeout=40)
    assert r.returncode == 0 and b"Starting nebula-storaged" in r.stdout
    r = sandbox.ssh("storage1", sandbox.service_script("storage1"), "status", "storaged")
    assert r.returncode == 0 and b"Running as" in r.stdout


def test_refuse_and_host_down_up(sandbox):
    brsm("sandbox", "fault", "--dir", sandbox.dir, "ssh", "storage1", "refuse")
    r = sandbox.ssh("storage1", "true")
    assert r.returncode == 255 and b"Permission denied" in r.stderr
    brsm("sandbox", "fault", "--dir", sandbox.dir, "host-down", "storage1")
    assert sandbox.ssh("storage1", "true", timeout=5).returncode == 255
    brsm("sandbox", "fault", "--dir", sandbox.dir, "host-up", "storage1")   # no env: keeps asyncssh
    assert sandbox.ssh("storage1", "true").returncode == 0
    assert sandbox.state()["hosts"][1]["sshd"]["kind"] == "asyncssh"
    assert brsm_json("sandbox", "status", "--dir", sandbox.dir)["all_up"] is True
