"""The meta side of a restore of chosen spaces: refuse host maps that would move other spaces, let
the meta Raft settle, and build the one SST every metad ingests (brsm.workflows.restore.meta_ingest).

restoreMeta's host pairs rewrite the parts of EVERY space (RestoreProcessor::replaceHostInPartition),
not only the restored ones, and on its next start a storaged removes every part meta no longer
assigns to it (NebulaStore::loadPartFromDataPath → removePart): a pair that moves a host of the
cluster would take the spaces that were not restored off it. So in a restore of chosen spaces a
host of the cluster maps to itself, or the restore is refused before anything stops.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import posixpath
import time
from collections.abc import Iterable
from typing import Any

from brsm.errors import MetaError, PreflightFailed
from brsm.workflows.restore import meta_ingest, placement
from brsm.workflows.restore.context import ports
from brsm.workflows.restore.state import META_INGEST_BUILT, RestoreContext

INGEST_NAME = "brsm_chosen_spaces.sst"
LEFTOVERS_NAME = "brsm_leftover_schema.sst"
# RaftPart.cpp: a follower applies a committed entry when the next heartbeat carries the commit id
# (--raft_heartbeat_interval_secs, 5 s by default); nebula-br sleeps 10 s before restoreMeta for the same reason
SETTLE_SECONDS = 10.0


def moved_cluster_hosts(pairs: Iterable[tuple[str, str]], cluster_storage: Iterable[str]) -> list[tuple[str, str]]:
    """The pairs that would move a storage host the cluster has now to another address.

    >>> moved_cluster_hosts([("a:1", "a:1"), ("b:1", "c:1"), ("x:1", "b:1")], ["a:1", "b:1", "c:1"])
    [('b:1', 'c:1')]
    """
    have = set(cluster_storage)
    return [(o, n) for o, n in pairs if o != n and o in have]


def refusal(pairs: list[tuple[str, str]], cluster_storage: list[str]) -> str | None:
    moved = moved_cluster_hosts(pairs, cluster_storage)
    if not moved:
        return None
    return ("a restore of chosen spaces cannot move a storage host of this cluster ("
            + ", ".join(f"{o} → {n}" for o, n in moved)
            + "): metad's restoreMeta rewrites the parts of every space, so the spaces not restored would "
              "leave that host and its storaged would remove them on start")


async def check(ctx: RestoreContext, pairs: list[tuple[str, str]], topo: dict[str, Any]) -> None:
    """CHECKED, for a restore of chosen spaces: the host map keeps the cluster's hosts, and the SST
    writer is there (before anything stops)."""
    why = refusal(pairs, [s["addr"] for s in topo["storage"]])
    if why:
        raise PreflightFailed(why, hint="map each host of the cluster to itself (--host-map old=old), or restore "
                                        "all spaces from a full backup")
    codec = ports(ctx).meta_sst
    if codec is not None:
        codec.write({b"probe": b""}, set())  # rocksdict missing: refused here, not in the downtime


async def settle(ctx: RestoreContext) -> None:
    """With several metads, wait for the followers to apply what the leader had committed before the
    stop: an entry applied after restoreMeta's local ingest would undo part of it on that metad."""
    if len(ctx.data.topo["meta"]) > 1:
        await asyncio.sleep((ctx.data.params.meta_settle_seconds or SETTLE_SECONDS))


async def _backup_rows(ctx: RestoreContext, m: dict[str, Any]) -> dict[bytes, bytes]:
    """The backup's meta rows, read from the first metad's restore dir (proved before the stop)."""
    p = ports(ctx)
    mh = ctx.data.topo["meta"][0]
    d = placement.meta_restore_dir(mh["data_paths"][0], ctx.ref)
    h = p.hosts.host(mh["host"])
    blobs = []
    for name in (posixpath.basename(f) for f in m["meta_files"]):
        blobs.append(b"".join([c async for c in h.open_read(posixpath.join(d, name))]))
    return p.meta_sst.read(blobs)


async def replaced_schema_keys(ctx: RestoreContext) -> set[bytes]:
    """The schema keys of the spaces CHECKED found re-created under another id (``replaced_spaces``),
    read while they still exist: their dropSpace leaves these behind, under an id that a later space
    could be given. A space already gone (a resume after the drop) lists nothing."""
    p = ports(ctx)
    keys: set[bytes] = set()
    for sid in sorted(int(k) for k in ctx.data.replaced_spaces):
        try:
            keys |= meta_ingest.live_keys(sid, await p.meta.list_schema(sid))
        except MetaError:
            continue
    return keys


async def build(ctx: RestoreContext, m: dict[str, Any], *, also_delete: set[bytes] = frozenset()) -> bytes:
    """The SST for this restore: built once (journaled), the same bytes for every metad and every resume."""
    done = ctx.data.meta_ingest
    if done:
        return base64.b64decode(done["sst"])
    p = ports(ctx)
    rows = await _backup_rows(ctx, m)
    chosen = {int(sid): name for sid, name in m["spaces"].items()}
    live = await p.meta.list_spaces()
    schema = {sid: await p.meta.list_schema(sid) for sid in sorted(live.values())}
    plan = meta_ingest.plan(rows, chosen, live, schema, int(time.time() * 1000))
    blob = p.meta_sst.write(plan.puts, plan.deletes | (set(also_delete) - set(plan.puts)))
    ctx.record(META_INGEST_BUILT, {"sst": base64.b64encode(blob).decode(), "sha256": hashlib.sha256(blob).hexdigest(),
                                   **plan.summary()})
    return blob


async def leftover_keys(ctx: RestoreContext, m: dict[str, Any], ingested: bytes) -> set[bytes]:
    """Schema keys a restored space lists that the ingested SST does not hold: what a space dropped
    since the backup left behind (DropSpaceProcessor keeps tags, edges and indexes), which no listing
    could show while the space was gone and which reappear with it."""
    p = ports(ctx)
    want = set(p.meta_sst.read([ingested]))
    extra: set[bytes] = set()
    for sid in sorted(int(s) for s in m["spaces"]):
        extra |= meta_ingest.live_keys(sid, await p.meta.list_schema(sid)) - want
    return extra
