"""The sandbox's metad speaks each release's meta Thrift where it differs, and reports its release.

``--sandbox_nebula_version`` (``brsm sandbox up --nebula-version``) picks the release. Each test
names the file of vesoft-inc/nebula, at the tags v3.0.0 … v3.8.0, it mirrors. Compared between those
tags for the structs brsm uses (createBackup, listSnapshots, listCluster, getMetaDirInfo, restoreMeta,
heartbeats, listHosts, verifyClientVersion), only these differ on the wire: ``DropSnapshotReq``
(``1: binary name`` until 3.2.x, ``1: list<binary> names`` from 3.3.0), ``restoreMeta``'s answer
(``ExecResp`` until 3.2.x, ``RestoreMetaResp`` from 3.3.0), ``BackupMeta`` fields 7–9 and
``CreateBackupReq`` fields 2–3 (added in 3.3.0, never set by metad nor sent by brsm), and
``CheckpointInfo`` field 3 (renamed ``path`` → ``data_path``, same id, type and value).
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from nebula3.common import ttypes as common
from nebula3.fbthrift.Thrift import TType
from nebula3.meta import ttypes as meta

from brsm.sandbox import control, data

pytestmark = pytest.mark.sandbox
EC = common.ErrorCode
VERSIONS = ("3.0.0", "3.2.0", "3.4.0", "3.6.0", "3.8.0")


class OldDropSnapshotReq:
    """``struct DropSnapshotReq { 1: binary name }`` as a 3.0–3.2 client (nebula-console, nebula-br
    v3.0–v3.2) writes it; written here by the test itself, apart from brsm's adapter."""

    def __init__(self, name: bytes) -> None:
        self.name = name

    def write(self, oprot) -> None:
        oprot.writeStructBegin("DropSnapshotReq")
        oprot.writeFieldBegin("name", TType.STRING, 1)
        oprot.writeString(self.name)
        oprot.writeFieldEnd()
        oprot.writeFieldStop()
        oprot.writeStructEnd()


@pytest.fixture(scope="module", params=VERSIONS)
def release(request, tmp_path_factory):
    from tests.sandbox_services.conftest import Cluster

    version = request.param
    c = Cluster(tmp_path_factory.mktemp("v" + version.replace(".", "")))
    c.add("meta1", "metad", 11, 9559)
    for i in (1, 2):
        c.add(f"storage{i}", "storaged", 20 + i, 9779, data_paths=1)
    for p in c.procs.values():
        p.flagfile.write_text(p.flagfile.read_text() + f"--sandbox_nebula_version={version}\n")
    try:
        c.start("meta1")
        c.register()
        for n in ("storage1", "storage2"):
            c.start(n, wait=False)
        for n in ("storage1", "storage2"):
            control.wait_running(c.procs[n].http, timeout=30)
        c.wait_registered(["storage1", "storage2"])
        data.load(c.meta.addr, spaces=1, size_bytes=1 << 20, seed=9)
        yield version, c
    finally:
        c.stop_all()


def rel(version: str) -> tuple[int, int]:
    return tuple(int(x) for x in version.split(".")[:2])  # type: ignore[return-value]


def call(c, rpc: str, req, transport: str = "buffered"):
    with control.MetaClient(c.meta.addr, transport=transport, timeout=30.0, follow_leader=False) as mc:
        return mc.call(rpc, req)


def backup(c) -> str:
    r = call(c, "createBackup", meta.CreateBackupReq())
    assert r.code == EC.SUCCEEDED
    return r.meta.backup_name.decode()


def listed(c) -> dict[str, int]:
    return {s.name.decode(): s.status for s in call(c, "listSnapshots", meta.ListSnapshotsReq()).snapshots}


def test_list_hosts_reports_the_release(release):
    """ListHostsProcessor.cpp (allMetaHostsStatus): every META item carries the answering metad's
    getOriginVersion() (src/version/Version.cpp.in: the NEBULA_BUILD_VERSION a package is built
    with, "3.2.0"); a storaged's item carries the version it saved at start (SaveGraphVersionProcessor,
    MetaClient::saveVersionToMeta, versionKey)."""
    version, c = release
    metas = call(c, "listHosts", meta.ListHostsReq(type=meta.ListHostType.META)).hosts
    assert metas and {h.version.decode() for h in metas} == {version}
    storages = call(c, "listHosts", meta.ListHostsReq(type=meta.ListHostType.STORAGE)).hosts
    assert {h.version.decode() for h in storages} == {version}


