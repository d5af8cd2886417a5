"""SSH faults of `brsm sandbox fault`: connections cut after N bytes, refused logins, closed
connections, slow links, a host going down and coming back. One sandbox (1 meta + 2 storage)."""
from __future__ import annotations

import os
import subprocess
import time

import pytest

from brsm.sandbox.hosts import pid_alive, port_open

from .conftest import brsm, brsm_json, start_sandbox, stop_sandbox

pytestmark = pytest.mark.sandbox

MiB = 2**20


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    root = tmp_path_factory.mktemp("sandbox-ssh")
    sb = start_sandbox(root, "--storage-hosts", "2", "--data-paths", "2")
    try:
        # a file to fetch on storage1
        blob = os.path.join(sb.dir, "hosts", "storage1", "blob")
        with open(blob, "wb") as fh:
            fh.write(os.urandom(2 * MiB))
        sb.blob = blob
        yield sb
    finally:
        stop_sandbox(sb)


def fault(sb, *args: str) -> None:
    brsm("sandbox", "fault", "--dir", sb.dir, *args)


def cat(sb, host: str, path: str, nbytes: int | None = None) -> subprocess.CompletedProcess:
    cmd = f"head -c {nbytes} {path}" if nbytes else f"cat {path}"
    return sb.ssh(host, cmd)


def sftp_get(sb, host: str, remote: str, local: str) -> subprocess.CompletedProcess:
    h = sb.hosts[host]
    argv = ["sftp", "-i", sb.identity, "-o", f"UserKnownHostsFile={sb.known_hosts}", "-o",
            "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "GlobalKnownHostsFile=/dev/null",
            "-P", str(h["ssh_port"]), "-b", "-", f"root@{h['address']}"]
    return subprocess.run(argv, input=f"get {remote} {local}\n".encode(), capture_output=True, timeout=30)


def test_data_paths_option(sandbox):
    dps = sandbox.hosts["storage1"]["data_paths"]
    assert len(dps) == 2 and all(os.path.isdir(p) for p in dps)
    conf = open(os.path.join(sandbox.hosts["storage1"]["install_dir"], "etc", "nebula-storaged.conf")).read()
    assert f"--data_path={dps[0]},{dps[1]}" in conf


def test_drop_after_n_bytes(sandbox, tmp_path):
    fault(sandbox, "ssh", "storage1", "drop", "--after-bytes", "262144")
    st = brsm_json("sandbox", "status", "--dir", sandbox.dir)
    assert st["hosts"][1]["fault"]["ssh"] == "drop"
    # small commands still work: each connection has its own budget
    r = sandbox.ssh("storage1", "echo", "small")
    assert r.returncode == 0 and r.stdout == b"small\n"
    r = cat(sandbox, "storage1", sandbox.blob, 64 * 1024)
    assert r.returncode == 0 and len(r.stdout) == 64 * 1024
    # a transfer larger than N dies mid-way, whatever carries it
    r = cat(sandbox, "storage1", sandbox.blob)
    assert r.returncode != 0 and len(r.stdout) < 262144
    r = sftp_get(sandbox, "storage1", sandbox.blob, str(tmp_path / "got"))
    assert r.returncode != 0
    assert not (tmp_path / "got").exists() or (tmp_path / "got").stat().st_size < 2 * MiB
    # other hosts are untouched
    assert sandbox.ssh("storage2", "true").returncode == 0
    fault(sandbox, "ssh", "storage1", "clear")
    r = cat(sandbox, "storage1", sandbox.blob)
    assert r.returncode == 0 and len(r.stdout) == 2 * MiB
    r = sftp_get(sandbox, "storage1", sandbox.blob, str(tmp_path / "got2"))
    assert r.returncode == 0 and (tmp_path / "got2").stat().st_size == 2 * MiB


def test_refuse_logins(sandbox):
    fault(sandbox, "ssh", "storage2", "refuse")
    r = sandbox.ssh("storage2", "true")
    assert r.returncode == 255 and b"Permission denied" in r.stderr
    assert sandbox.ssh("storage1", "true").returncode == 0
    fault(sandbox, "ssh", "storage2", "clear")
    assert sandbox.ssh("storage2", "true").returncode == 0


def test_close_hang_and_slow(sandbox):
    fault(sandbox, "ssh", "storage1", "close")
    r = sandbox.ssh("storage1", "true")
    assert r.returncode == 255
    fault(sandbox, "ssh", "storage1", "hang")
    t0 = time.monotonic()
    r = sandbox.ssh("storage1", "true", connect_timeout=2)  # also bounds the banner exchange
    assert r.returncode == 255 and b"timed out" in r.stderr
    assert time.monotonic() - t0 < 10
    fault(sandbox, "ssh", "storage1", "slow", "--rate", "256KiB")
    t0 = time.monotonic()
    r = cat(sandbox, "storage1", sandbox.blob, 512 * 1024)
    took = time.monotonic() - t0
    assert r.returncode == 0 and len(r.stdout) == 512 * 1024
    assert took > 1.0, f"512 KiB at 256 KiB/s took only {took:.2f}s"
    fault(sandbox, "ssh", "storage1", "clear")
    assert sandbox.ssh("storage1", "true").returncode == 0


def test_host_down_and_up(sandbox):
    from brsm.sandbox import data
    brsm("sandbox", "load", "--dir", sandbox.dir, "--size", "2MiB", "--spaces", "1")
    before = data.checksum(sandbox.info["meta"])
    h = sandbox.hosts["storage2"]
    fault(sandbox, "host-down", "storage2")
    r = sandbox.ssh("storage2", "true", timeout=5)
    assert r.returncode == 255
    assert not port_open(h["address"], 22) and not port_open(h["address"], 9779)
    st = brsm("sandbox", "status", "--dir", sandbox.dir, "--json", check=False)
    assert st.returncode == 1
    fault(sandbox, "host-up", "storage2")
    assert sandbox.ssh("storage2", "true").returncode == 0
    assert port_open(h["address"], 9779)
    st = brsm_json("sandbox", "status", "--dir", sandbox.dir)
    assert st["all_up"] is True
    assert data.checksum(sandbox.info["meta"]) == before


def test_fault_clear_brings_everything_back(sandbox):
    fault(sandbox, "host-down", "storage1")
    fault(sandbox, "ssh", "storage2", "refuse")
    fault(sandbox, "ssh", "meta1", "drop", "--after-bytes", "100000")
    fault(sandbox, "clear")
    for name in sandbox.hosts:
        assert sandbox.ssh(name, "true").returncode == 0, name
    assert brsm_json("sandbox", "status", "--dir", sandbox.dir)["all_up"] is True


def test_down_with_faults_active_leaves_no_strays(sandbox):
    fault(sandbox, "ssh", "storage1", "drop", "--after-bytes", "100000")
    fault(sandbox, "host-down", "storage2")
    proxy_pid = sandbox.state()["hosts"][1]["fault"]["proxy"]["pid"]
    assert pid_alive(proxy_pid)
    # a session left open over SSH must not survive `down` either
    p = subprocess.Popen(sandbox.ssh_argv("meta1", "sleep", "300"), stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        stop_sandbox(sandbox)  # asserts no process mentions DIR
        assert not pid_alive(proxy_pid)
        p.wait(timeout=10)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
