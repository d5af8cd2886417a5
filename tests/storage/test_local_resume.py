"""A cut write to local storage continues from its last whole block, and only when the temp file's
prefix still hashes to what the stream had there; anything else starts the file over."""
from __future__ import annotations

import hashlib
import os

import pytest

from brsm.adapters.storage.local import TMP_MARK, LocalStorage
from brsm.errors import RemoteError, StorageError
from brsm.ports import UploadState

BLOCK = 64 * 1024
DATA = os.urandom(10 * BLOCK + 1234)


class FileSource:
    """A ByteSource over DATA that can be told to break after ``cut`` bytes; records where it was opened."""

    def __init__(self, cut: int | None = None) -> None:
        self.cut = cut
        self.opened: list[int] = []

    def open(self, offset: int = 0):
        self.opened.append(offset)

        async def gen():
            pos = offset
            while pos < len(DATA):
                n = min(8192, len(DATA) - pos)
                if self.cut is not None and pos + n > self.cut:
                    raise RemoteError("h: SSH connection dropped", host="h")
                yield DATA[pos:pos + n]
                pos += n
        return gen()


@pytest.fixture
def store(tmp_path):
    return LocalStorage(tmp_path / "root", block_size=BLOCK)


def tmp_files(store):
    return [p for p in (store.root / "a").iterdir() if p.name.startswith(TMP_MARK)]


async def cut_put(store, cut):
    state, seen = UploadState(), []
    with pytest.raises(RemoteError):
        await store.put("a/f", FileSource(cut), len(DATA), state=state,
                        on_part=lambda s: seen.append(dict(s.parts[-1])))
    return state, seen


async def test_a_cut_write_resumes_at_its_last_block(store):
    state, seen = await cut_put(store, cut=5 * BLOCK + 100)
    # one checkpoint per whole block written, each with the stream's hash so far
    assert [c["size"] for c in seen] == [BLOCK * i for i in range(1, 6)]
    assert all(c["etag"] == hashlib.sha256(DATA[:c["size"]]).hexdigest() for c in seen)
    assert [p.name for p in tmp_files(store)] == [state.upload_id]
    src = FileSource()
    res = await store.put("a/f", src, len(DATA), state=state, on_part=lambda s: None)
    assert src.opened == [5 * BLOCK]  # the first five blocks did not cross again
    assert res.sha256 == hashlib.sha256(DATA).hexdigest() and res.size == len(DATA)
    assert (store.root / "a/f").read_bytes() == DATA
    assert tmp_files(store) == []


async def test_a_changed_prefix_starts_over(store):
    state, _ = await cut_put(store, cut=3 * BLOCK + 5)
    tmp = store.root / "a" / state.upload_id
    raw = bytearray(tmp.read_bytes())
    raw[10] ^= 0xFF
    tmp.write_bytes(bytes(raw))
    src = FileSource()
    res = await store.put("a/f", src, len(DATA), state=state, on_part=lambda s: None)
    assert src.opened == [0]
    assert res.sha256 == hashlib.sha256(DATA).hexdigest()
    assert (store.root / "a/f").read_bytes() == DATA
    assert tmp_files(store) == []  # the bad temp file is gone too


async def test_a_committed_but_unjournaled_file_resumes_from_its_last_checkpoint(store):
    """A kill after the put renamed its temp file to the key but before the caller journaled the file
    (the sweep's and the bench's `file:N` point): the resume takes the committed file back and fetches
    only what follows the last checkpoint, not the whole file again."""
    state, seen = UploadState(), []
    await store.put("a/f", FileSource(), len(DATA), state=state, on_part=lambda s: seen.append(dict(s.parts[-1])))
    assert (store.root / "a/f").read_bytes() == DATA and tmp_files(store) == []
    last = seen[-1]["size"]
    assert 0 < last < len(DATA)  # the last checkpoint is before the end: nothing is journaled at the end
    src = FileSource()
    res = await store.put("a/f", src, len(DATA), state=state, on_part=lambda s: None)
    assert src.opened == [last]
    assert res.sha256 == hashlib.sha256(DATA).hexdigest() and res.size == len(DATA)
    assert (store.root / "a/f").read_bytes() == DATA and tmp_files(store) == []


