"""A storaged with a custom ``--cluster_id_path`` (MetaClient.cpp: where it keeps metad's cluster id,
default ``cluster.id`` in its working dir): the restore must set aside that file, not
``<install>/cluster.id``, or the restored metad's new cluster id meets the old one there and every
storaged is refused (E_WRONGCLUSTER, HBProcessor.cpp) and never comes up."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from brsm.sandbox import cluster, control
from brsm.sandbox.layout import port_open
from brsm.sandbox.hosts import pid_alive, run_service
from tests.e2e.conftest import running_sandbox
from tests.e2e.test_backup_restore import leases, snapshots

pytestmark = pytest.mark.sandbox


def read_id(p: Path) -> int:
    raw = p.read_bytes()
    assert len(raw) == 8, raw
    return int.from_bytes(raw, sys.byteorder, signed=True)


def test_restore_sets_aside_the_cluster_id_where_the_flagfile_puts_it(tmp_path_factory, tmp_path):
    root = tmp_path_factory.mktemp("cidp")
    with running_sandbox(root, tmp_path_factory.mktemp("home"), data_paths=1, load=2 << 20) as env:
        state = cluster.load_state(str(root))
        custom = {}
        for hj in state["hosts"]:
            h = cluster.Host.from_json(hj)
            if "storaged" not in h.services:
                continue
            ids = Path(h.install_dir).parent / "ids"
            ids.mkdir()
            pid = h.service_pid("storaged")
            assert pid and run_service(h, "stop", "storaged").returncode == 0
            deadline = time.monotonic() + 20  # nebula.service stop signals and returns at once
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not pid_alive(pid)
            (Path(h.install_dir) / "cluster.id").rename(ids / "storaged.id")
            conf = Path(h.conf("storaged"))
            conf.write_text(conf.read_text() + f"--cluster_id_path={ids / 'storaged.id'}\n")
            assert run_service(h, "start", "storaged").returncode == 0
            custom[h.address] = ids / "storaged.id"
        deadline = time.monotonic() + 30
        while not all(port_open(a, 9779) for a in custom) and time.monotonic() < deadline:
            time.sleep(0.2)
        meta1 = next(h for h in env.info["hosts"] if h["name"] == "meta1")
        id_before = control.status((meta1["address"], 19559))["cluster_id"]
        assert {read_id(p) for p in custom.values()} == {id_before}

        target = f"local://{tmp_path / 'b'}"
        res = env.ok("start", "backup", "--config", env.config, "--storage", target)
        name = res["facts"]["backup_name"]
        at_backup = env.checksum()
        env.load(1 << 20, seed=8)
        res = env.ok("start", "restore", "--yes", "--config", env.config, "--storage", target, "--name", name,
                     "--service-timeout", "60")
        assert res["state"] == "CLEANED" and env.checksum() == at_backup
        id_after = control.status((meta1["address"], 19559))["cluster_id"]
        assert id_after != id_before
        for addr, p in custom.items():
            assert read_id(p) == id_after, addr  # the storaged took the restored metad's id there
            assert sorted(x.name for x in p.parent.iterdir()) == ["storaged.id"]  # nothing left beside it
        moved = {c["host"]: c["state"] for c in res["facts"]["cluster_ids"]}
        assert all(moved[a] == "moved" for a in custom), moved
        assert snapshots(env) == [] and leases(env) == []
