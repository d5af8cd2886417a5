"""What metad ingests for a restore of chosen spaces: exactly those spaces' meta keys, and id counters
that never hand out a live id again. Pure: the rows in, the puts and deletes out.

Why not nebula-br's way (drop the spaces, then ingest the backup's tables): in Nebula 3.0–3.8
``DropSpaceProcessor`` leaves a space's tags, edges, indexes and their name keys behind, and the backup's
``__id__`` (in every backup) and the space's ``__local_id__`` roll the id counters back
(``BaseProcessor::autoIncrementId`` / ``autoIncrementIdInSpace``): schema made after the backup
survives the restore and the next CREATE hands out an id that is live. And the drop is a Raft entry
that a follower applies only when a later append carries its commit id, while restoreMeta writes
each metad locally, so a follower can apply the drop AFTER its ingest and lose the restored space.

So brsm drops nothing and writes the SST itself: a tombstone for every key of a chosen space that
the cluster has and the backup has not (tags, edges, indexes, their name keys, as the meta RPCs
list them), the backup's rows of those spaces, ``__id__`` at the larger of the backup's and the
largest live id, each chosen space's ``__local_id__`` at the larger of the backup's and the largest id
live in it, and ``__last_update_time__`` now (graphd and storaged reload their meta caches). Keys are
MetaKeyUtils.cpp's: ids appended in the machine's byte order (little-endian on the x86-64 and
arm64 builds Nebula ships).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from brsm.ports import SpaceSchema

ID_KEY = b"__id__"
LAST_UPDATE = b"__last_update_time__"
INDEX = b"__index__"
LOCAL_ID = b"__local_id__"
# MetaKeyUtils' tableMaps whose keys carry the space id right after the table name
SPACE_TABLES = (b"__spaces__", b"__parts__", b"__tags__", b"__edges__", b"__indexes__", b"__index_status__",
                b"__roles__", b"__stats__", LOCAL_ID, b"__disk_parts__")
SPACE, TAG, EDGE, IDX = 1, 2, 3, 4
INT64_MAX = 2**63 - 1


def i32(n: int) -> bytes:
    return n.to_bytes(4, "little", signed=True)


def from_i32(b: bytes) -> int:
    return int.from_bytes(b[:4], "little", signed=True)


def tag_key(sid: int, tag_id: int, version: int) -> bytes:
    """MetaKeyUtils::schemaTagKey (versions stored as INT64_MAX - version)."""
    return b"__tags__" + i32(sid) + i32(tag_id) + (INT64_MAX - version).to_bytes(8, "little", signed=True)


def edge_key(sid: int, edge_type: int, version: int) -> bytes:
    return b"__edges__" + i32(sid) + i32(edge_type) + (INT64_MAX - version).to_bytes(8, "little", signed=True)


def index_key(sid: int, index_id: int) -> bytes:
    return b"__indexes__" + i32(sid) + i32(index_id)


def name_key(kind: int, sid: int, name: str) -> bytes:
    """MetaKeyUtils::indexTagKey / indexEdgeKey / indexIndexKey."""
    return INDEX + bytes([kind]) + i32(sid) + name.encode()


def space_of(key: bytes) -> int | None:
    """The space a meta key belongs to, or None (a system key, or a space's name key)."""
    for t in SPACE_TABLES:
        if key.startswith(t) and len(key) >= len(t) + 4:
            return from_i32(key[len(t):len(t) + 4])
    if key.startswith(INDEX) and len(key) > len(INDEX) and key[len(INDEX)] != SPACE:
        return from_i32(key[len(INDEX) + 1:len(INDEX) + 5])
    return None


def live_keys(sid: int, schema: SpaceSchema) -> set[bytes]:
    """The keys a space's listed schema is stored under."""
    keys = {tag_key(sid, i, v) for i, _, v in schema.tags} | {edge_key(sid, i, v) for i, _, v in schema.edges}
    keys |= {name_key(TAG, sid, n) for _, n, _ in schema.tags} | {name_key(EDGE, sid, n) for _, n, _ in schema.edges}
    keys |= {index_key(sid, i) for i, _ in schema.indexes} | {name_key(IDX, sid, n) for _, n in schema.indexes}
    return keys


def max_id(schema: SpaceSchema) -> int:
    return max([i for i, _, _ in schema.tags] + [i for i, _, _ in schema.edges] + [i for i, _ in schema.indexes],
               default=0)


@dataclass
class IngestPlan:
    puts: dict[bytes, bytes] = field(default_factory=dict)
    deletes: set[bytes] = field(default_factory=set)
    next_id_floor: int = 0  # __id__ written
    local_ids: dict[int, int] = field(default_factory=dict)  # space -> __local_id__ written

    def summary(self) -> dict[str, object]:
        return {"puts": len(self.puts), "deletes": len(self.deletes), "id": self.next_id_floor,
                "local_ids": {str(k): v for k, v in sorted(self.local_ids.items())}}


def plan(backup_rows: Mapping[bytes, bytes], chosen: Mapping[int, str], live_space_ids: Mapping[str, int],
         live_schema: Mapping[int, SpaceSchema], now_ms: int) -> IngestPlan:
    """The rows to ingest for a restore of the ``chosen`` spaces (id -> name).

    ``live_schema`` holds the schema the cluster lists for every live space (at least the chosen
    ones); ``live_space_ids`` every live space.

    >>> from brsm.ports import SpaceSchema
    >>> rows = {b"__id__": i32(3), b"__spaces__" + i32(2): b"d", b"__index__\\x01s": i32(2),
    ...         b"__local_id__" + i32(2): i32(3), tag_key(2, 3, 0): b"t"}
    >>> live = {2: SpaceSchema(tags=((3, "t", 0), (9, "late", 0))), 7: SpaceSchema()}
    >>> p = plan(rows, {2: "s"}, {"s": 2, "other": 7}, live, 1)
    >>> from_i32(p.puts[b"__id__"]), p.local_ids[2], tag_key(2, 9, 0) in p.deletes, tag_key(2, 3, 0) in p.deletes
    (9, 9, True, False)
    """
    out = IngestPlan()
    names = {n.encode() for n in chosen.values()}
    for k, v in backup_rows.items():
        if k.startswith(INDEX) and len(k) > len(INDEX) and k[len(INDEX)] == SPACE:
            if k[len(INDEX) + 1:] in names:
                out.puts[k] = v
        elif space_of(k) in chosen and not k.startswith(LOCAL_ID):
            out.puts[k] = v
    for sid in chosen:
        out.deletes |= live_keys(sid, live_schema.get(sid, SpaceSchema())) - set(out.puts)
    backup_id = from_i32(backup_rows[ID_KEY]) if ID_KEY in backup_rows else 0
    live_max = max(list(live_space_ids.values()) + [max_id(s) for s in live_schema.values()], default=0)
    out.next_id_floor = max(backup_id, live_max)
    out.puts[ID_KEY] = i32(out.next_id_floor)
    for sid in chosen:
        key = LOCAL_ID + i32(sid)
        floor = max(from_i32(backup_rows[key]) if key in backup_rows else 0,
                    max_id(live_schema.get(sid, SpaceSchema())))
        if floor:
            out.local_ids[sid] = floor
            out.puts[key] = i32(floor)
    out.puts[LAST_UPDATE] = now_ms.to_bytes(8, "little", signed=True)
    return out
