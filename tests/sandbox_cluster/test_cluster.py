"""`brsm sandbox up/status/load/checksum/down`, SSH to the hosts, nebula.service over SSH, and the
metad/storaged/store faults. One sandbox (1 meta + 3 storage hosts) for the whole module."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import tomllib

import pytest

from brsm.sandbox import control
from brsm.sandbox.hosts import pid_alive, pids_mentioning, port_open, read_pid_file, wait_for

from .conftest import brsm, brsm_json

pytestmark = pytest.mark.sandbox


def test_up_is_fast_and_complete(sandbox):
    print(f"up took {sandbox.up_seconds:.2f}s (internal {sandbox.state()['up_seconds']}s)")
    assert sandbox.up_seconds < 15
    info = sandbox.info
    assert info["started"] is True
    assert [h["name"] for h in info["hosts"]] == ["meta1", "storage1", "storage2", "storage3"]
    assert info["hosts"][0]["roles"] == ["meta", "graph"]
    assert all(h["roles"] == ["storage"] for h in info["hosts"][1:])
    k = info["hosts"][0]["address"].split(".")[1]
    assert info["meta"] == f"127.{k}.0.11:9559"
    assert [h["address"] for h in info["hosts"][1:]] == [f"127.{k}.0.{100 + i}" for i in (1, 2, 3)]
    for store, secret_key in (("s3", "secret_access_key"), ("oss", "access_key_secret")):
        s = info[store]
        assert s["endpoint"].startswith("http://127.") and s["bucket"] and s["access_key_id"] and s[secret_key]
    st = sandbox.state()
    assert st["state"] == "up"
    for h in st["hosts"]:
        assert pid_alive(h["sshd"]["pid"])
        assert h["sshd"]["kind"] == "openssh"


def test_cluster_toml(sandbox):
    with open(sandbox.info["config"], "rb") as fh:
        cfg = tomllib.load(fh)
    assert cfg["cluster"]["name"] == "sandbox"
    assert cfg["cluster"]["meta"] == [sandbox.info["meta"]]
    ssh = cfg["ssh"]
    assert ssh["user"] == "root" and ssh["port"] == 22
    assert ssh["identity"] == os.path.join(sandbox.dir, "ssh", "id_ed25519")
    assert ssh["known_hosts"] == os.path.join(sandbox.dir, "ssh", "known_hosts")
    assert len(cfg["hosts"]) == 4
    for h, want in zip(cfg["hosts"], sandbox.info["hosts"]):
        assert set(h) == {"address", "ssh_host", "ssh_port", "install_dir", "data_paths"}
        assert h["address"] == h["ssh_host"] == want["address"]
        assert h["install_dir"] == os.path.join(sandbox.dir, "hosts", want["name"], "install")
        assert os.path.isfile(os.path.join(h["install_dir"], "scripts", "nebula.service"))
        assert all(os.path.isdir(p) for p in h["data_paths"])
    st = cfg["storage"]
    assert st["default"] == "s3://brsm-backups/sandbox"
    assert st["s3_endpoint"] == sandbox.info["s3"]["endpoint"]
    assert st["s3_region"] == "us-east-1"
    assert st["oss_endpoint"] == sandbox.info["oss"]["endpoint"]


def test_credentials_env(sandbox):
    path = os.path.join(sandbox.dir, "credentials.env")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    text = open(path).read()
    assert f"export AWS_ACCESS_KEY_ID={sandbox.info['s3']['access_key_id']}" in text
    assert f"export AWS_SECRET_ACCESS_KEY={sandbox.info['s3']['secret_access_key']}" in text
    assert f"export OSS_ACCESS_KEY_ID={sandbox.info['oss']['access_key_id']}" in text
    assert f"export OSS_ACCESS_KEY_SECRET={sandbox.info['oss']['access_key_secret']}" in text


def test_ssh_with_strict_host_key_checking(sandbox):
    for name in sandbox.hosts:
        r = sandbox.ssh(name, "echo", "hello-from", name)
        assert r.returncode == 0, r.stderr
        assert r.stdout.decode().strip() == f"hello-from {name}"
    # the venv is on PATH of remote commands
    r = sandbox.ssh("storage1", "command -v python; echo $BRSM_SANDBOX_DIR")
    assert os.path.dirname(os.path.realpath(r.stdout.decode().split()[0])) and sandbox.dir in r.stdout.decode()


def test_unknown_host_key_is_rejected(sandbox, tmp_path):
    # a known_hosts that names another key for storage1: ssh must refuse to connect
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    h = sandbox.hosts["storage1"]
    kt, b64 = open(f"{other}.pub").read().split()[:2]
    kh = tmp_path / "known_hosts"
    kh.write_text(f"{h['address']},[{h['address']}]:{h['ssh_port']} {kt} {b64}\n")
    r = sandbox.ssh("storage1", "true", known_hosts=str(kh))
    assert r.returncode == 255
    assert b"HOST IDENTIFICATION HAS CHANGED" in r.stderr or b"Host key verification failed" in r.stderr
    # and an empty known_hosts (unknown host) is refused too with StrictHostKeyChecking=yes
    empty = tmp_path / "empty"
    empty.write_text("")
    r = sandbox.ssh("storage1", "true", known_hosts=str(empty))
    assert r.returncode == 255 and b"Host key verification failed" in r.stderr


def test_service_status_over_ssh(sandbox):
    r = sandbox.ssh("meta1", sandbox.service_script("meta1"), "status", "all")
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout.decode()
    assert "[INFO] nebula-metad(" in out and "Listening on 9559" in out and "Listening on 9669" in out
    r = sandbox.ssh("storage2", sandbox.service_script("storage2"), "status", "storaged")
    assert r.returncode == 0 and "Running as" in r.stdout.decode() and "Listening on 9779" in r.stdout.decode()


def test_load_changes_checksum(sandbox):
    before = brsm_json("sandbox", "checksum", "--dir", sandbox.dir)["spaces"]
    rep = brsm_json("sandbox", "load", "--dir", sandbox.dir, "--size", "3MiB", "--spaces", "2")
    assert rep["bytes"] == 3 * 2**20 and set(rep["spaces"]) == {"space1", "space2"}
    after = brsm_json("sandbox", "checksum", "--dir", sandbox.dir)["spaces"]
    assert set(after) == {"space1", "space2"} and after != before
    rep = brsm_json("sandbox", "load", "--dir", sandbox.dir, "--size", "1MiB", "--spaces", "2",
                    "--while-writing", "1")
    assert rep["background_writer"]["ok"] > 0 and rep["background_writer"]["refused"] == 0
    again = brsm_json("sandbox", "checksum", "--dir", sandbox.dir)["spaces"]
    assert again["space1"] != after["space1"] and again["space2"] != after["space2"]


def test_stop_and_start_storaged_over_ssh_keeps_data(sandbox):
    from brsm.sandbox import data
    before = data.checksum(sandbox.info["meta"])
    assert before, "needs the data of test_load_changes_checksum"
    h = sandbox.hosts["storage1"]
    pid_file = os.path.join(h["install_dir"], "pids", "nebula-storaged.pid")
    pid = read_pid_file(pid_file)
    assert pid_alive(pid)
    r = sandbox.ssh("storage1", sandbox.service_script("storage1"), "stop", "storaged", timeout=20)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.decode() == "[INFO] Stopping nebula-storaged...\n[INFO] Done\n"  # signals, does not wait
    assert wait_for(lambda: not pid_alive(pid) and not port_open(h["address"], 9779), 15)
    assert not os.path.exists(pid_file)
    r = sandbox.ssh("storage1", sandbox.service_script("storage1"), "status", "storaged")
    assert r.returncode == 0 and r.stdout.decode() == "[INFO] nebula-storaged(sandbox): Exited\n"
    st = brsm("sandbox", "status", "--dir", sandbox.dir, check=False)
    assert st.returncode == 1 and "DOWN" in st.stdout
    r = sandbox.ssh("storage1", sandbox.service_script("storage1"), "start", "storaged", timeout=40)
    assert r.returncode == 0, r.stdout + r.stderr
    new_pid = read_pid_file(pid_file)
    assert pid_alive(new_pid) and new_pid != pid  # forked: listening comes later
    assert wait_for(lambda: port_open(h["address"], 9779), 30)
    control.wait_running((h["address"], 19779))
    assert data.checksum(sandbox.info["meta"]) == before


def test_restart_over_ssh_returns_promptly(sandbox):
    import time
    t0 = time.monotonic()
    r = sandbox.ssh("storage3", sandbox.service_script("storage3"), "restart", "storaged", timeout=40)
    assert r.returncode == 0, r.stdout + r.stderr
    assert time.monotonic() - t0 < 15
    assert "Stopping nebula-storaged" in r.stdout.decode() and "Starting nebula-storaged" in r.stdout.decode()
    h = sandbox.hosts["storage3"]
    assert wait_for(lambda: port_open(h["address"], 9779), 30)


def test_up_again_reports_running(sandbox):
    info = brsm_json("sandbox", "up", "--dir", sandbox.dir)
    assert info["started"] is False and info["status"]["all_up"] is True
    assert info["meta"] == sandbox.info["meta"]


def test_status_json(sandbox):
    st = brsm_json("sandbox", "status", "--dir", sandbox.dir)
    assert st["all_up"] is True
    assert {h["name"] for h in st["hosts"]} == set(sandbox.hosts)
    assert st["hosts"][0]["services"]["metad"]["up"] and st["hosts"][0]["services"]["graphd"]["up"]
    assert st["stores"]["s3"]["up"] and st["stores"]["oss"]["up"]


def test_meta_fault(sandbox):
    from nebula3.meta import ttypes as meta
    brsm("sandbox", "fault", "--dir", sandbox.dir, "meta", "createBackup", "--code", "-24", "--count", "1")
    with control.MetaClient(sandbox.info["meta"]) as mc:
        resp = mc.createBackup(meta.CreateBackupReq())
        assert resp.code == -24
    brsm("sandbox", "fault", "--dir", sandbox.dir, "meta", "listSpaces", "--code", "-2068", "--count", "-1")
    with control.MetaClient(sandbox.info["meta"]) as mc:
        assert mc.listSpaces(meta.ListSpacesReq()).code == -2068
        assert mc.listSpaces(meta.ListSpacesReq()).code == -2068
    brsm("sandbox", "fault", "--dir", sandbox.dir, "clear")
    with control.MetaClient(sandbox.info["meta"]) as mc:
        assert mc.listSpaces(meta.ListSpacesReq()).code == 0


def test_checkpoint_and_store_faults_are_set_and_cleared(sandbox):
    brsm("sandbox", "fault", "--dir", sandbox.dir, "checkpoint", "storage2", "--count", "1")
    brsm("sandbox", "fault", "--dir", sandbox.dir, "store", "s3", "--error", "503", "--count", "2")
    brsm("sandbox", "fault", "--dir", sandbox.dir, "store", "oss", "--throttle", "1MiB", "--quota", "10MiB")
    shown = brsm_json("sandbox", "fault", "--dir", sandbox.dir, "show")
    assert shown["storaged"]["storage2"]["faults"]
    assert [f["kind"] for f in shown["stores"]["s3"]["active"]] == ["error"]
    assert {f["kind"] for f in shown["stores"]["oss"]["active"]} == {"throttle", "quota"}
    # the S3 endpoint really answers 503 now (no retries: we want to see the first answer)
    import boto3
    from botocore.config import Config
    from botocore.exceptions import ClientError
    s3 = sandbox.info["s3"]
    client = boto3.client("s3", endpoint_url=s3["endpoint"], aws_access_key_id=s3["access_key_id"],
                          aws_secret_access_key=s3["secret_access_key"], region_name="us-east-1",
                          config=Config(retries={"total_max_attempts": 1}))
    for _ in range(2):
        with pytest.raises(ClientError) as ei:
            client.head_bucket(Bucket=s3["bucket"])
        assert ei.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    client.head_bucket(Bucket=s3["bucket"])  # count exhausted
    brsm("sandbox", "fault", "--dir", sandbox.dir, "clear")
    shown = brsm_json("sandbox", "fault", "--dir", sandbox.dir, "show")
    assert not shown["storaged"]["storage2"]["faults"]
    assert not shown["stores"]["s3"]["active"] and not shown["stores"]["oss"]["active"]


def test_down_leaves_no_strays_and_status_reports_down(sandbox):
    rep = brsm_json("sandbox", "down", "--dir", sandbox.dir)
    assert rep["strays_killed"] == []
    assert pids_mentioning(sandbox.dir) == []
    for h in sandbox.state()["hosts"]:
        assert not pid_alive(h["sshd"]["pid"])
        assert not port_open(h["address"], 22)
    r = brsm("sandbox", "status", "--dir", sandbox.dir, "--json", check=False)
    assert r.returncode == 1
    st = json.loads(r.stdout)
    assert st["all_up"] is False and st["any_up"] is False
    assert not any(s["up"] for h in st["hosts"] for s in h["services"].values())
    assert not any(h["ssh"]["up"] for h in st["hosts"])
    assert os.path.isdir(sandbox.dir)
