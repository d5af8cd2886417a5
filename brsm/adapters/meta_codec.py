"""nebula-br's ``<NAME>.meta`` file: the ``BackupMeta`` Thrift struct, framed binary.

Layout (what nebula-br writes and reads): a 4-byte big-endian length N, then N bytes of the struct
in the Thrift binary protocol (strict write; a struct has no message header, so the first byte
after the length is a field-type byte and the struct ends with a STOP byte 0x00).

Also turns a ``BackupMeta`` into the plain facts later steps need (``CreatedBackup``).
"""
from __future__ import annotations

import re
import struct

from nebula3.common import ttypes as common
from nebula3.fbthrift.protocol import TBinaryProtocol
from nebula3.fbthrift.Thrift import TType
from nebula3.fbthrift.transport import TTransport
from nebula3.meta import ttypes as meta

from brsm.ports import CreatedBackup, HostAddr

__all__ = ["encode_backup_meta", "decode_backup_meta", "created_backup", "BackupMetaDecodeError", "text",
           "release", "drop_snapshot_req", "DropSnapshotReqV30"]

MAX_META_BYTES = 256 << 20


class BackupMetaDecodeError(ValueError):
    """The bytes are not a framed ``BackupMeta`` (truncated, wrong length prefix, garbage)."""


def text(b: bytes | str | None) -> str:
    """Thrift ``binary`` fields come back as bytes: decode utf-8 (lossless for odd bytes)."""
    if b is None:
        return ""
    if isinstance(b, str):
        return b
    return b.decode("utf-8", "surrogateescape")


def _raw(b: bytes | str | None) -> bytes:
    if b is None:
        return b""
    return b if isinstance(b, bytes) else b.encode("utf-8", "surrogateescape")


def encode_backup_meta(bm: meta.BackupMeta) -> bytes:
    """Serialize exactly as nebula-br's ``.meta``: framed (4-byte BE length) + strict binary struct."""
    buf = TTransport.TMemoryBuffer()
    proto = TBinaryProtocol.TBinaryProtocol(buf, strictRead=False, strictWrite=True)
    bm.write(proto)
    body = buf.getvalue()
    return struct.pack(">I", len(body)) + body


def decode_backup_meta(data: bytes) -> meta.BackupMeta:
    """Parse a ``.meta`` file's bytes; raises ``BackupMetaDecodeError`` if they are not one."""
    if len(data) < 5:
        raise BackupMetaDecodeError(f"too short for a framed BackupMeta ({len(data)} bytes)")
    (n,) = struct.unpack(">I", data[:4])
    if n != len(data) - 4:
        raise BackupMetaDecodeError(f"frame length {n} does not match the {len(data) - 4} bytes after it")
    if n > MAX_META_BYTES:
        raise BackupMetaDecodeError(f"frame length {n} is implausibly large")
    buf = TTransport.TMemoryBuffer(data[4:])
    proto = TBinaryProtocol.TBinaryProtocol(buf)
    bm = meta.BackupMeta()
    try:
        bm.read(proto)
    except Exception as exc:  # noqa: BLE001 - the generated reader raises many kinds
        raise BackupMetaDecodeError(f"not a BackupMeta struct: {exc}") from exc
    if buf._readBuffer.tell() != n:  # noqa: SLF001 - trailing bytes mean a different struct
        raise BackupMetaDecodeError(f"{n - buf._readBuffer.tell()} trailing bytes after the struct")
    if bm.backup_name is None:
        raise BackupMetaDecodeError("struct has no backup_name")
    return bm


_CKPT = re.compile(r"^(?P<dp>.*?)/nebula/(?P<sid>\d+)/checkpoints/[^/]+/?$")


def _split_checkpoint(space_id: int, data_path: str, checkpoint_path: str) -> tuple[str, str]:
    """(storage data path, checkpoint dir). Nebula reports the checkpoint dir in both fields
    (``<dp>/nebula/<sid>/checkpoints/<name>``); recover the data path from it when it has that shape."""
    cdir = (checkpoint_path or data_path).rstrip("/")
    m = _CKPT.match(data_path.rstrip("/")) or _CKPT.match(cdir)
    dp = m.group("dp") if m and int(m.group("sid")) == space_id else data_path
    return (dp or "/"), cdir


def host_str(h: common.HostAddr) -> str:
    return f"{text(h.host)}:{h.port}"


