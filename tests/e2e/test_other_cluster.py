"""Restore onto a second cluster whose hosts have other addresses: default pairing and --host-map."""
from __future__ import annotations

import pytest
from nebula3.meta import ttypes as mt

from brsm.adapters.meta_codec import text
from brsm.sandbox import cluster, control
from tests.e2e.conftest import Env

pytestmark = pytest.mark.sandbox


def part_hosts(env) -> set[str]:
    out = set()
    with control.MetaClient(env.meta) as c:
        for sp in c.listSpaces(mt.ListSpacesReq()).spaces or []:
            resp = c.getPartsAlloc(mt.GetPartsAllocReq(space_id=sp.id.get_space_id()))
            for hosts in (resp.parts or {}).values():
                out.update(f"{text(h.host)}:{h.port}" for h in hosts)
    return out


@pytest.fixture(scope="module")
def second(tmp_path_factory):
    root = tmp_path_factory.mktemp("second")
    state, _ = cluster.up(str(root), meta_hosts=1, storage_hosts=3, data_paths=2)
    try:
        env = Env(root, cluster.summary(state), tmp_path_factory.mktemp("home2"))
        env.load(2 << 20, seed=21)  # its own, different data
        yield env
    finally:
        cluster.down(str(root))


def storage_addrs(env) -> list[str]:
    return sorted(f"{h['address']}:9779" for h in env.info["hosts"] if "storage" in h["roles"])


@pytest.mark.parametrize("mapping", ["default", "host-map"])
def test_restore_onto_other_hosts(sandbox, second, tmp_path, mapping):
    src, dst = sandbox, second
    target = tmp_path / "b"
    expected = src.checksum()
    name = src.ok("start", "backup", "--config", src.config, "--storage", f"local://{target}")["facts"]["backup_name"]
    old, new = storage_addrs(src), storage_addrs(dst)
    assert set(old).isdisjoint(new)
    extra = []
    if mapping == "host-map":
        pairs = list(zip(old, reversed(new)))  # not the sorted default: proves the map is used
        extra = ["--host-map", ",".join(f"{o}={n}" for o, n in pairs)]
    dst.load(1 << 20, seed=len(mapping))  # whatever the second cluster held, make it differ
    assert dst.checksum() != expected
    res = dst.ok("start", "restore", "--yes", "--config", dst.config, "--storage", f"local://{target}", "--name", name, *extra)
    assert res["state"] == "CLEANED"
    want_pairs = [list(p) for p in (pairs if mapping == "host-map" else zip(old, new))]
    assert sorted(res["facts"]["pairs"]) == sorted(want_pairs)
    assert dst.checksum() == expected
    assert part_hosts(dst) <= set(new) and part_hosts(dst), "metad's partition map names the new hosts only"


def test_wrong_topology_and_host_down_stop_before_anything(sandbox, second, tmp_path):
    src = sandbox
    target = tmp_path / "b"
    name = src.ok("start", "backup", "--config", src.config, "--storage", f"local://{target}")["facts"]["backup_name"]
    root = tmp_path / "small"
    state, _ = cluster.up(str(root), meta_hosts=1, storage_hosts=2, data_paths=2)
    try:
        small = Env(root, cluster.summary(state), tmp_path / "home-small")
        small.load(1 << 20, seed=5)
        before = small.checksum()
        p = small.brsm("start", "restore", "--yes", "--config", small.config, "--storage", f"local://{target}", "--name", name)
        assert p.returncode == 4 and "topology differs" in p.stderr and "3 storage hosts" in p.stderr, p.stderr[-600:]
        assert small.checksum() == before
    finally:
        cluster.down(str(root))
    # a host that is down: the restore stops at its SSH check, nothing stopped or moved
    dst = second
    before = dst.checksum()
    cluster.host_down(str(dst.root), "storage2")
    try:
        p = dst.brsm("start", "restore", "--yes", "--config", dst.config, "--storage", f"local://{target}", "--name", name)
        assert p.returncode == 4 and "SSH" in p.stderr, p.stderr[-600:]
    finally:
        cluster.host_up(str(dst.root), "storage2")
    assert dst.checksum() == before
