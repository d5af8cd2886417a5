"""Listing and classifying backups: complete, incomplete, broken; brsm or nebula-br; created from where."""
import json

import pytest

from brsm.workflows.catalog import BROKEN, COMPLETE, INCOMPLETE, inspect_backup, list_backups
from brsm.workflows.layout import manifest_files_key, manifest_key, meta_file_key

from .conftest import DAY_MS, decode_meta, make_backup, meta_bytes


async def _by_name(storage):
    return {e.name: e for e in await list_backups(storage, decode_meta=decode_meta)}


@pytest.mark.parametrize("fmt", [1, 2])
async def test_states_and_makers(storage, fmt):
    good = await make_backup(storage, fmt=fmt, age_days=5, seed=1)
    partial = await make_backup(storage, age_days=4, kind="incomplete", seed=2)
    br = await make_backup(storage, age_days=3, kind="nebula-br", seed=3)
    garbled = await make_backup(storage, fmt=fmt, age_days=2, seed=4)
    await storage.put_bytes(manifest_key(garbled.name), b"{not json")
    await storage.put_bytes("not-a-backup/x", b"1")
    await storage.put_bytes("BACKUP_stray_file", b"1")  # an object, not a directory

    got = await _by_name(storage)
    assert set(got) == {good.name, partial.name, br.name, garbled.name}
    g = got[good.name]
    assert (g.state, g.made_by, g.checksums) == (COMPLETE, "brsm", True)
    assert g.created_ms == good.create_ms and g.created_from == "manifest"
    assert g.spaces == ["nba", "social"] and g.all_spaces is True
    assert g.files == len(good.files) and g.bytes == sum(f["size"] for f in good.files)
    assert not g.problems
    p = got[partial.name]
    assert (p.state, p.made_by) == (INCOMPLETE, "unknown")
    assert p.created_from == "name" and abs(p.created_ms - partial.create_ms) < 1000
    b = got[br.name]
    assert (b.state, b.made_by, b.checksums) == (COMPLETE, "nebula-br", False)
    assert b.created_ms == br.create_ms and b.created_from == "meta" and b.spaces == ["nba", "social"]
    assert b.files == len(br.files)
    x = got[garbled.name]
    assert x.state == BROKEN and "not JSON" in x.problems[0]
    # oldest first
    assert [e.name for e in await list_backups(storage, decode_meta=decode_meta)] == \
        [good.name, partial.name, br.name, garbled.name]
    assert json.dumps([e.to_dict() for e in got.values()])  # the JSON view serializes


async def test_broken_meta_and_inconsistent_manifest(storage):
    bad_meta = await make_backup(storage, age_days=3, seed=1)
    await storage.put_bytes(meta_file_key(bad_meta.name), b"\x00\x00\x00\x09garbage!!")
    other_time = await make_backup(storage, age_days=2, seed=2)
    await storage.put_bytes(meta_file_key(other_time.name), meta_bytes(other_time.name, create_ms=other_time.create_ms - DAY_MS))
    no_meta = await make_backup(storage, age_days=1, seed=3)
    await storage.delete(meta_file_key(no_meta.name))
    br_bad = await make_backup(storage, age_days=0.5, kind="nebula-br", seed=4)
    await storage.put_bytes(meta_file_key(br_bad.name), b"junk")

    got = await _by_name(storage)
    assert got[bad_meta.name].state == BROKEN and "unreadable" in got[bad_meta.name].problems[0]
    assert got[other_time.name].state == BROKEN and "create time differs" in got[other_time.name].problems[0]
    assert got[no_meta.name].state == BROKEN and ".meta is missing" in got[no_meta.name].problems[0]
    assert (got[br_bad.name].state, got[br_bad.name].made_by) == (BROKEN, "nebula-br")


@pytest.mark.parametrize("fmt", [1, 2])
async def test_missing_or_resized_files_make_it_broken(storage, fmt):
    a = await make_backup(storage, fmt=fmt, age_days=2, seed=1)
    await storage.delete(a.key(3))
    b = await make_backup(storage, fmt=fmt, age_days=1, seed=2)
    await storage.put_bytes(b.key(0), b"short")
    got = await _by_name(storage)
    assert got[a.name].state == BROKEN and a.key(3) in got[a.name].problems[0]
    assert got[b.name].state == BROKEN and b.key(0) in got[b.name].problems[0]


async def test_nebula_br_missing_host_data_is_broken(storage):
    br = await make_backup(storage, kind="nebula-br")
    await storage.delete_prefix(f"{br.name}/data/127.0.0.102:9779/")
    (e,) = await list_backups(storage, decode_meta=decode_meta)
    assert e.state == BROKEN and "127.0.0.102:9779" in e.problems[0]


async def test_empty_storage(storage):
    assert await list_backups(storage, decode_meta=decode_meta) == []


async def test_a_format_2_file_list_damaged_or_gone_makes_it_broken(storage):
    cut = await make_backup(storage, fmt=2, age_days=3, seed=1)
    gone = await make_backup(storage, fmt=2, age_days=2, seed=2)
    extra = await make_backup(storage, fmt=2, age_days=1, seed=3)
    raw = await storage.get_bytes(manifest_files_key(cut.name))
    await storage.put_bytes(manifest_files_key(cut.name), raw[:raw.rindex(b"\n", 0, len(raw) - 1) + 1])
    await storage.delete(manifest_files_key(gone.name))
    await storage.put_bytes(f"{extra.name}/data/stray", b"x")  # not in the manifest: ignored, still complete
    got = await _by_name(storage)
    assert got[cut.name].state == BROKEN and "truncated or altered" in got[cut.name].problems[0]
    assert got[cut.name].files == len(cut.files)  # counts from the header
    assert got[gone.name].state == BROKEN and "brsm-manifest-files.jsonl is missing" in got[gone.name].problems[0]
    assert got[extra.name].state == COMPLETE and got[extra.name].objects == {}  # a listing keeps no listings
    e = await inspect_backup(storage, extra.name, decode_meta=decode_meta)
    assert e.state == COMPLETE and e.file_check.unlisted == 1 and e.file_check.first_unlisted == f"{extra.name}/data/stray"