def created_backup(bm: meta.BackupMeta, meta_bytes: bytes | None = None) -> CreatedBackup:
    """The plain facts of a ``BackupMeta``: names, spaces, checkpoints per storage host."""
    spaces: dict[int, str] = {}
    cps: dict[str, list[tuple[int, str, str]]] = {}
    for sid, sb in sorted((bm.space_backups or {}).items()):
        name = text(sb.space.space_name) if sb.space else ""
        spaces[int(sid)] = name
        for hb in sb.host_backups or []:
            key = host_str(hb.host)
            for cp in hb.checkpoints or []:
                space_id = int(cp.space_id if cp.space_id is not None else sid)
                paths = sorted({text(li.checkpoint_path) for li in (cp.parts or {}).values()
                                if li.checkpoint_path}) or [""]
                for p in paths:
                    entry = (space_id, *_split_checkpoint(space_id, text(cp.data_path), p))
                    if entry not in cps.setdefault(key, []):
                        cps[key].append(entry)
    return CreatedBackup(
        name=text(bm.backup_name),
        meta_bytes=encode_backup_meta(bm) if meta_bytes is None else meta_bytes,
        spaces=spaces,
        all_spaces=bool(bm.all_spaces),
        meta_files=tuple(text(f).rsplit("/", 1)[-1] for f in (bm.meta_files or [])),
        checkpoints={h: tuple(v) for h, v in sorted(cps.items())},
        # the open-source metad never sets storage_hosts (CreateBackupProcessor.cpp): the hosts are
        # the ones with checkpoints in space_backups, as nebula-br's restore takes them
        storage_hosts=tuple(HostAddr(text(h.host), int(h.port)) for h in (bm.storage_hosts or []))
        or tuple(sorted({HostAddr(text(hb.host.host), int(hb.host.port))
                         for sb in (bm.space_backups or {}).values() for hb in (sb.host_backups or [])})),
        create_time_ms=int(bm.create_time or 0),
    )


def make_backup_meta(*, name: str, spaces: dict[int, tuple[meta.SpaceDesc, dict[str, list[common.CheckpointInfo]]]],
                     meta_files: list[str], all_spaces: bool, create_time_ms: int,
                     storage_hosts: list[HostAddr], cluster_id: int = 0) -> meta.BackupMeta:
    """Build a ``BackupMeta`` (used by the fake metad; real metad builds its own)."""
    sbs = {}
    for sid, (desc, per_host) in spaces.items():
        hbs = [meta.HostBackupInfo(host=common.HostAddr(host=h.rpartition(":")[0], port=int(h.rpartition(":")[2])),
                                   checkpoints=cl) for h, cl in sorted(per_host.items())]
        sbs[sid] = meta.SpaceBackupInfo(space=desc, host_backups=hbs)
    return meta.BackupMeta(space_backups=sbs, meta_files=[_raw(f) for f in meta_files], backup_name=_raw(name),
                           full=True, all_spaces=all_spaces, create_time=create_time_ms,
                           storage_hosts=[common.HostAddr(host=h.host, port=h.port) for h in storage_hosts],
                           cluster_id=cluster_id)


# -- the meta wire of older releases (nebula3-python generates only the latest) ------------------------
_RELEASE = re.compile(r"^\s*v?(\d+)\.(\d+)(?:\.(\d+))?")


def release(version: str | bytes | None) -> tuple[int, int, int] | None:
    """(major, minor, patch) of the version a daemon reports, or None when it names no release.

    >>> release("3.2.0"), release("v3.8"), release("2024.01.01-nightly"), release("")
    ((3, 2, 0), (3, 8, 0), None, None)
    """
    m = _RELEASE.match(text(version))
    if not m or int(m.group(1)) > 99:  # a nightly's date is no release
        return None
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


class DropSnapshotReqV30:
    """``struct DropSnapshotReq { 1: binary name }`` of meta.thrift v3.0.0–v3.2.x (3.3.0 made it
    ``1: list<binary> names``). A 3.0–3.2 metad given the list skips the mistyped field, reads an
    empty name and answers SUCCEEDED having dropped nothing, so to it brsm must send this one.
    Written through the generated ``dropSnapshot_args`` (plain binary protocol calls ``write``)."""

    def __init__(self, name: bytes) -> None:
        self.name = name

    def write(self, oprot: TBinaryProtocol.TBinaryProtocol) -> None:
        oprot.writeStructBegin("DropSnapshotReq")
        oprot.writeFieldBegin("name", TType.STRING, 1)
        oprot.writeString(self.name)
        oprot.writeFieldEnd()
        oprot.writeFieldStop()
        oprot.writeStructEnd()

    def __repr__(self) -> str:
        return f"DropSnapshotReqV30(name={self.name!r})"


def drop_snapshot_req(name: str, version: tuple[int, int, int] | None) -> meta.DropSnapshotReq | DropSnapshotReqV30:
    """The ``dropSnapshot`` request metad of ``version`` reads (the latest when it is not known).

    >>> drop_snapshot_req("B", (3, 2, 1))
    DropSnapshotReqV30(name=b'B')
    >>> drop_snapshot_req("B", (3, 8, 0)).names
    [b'B']
    """
    if version is not None and version[:2] < (3, 3):
        return DropSnapshotReqV30(_raw(name))
    return meta.DropSnapshotReq(names=[_raw(name)])
