"""A restore that downloads bytes not matching the manifest: the backup is damaged (exit 6), named with
the file and where to find another one, never "fix the cause and start again" (exit 5)."""
from __future__ import annotations

import asyncio
import hashlib

import pytest

from brsm.adapters.storage import open_storage
from brsm.console.progress import NullProgress
from brsm.errors import VerificationFailed
from brsm.fakes.cluster import FakeCluster
from brsm.fakes.hosts import FakeHosts
from brsm.workflows import transfer
from brsm.workflows.restore import source


def test_closest_names():
    assert source.closest("BACKUP_2026_11_24_15_23_35", ["BACKUP_2026_11_24_15_23_34", "x"]) == \
        ["BACKUP_2026_11_24_15_23_34"]
    assert source.closest("nothing_like", ["BACKUP_2026_11_24_15_23_34"]) == []


async def test_a_damaged_object_is_a_damaged_backup(tmp_path):
    storage = open_storage(f"local://{tmp_path}")
    key = "BACKUP_X/data/f.sst"
    good = b"good bytes" * 100
    await storage.put_bytes(key, b"evil bytes" * 100)  # same size, other bytes
    c = FakeCluster(metas=1, storages=1)
    host = FakeHosts(c).host(c.meta_addrs[0].host)
    with pytest.raises(VerificationFailed) as e:
        await transfer.download_file(key, hashlib.sha256(good).hexdigest(), len(good), storage, host,
                                     f"{c.install_dir}/f.sst", transfer.Limits(), NullProgress())
    assert e.value.exit_code == 6
    assert "this backup is damaged" in e.value.message and key in e.value.message
    assert e.value.hint == f"restore another one: `brsm show --storage {storage.uri}`"
    await storage.close()