@pytest.mark.parametrize("transport", ["buffered", "framed"])
def test_drop_snapshot_request_of_each_release(release, transport):
    """src/interface/meta.thrift: ``DropSnapshotReq{1: binary name}`` at v3.0.0–v3.2.0,
    ``{1: list<binary> names}`` from v3.3.0. DropSnapshotProcessor::process at v3.2.0 reads
    ``req.get_name()``: the list a newer client sends is a field 1 of the wrong type, which fbthrift's
    reader skips, so the name is "" — "does not exist or already dropped" — and the answer is
    SUCCEEDED with nothing dropped. The old struct is read and the snapshot dropped. From 3.4.0
    the list is read (only its first name dropped) and an unknown name is E_SNAPSHOT_NOT_FOUND."""
    version, c = release
    name = backup(c)
    if rel(version) < (3, 3):
        assert call(c, "dropSnapshot", meta.DropSnapshotReq(names=[name.encode()]), transport).code == EC.SUCCEEDED
        assert name in listed(c)  # nothing dropped
        assert call(c, "dropSnapshot", OldDropSnapshotReq(name.encode()), transport).code == EC.SUCCEEDED
        assert name not in listed(c)
        assert call(c, "dropSnapshot", OldDropSnapshotReq(name.encode()), transport).code == EC.SUCCEEDED
    else:
        assert call(c, "dropSnapshot", meta.DropSnapshotReq(names=[name.encode()]), transport).code == EC.SUCCEEDED
        assert name not in listed(c)
        assert call(c, "dropSnapshot", meta.DropSnapshotReq(names=[name.encode()]),
                    transport).code == EC.E_SNAPSHOT_NOT_FOUND
        # an old client's struct: field 1 is a binary where a list is read; skipped, no names
        assert call(c, "dropSnapshot", OldDropSnapshotReq(name.encode()), transport).code == EC.E_SNAPSHOT_FAILURE


def test_drop_snapshot_keeps_an_invalid_snapshot_on_3_0_when_a_checkpoint_stays(release):
    """DropSnapshotProcessor::process at v3.0.0: when Snapshot::dropSnapshot fails on a storaged the
    record is put back INVALID and the answer is that put's code (SUCCEEDED). From v3.1.0 the record
    is removed in the same batch whatever failed (the INVALID put is followed by the remove)."""
    version, c = release
    name = backup(c)
    c.stop("storage2")
    try:
        req = OldDropSnapshotReq(name.encode()) if rel(version) < (3, 3) else \
            meta.DropSnapshotReq(names=[name.encode()])
        assert call(c, "dropSnapshot", req).code == EC.SUCCEEDED
        if rel(version) < (3, 1):
            assert listed(c)[name] == meta.SnapshotStatus.INVALID
        else:
            assert name not in listed(c)
    finally:
        c.start("storage2", wait=False)
        c.wait_registered(["storage2"], timeout=30)
    if name in listed(c):
        assert call(c, "dropSnapshot", OldDropSnapshotReq(name.encode())).code == EC.SUCCEEDED
        assert name not in listed(c)
    # storage2 still holds that checkpoint dir: a backup made in the same second would get the same
    # name and fail there (as NebulaStore::createCheckpoint does on an existing checkpoint)
    time.sleep(1.05)


def test_restore_meta_answer_of_each_release(release, tmp_path):
    """RestoreProcessor.h: a BaseProcessor<cpp2::ExecResp> until v3.2.x (``ExecResp restoreMeta``
    in meta.thrift v3.2.0), BaseProcessor<cpp2::RestoreMetaResp> from v3.3.0 (with part_hosts).
    The ExecResp decodes through the newer struct with its code and no part_hosts."""
    version, c = release
    created = call(c, "createBackup", meta.CreateBackupReq())
    assert created.code == EC.SUCCEEDED, created
    bm = created.meta
    copies = []
    for f in bm.meta_files:
        dst = tmp_path / os.path.basename(f.decode())
        dst.write_bytes(Path(f.decode()).read_bytes())
        copies.append(str(dst).encode())
    r = call(c, "restoreMeta", meta.RestoreMetaReq(files=copies, hosts=[]))
    assert r.code == EC.SUCCEEDED
    if rel(version) < (3, 3):
        assert r.part_hosts is None
    else:
        assert r.part_hosts
    req = OldDropSnapshotReq(bm.backup_name) if rel(version) < (3, 3) else meta.DropSnapshotReq(names=[bm.backup_name])
    assert call(c, "dropSnapshot", req).code == EC.SUCCEEDED
