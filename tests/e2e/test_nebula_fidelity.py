"""brsm against a sandbox shaped like real 3.x deployments (issue 12): no nebula-agent, three metads,
two data paths per storaged. Topology then comes from listHosts + getMetaDirInfo + flagfiles."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from nebula3.meta import ttypes as meta

from brsm.sandbox import control
from tests.e2e.conftest import running_sandbox

pytestmark = pytest.mark.sandbox


@pytest.fixture(scope="module")
def sb(tmp_path_factory):
    with running_sandbox(tmp_path_factory.mktemp("noagents"), tmp_path_factory.mktemp("home"),
                         meta_hosts=3, agents=False, load=6 << 20, seed=5) as env:
        yield env


def test_without_agents_listcluster_fails_and_brsm_round_trips(sb, tmp_path):
    with control.MetaClient(sb.meta) as c:
        assert c.call("listCluster", meta.ListClusterInfoReq()).code == -2072  # E_LIST_CLUSTER_NO_AGENT_FAILURE
    store = f"local://{tmp_path / 'b'}"
    before = sb.checksum()
    p = sb.brsm("start", "backup", "--config", sb.config, "--storage", store)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "listHosts + getMetaDirInfo + storaged flagfiles" in p.stdout + p.stderr  # says which way, once
    name = next((tmp_path / "b").iterdir()).name
    manifest = json.loads((tmp_path / "b" / name / "brsm-manifest.json").read_text())
    assert manifest["topology"]["nebula_version"] == "3.8.0"
    assert manifest["topology"]["source"].startswith("listHosts")
    assert [len(s["data_paths"]) for s in manifest["topology"]["storage"]] == [2, 2, 2]
    assert len(manifest["topology"]["meta"]) == 3 and all(m["root"] for m in manifest["topology"]["meta"])
    sb.load(2 << 20, seed=9)
    assert sb.checksum() != before
    sb.ok("start", "restore", "--config", sb.config, "--storage", store, "--name", name)
    assert sb.checksum() == before


def test_a_nebula_br_backup_restores_exactly(sb, tmp_path):
    """What nebula-br writes: `<NAME>.meta` (no storage_hosts, as metad returns it, meta_files as base
    names), meta/*.sst, data/<host>:<port>/data<i>/<sid>/..., and no brsm manifest."""
    store = tmp_path / "b"
    before = sb.checksum()
    b = sb.ok("start", "backup", "--config", sb.config, "--storage", f"local://{store}")
    name = b["facts"]["backup_name"]
    (store / name / "brsm-manifest.json").unlink()
    from brsm.adapters.meta_codec import decode_backup_meta
    bm = decode_backup_meta((store / name / f"{name}.meta").read_bytes())
    assert not bm.storage_hosts and all(b"/" not in f for f in bm.meta_files)
    sb.load(2 << 20, seed=11)
    p = sb.brsm("start", "restore", "--config", sb.config, "--storage", f"local://{store}", "--name", name,
                "--allow-unverified", "--json")
    assert p.returncode == 0, p.stderr[-3000:]
    assert sb.checksum() == before


def test_restore_onto_another_major_version_is_refused_before_anything(sb, tmp_path):
    store = tmp_path / "b"
    b = sb.ok("start", "backup", "--config", sb.config, "--storage", f"local://{store}")
    name = b["facts"]["backup_name"]
    mf = store / name / "brsm-manifest.json"
    m = json.loads(mf.read_text())
    m["topology"]["nebula_version"] = "4.0.0"
    mf.write_text(json.dumps(m))
    before = sb.checksum()
    p = sb.brsm("start", "restore", "--config", sb.config, "--storage", f"local://{store}", "--name", name)
    assert p.returncode == 4, (p.returncode, p.stderr[-2000:])
    assert "across major versions" in p.stderr
    assert sb.checksum() == before
    status = control.MetaClient(sb.meta)
    with status as c:  # nothing was stopped
        hosts = c.call("listHosts", meta.ListHostsReq(type=meta.ListHostType.STORAGE)).hosts
    assert all(h.status == meta.HostStatus.ONLINE for h in hosts)
    shutil.rmtree(store)
