"""Load data into the sandbox cluster and checksum it (``brsm sandbox load|checksum``).

Spaces are created with the real ``createSpace`` RPC; data goes to the storaged owning each part
(found with ``getPartsAlloc`` and ``listHosts``) through their admin ``/write``. Values are
incompressible (``os.urandom``) so sizes on disk are honest. A second load over the same spaces
adds new keys and overwrites old ones, so the checksum changes.

``files=N`` (``brsm sandbox load --files N``) writes through the storageds' ``/ingest`` instead:
about N small files in all, each part's share made of SST files of one vertex each (ingested into
RocksDB) and a tenth as many WAL segment files, so a checkpoint of the spaces holds ~N files.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import os
import random
import threading
import time
from dataclasses import dataclass, field
from collections.abc import Iterator
from typing import Any

from nebula3.fbthrift.protocol import TBinaryProtocol
from nebula3.fbthrift.transport import TTransport
from nebula3.fbthrift.util import Serializer
from nebula3.common import ttypes as common
from nebula3.meta import ttypes as meta

from brsm.sandbox.errors import SandboxFailure
from brsm.sandbox import control
from brsm.sandbox.storaged import TYPE_EDGE, TYPE_VERTEX, encode_records

DEFAULT_VALUE_SIZE = 64 * 1024
DEFAULT_PARTS = 10
BATCH_BYTES = 4 * 2**20
INGEST_RECORDS = 2000  # SST files per /ingest request
_EPOCH_2020 = 1577836800


class DataError(SandboxFailure):
    pass


def space_name(i: int) -> str:
    return f"space{i}"


@dataclass
class Topology:
    space_id: int
    partition_num: int
    owners: dict[int, str]  # part -> "host:port" of its storaged
    http: dict[str, tuple[str, int]]  # "host:port" -> admin http address
    replicas: dict[int, list[str]] = field(default_factory=dict)  # part -> every host holding it, leader first


def _client(meta_addr: str, transport: str = "buffered") -> control.MetaClient:
    return control.MetaClient(meta_addr, transport=transport, timeout=30.0)


@contextlib.contextmanager
def _friendly_errors(meta_addr: str) -> Iterator[None]:
    """Turn transport failures into a :class:`DataError` that names the service."""
    try:
        yield
    except SandboxFailure:
        raise
    except TTransport.TTransportException as exc:
        raise DataError(f"cannot talk to metad at {meta_addr}: {exc}",
                        hint="is the sandbox up? (brsm sandbox status)") from exc
    except OSError as exc:
        raise DataError(f"a storaged did not answer: {exc}",
                        hint="is every storaged running? (brsm sandbox status)") from exc


def ensure_spaces(client: control.MetaClient, names: list[str], partition_num: int = DEFAULT_PARTS,
                  replica_factor: int = 1) -> dict[str, int]:
    out = {}
    for name in names:
        resp = client.getSpace(meta.GetSpaceReq(space_name=name.encode()))
        if resp.code == control.ErrorCode.SUCCEEDED:
            out[name] = resp.item.space_id
            continue
        desc = meta.SpaceDesc(space_name=name.encode(), partition_num=partition_num, replica_factor=replica_factor,
                              charset_name=b"utf8", collate_name=b"utf8_bin",
                              vid_type=meta.ColumnTypeDef(type=7, type_length=8))
        resp = control.check(client.createSpace(meta.CreateSpaceReq(properties=desc, if_not_exists=True)),
                             f"createSpace {name}")
        out[name] = resp.id.get_space_id()
    for sid in out.values():
        ensure_schema(client, sid)
    return out


# what ``sandbox load`` defines in each space, as an application would (CREATE TAG / EDGE / TAG INDEX)
SCHEMA = {"tags": {b"person": [b"name", b"age"], b"company": [b"name"]}, "edges": {b"follow": [b"degree"]},
          "tag_indexes": {b"i_person_name": (b"person", [b"name"])}}


def _columns(names: list[bytes]) -> meta.Schema:
    return meta.Schema(columns=[meta.ColumnDef(name=n, type=meta.ColumnTypeDef(type=common.PropertyType.STRING))
                                for n in names])


def ensure_schema(client: control.MetaClient, sid: int) -> None:
    """The sandbox schema in one space (``if_not_exists``: a second load keeps what is there)."""
    for name, cols in SCHEMA["tags"].items():
        control.check(client.createTag(meta.CreateTagReq(space_id=sid, tag_name=name, schema=_columns(cols),
                                                         if_not_exists=True)), f"createTag {name!r}")
    for name, cols in SCHEMA["edges"].items():
        control.check(client.createEdge(meta.CreateEdgeReq(space_id=sid, edge_name=name, schema=_columns(cols),
                                                           if_not_exists=True)), f"createEdge {name!r}")
    for name, (tag, fields) in SCHEMA["tag_indexes"].items():
        control.check(client.createTagIndex(meta.CreateTagIndexReq(
            space_id=sid, index_name=name, tag_name=tag, fields=[meta.IndexFieldDef(name=f) for f in fields],
            if_not_exists=True)), f"createTagIndex {name!r}")


def schema_digest(client: control.MetaClient, sid: int) -> str:
    """A digest of a space's schema as metad lists it: tags, edges, tag and edge indexes with their ids."""
    proto = TBinaryProtocol.TBinaryProtocolFactory()
    h = hashlib.sha256()
    for rpc, req, field in (("listTags", meta.ListTagsReq(space_id=sid), "tags"),
                            ("listEdges", meta.ListEdgesReq(space_id=sid), "edges"),
                            ("listTagIndexes", meta.ListTagIndexesReq(space_id=sid), "items"),
                            ("listEdgeIndexes", meta.ListEdgeIndexesReq(space_id=sid), "items")):
        resp = control.check(client.call(rpc, req), rpc)
        for blob in sorted(Serializer.serialize(proto, item) for item in getattr(resp, field) or []):
            h.update(rpc.encode() + len(blob).to_bytes(4, "big") + blob)
    return h.hexdigest()


