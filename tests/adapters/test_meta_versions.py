"""ThriftMeta against metad stand-ins playing Nebula 3.0 and 3.2, whose meta wire differs from the
3.x-latest one nebula3-python generates (src/interface/meta.thrift at v3.0.0 / v3.2.0 / v3.3.0):
``DropSnapshotReq`` is ``1: binary name`` and ``restoreMeta`` answers an ``ExecResp``."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from nebula3.common import ttypes as common
from nebula3.fbthrift.protocol import TBinaryProtocol
from nebula3.fbthrift.transport import TTransport
from nebula3.meta import ttypes as meta

from brsm.adapters.meta import ThriftMeta
from brsm.adapters.meta_codec import DropSnapshotReqV30, drop_snapshot_req, release
from brsm.errors import MetaError
from brsm.ports import HostAddr
from brsm.sandbox import control, data

pytestmark = pytest.mark.sandbox
EC = common.ErrorCode


def _cluster(base: Path, version: str):
    from tests.sandbox_services.conftest import Cluster

    c = Cluster(base)
    c.add("meta1", "metad", 11, 9559)
    for i in (1, 2):
        c.add(f"storage{i}", "storaged", 20 + i, 9779, data_paths=1)
    for p in c.procs.values():  # the release each "binary" was built as
        p.flagfile.write_text(p.flagfile.read_text() + f"--sandbox_nebula_version={version}\n")
    c.start("meta1")
    c.register()
    for n in ("storage1", "storage2"):
        c.start(n, wait=False)
    for n in ("storage1", "storage2"):
        control.wait_running(c.procs[n].http, timeout=30)
    c.wait_registered(["storage1", "storage2"])
    data.load(c.meta.addr, spaces=1, size_bytes=1 << 20, seed=5)
    return c


@pytest.fixture(scope="module")
def v32(tmp_path_factory):
    c = _cluster(tmp_path_factory.mktemp("v32"), "3.2.0")
    try:
        yield c
    finally:
        c.stop_all()


@pytest.fixture(scope="module")
def v30(tmp_path_factory):
    c = _cluster(tmp_path_factory.mktemp("v30"), "3.0.0")
    try:
        yield c
    finally:
        c.stop_all()


def _addr(p) -> HostAddr:
    return HostAddr(p.ip, p.port)


def _listed(c) -> dict[str, int]:
    with control.MetaClient(c.meta.addr, timeout=20) as mc:
        return {s.name.decode(): s.status for s in mc.call("listSnapshots", meta.ListSnapshotsReq()).snapshots}


def test_old_drop_snapshot_req_is_one_binary_name():
    """meta.thrift v3.2.0: ``struct DropSnapshotReq { 1: binary name }``: field 1 of type STRING."""
    buf = TTransport.TMemoryBuffer()
    DropSnapshotReqV30(b"BACKUP_X").write(TBinaryProtocol.TBinaryProtocol(buf))
    assert buf.getvalue() == b"\x0b\x00\x01" + (8).to_bytes(4, "big") + b"BACKUP_X" + b"\x00"
    assert isinstance(drop_snapshot_req("B", release("3.0.2")), DropSnapshotReqV30)
    assert isinstance(drop_snapshot_req("B", release("3.2.1")), DropSnapshotReqV30)
    assert drop_snapshot_req("B", release("3.4.0")).names == [b"B"]
    assert drop_snapshot_req("B", None).names == [b"B"]  # unknown: the latest (and the drop is checked)


async def test_metad_version_is_what_list_hosts_meta_reports(v32):
    m = ThriftMeta([_addr(v32.meta)], timeout=20)
    try:
        assert await m.metad_version() == "3.2.0"
        assert {h.version for h in await m.list_hosts("STORAGE")} == {"3.2.0"}
    finally:
        await m.close()


async def test_drop_snapshots_really_drops_on_3_2(v32):
    """The list a 3.3+ client sends is skipped by a 3.2 metad, which answers SUCCEEDED having
    dropped nothing (v3.2.0 DropSnapshotProcessor: "does not exist or already dropped"): the
    adapter must send the old struct, and the snapshot and its checkpoints must be gone."""
    m = ThriftMeta([_addr(v32.meta)], timeout=20)
    try:
        cb = await m.create_backup(None)
        cps = [d for cs in cb.checkpoints.values() for _, _, d in cs]
        assert cps and all(os.path.isdir(d) for d in cps)
        await m.drop_snapshots([cb.name])
        assert cb.name not in _listed(v32)
        assert not [d for d in cps if os.path.exists(d)]
        meta_cp = v32.meta.data_paths[0] / "nebula" / "0" / "checkpoints" / cb.name
        assert not meta_cp.exists()
        await m.drop_snapshots([cb.name])  # gone already: done, on 3.2 as on 3.8
    finally:
        await m.close()


async def test_restore_meta_exec_resp_on_3_2(v32, tmp_path):
    """RestoreProcessor is a BaseProcessor<cpp2::ExecResp> before 3.3.0: its answer still decodes
    (code checked) through the 3.x-latest RestoreMetaResp."""
    m = ThriftMeta([_addr(v32.meta)], timeout=20)
    try:
        cb = await m.create_backup(None)
        copies = []
        for f in cb.meta_paths:
            dst = tmp_path / os.path.basename(f)
            dst.write_bytes(Path(f).read_bytes())
            copies.append(str(dst))
        await m.restore_meta(_addr(v32.meta), copies, [])
        assert not [c for c in copies if os.path.exists(c)]  # ingested and unlinked
        with pytest.raises(MetaError) as ei:
            await m.restore_meta(_addr(v32.meta), copies, [])
        assert ei.value.code == EC.E_RESTORE_FAILURE
        await m.drop_snapshots([cb.name])
    finally:
        await m.close()


async def test_a_drop_that_answers_succeeded_but_keeps_the_snapshot_is_an_error(v30):
    """v3.0.0 DropSnapshotProcessor: when a storaged cannot drop its checkpoint the snapshot is kept,
    INVALID, and the answer is SUCCEEDED. brsm checks listSnapshots afterwards and says so."""
    m = ThriftMeta([_addr(v30.meta)], timeout=20)
    try:
        cb = await m.create_backup(None)
        v30.stop("storage2")
        try:
            with pytest.raises(MetaError) as ei:
                await m.drop_snapshots([cb.name])
            assert cb.name in str(ei.value) and "INVALID" in str(ei.value) and "3.0.0" in str(ei.value)
            assert _listed(v30)[cb.name] == meta.SnapshotStatus.INVALID
        finally:
            v30.start("storage2", wait=False)
            v30.wait_registered(["storage2"], timeout=30)
        await m.drop_snapshots([cb.name])
        assert cb.name not in _listed(v30)
    finally:
        await m.close()
