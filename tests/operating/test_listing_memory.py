"""A backup's listing is streamed, never held: show and verify --quick of a backup of 50,000 files
allocate far less than the listing itself would take (what the readers held before: every object's
ObjectInfo, in a dict by key), and about the same for five times the files (what grows is one
directory's names: the local store sorts a directory's entries to walk in key order).

Measured with tracemalloc on the local store (the real adapter, files on disk) and a format-2 manifest.
"""
from __future__ import annotations

import hashlib
import os
import tracemalloc

import pytest

from brsm.adapters.storage import open_storage
from brsm.ports import HostAddr
from brsm.workflows import catalog
from brsm.workflows.layout import data_key, meta_file_key
from brsm.workflows.manifest import write as write_manifest
from brsm.workflows.verify import QUICK, verify_backup

from .conftest import HOSTS, META_FILES, SPACES, decode_meta, meta_bytes, now_ms

ONE = hashlib.sha256(b"x").hexdigest()
BLOCK = 256 << 10  # reads of the file list: a constant part of the peak, whatever the number of files


async def _backup(root, n: int) -> tuple[object, str]:
    """A format-2 brsm backup of ``n`` one-byte data files (written straight to disk: fast), its
    ``.meta`` and its manifest (through the storage)."""
    storage = open_storage(f"local://{root}", block_size=BLOCK)
    create_ms = now_ms() - 86_400_000
    name = "BACKUP_2026_01_01_00_00_00"
    per = n // (len(HOSTS) * len(SPACES))
    keys = sorted(data_key(name, HostAddr.parse(h), 0, sid, f"data/{i:06d}.sst")
                  for h in HOSTS for sid in SPACES for i in range(per))
    for k in keys:
        path = os.path.join(root, k)
        if k.endswith("/000000.sst"):
            os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(b"x")
    await storage.put_bytes(meta_file_key(name), meta_bytes(name, create_ms=create_ms))
    header = {"tool": "brsm", "backup_name": name, "create_time_ms": create_ms,
              "spaces": {str(k): v for k, v in SPACES.items()}, "all_spaces": True, "meta_files": list(META_FILES),
              "storage_hosts": list(HOSTS),
              "topology": {"storage": [{"addr": h, "host": h.split(":")[0], "data_paths": ["/d"]} for h in HOSTS]}}
    await write_manifest(storage, name, header, lambda: ({"key": k, "size": 1, "sha256": ONE, "host": "h",
                                                          "path": "/d/x"} for k in keys))
    return storage, name


async def _peak(fn) -> tuple[int, object]:
    tracemalloc.start()
    try:
        got = await fn()
        return tracemalloc.get_traced_memory()[1], got
    finally:
        tracemalloc.stop()


async def _measure(root, n: int) -> dict[str, int]:
    storage, name = await _backup(root, n)
    out = {}
    out["show"], e = await _peak(lambda: catalog.inspect_backup(storage, name, decode_meta=decode_meta))
    assert e.state == catalog.COMPLETE and e.files == n, e.problems
    out["verify"], r = await _peak(lambda: verify_backup(storage, name, decode_meta=decode_meta, mode=QUICK))
    assert r.ok and r.checked == n, r.problems

    async def held():  # what show, verify and restore held before: the whole listing, by key
        return {o.key: o.size for o in await storage.list(f"{name}/")}
    out["listing held"], objs = await _peak(held)
    assert len(objs) == n + 3  # the data files, .meta, the manifest and its file list
    return out


@pytest.mark.slow
async def test_show_and_verify_hold_no_listing(tmp_path):
    small = await _measure(tmp_path / "small", 10_000)
    big = await _measure(tmp_path / "big", 50_000)
    print(f"\ntracemalloc peak, bytes: 10k files {small}; 50k files {big}")
    for what in ("show", "verify"):
        # far below the listing's own size, which grows with the files ...
        assert big[what] * 4 < big["listing held"], (what, big)
        # ... and not growing with them: five times the files, about the same peak
        assert big[what] < small[what] * 1.5 + (1 << 20), (what, small, big)
    assert big["listing held"] > 4 * small["listing held"]  # the old figure does grow with the files
