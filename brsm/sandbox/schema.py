"""Schemas of the metad stand-in: tags, edges and their indexes, kept as Nebula keeps them.

Keys follow ``src/common/utils/MetaKeyUtils.cpp`` byte for byte (ids in the machine's byte order, as
Nebula's ``reinterpret_cast`` appends them; little-endian here):

  ``__tags__``    + space(4) + tag id(4)   + (INT64_MAX - version)(8)  -> schemaVal (name, Schema)
  ``__edges__``   + space(4) + edge type(4) + (INT64_MAX - version)(8) -> schemaVal
  ``__indexes__`` + space(4) + index id(4)                           -> IndexItem
  ``__index__``   + 0x02|0x03|0x04 + space(4) + name                  -> tag id | edge type | index id
  ``__local_id__`` + space(4)                                        -> the last id handed out in the space

Ids come from ``BaseProcessor::autoIncrementIdInSpace``: the space's ``__local_id__`` plus one, or, when
the space has none yet, ``getAvailableGlobalId`` (``__id__`` plus one, which it does NOT advance).
``DropSpaceProcessor`` removes the space's local id but none of these schema keys.
"""
from __future__ import annotations

import sys
import time
from typing import Any

from nebula3.common import ttypes as common
from nebula3.fbthrift.protocol import TBinaryProtocol
from nebula3.fbthrift.util import Serializer
from nebula3.meta import ttypes as meta

EC = common.ErrorCode
T_TAGS = b"__tags__"
T_EDGES = b"__edges__"
T_INDEXES = b"__indexes__"
T_INDEX = b"__index__"
T_INDEX_STATUS = b"__index_status__"
T_LOCAL_ID = b"__local_id__"
T_ID = b"__id__"
T_LAST_UPDATE = b"__last_update_time__"
SPACE = 0x01
TAG = 0x02
EDGE = 0x03
INDEX = 0x04
INT64_MAX = 2**63 - 1
# tables whose keys carry the space id right after the table name (MetaKeyUtils' tableMaps with a
# space parser): what createBackup exports filtered by space
SCHEMA_TABLES = (T_TAGS, T_EDGES, T_INDEXES, T_INDEX_STATUS, T_LOCAL_ID)
_BIN = TBinaryProtocol.TBinaryProtocolFactory()
_ORDER = sys.byteorder


def i32(n: int) -> bytes:
    return n.to_bytes(4, _ORDER, signed=True)


def from_i32(b: bytes) -> int:
    return int.from_bytes(b[:4], _ORDER, signed=True)


def tag_key(sid: int, tag_id: int, version: int = 0) -> bytes:
    return T_TAGS + i32(sid) + i32(tag_id) + (INT64_MAX - version).to_bytes(8, _ORDER, signed=True)


def edge_key(sid: int, edge_type: int, version: int = 0) -> bytes:
    return T_EDGES + i32(sid) + i32(edge_type) + (INT64_MAX - version).to_bytes(8, _ORDER, signed=True)


def index_key(sid: int, index_id: int) -> bytes:
    return T_INDEXES + i32(sid) + i32(index_id)


def name_key(kind: int, sid: int, name: bytes) -> bytes:
    """MetaKeyUtils::indexTagKey / indexEdgeKey / indexIndexKey."""
    return T_INDEX + bytes([kind]) + i32(sid) + name


def local_id_key(sid: int) -> bytes:
    return T_LOCAL_ID + i32(sid)


def schema_val(name: bytes, schema: meta.Schema) -> bytes:
    """MetaKeyUtils::schemaVal: int32 name length, the name, the serialized Schema."""
    return i32(len(name)) + name + Serializer.serialize(_BIN, schema or meta.Schema(columns=[]))


def parse_schema_val(raw: bytes) -> tuple[bytes, meta.Schema]:
    n = from_i32(raw)
    return raw[4:4 + n], Serializer.deserialize(_BIN, raw[4 + n:], meta.Schema())


def space_of(table: bytes, key: bytes) -> int | None:
    """The space id of a key of a space table, None for another key."""
    if key.startswith(table) and len(key) >= len(table) + 4:
        return from_i32(key[len(table):len(table) + 4])
    return None


