"""The `.meta` codec: framed Thrift binary exactly as nebula-br writes it, and round trips."""
import struct

import pytest
from hypothesis import given, settings, strategies as st
from nebula3.common import ttypes as common
from nebula3.fbthrift.protocol import TBinaryProtocol
from nebula3.fbthrift.transport import TTransport
from nebula3.fbthrift.Thrift import TType
from nebula3.meta import ttypes as meta

from brsm.adapters.meta_codec import (BackupMetaDecodeError, created_backup, decode_backup_meta,
                                      encode_backup_meta)
from brsm.ports import HostAddr


def sample(name="BACKUP_2026_11_24_14_00_00", sid=1, dp="/data/s1", host="127.0.0.101"):
    ck = f"{dp}/nebula/{sid}/checkpoints/{name}"
    cp = common.CheckpointInfo(space_id=sid, data_path=ck.encode(), parts={
        1: common.LogInfo(log_id=10, term_id=2, commit_log_id=10, checkpoint_path=ck.encode()),
        2: common.LogInfo(log_id=11, term_id=2, commit_log_id=11, checkpoint_path=ck.encode())})
    sb = meta.SpaceBackupInfo(space=meta.SpaceDesc(space_name=b"basketball", partition_num=2, replica_factor=1),
                              host_backups=[meta.HostBackupInfo(host=common.HostAddr(host=host, port=9779),
                                                                checkpoints=[cp])])
    return meta.BackupMeta(space_backups={sid: sb}, meta_files=[b"__spaces__.sst", b"__parts__.sst"],
                           backup_name=name.encode(), full=True, all_spaces=True, create_time=1764000000123,
                           storage_hosts=[common.HostAddr(host=host, port=9779)], cluster_id=42)


def test_framed_layout_byte_exact():
    bm = sample()
    data = encode_backup_meta(bm)
    (n,) = struct.unpack(">I", data[:4])
    assert n == len(data) - 4
    # struct, no message header: first field is space_backups = MAP, field id 1
    assert data[4] == TType.MAP and data[5:7] == b"\x00\x01"
    assert data[-1] == TType.STOP
    # the same bytes as a framed transport writing the struct with strict binary protocol
    mem = TTransport.TMemoryBuffer()
    framed = TTransport.TFramedTransport(mem)
    bm.write(TBinaryProtocol.TBinaryProtocol(framed, strictWrite=True))
    framed.flush()
    assert mem.getvalue() == data


def test_round_trip_and_facts():
    bm = sample()
    data = encode_backup_meta(bm)
    back = decode_backup_meta(data)
    assert back == bm
    assert encode_backup_meta(back) == data
    cb = created_backup(back, data)
    assert cb.name == "BACKUP_2026_11_24_14_00_00" and cb.meta_bytes == data
    assert cb.spaces == {1: "basketball"} and cb.all_spaces
    assert cb.meta_files == ("__spaces__.sst", "__parts__.sst")
    assert cb.storage_hosts == (HostAddr("127.0.0.101", 9779),)
    assert cb.create_time_ms == 1764000000123
    assert cb.checkpoints == {"127.0.0.101:9779": (
        (1, "/data/s1", "/data/s1/nebula/1/checkpoints/BACKUP_2026_11_24_14_00_00"),)}


@pytest.mark.parametrize("bad", [b"", b"\x00\x00\x00\x01", b"\x00\x00\x00\x05\x0d\x00\x01",
                                 b"HTTP/1.1 200 OK\r\n", b"\x00\x00\x00\x02\x00\x00"])
def test_garbage_is_rejected(bad):
    with pytest.raises(BackupMetaDecodeError):
        decode_backup_meta(bad)


def test_truncated_is_rejected():
    data = encode_backup_meta(sample())
    for cut in (5, len(data) // 2, len(data) - 1):
        with pytest.raises(BackupMetaDecodeError):
            decode_backup_meta(data[:cut])
        with pytest.raises(BackupMetaDecodeError):  # even with a fixed-up length prefix
            decode_backup_meta(struct.pack(">I", cut - 4) + data[4:cut])


names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=20)


@settings(max_examples=60, deadline=None)
@given(name=names, sid=st.integers(1, 2**31 - 1), dp=names.map(lambda s: "/" + s.replace("/", "_")),
       host=names)
def test_round_trip_property(name, sid, dp, host):
    bm = sample(name=name, sid=sid, dp=dp, host=host)
    data = encode_backup_meta(bm)
    assert decode_backup_meta(data) == bm
    cb = created_backup(decode_backup_meta(data))
    assert cb.name == name and list(cb.spaces) == [sid]
    [(space_id, data_path, cdir)] = cb.checkpoints[f"{host}:9779"]
    assert space_id == sid and cdir.endswith(f"/nebula/{sid}/checkpoints/{name}".rstrip("/"))