def topology(client: control.MetaClient, space_id: int) -> Topology:
    resp = control.check(client.getPartsAlloc(meta.GetPartsAllocReq(space_id=space_id)), "getPartsAlloc")
    owners = {pid: control.fmt_addr(hosts[0]) for pid, hosts in resp.parts.items() if hosts}
    replicas = {pid: [control.fmt_addr(h) for h in hosts] for pid, hosts in resp.parts.items() if hosts}
    http = control.storage_http_addrs(client)
    missing = sorted({o for rs in replicas.values() for o in rs if o not in http})
    if missing:
        raise DataError(f"storage hosts {missing} own parts of space {space_id} but are not registered")
    return Topology(space_id, len(resp.parts), owners, http, replicas)


def _vertex_key(pid: int, vid: int) -> bytes:
    return pid.to_bytes(4, "big") + bytes([TYPE_VERTEX]) + vid.to_bytes(8, "big")


def _edge_key(pid: int, src: int, dst: int) -> bytes:
    return pid.to_bytes(4, "big") + bytes([TYPE_EDGE]) + src.to_bytes(8, "big") + dst.to_bytes(8, "big")


def _post_batch(topo: Topology, owner: str, items: list[tuple[bytes, bytes]], retry_timeout: float,
                counters: dict[str, int], lock: threading.Lock, path: str | None = None) -> None:
    body = encode_records(items)
    delay = 0.02
    deadline = time.monotonic() + retry_timeout
    while True:
        try:
            control.http_call(topo.http[owner], "POST", path or f"/write?space_id={topo.space_id}", raw=body,
                              timeout=60 if path is None else 600)
            with lock:
                counters["batches"] += 1
                counters["bytes"] += len(body)
            return
        except control.HTTPStatusError as exc:
            if exc.status != 409 or time.monotonic() > deadline:
                raise
            with lock:
                counters["refused"] += 1
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