async def test_a_committed_file_that_changed_or_is_a_symlink_is_fetched_whole(store, tmp_path):
    state = UploadState()
    await store.put("a/f", FileSource(), len(DATA), state=state, on_part=lambda s: None)
    raw = bytearray((store.root / "a/f").read_bytes())
    raw[7] ^= 0xFF
    (store.root / "a/f").write_bytes(bytes(raw))
    src = FileSource()
    saved = UploadState(state.upload_id, list(state.parts), state.part_size)
    res = await store.put("a/f", src, len(DATA), state=state, on_part=lambda s: None)
    assert src.opened == [0] and res.sha256 == hashlib.sha256(DATA).hexdigest()
    assert (store.root / "a/f").read_bytes() == DATA

    outside = tmp_path / "outside"
    outside.write_bytes(DATA)
    (store.root / "a/f").unlink()
    (store.root / "a/f").symlink_to(outside)
    src = FileSource()
    res = await store.put("a/f", src, len(DATA), state=saved, on_part=lambda s: None)
    assert src.opened == [0] and res.sha256 == hashlib.sha256(DATA).hexdigest()
    assert outside.read_bytes() == DATA  # never opened for writing through the link
    assert not (store.root / "a/f").is_symlink() and tmp_files(store) == []


@pytest.mark.parametrize("damage", ["missing", "short", "foreign"])
async def test_a_missing_short_or_foreign_temp_file_starts_over(store, damage):
    state, _ = await cut_put(store, cut=4 * BLOCK + 5)
    tmp = store.root / "a" / state.upload_id
    if damage == "missing":
        tmp.unlink()
    elif damage == "short":
        os.truncate(tmp, 2 * BLOCK)
    else:
        state.upload_id = "../../etc/passwd"
    src = FileSource()
    res = await store.put("a/f", src, len(DATA), state=state, on_part=lambda s: None)
    assert src.opened == [0]
    assert res.sha256 == hashlib.sha256(DATA).hexdigest()
    assert (store.root / "a/f").read_bytes() == DATA


async def test_a_plain_stream_or_no_journal_keeps_no_temp_file(store):
    async def plain():
        yield DATA[:BLOCK * 2]
        raise RemoteError("h: dropped", host="h")
    calls = []
    with pytest.raises(RemoteError):
        await store.put("a/f", plain(), len(DATA), state=UploadState(), on_part=calls.append)
    with pytest.raises(RemoteError):
        await store.put("a/f", FileSource(cut=3 * BLOCK), len(DATA))  # nobody journals: nothing to resume
    assert calls == [] and tmp_files(store) == []


async def test_a_size_mismatch_discards_the_temp_file(store):
    state = UploadState()
    with pytest.raises(Exception) as ei:
        await store.put("a/f", FileSource(), len(DATA) + 10, state=state, on_part=lambda s: None)
    assert "bytes" in str(ei.value)
    assert tmp_files(store) == [] and state.upload_id is None


async def test_a_cut_before_the_first_checkpoint_leaves_no_temp_file(store):
    state, seen = await cut_put(store, cut=BLOCK // 2)
    assert seen == [] and tmp_files(store) == [] and state.upload_id is None


async def test_a_block_that_reads_back_different_fails_the_put_and_leaves_nothing(store, monkeypatch):
    import brsm.adapters.storage.local as local_mod
    real_pread = os.pread

    def flaky_pread(fd, n, pos):
        data = real_pread(fd, n, pos)
        if pos <= 3 * BLOCK + 7 < pos + len(data):  # the disk returns one flipped byte here
            i = 3 * BLOCK + 7 - pos
            data = data[:i] + bytes([data[i] ^ 1]) + data[i + 1:]
        return data
    monkeypatch.setattr(local_mod.os, "pread", flaky_pread)
    with pytest.raises(StorageError) as ei:
        await store.put("a/f", FileSource(), len(DATA), state=UploadState(), on_part=lambda s: None)
    assert f"offset {3 * BLOCK + 7}" in str(ei.value) and not ei.value.permanent
    assert not (store.root / "a/f").exists() and tmp_files(store) == []
