"""Restore and cluster identity end to end (issue 12): brsm through its CLI, the sandbox following
Nebula's rules — metad on the restored (fresh) meta data makes a new cluster id, a storaged with
another id in <install>/cluster.id is refused (E_WRONGCLUSTER) and never listens.

The checks ask metad from outside brsm: nebula3's generated MetaService client straight at the
sandbox's metad, and the files on the hosts."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from nebula3.common import ttypes as common
from nebula3.fbthrift.protocol import TBinaryProtocol
from nebula3.fbthrift.transport import TSocket, TTransport
from nebula3.meta import MetaService
from nebula3.meta import ttypes as meta

from brsm.failpoints import CRASH_EXIT
from brsm.sandbox import control

pytestmark = pytest.mark.sandbox


def list_storage_hosts(addr: str) -> dict[str, str]:
    """listHosts(STORAGE) over a plain nebula3 MetaService client: {"ip:port": "ONLINE"|"OFFLINE"}."""
    host, _, port = addr.rpartition(":")
    sock = TSocket.TSocket(host, int(port))
    sock.setTimeout(10_000)
    trans = TTransport.TBufferedTransport(sock)
    trans.open()
    try:
        client = MetaService.Client(TBinaryProtocol.TBinaryProtocol(trans))
        resp = client.listHosts(meta.ListHostsReq(type=meta.ListHostType.STORAGE))
    finally:
        trans.close()
    assert resp.code == common.ErrorCode.SUCCEEDED
    return {f"{h.hostAddr.host}:{h.hostAddr.port}": meta.HostStatus._VALUES_TO_NAMES[h.status] for h in resp.hosts}


def metad_cluster_id(env) -> int:
    meta1 = next(h for h in env.info["hosts"] if h["name"] == "meta1")
    return control.status((meta1["address"], 19559))["cluster_id"]


def storage_hosts(env) -> list[dict]:
    return [h for h in env.info["hosts"] if "storage" in h["roles"]]


def cluster_id_file(h: dict) -> Path:
    return Path(h["install_dir"]) / "cluster.id"


def read_id(p: Path) -> int:
    raw = p.read_bytes()
    assert len(raw) == 8, raw  # 8 bytes in the machine's byte order (FileBasedClusterIdMan)
    return int.from_bytes(raw, sys.byteorder, signed=True)


def leftovers(env) -> list[str]:
    return sorted(str(p) for h in env.info["hosts"] for pat in ("cluster.id.brsm_old_*", ".cluster.id.brsm_absent_*")
                  for p in Path(h["install_dir"]).glob(pat))


def wait_all_online(env, timeout: float = 15.0) -> dict[str, str]:
    import time
    want = {f"{h['address']}:9779" for h in storage_hosts(env)}
    deadline = time.monotonic() + timeout
    while True:
        listed = list_storage_hosts(env.meta)
        if all(listed.get(a) == "ONLINE" for a in want) or time.monotonic() > deadline:
            return listed
        time.sleep(0.2)


def test_after_a_restore_every_storaged_is_online_with_metads_cluster_id(sandbox, tmp_path):
    env = sandbox
    target = tmp_path / "backups"
    id_before = metad_cluster_id(env)
    assert all(read_id(cluster_id_file(h)) == id_before for h in storage_hosts(env))
    name = env.ok("start", "backup", "--config", env.config, "--storage", f"local://{target}")["facts"]["backup_name"]
    at_backup = env.checksum()
    env.load(2 << 20, seed=11)
    assert env.checksum() != at_backup

    res = env.ok("start", "restore", "--yes", "--config", env.config, "--storage", f"local://{target}", "--name", name,
                 "--service-timeout", "60")
    assert res["state"] == "CLEANED"
    assert env.checksum() == at_backup

    listed = list_storage_hosts(env.meta)
    assert listed == {f"{h['address']}:9779": "ONLINE" for h in storage_hosts(env)}
    id_after = metad_cluster_id(env)
    assert id_after != id_before  # metad started on the backup's meta data: fresh, a new id
    for h in storage_hosts(env):
        assert read_id(cluster_id_file(h)) == id_after, h["name"]
    meta1 = next(h for h in env.info["hosts"] if h["name"] == "meta1")
    assert not cluster_id_file(meta1).exists()  # graphd keeps none
    assert leftovers(env) == []
    moved = {c["host"]: c["state"] for c in res["facts"]["cluster_ids"]}
    assert moved == {**{h["address"]: "moved" for h in storage_hosts(env)}, meta1["address"]: "absent"}


def test_a_storaged_that_cannot_come_up_fails_started_and_the_rollback_brings_the_data_back(sandbox, tmp_path):
    env = sandbox
    target = tmp_path / "backups"
    name = env.ok("start", "backup", "--config", env.config, "--storage", f"local://{target}")["facts"]["backup_name"]
    env.load(2 << 20, seed=12)
    before = env.checksum()
    id_before = metad_cluster_id(env)
    s1 = storage_hosts(env)[0]
    # the run dies right before STARTED: data, meta and cluster.id files are in place for the restored cluster
    p = env.brsm("start", "restore", "--yes", "--config", env.config, "--storage", f"local://{target}", "--name", name,
                 "--service-timeout", "10", failpoints="before:STARTED=crash")
    assert p.returncode == CRASH_EXIT, p.stderr[-2000:]
    op = env.ok("ops")[0]
    assert op["kind"] == "restore" and op["state"] == "META_RESTORED"
    op_id = str(op["op_id"] if "op_id" in op else op["id"])
    # ... and on storage1 something leaves another cluster's id where storaged looks for it
    cluster_id_file(s1).write_bytes((metad_cluster_id(env) + 1).to_bytes(8, sys.byteorder, signed=True))

    p = env.brsm("resume", op_id, "--json")
    out = json.loads(p.stdout)
    assert p.returncode == out["exit_code"] == 5, out
    assert out["error"].startswith("storaged did not start on 1 of 3 host(s): ")
    assert f"{s1['address']}: storaged did not come up within 10 s: running as pid" in out["error"]
    assert "not listening on port 9779" in out["error"] and "cluster.id" in out["hint"]
    audit = env.ok("audit", op_id)
    events = audit["events"] if isinstance(audit, dict) else audit
    assert not any(e["type"] == "StepCompleted" and e["data"].get("step") == "STARTED" for e in events)
    assert not any(e["type"] == "StepStarted" and e["data"].get("step") == "CLEANED" for e in events)
    assert any(Path(dp).parent.glob("*/nebula_brsm_old_*") for dp in s1["data_paths"])  # the original, still aside

    res = env.ok("rollback", op_id)
    assert res["state"] == "ROLLED_BACK"
    assert env.checksum() == before
    assert metad_cluster_id(env) == id_before
    assert wait_all_online(env) == {f"{h['address']}:9779": "ONLINE" for h in storage_hosts(env)}
    for h in storage_hosts(env):
        assert read_id(cluster_id_file(h)) == id_before, h["name"]  # the originals back, the stray one gone
    assert leftovers(env) == []
    assert not [str(p) for h in env.info["hosts"] for dp in h["data_paths"] for p in Path(dp).parent.glob("nebula_brsm_old_*")]
    assert json.loads(env.brsm("ops", "--json").stdout)[0]["state"] == "ROLLED_BACK"
