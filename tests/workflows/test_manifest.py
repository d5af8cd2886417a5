"""The manifest's format 2: written as a stream, read back one checked file at a time; a truncated,
reordered, altered or hostile file list is refused where it is read, and format 1 still reads."""
from __future__ import annotations

import hashlib
import json

import pytest

from brsm.adapters.storage import open_storage
from brsm.workflows import manifest
from brsm.workflows.layout import MANIFEST_FILES, manifest_files_key, manifest_key

NAME = "BACKUP_2026_01_02_03_04_05"
TOPO = {"meta": [], "storage": [{"addr": "h:9779", "host": "h", "data_paths": ["/d"]}], "graph": []}


def entries(n: int) -> list[dict]:
    return [{"key": f"{NAME}/data/h:9779/data0/1/data/{i:07d}.sst", "size": i,
             "sha256": hashlib.sha256(str(i).encode()).hexdigest(), "host": "h", "path": f"/d/{i}"} for i in range(n)]


def header() -> dict:
    return {"tool": "brsm", "backup_name": NAME, "create_time_ms": 1, "spaces": {"1": "s"}, "all_spaces": True,
            "meta_files": [], "topology": TOPO}


@pytest.fixture
async def st():
    s = open_storage("memory://manifest")
    try:
        yield s
    finally:
        await s.close()


async def read_all(st, m) -> list[dict]:
    return [f async for f in manifest.files(st, NAME, m)]


async def written(st, files: list[dict]) -> dict:
    h = await manifest.write(st, NAME, header(), lambda: iter(files))
    return manifest.parse_header(await st.get_bytes(manifest_key(NAME)), NAME)


async def test_round_trip_streams_every_file_in_key_order(st):
    files = entries(2500)  # several 1 MiB-ish chunks are not needed to cross line boundaries: small chunks below
    m = await written(st, files)
    assert m["format"] == 2 and "files" not in m
    assert manifest.file_count(m) == 2500 and manifest.total_bytes(m) == sum(range(2500))
    assert await read_all(st, m) == files
    # the list object is JSON lines, one file each, in key order
    raw = await st.get_bytes(manifest_files_key(NAME))
    assert raw.count(b"\n") == 2500 and json.loads(raw.split(b"\n")[0])["key"] == files[0]["key"]


async def test_lines_cut_anywhere_by_the_store_read_the_same(st):
    files = entries(50)
    m = await written(st, files)
    raw = await st.get_bytes(manifest_files_key(NAME))

    async def tiny():
        for i in range(0, len(raw), 7):
            yield raw[i:i + 7]

    assert [f async for f in manifest.parse_lines(NAME, tiny(), m["file_list"])] == files


