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


@pytest.mark.parametrize("kind", ["local", "s3", "oss"])
def test_without_agents_listcluster_fails_and_brsm_round_trips(sb, tmp_path, kind):
    with control.MetaClient(sb.meta) as c:
        assert c.call("listCluster", meta.ListClusterInfoReq()).code == -2072  # E_LIST_CLUSTER_NO_AGENT_FAILURE
    target = {"local": ["--storage", f"local://{tmp_path / 'b'}"], "s3": sb.s3(f"noagents-{tmp_path.name}"),
              "oss": sb.oss(f"noagents-{tmp_path.name}")}[kind]
    before = sb.checksum()
    p = sb.brsm("start", "backup", "--config", sb.config, *target, "--json")
    assert p.returncode == 0, p.stderr[-2000:]
    assert "listHosts + getMetaDirInfo + storaged flagfiles" in p.stderr  # says which way, once
    name = json.loads(p.stdout)["facts"]["backup_name"]
    if kind == "local":
        manifest = json.loads((tmp_path / "b" / name / "brsm-manifest.json").read_text())
        assert manifest["topology"]["nebula_version"] == "3.8.0"
        assert manifest["topology"]["source"].startswith("listHosts")
        assert [len(s["data_paths"]) for s in manifest["topology"]["storage"]] == [2, 2, 2]
        assert len(manifest["topology"]["meta"]) == 3 and all(m["root"] for m in manifest["topology"]["meta"])
    sb.load(2 << 20, seed=9)
    assert sb.checksum() != before
    sb.ok("start", "restore", "--yes", "--config", sb.config, *target, "--name", name)
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
    p = sb.brsm("start", "restore", "--yes", "--config", sb.config, "--storage", f"local://{store}", "--name", name,
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
    p = sb.brsm("start", "restore", "--yes", "--config", sb.config, "--storage", f"local://{store}", "--name", name)
    assert p.returncode == 4, (p.returncode, p.stderr[-2000:])
    assert "across major versions" in p.stderr
    assert sb.checksum() == before
    status = control.MetaClient(sb.meta)
    with status as c:  # nothing was stopped
        hosts = c.call("listHosts", meta.ListHostsReq(type=meta.ListHostType.STORAGE)).hosts
    assert all(h.status == meta.HostStatus.ONLINE for h in hosts)
    shutil.rmtree(store)


def test_full_text_indexes_are_named_as_not_backed_up(sb, tmp_path):
    """MetaKeyUtils.cpp never backs up the ft_index (nor listener) table: brsm says so, and journals it."""
    with control.MetaClient(sb.meta) as c:
        sid = {s.name: s.id.get_space_id() for s in c.call("listSpaces", meta.ListSpacesReq()).spaces}[b"space1"]
        r = c.call("createFTIndex", meta.CreateFTIndexReq(fulltext_index_name=b"ft_names",
                                                         index=meta.FTIndex(space_id=sid, fields=[b"name"])))
        assert r.code == 0
        assert list(c.call("listFTIndexes", meta.ListFTIndexesReq()).indexes) == [b"ft_names"]
    p = sb.brsm("start", "backup", "--config", sb.config, "--storage", f"local://{tmp_path / 'b'}", "--json")
    assert p.returncode == 0, p.stderr[-2000:]
    assert "full-text index ft_names" in p.stderr and "not in the backup" in p.stderr
    op = json.loads(p.stdout)["op_id"]
    events = sb.ok("audit", str(op))["events"]
    [ev] = [e for e in events if e["type"] == "NotBackedUp"]
    assert ev["data"]["items"] == [f"full-text index ft_names (space {sid})"]