def index_entry_space(key: bytes) -> tuple[int, int | None]:
    """(entry type, space id or None for a space name key) of an ``__index__`` key."""
    kind = key[len(T_INDEX)]
    return kind, (None if kind == SPACE else from_i32(key[len(T_INDEX) + 1:len(T_INDEX) + 5]))


def _now_bytes() -> bytes:
    return int(time.time() * 1000).to_bytes(8, _ORDER, signed=True)


class SchemaRPCs:
    """The schema RPCs of MetaHandler (mixed into it): CreateTagProcessor, CreateEdgeProcessor,
    CreateTagIndexProcessor / CreateEdgeIndexProcessor, and the List*Processors, reduced to what a
    backup touches (no ALTER, no TTL, one schema version)."""

    db: Any
    lock: Any

    # -- ids
    def _global_id(self) -> int:
        raw = self._get(T_ID)
        return (from_i32(raw) if raw else 0) + 1

    def _next_local_id(self, sid: int) -> tuple[int, bytes, bytes]:
        """BaseProcessor::autoIncrementIdInSpace: (id, key, value) to write."""
        raw = self._get(local_id_key(sid))
        nxt = from_i32(raw) + 1 if raw else self._global_id()
        return nxt, local_id_key(sid), i32(nxt)

    def _schema_rows(self, table: bytes, sid: int) -> list[tuple[int, int, bytes, meta.Schema]]:
        out = []
        for k, v in self._prefix(table + i32(sid)):
            sid_len = len(table) + 4
            item_id = from_i32(k[sid_len:sid_len + 4])
            version = INT64_MAX - int.from_bytes(k[sid_len + 4:sid_len + 12], _ORDER, signed=True)
            name, schema = parse_schema_val(v)
            out.append((item_id, version, name, schema))
        return out

    def _create_schema(self, req: Any, kind: int, table: bytes, name: bytes) -> Any:
        sid = req.space_id
        with self.lock:
            if sid not in self._spaces():
                return self._err(meta.ExecResp, EC.E_SPACE_NOT_FOUND)
            other = TAG if kind == EDGE else EDGE
            if self._get(name_key(other, sid, name)) is not None:
                # CreateTagProcessor / CreateEdgeProcessor: a tag and an edge may not share a name
                return self._err(meta.ExecResp, EC.E_CONFLICT)
            existing = self._get(name_key(kind, sid, name))
            if existing is not None:
                if req.if_not_exists:
                    return self._ok(meta.ExecResp, id=self._schema_id(kind, from_i32(existing)))
                return self._err(meta.ExecResp, EC.E_EXISTED)
            new_id, lk, lv = self._next_local_id(sid)
            wb = self._batch()
            wb.put(lk, lv)
            wb.put(name_key(kind, sid, name), i32(new_id))
            key = tag_key(sid, new_id) if kind == TAG else edge_key(sid, new_id)
            wb.put(key, schema_val(name, req.schema))
            wb.put(T_LAST_UPDATE, _now_bytes())
            self.db.write(wb)
        return self._ok(meta.ExecResp, id=self._schema_id(kind, new_id))

    @staticmethod
    def _schema_id(kind: int, n: int) -> meta.ID:
        return {TAG: meta.ID(tag_id=n), EDGE: meta.ID(edge_type=n), INDEX: meta.ID(index_id=n)}[kind]

    def createTag(self, req: meta.CreateTagReq) -> Any:
        return self._create_schema(req, TAG, T_TAGS, req.tag_name)

    def createEdge(self, req: meta.CreateEdgeReq) -> Any:
        return self._create_schema(req, EDGE, T_EDGES, req.edge_name)

    def listTags(self, req: meta.ListTagsReq) -> Any:
        if req.space_id not in self._spaces():
            return self._err(meta.ListTagsResp, EC.E_SPACE_NOT_FOUND)
        tags = [meta.TagItem(tag_id=i, tag_name=n, version=v, schema=s)
                for i, v, n, s in self._schema_rows(T_TAGS, req.space_id)]
        return self._ok(meta.ListTagsResp, tags=tags)

    def listEdges(self, req: meta.ListEdgesReq) -> Any:
        if req.space_id not in self._spaces():
            return self._err(meta.ListEdgesResp, EC.E_SPACE_NOT_FOUND)
        edges = [meta.EdgeItem(edge_type=i, edge_name=n, version=v, schema=s)
                 for i, v, n, s in self._schema_rows(T_EDGES, req.space_id)]
        return self._ok(meta.ListEdgesResp, edges=edges)

    def _create_index(self, req: Any, kind: int, schema_name: bytes) -> Any:
        """CreateTagIndexProcessor / CreateEdgeIndexProcessor: the tag (edge) must exist, the index
        name be new; the index id comes from the space's local id."""
        sid = req.space_id
        with self.lock:
            if sid not in self._spaces():
                return self._err(meta.ExecResp, EC.E_SPACE_NOT_FOUND)
            schema_raw = self._get(name_key(kind, sid, schema_name))
            if schema_raw is None:
                return self._err(meta.ExecResp, EC.E_TAG_NOT_FOUND if kind == TAG else EC.E_EDGE_NOT_FOUND)
            existing = self._get(name_key(INDEX, sid, req.index_name))
            if existing is not None:
                if req.if_not_exists:
                    return self._ok(meta.ExecResp, id=meta.ID(index_id=from_i32(existing)))
                return self._err(meta.ExecResp, EC.E_EXISTED)
            new_id, lk, lv = self._next_local_id(sid)
            schema_id = common.SchemaID(tag_id=from_i32(schema_raw)) if kind == TAG else \
                common.SchemaID(edge_type=from_i32(schema_raw))
            item = meta.IndexItem(index_id=new_id, index_name=req.index_name, schema_id=schema_id,
                                  schema_name=schema_name,
                                  fields=[meta.ColumnDef(name=f.name, type=meta.ColumnTypeDef(type=common.PropertyType.INT64))
                                          for f in req.fields or []])
            wb = self._batch()
            wb.put(lk, lv)
            wb.put(name_key(INDEX, sid, req.index_name), i32(new_id))
            wb.put(index_key(sid, new_id), Serializer.serialize(_BIN, item))
            wb.put(T_LAST_UPDATE, _now_bytes())
            self.db.write(wb)
        return self._ok(meta.ExecResp, id=meta.ID(index_id=new_id))

    def createTagIndex(self, req: meta.CreateTagIndexReq) -> Any:
        return self._create_index(req, TAG, req.tag_name)

    def createEdgeIndex(self, req: meta.CreateEdgeIndexReq) -> Any:
        return self._create_index(req, EDGE, req.edge_name)

    def _indexes(self, sid: int, tag: bool) -> list[meta.IndexItem]:
        items = [Serializer.deserialize(_BIN, v, meta.IndexItem()) for _, v in self._prefix(T_INDEXES + i32(sid))]
        return [i for i in items if (i.schema_id.getType() == common.SchemaID.TAG_ID) == tag]

    def listTagIndexes(self, req: meta.ListTagIndexesReq) -> Any:
        if req.space_id not in self._spaces():
            return self._err(meta.ListTagIndexesResp, EC.E_SPACE_NOT_FOUND)
        return self._ok(meta.ListTagIndexesResp, items=self._indexes(req.space_id, True))

    def listEdgeIndexes(self, req: meta.ListEdgeIndexesReq) -> Any:
        if req.space_id not in self._spaces():
            return self._err(meta.ListEdgeIndexesResp, EC.E_SPACE_NOT_FOUND)
        return self._ok(meta.ListEdgeIndexesResp, items=self._indexes(req.space_id, False))


def drop_space_keys(prefix_rows: Any, sid: int, space_name: bytes) -> list[bytes]:
    """The keys DropSpaceProcessor removes: the space's parts, its name key, its space key, roles,
    stats, its local id (and listeners, full-text indexes, jobs, which the stand-in keeps none of).
    Tags, edges, indexes, their ``__index__`` name keys and ``__index_status__`` stay behind."""
    keys = [k for k, _ in prefix_rows(b"__parts__" + i32(sid))]
    keys += [T_INDEX + bytes([SPACE]) + space_name, b"__spaces__" + i32(sid), local_id_key(sid)]
    keys += [k for k, _ in prefix_rows(b"__roles__" + i32(sid))]
    keys.append(b"__stats__" + i32(sid))
    return keys


__all__ = ["SchemaRPCs", "drop_space_keys", "tag_key", "edge_key", "index_key", "name_key", "local_id_key",
           "schema_val", "parse_schema_val", "space_of", "index_entry_space", "SCHEMA_TABLES", "i32", "from_i32"
           ]