async def test_the_byte_source_resumes_at_any_offset():
    files = entries(300)
    whole = b"".join(manifest.file_line(f) for f in files)
    src = manifest.FileListBytes(lambda: iter(files), chunk=1000)
    for off in (0, 1, 999, len(whole) // 2, len(whole) - 1, len(whole)):
        assert b"".join([b async for b in src.open(off)]) == whole[off:]


async def tamper(st, m, raw: bytes):
    await st.put_bytes(manifest_files_key(NAME), raw)
    with pytest.raises(ValueError) as e:
        await read_all(st, m)
    return str(e.value)


async def test_truncated_reordered_altered_lists_are_refused(st):
    files = entries(20)
    m = await written(st, files)
    raw = await st.get_bytes(manifest_files_key(NAME))
    lines = raw.split(b"\n")[:-1]
    # cut at a line boundary: every line sound, the tally short
    assert "truncated or altered" in await tamper(st, m, b"\n".join(lines[:-1]) + b"\n")
    # cut inside a line
    assert "truncated" in await tamper(st, m, raw[:-5])
    # two lines swapped
    swapped = lines[:]
    swapped[3], swapped[4] = swapped[4], swapped[3]
    assert "out of key order" in await tamper(st, m, b"\n".join(swapped) + b"\n")
    # a line repeated
    assert "lists a file twice" in await tamper(st, m, b"\n".join(lines[:5] + lines[4:]) + b"\n")
    # a SHA-256 changed, still a sound entry: only the list's own digest finds it
    other = json.loads(lines[7])
    other["sha256"] = "0" * 64
    changed = lines[:7] + [manifest.file_line(other)[:-1]] + lines[8:]
    assert "truncated or altered" in await tamper(st, m, b"\n".join(changed) + b"\n")
    # a line added at the end
    extra = manifest.file_line({**files[-1], "key": files[-1]["key"] + "x"})
    assert "longer than its header" in await tamper(st, m, raw + extra)
    # not JSON
    assert "not JSON" in await tamper(st, m, b"{nope\n" + raw)


async def test_an_oversized_line_is_refused_before_it_is_held(st):
    m = await written(st, entries(3))
    blob = b'{"key":"' + b"a" * (manifest.MAX_LINE_BYTES + 10)
    assert f"over {manifest.MAX_LINE_BYTES} bytes" in await tamper(st, m, blob)  # no newline at all
    assert f"over {manifest.MAX_LINE_BYTES} bytes" in await tamper(st, m, blob + b'"}\n')


@pytest.mark.parametrize("bad, says", [
    ({"key": f"{NAME}/data/../../etc/passwd"}, "outside"),
    ({"key": f"{NAME}/data/h/x\nrm -rf"}, "outside"),
    ({"key": f"{NAME}/data/h/x\x1b[2J"}, "outside"),
    ({"key": f"{NAME}/data/h/x\x00"}, "outside"),
    ({"key": "OTHER/data/h/x"}, "outside"),
    ({"key": manifest_key(NAME)}, "outside"),
    ({"size": -1}, "impossible size"),
    ({"size": manifest.MAX_FILE_BYTES + 1}, "impossible size"),
    ({"size": True}, "impossible size"),
    ({"sha256": "Z" * 64}, "lacks key, size or sha256"),
    ({"sha256": None}, "lacks key, size or sha256"),
])
async def test_hostile_entries_are_refused_by_reader_and_writer(st, bad, says):
    files = entries(3)
    m = await written(st, files)
    hostile = {**files[1], **bad}
    raw = b"".join(manifest.file_line(f) for f in (files[0], hostile, files[2]))
    assert says in await tamper(st, m, raw)
    with pytest.raises(Exception, match=says):  # nor does brsm write one it could not read back
        await manifest.write(st, NAME, header(), lambda: iter([files[0], hostile, files[2]]))


async def test_the_writer_refuses_files_out_of_order(st):
    files = entries(3)
    with pytest.raises(Exception, match="out of key order"):
        await manifest.write(st, NAME, header(), lambda: iter([files[1], files[0]]))


def test_format_1_reads_and_a_newer_format_says_so():
    files = entries(3)
    old = {**header(), "format": 1, "files": files, "total_bytes": 3}
    m = manifest.parse_header(json.dumps(old).encode(), NAME)
    assert manifest.file_count(m) == 3 and manifest.total_bytes(m) == 3
    with pytest.raises(manifest.NewerFormat, match="format 3, newer than this brsm reads .1, 2.: read this backup with a newer brsm"):
        manifest.parse_header(json.dumps({**header(), "format": 3}).encode(), NAME)
    with pytest.raises(ValueError, match="format 'x', not one brsm writes"):
        manifest.parse_header(json.dumps({**header(), "format": "x"}).encode(), NAME)
    # a format-2 header without its file list's tally is refused
    with pytest.raises(ValueError, match="file_list does not name"):
        manifest.parse_header(json.dumps({**header(), "format": 2, "file_list": {"key": "x"}}).encode(), NAME)


async def test_format_1_files_read_from_the_header(st):
    files = entries(3)
    m = manifest.parse_header(json.dumps({**header(), "format": 1, "files": files[::-1]}).encode(), NAME)
    assert await read_all(st, m) == files


def old_parse_manifest(raw: bytes, name: str) -> dict:
    """The first checks of brsm's reader before format 2 (catalog.parse_manifest at 826578f), as it is."""
    try:
        m = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"brsm-manifest.json is not JSON: {e}") from e
    if not isinstance(m, dict):
        raise ValueError("brsm-manifest.json is not a JSON object")
    if m.get("format") != 1:
        raise ValueError(f"brsm-manifest.json has format {m.get('format')!r}, this brsm reads format 1")
    return m


async def test_an_older_brsm_reading_format_2_says_format_2(st):
    """An older brsm reads the header under the name it knows and says which format it met, rather
    than "not JSON" (and its gc sees ``brsm-manifest.json``: a finished backup, not one to delete)."""
    await written(st, entries(3))
    with pytest.raises(ValueError, match="has format 2, this brsm reads format 1"):
        old_parse_manifest(await st.get_bytes(manifest_key(NAME)), NAME)


async def test_the_file_list_is_never_held_whole():
    """Tally, bytes sent and lines read back of 20,000 files stay within a few MiB of Python memory
    (held whole, their dicts alone would be some 7 MiB): the writer and the reader stream."""
    import tracemalloc

    n = 20_000

    def lazy():
        for i in range(n):
            yield {"key": f"{NAME}/data/h:9779/data0/1/data/{i:08d}.sst", "size": i, "sha256": "a" * 64,
                   "host": "h", "path": f"/d/nebula/1/data/{i:08d}.sst"}

    tracemalloc.start()
    try:
        t = manifest.tally(NAME, lazy)
        want = t.as_file_list(manifest_files_key(NAME))
        count = 0
        async for _f in manifest.parse_lines(NAME, manifest.FileListBytes(lazy).open(), want):
            count += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == n and t.count == n
    assert peak < 4 << 20, f"peak {peak >> 20} MiB"
