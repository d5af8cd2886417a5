"""Backups made by hand in a storage (files, manifest, ``.meta``), on the local backend and the in-memory one.

``make_backup`` writes what a brsm or nebula-br backup leaves behind, byte for byte in their layouts,
so the read-side commands are tested against storage contents, not against the code that wrote them.
"""
from __future__ import annotations

import hashlib
import json
import random
import time
from dataclasses import dataclass

import pytest
from nebula3.common import ttypes as common
from nebula3.meta import ttypes as meta

from brsm.adapters.meta_codec import encode_backup_meta, make_backup_meta
from brsm.adapters.storage import open_storage
from brsm.cli.ops_commands import decode_meta  # noqa: F401 - re-exported for the tests
from brsm.ports import HostAddr
from brsm.workflows.manifest import write as write_manifest
from brsm.workflows.layout import data_key, manifest_key, meta_file_key, meta_sst_key

HOSTS = ("127.0.0.101:9779", "127.0.0.102:9779")
SPACES = {1: "nba", 2: "social"}
META_FILES = ("__spaces__.sst", "__parts__.sst")
DAY_MS = 86_400_000


def now_ms() -> int:
    return int(time.time() * 1000)


def name_for(ms: int) -> str:
    return time.strftime("BACKUP_%Y_%m_%d_%H_%M_%S", time.localtime(ms / 1000))


def meta_bytes(name: str, *, create_ms: int, hosts=HOSTS, spaces=SPACES, all_spaces=True) -> bytes:
    per_space = {}
    for sid, sname in spaces.items():
        per_host = {}
        for h in hosts:
            ck = f"/data/s/nebula/{sid}/checkpoints/{name}"
            per_host[h] = [common.CheckpointInfo(space_id=sid, data_path=ck.encode(), parts={
                1: common.LogInfo(log_id=5, term_id=1, commit_log_id=5, checkpoint_path=ck.encode())})]
        per_space[sid] = (meta.SpaceDesc(space_name=sname.encode(), partition_num=1, replica_factor=1), per_host)
    bm = make_backup_meta(name=name, spaces=per_space, meta_files=[f"/meta/checkpoints/{name}/{f}" for f in META_FILES],
                          all_spaces=all_spaces, create_time_ms=create_ms,
                          storage_hosts=[HostAddr.parse(h) for h in hosts])
    return encode_backup_meta(bm)


@dataclass
class Made:
    name: str
    create_ms: int
    files: list[dict]

    def key(self, i: int) -> str:
        return self.files[i]["key"]


async def make_backup(storage, *, age_days: float = 1.0, kind: str = "brsm", files_per_space: int = 2,
                      name: str | None = None, seed: int = 0, size: int = 3000, fmt: int = 1) -> Made:
    """kind: brsm (files, .meta, manifest last), nebula-br (files, .meta), incomplete (files only).
    fmt: the brsm manifest's format: 1 as brsm wrote it before format 2 (one JSON object, by hand here),
    2 as brsm writes it now (brsm.workflows.manifest.write)."""
    create_ms = now_ms() - int(age_days * DAY_MS)
    name = name or name_for(create_ms)
    rnd = random.Random(seed)
    files = []

    async def put(key: str, host: str, path: str, data: bytes) -> None:
        await storage.put_bytes(key, data)
        files.append({"key": key, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "host": host,
                      "path": path})

    for f in META_FILES:
        await put(meta_sst_key(name, f), "127.0.0.11", f"/meta/checkpoints/{name}/{f}", rnd.randbytes(200 + rnd.randrange(50)))
    for h in HOSTS:
        for sid in SPACES:
            for i in range(files_per_space):
                rel = f"data/{i:06d}.sst"
                await put(data_key(name, HostAddr.parse(h), 0, sid, rel), h.split(":")[0], f"/data/s/{rel}",
                          rnd.randbytes(size + rnd.randrange(500)))
    files.sort(key=lambda f: f["key"])
    if kind in ("brsm", "nebula-br"):
        await storage.put_bytes(meta_file_key(name), meta_bytes(name, create_ms=create_ms))
    if kind == "brsm":
        manifest = {
            "format": 1, "tool": "brsm", "brsm_version": "0.1.0", "op_id": 1, "backup_name": name,
            "create_time_ms": create_ms, "spaces": {str(k): v for k, v in SPACES.items()}, "all_spaces": True,
            "meta_files": list(META_FILES), "storage_hosts": list(HOSTS),
            "topology": {"meta": [], "storage": [{"addr": h, "host": h.split(":")[0], "data_paths": ["/data/s"]}
                                                 for h in HOSTS], "graph": []},
            "total_bytes": sum(f["size"] for f in files), "files": files,
        }
        if fmt == 1:
            await storage.put_bytes(manifest_key(name), json.dumps(manifest, sort_keys=True, indent=1).encode())
        else:
            header = {k: v for k, v in manifest.items() if k not in ("files", "total_bytes", "format")}
            await write_manifest(storage, name, header, lambda: iter(files))
    return Made(name, create_ms, files)


@pytest.fixture(params=["local", "memory"])
async def storage(request, tmp_path):
    uri = f"local://{tmp_path}/store" if request.param == "local" else "memory://ops"
    st = open_storage(uri)
    try:
        yield st
    finally:
        await st.close()


@pytest.fixture
def local_uri(tmp_path):
    (tmp_path / "store").mkdir()
    return f"local://{tmp_path}/store"


@pytest.fixture
async def local_storage(local_uri):
    st = open_storage(local_uri)
    try:
        yield st
    finally:
        await st.close()