def write_space(client: control.MetaClient, space_id: int, size_bytes: int, *, value_size: int = DEFAULT_VALUE_SIZE,
                rng: random.Random | None = None, workers: int = 6, retry_timeout: float = 120.0,
                counters: dict[str, int] | None = None) -> dict[str, int]:
    """Write about ``size_bytes`` of vertices (70 %) and edges (30 %) to one space."""
    rng = rng or random.Random()
    topo = topology(client, space_id)
    n = max(1, size_bytes // value_size)
    counters = counters if counters is not None else {"batches": 0, "bytes": 0, "refused": 0}
    lock = threading.Lock()
    batches: dict[str, list[tuple[bytes, bytes]]] = {}
    sizes: dict[str, int] = {}
    futs = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        for i in range(n):
            src = rng.randrange(2 * n)  # half of the id range is reused: new keys and overwrites
            pid = src % topo.partition_num + 1
            if i % 10 < 7:
                key = _vertex_key(pid, src)
            else:
                key = _edge_key(pid, src, rng.randrange(2 * n))
            value = os.urandom(value_size)
            # every replica gets the write (what Raft replication does on a real cluster)
            for owner in topo.replicas.get(pid) or [topo.owners[pid]]:
                batches.setdefault(owner, []).append((key, value))
                sizes[owner] = sizes.get(owner, 0) + value_size + len(key)
                if sizes[owner] >= BATCH_BYTES:
                    futs.append(pool.submit(_post_batch, topo, owner, batches.pop(owner), retry_timeout, counters, lock))
                    sizes[owner] = 0
        for owner, items in batches.items():
            futs.append(pool.submit(_post_batch, topo, owner, items, retry_timeout, counters, lock))
        for f in futs:
            f.result()
    return {"keys": n, "bytes": n * value_size}


def split_files(n: int) -> tuple[int, int]:
    """(SST files, WAL segment files) for a part's share of n files: several WAL segments per
    part (a tenth, at least 2) as soon as there are files enough, the rest SSTs."""
    if n < 2:
        return n, 0
    wal = min(n - 1, max(2, n // 10))
    return n - wal, wal


def _spread(total: int, slots: int) -> list[int]:
    return [total // slots + (1 if i < total % slots else 0) for i in range(slots)]


def ingest_space(client: control.MetaClient, space_id: int, files: int, size_bytes: int, *,
                 workers: int = 6, retry_timeout: float = 120.0,
                 counters: dict[str, int] | None = None) -> dict[str, int]:
    """About ``files`` small files into one space: per part, SST files of one vertex each (values
    of ``size_bytes`` / SSTs bytes, incompressible) and WAL segments holding the same records."""
    topo = topology(client, space_id)
    counters = counters if counters is not None else {"batches": 0, "bytes": 0, "refused": 0}
    lock = threading.Lock()
    pids = sorted(topo.owners)
    shares = {pid: split_files(n) for pid, n in zip(pids, _spread(files, len(pids)))}
    total_ssts = sum(s for s, _ in shares.values())
    value_size = max(1, size_bytes // max(1, total_ssts))
    # vertex ids above any `load --size` writes (those stay below 2**32) and rising from one load to
    # the next, so each part's new files cover a key range of their own (RocksDB ingests them
    # straight into the bottom level, beside the files already there)
    base = max(1, int(time.time()) - _EPOCH_2020) << 32
    futs = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        for pid in pids:
            ssts, wals = shares[pid]
            if not ssts:
                continue
            chunks = [(i, min(ssts, i + INGEST_RECORDS)) for i in range(0, ssts, INGEST_RECORDS)]
            wal_split = _spread(wals, len(chunks))
            for (lo, hi), w in zip(chunks, wal_split):
                items = [(_vertex_key(pid, base + i), os.urandom(value_size)) for i in range(lo, hi)]
                futs.append(pool.submit(_post_batch, topo, topo.owners[pid], items, retry_timeout, counters, lock,
                                        f"/ingest?space_id={topo.space_id}&wal_segments={w}"))
        for f in futs:
            f.result()
    return {"keys": total_ssts, "bytes": total_ssts * value_size, "sst_files": total_ssts,
            "wal_files": sum(w for _, w in shares.values())}


@dataclass
class LoadReport:
    spaces: dict[str, int]
    written: dict[str, dict[str, int]]
    counters: dict[str, int]
    seconds: float
    writer: "BackgroundWriter | None" = None


def load(meta_addr: str, spaces: int = 2, size_bytes: int = 200 * 2**20, while_writing: bool = False, *,
         value_size: int = DEFAULT_VALUE_SIZE, partition_num: int = DEFAULT_PARTS, seed: int | None = None,
         transport: str = "buffered", retry_timeout: float = 120.0, files: int | None = None,
         replica_factor: int = 1) -> LoadReport:
    """Create ``spaces`` spaces (``space1``..) if absent and write ``size_bytes`` spread over them.
    With ``files``, write them as about that many small SST and WAL files instead (see
    :func:`ingest_space`). With ``while_writing`` a :class:`BackgroundWriter` is left running on the
    first space (the caller stops it) to show writes being blocked during a backup."""
    t0 = time.monotonic()
    rng = random.Random(seed)
    counters = {"batches": 0, "bytes": 0, "refused": 0}
    with _friendly_errors(meta_addr), _client(meta_addr, transport) as client:
        ids = ensure_spaces(client, [space_name(i + 1) for i in range(spaces)], partition_num, replica_factor)
        per_space = size_bytes // max(1, spaces)
        if files:
            files_per = dict(zip(ids, _spread(files, len(ids))))
            written = {name: ingest_space(client, sid, files_per[name], per_space, retry_timeout=retry_timeout,
                                          counters=counters)
                       for name, sid in ids.items()}
        else:
            written = {name: write_space(client, sid, per_space, value_size=value_size, rng=rng,
                                         retry_timeout=retry_timeout, counters=counters)
                       for name, sid in ids.items()}
    writer = None
    if while_writing and ids:
        writer = BackgroundWriter(meta_addr, next(iter(ids)))
        writer.start()
    return LoadReport(ids, written, counters, time.monotonic() - t0, writer)


def checksum(meta_addr: str, transport: str = "buffered") -> dict[str, str]:
    """``{space name: sha256 hex}`` over every part's digest (sorted by part) from its owner."""
    out = {}
    with _friendly_errors(meta_addr), _client(meta_addr, transport) as client:
        resp = control.check(client.listSpaces(meta.ListSpacesReq()), "listSpaces")
        for item in sorted(resp.spaces or [], key=lambda i: i.name):
            sid = item.id.get_space_id()
            topo = topology(client, sid)
            by_host: dict[str, list[int]] = {}
            for pid, reps in topo.replicas.items():
                for owner in reps:
                    by_host.setdefault(owner, []).append(pid)
            seen: dict[int, dict[str, str | None]] = {}
            for owner, pids in sorted(by_host.items()):
                res = control.http_call(topo.http[owner], "POST", "/checksum", {"space_id": sid}, timeout=120)
                for pid in pids:
                    seen.setdefault(pid, {})[owner] = res["parts"].get(str(pid))
            digests: dict[int, str] = {}
            for pid, per_host in seen.items():
                if len(set(per_host.values())) > 1:  # replicas must hold the same data
                    raise DataError(f"replicas of part {pid} of space {item.name.decode()} differ: "
                                    + ", ".join(f"{h}={(d or 'empty')[:12]}" for h, d in sorted(per_host.items())))
                d = per_host[topo.owners[pid]]
                if d:
                    digests[pid] = d
            h = hashlib.sha256()
            h.update(f"schema:{schema_digest(client, sid)}\n".encode())  # the schema is part of the space
            for pid in sorted(digests):
                h.update(f"{pid}:{digests[pid]}\n".encode())
            out[item.name.decode()] = h.hexdigest()
    return out


class BackgroundWriter:
    """Writes small batches to one space in a loop; counts accepted and refused (blocked) writes."""

    def __init__(self, meta_addr: str, space: str, value_size: int = 4096, batch: int = 8,
                 pause: float = 0.01) -> None:
        self.meta_addr = meta_addr
        self.space = space
        self.value_size = value_size
        self.batch = batch
        self.pause = pause
        self.ok = 0
        self.refused = 0
        self.errors: list[str] = []
        self.refused_at: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "BackgroundWriter":
        self._thread = threading.Thread(target=self._run, name="bg-writer", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> "BackgroundWriter":
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=30)
        return self

    def __enter__(self) -> "BackgroundWriter":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _run(self) -> None:
        rng = random.Random()
        with _client(self.meta_addr) as client:
            sid = ensure_spaces(client, [self.space])[self.space]
            topo = topology(client, sid)
        while not self._stop.is_set():
            vid = rng.randrange(1 << 40)
            pid = vid % topo.partition_num + 1
            owner = topo.owners[pid]
            items = [(_vertex_key(pid, vid + i * topo.partition_num), os.urandom(self.value_size))
                     for i in range(self.batch)]
            try:
                control.http_call(topo.http[owner], "POST", f"/write?space_id={sid}",
                                  raw=encode_records(items), timeout=30)
                self.ok += 1
            except control.HTTPStatusError as exc:
                if exc.status == 409:
                    self.refused += 1
                    self.refused_at.append(time.time())
                else:
                    self.errors.append(str(exc))
            except OSError as exc:
                self.errors.append(str(exc))
            self._stop.wait(self.pause)


__all__ = ["load", "checksum", "BackgroundWriter", "LoadReport", "ensure_spaces", "write_space", "ingest_space",
           "split_files", "topology", "space_name", "DataError"]
