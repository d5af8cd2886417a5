"""One contract, two implementations: ThriftMeta on helper-3's metad stand-in, and FakeMeta."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Callable

import pytest
from nebula3.common import ttypes as common

from brsm.adapters.meta import ThriftMeta
from brsm.adapters.meta_codec import decode_backup_meta
from brsm.errors import MetaError
from brsm.fakes import FakeCluster, FakeMeta
from brsm.ports import HostAddr, MetaPort

EC = common.ErrorCode


@dataclass
class MEnv:
    kind: str
    meta: MetaPort
    code_fault: Callable[..., Any]
    leader_fault: Callable[..., Any]
    exists: Callable[[str, str], bool]  # (host, path)
    follower: HostAddr


@pytest.fixture(params=["fake", "thrift"])
async def menv(request):
    if request.param == "fake":
        c = FakeCluster(metas=2, storages=2, data_paths=2)
        c.add_space("space1")
        c.add_space("space2")
        e = MEnv("fake", FakeMeta(c),
                 lambda rpc, code, count=1: c.faults.add("meta_code", rpc, count, code=code),
                 lambda rpc, count=1: c.faults.add("leader_change", rpc, count),
                 lambda host, p: c.machine(host).exists(p), c.meta_addrs[1])
        yield e
    else:
        from brsm.sandbox import control
        cl = request.getfixturevalue("meta_cluster")
        http = cl.meta.http
        m2 = cl.procs["meta2"]

        def code_fault(rpc, code, count=1):
            control.set_fault(http, rpc=rpc, code=code, **({"count": count} if count else {}))

        def leader_fault(rpc, count=1):
            control.set_fault(http, rpc=rpc, leader_changed=m2.addr, **({"count": count} if count else {}))

        e = MEnv("thrift", ThriftMeta([HostAddr(cl.meta.ip, cl.meta.port)], timeout=20), code_fault, leader_fault,
                 lambda host, p: os.path.exists(p), HostAddr(m2.ip, m2.port))
        yield e
        for n in ("meta1", "meta2"):
            control.clear_faults(cl.procs[n].http)
    await e.meta.close()


async def test_cluster_and_spaces(menv):
    assert isinstance(menv.meta, MetaPort)
    svcs = await menv.meta.list_cluster()
    storage = [s for s in svcs if s.role == "STORAGE"]
    assert len(storage) == 2 and all(len(s.data_paths) == 2 for s in storage)
    assert any(s.role == "META" for s in svcs)
    md = await menv.meta.meta_dir()
    assert md.role == "META" and len(md.data_paths) == 1
    assert {"space1", "space2"} <= set(await menv.meta.list_spaces())


async def test_list_hosts(menv):
    """listHosts(STORAGE): every storaged, ONLINE while metad accepts its heartbeats, as plain data."""
    storage = sorted(s.addr for s in await menv.meta.list_cluster() if s.role == "STORAGE")
    hosts = await menv.meta.list_hosts("STORAGE")
    assert [h.addr for h in hosts] == storage
    assert all(h.role == "STORAGE" and h.status == "ONLINE" and h.online for h in hosts)
    with pytest.raises(ValueError):
        await menv.meta.list_hosts("NOPE")


async def test_backup_lifecycle(menv):
    m = menv.meta
    cb = await m.create_backup(None)
    assert re.fullmatch(r"BACKUP_\d{4}(_\d\d){5}", cb.name) and cb.all_spaces
    assert decode_backup_meta(cb.meta_bytes).backup_name.decode() == cb.name
    assert {"space1", "space2"} <= set(cb.spaces.values())
    assert len(cb.storage_hosts) == 2 and cb.meta_files
    storage_dps = {dp for s in await m.list_cluster() if s.role == "STORAGE" for dp in s.data_paths}
    for host, cps in cb.checkpoints.items():
        for sid, dp, cdir in cps:
            assert dp in storage_dps and cdir == f"{dp}/nebula/{sid}/checkpoints/{cb.name}"
            assert menv.exists(HostAddr.parse(host).host, f"{cdir}/data")
    assert {s.name: s.status for s in await m.list_snapshots()}[cb.name] == "VALID"
    await m.drop_snapshots([cb.name])
    assert cb.name not in {s.name for s in await m.list_snapshots()}
    for host, cps in cb.checkpoints.items():
        assert not any(menv.exists(HostAddr.parse(host).host, c) for _, _, c in cps)
    await m.drop_snapshots([cb.name])  # a snapshot already gone is done: dropping is idempotent


async def test_partial_and_unknown_space(menv):
    cb = await menv.meta.create_backup(["space2"])
    assert list(cb.spaces.values()) == ["space2"] and not cb.all_spaces
    await menv.meta.drop_snapshots([cb.name])
    with pytest.raises(MetaError) as ei:
        await menv.meta.create_backup(["no_such_space"])
    assert ei.value.code == EC.E_BACKUP_SPACE_NOT_FOUND and "E_BACKUP_SPACE_NOT_FOUND" in str(ei.value)


async def test_codes_are_checked_and_named(menv):
    menv.code_fault("listSnapshots", EC.E_SNAPSHOT_FAILURE)
    with pytest.raises(MetaError) as ei:
        await menv.meta.list_snapshots()
    assert ei.value.code == EC.E_SNAPSHOT_FAILURE and "listSnapshots" in str(ei.value)
    assert "E_SNAPSHOT_FAILURE" in str(ei.value)
    await menv.meta.list_snapshots()  # count=1: the next call is fine


async def test_leader_changes_are_followed_and_bounded(menv):
    menv.leader_fault("listSpaces", 1)
    assert "space1" in await menv.meta.list_spaces()
    menv.leader_fault("listSpaces", None)
    with pytest.raises(MetaError) as ei:
        await menv.meta.list_spaces()
    assert ei.value.code == EC.E_LEADER_CHANGED


async def test_restore_meta_failure_is_named(menv):
    with pytest.raises(MetaError) as ei:
        await menv.meta.restore_meta(menv.follower, ["/nonexistent/__spaces__.sst"], [])
    assert ei.value.code == EC.E_RESTORE_FAILURE and str(menv.follower) in str(ei.value)
