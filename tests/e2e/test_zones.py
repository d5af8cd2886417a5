"""Zones (issue 12): ADD HOSTS gives every host a zone of its own (AddHostsProcessor.cpp); an operator
may MERGE ZONE; RestoreProcessor::replaceHostInZone then CHECK-fails (metad aborts) as soon as a
restore moves any host. brsm refuses such a restore before anything stops; the sandbox aborts as
Nebula does when asked anyway."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from nebula3.meta import ttypes as meta

from brsm.adapters.meta_sst import RocksMetaSst
from brsm.sandbox import cluster, control
from tests.e2e.conftest import running_sandbox

pytestmark = pytest.mark.sandbox


@pytest.fixture(scope="module")
def sb(tmp_path_factory):
    with running_sandbox(tmp_path_factory.mktemp("zones"), tmp_path_factory.mktemp("home"), data_paths=1,
                         load=4 << 20, seed=51) as env:
        yield env


def zones(sb) -> dict[str, list[str]]:
    with control.MetaClient(sb.meta) as c:
        r = c.call("listZones", meta.ListZonesReq())
    return {z.zone_name.decode(): sorted(control.fmt_addr(h) for h in z.nodes) for z in r.zones}


def storages(sb) -> list[str]:
    return sorted(f"{h['address']}:9779" for h in sb.info["hosts"] if "storage" in h["roles"])


def test_every_host_has_a_default_zone(sb):
    """AddHostsProcessor.cpp: default_zone_<ip>_<port> per host added."""
    assert zones(sb) == {f"default_zone_{a.replace(':', '_')}": [a] for a in storages(sb)}


def zone_name(addr: str) -> str:
    return f"default_zone_{addr.replace(':', '_')}"


def nebula_br_backup(sb, store: Path, zones_then: dict[str, list[str]]) -> str:
    """A backup in nebula-br's layout (no brsm manifest, so no zones recorded anywhere but in its meta
    SST) whose ``__zones__.sst`` holds ``zones_then``: the zones as they were when it was taken,
    before an operator merged or split them."""
    name = sb.ok("start", "backup", "--config", sb.config, "--storage", f"local://{store}")["facts"]["backup_name"]
    (store / name / "brsm-manifest.json").unlink()
    sst = store / name / "meta" / "__zones__.sst"
    codec = RocksMetaSst()
    rows = {k: v for k, v in codec.read([sst.read_bytes()]).items() if not k.startswith(b"__zones__")}
    rows |= {b"__zones__" + z.encode(): ", ".join(hs).encode() for z, hs in zones_then.items()}  # MetaKeyUtils::zoneVal
    sst.write_bytes(codec.write(rows, set()))
    return name


def test_a_nebula_br_backups_merged_zone_refuses_a_host_move_though_the_cluster_has_none(sb, tmp_path):
    """The backup's zone table is what restoreMeta rewrites in a full restore: a zone of two hosts in
    the backup aborts metad though every zone of the live cluster holds one host."""
    a, b, c = storages(sb)
    assert all(len(hs) == 1 for hs in zones(sb).values())
    store = tmp_path / "b"
    name = nebula_br_backup(sb, store, {"rack0": [a, b], zone_name(c): [c]})
    before = sb.checksum()
    p = sb.brsm("start", "restore", "--yes", "--config", sb.config, "--storage", f"local://{store}", "--name", name,
                "--allow-unverified", "--host-map", f"{a}={b},{b}={a},{c}={c}")
    assert p.returncode == 4, (p.returncode, p.stderr[-1500:])
    assert "zone rack0 holds 2 hosts" in p.stderr and "__zones__.sst" in p.stderr
    assert sb.checksum() == before  # nothing was stopped or moved


def test_a_restore_that_moves_hosts_across_a_merged_zone_is_refused_before_anything(sb, tmp_path):
    a, b, c = storages(sb)
    with control.MetaClient(sb.meta) as cl:
        r = cl.call("mergeZone", meta.MergeZoneReq(zones=[f"default_zone_{a.replace(':', '_')}".encode(),
                                                          f"default_zone_{b.replace(':', '_')}".encode()],
                                                   zone_name=b"rack1"))
        assert r.code == 0
    assert zones(sb)["rack1"] == sorted([a, b])
    store = ["--storage", f"local://{tmp_path / 'b'}"]
    name = sb.ok("start", "backup", "--config", sb.config, *store)["facts"]["backup_name"]
    before = sb.checksum()
    swap = f"{a}={b},{b}={a},{c}={c}"
    p = sb.brsm("start", "restore", "--yes", "--config", sb.config, *store, "--name", name, "--host-map", swap)
    assert p.returncode == 4, (p.returncode, p.stderr[-1500:])
    assert "zone rack1 holds 2 hosts" in p.stderr
    assert sb.checksum() == before  # nothing was stopped or moved
    # restoring onto the same hosts moves none: allowed, and exact
    sb.load(1 << 20, seed=53)
    sb.ok("start", "restore", "--yes", "--config", sb.config, *store, "--name", name)
    assert sb.checksum() == before


def test_the_sandbox_metad_aborts_as_nebula_does(sb, tmp_path):
    """RestoreProcessor::replaceHostInZone: CHECK_EQ(1, hosts.size()) with any host moving."""
    a, b, _ = storages(sb)
    assert len(zones(sb)["rack1"]) == 2
    with control.MetaClient(sb.meta) as cl:
        bm = cl.call("createBackup", meta.CreateBackupReq()).meta
    sst = [f for f in bm.meta_files if f.endswith(b"__id__.sst")]
    copy = tmp_path / "__id__.sst"
    copy.write_bytes(open(sst[0], "rb").read())
    pair = meta.HostPair(from_host=control.host_addr(a), to_host=control.host_addr("127.9.9.9:9779"))
    with pytest.raises(Exception):
        with control.MetaClient(sb.meta, follow_leader=False, timeout=10) as cl:
            cl.call("restoreMeta", meta.RestoreMetaReq(files=[str(copy).encode()], hosts=[pair]))
    h = cluster.host_by_name(cluster.load_state(str(sb.root)), "meta1")[1]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and h.service_pid("metad"):
        time.sleep(0.1)
    assert h.service_pid("metad") is None, "metad is down (aborted)"
    from brsm.sandbox.hosts import run_service
    run_service(h, "start", "metad")
    cluster._wait_cluster(sb.meta, storages(sb), 30)
    with control.MetaClient(sb.meta) as cl:
        cl.call("dropSnapshot", meta.DropSnapshotReq(names=[bm.backup_name]))
    assert os.path.exists(copy)  # not consumed: the CHECK fired before the unlink


def test_a_nebula_br_backups_single_zones_allow_a_host_move_though_the_cluster_merged_some(sb, tmp_path):
    """The other way round: the live cluster has a zone of two hosts (merged after the backup), the
    backup's zone table has one host per zone. restoreMeta walks the backup's zones: the host swap is
    safe, and brsm lets it run."""
    a, b, c = storages(sb)
    assert len(zones(sb)["rack1"]) == 2
    store = tmp_path / "b"
    name = nebula_br_backup(sb, store, {zone_name(h): [h] for h in (a, b, c)})
    before = sb.checksum()
    sb.load(1 << 20, seed=57)
    res = sb.ok("start", "restore", "--yes", "--config", sb.config, "--storage", f"local://{store}", "--name", name,
                "--allow-unverified", "--host-map", f"{a}={b},{b}={a},{c}={c}")
    assert res["state"] == "CLEANED"
    assert sb.checksum() == before
    assert all(len(hs) == 1 for hs in zones(sb).values())  # the backup's zone table, hosts swapped
