"""A backup taken from one sandbox cluster, put in place on other hosts as nebula-br lays it out,
brought back with restoreMeta: the stand-ins open the restored files and the checksum is exact."""
from __future__ import annotations

import os
import shutil

import pytest
from nebula3.common import ttypes as common
from nebula3.meta import ttypes as meta

from brsm.sandbox import control, data, layout

from .conftest import Cluster

EC = common.ErrorCode
pytestmark = pytest.mark.sandbox


def _make(base, n_storage=2):
    c = Cluster(base)
    c.add("meta1", "metad", 11, 9559)
    for i in range(1, n_storage + 1):
        c.add(f"storage{i}", "storaged", 20 + i, 9779, data_paths=2)
    return c


def _start(c):
    c.start("meta1")
    c.register()
    names = [n for n in c.procs if n.startswith("storage")]
    for n in names:
        c.start(n)
    c.wait_registered(names)


def test_backup_restore_on_other_hosts(tmp_path):
    src = _make(tmp_path / "a")
    dst = _make(tmp_path / "b")
    while dst.prefix == src.prefix:
        dst = _make(tmp_path / "b")
    try:
        _start(src)
        data.load(src.meta.addr, spaces=2, size_bytes=6 * 2**20, seed=5)
        at_backup = data.checksum(src.meta.addr)
        with control.MetaClient(src.meta.addr, "framed") as c:
            bm = control.check(c.createBackup(meta.CreateBackupReq()), "createBackup").meta
        name = bm.backup_name.decode()
        data.load(src.meta.addr, spaces=2, size_bytes=2 * 2**20, seed=6)
        assert data.checksum(src.meta.addr) != at_backup

        # "download" as nebula-br lays a backup out
        root = tmp_path / "backups" / name
        shutil.copytree(layout.meta_checkpoint_dir(str(src.meta.data_paths[0]), name), root / "meta")
        for sid, sb in bm.space_backups.items():
            for hb in sb.host_backups:
                for i, cp in enumerate(hb.checkpoints):
                    shutil.copytree(cp.data_path.decode(),
                                    root / "data" / control.fmt_addr(hb.host) / f"data{i}" / str(sid))
        src.stop_all()

        # restore onto the other cluster: hosts paired by sorted address, data path i -> i
        old = sorted({control.fmt_addr(hb.host) for sb in bm.space_backups.values() for hb in sb.host_backups})
        new = sorted(p.addr for p in dst.storages)
        pairs = dict(zip(old, new))
        for o, n in pairs.items():
            proc = next(p for p in dst.storages if p.addr == n)
            for i, dp in enumerate(proc.data_paths):
                for sid in bm.space_backups:
                    srcdir = root / "data" / o / f"data{i}" / str(sid)
                    shutil.copytree(srcdir / "data", layout.space_data_dir(str(dp), sid))
                    shutil.copytree(srcdir / "wal", layout.space_wal_dir(str(dp), sid))
        dst.start("meta1")
        files = [str(root / "meta" / os.path.basename(f.decode())).encode() for f in bm.meta_files]
        with control.MetaClient(dst.meta.addr, "buffered") as c:
            resp = c.restoreMeta(meta.RestoreMetaReq(files=files, hosts=[
                meta.HostPair(from_host=control.host_addr(o), to_host=control.host_addr(n)) for o, n in pairs.items()]))
            assert resp.code == EC.SUCCEEDED
        for n in [n for n in dst.procs if n.startswith("storage")]:
            dst.start(n)  # registered by restoreMeta (machine keys rewritten from the host pairs)
        dst.wait_registered([n for n in dst.procs if n.startswith("storage")])
        assert data.checksum(dst.meta.addr) == at_backup
        # the restored cluster takes writes again; log ids continue after the backup's
        data.load(dst.meta.addr, spaces=2, size_bytes=1 * 2**20, seed=8)
        assert data.checksum(dst.meta.addr) != at_backup
        with control.MetaClient(dst.meta.addr) as c:
            bm2 = control.check(c.createBackup(meta.CreateBackupReq()), "createBackup").meta
        for sid, sb in bm2.space_backups.items():
            before = {p: li.log_id for hb in bm.space_backups[sid].host_backups for cp in hb.checkpoints
                      for p, li in cp.parts.items()}
            after = {p: li.log_id for hb in sb.host_backups for cp in hb.checkpoints for p, li in cp.parts.items()}
            assert all(after[p] >= before[p] for p in before)
            assert any(after[p] > before[p] for p in before)
        assert os.path.isdir(layout.meta_checkpoint_dir(str(dst.meta.data_paths[0]), bm2.backup_name.decode()))
    finally:
        src.stop_all()
        dst.stop_all()
