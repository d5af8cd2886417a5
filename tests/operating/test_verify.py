"""verify: quick (presence and size), full (re-hash), sample (seeded share), nebula-br (structure only)."""
import pytest

from brsm.errors import UsageError
from brsm.workflows.layout import manifest_key, meta_file_key
from brsm.workflows.verify import FULL, QUICK, SAMPLE, parse_sample, pick_sample, verify_backup

from .conftest import decode_meta, make_backup


class Recorder:
    def __init__(self):
        self.started, self.advanced, self.finished = {}, 0, []

    def start(self, task, total, unit="B"):
        self.started[task] = total

    def advance(self, task, amount):
        self.advanced += amount

    def done(self, task):
        self.finished.append(task)

    def note(self, text):
        pass


async def _verify(storage, name, mode=QUICK, **kw):
    return await verify_backup(storage, name, decode_meta=decode_meta, mode=mode, **kw)


async def _flip(storage, key):
    data = bytearray(await storage.get_bytes(key))
    data[len(data) // 2] ^= 0x01
    await storage.put_bytes(key, bytes(data))


@pytest.mark.parametrize("fmt", [1, 2])
async def test_quick_and_full_pass_on_a_good_backup(storage, fmt):
    b = await make_backup(storage, fmt=fmt)
    r = await _verify(storage, b.name)
    assert r.ok and r.checked == len(b.files) and r.hashed_files == 0 and r.made_by == "brsm"
    prog = Recorder()
    r = await _verify(storage, b.name, FULL, progress=prog)
    assert r.ok and r.hashed_files == len(b.files) and r.hashed_bytes == sum(f["size"] for f in b.files)
    assert prog.started["verify"] == prog.advanced == r.hashed_bytes and prog.finished == ["verify"]


@pytest.mark.parametrize("fmt", [1, 2])
async def test_quick_finds_missing_and_truncated(storage, fmt):
    b = await make_backup(storage, fmt=fmt)
    await storage.delete(b.key(1))
    data = await storage.get_bytes(b.key(4))
    await storage.put_bytes(b.key(4), data[:-10])
    r = await _verify(storage, b.name)
    assert not r.ok
    got = {(p["key"], p["problem"]) for p in r.problems}
    assert got == {(b.key(1), "missing"), (b.key(4), "size")}
    size = next(p for p in r.problems if p["problem"] == "size")
    assert (size["expected"], size["actual"]) == (b.files[4]["size"], b.files[4]["size"] - 10)


@pytest.mark.parametrize("fmt", [1, 2])
async def test_full_finds_a_flipped_byte_that_quick_misses(storage, fmt):
    b = await make_backup(storage, fmt=fmt)
    await _flip(storage, b.key(2))
    assert (await _verify(storage, b.name)).ok
    r = await _verify(storage, b.name, FULL, concurrency=2)
    assert [(p["key"], p["problem"]) for p in r.problems] == [(b.key(2), "sha256")]
    assert r.problems[0]["expected"] == b.files[2]["sha256"]


@pytest.mark.parametrize("fmt", [1, 2])
async def test_sample_is_seeded(storage, fmt):
    b = await make_backup(storage, fmt=fmt, files_per_space=5)  # 2 meta + 2 hosts * 2 spaces * 5 = 22 files
    victim = b.files[7]
    await _flip(storage, victim["key"])
    hit = next(s for s in range(1000) if victim in pick_sample(b.files, 0.05, s))
    miss = next(s for s in range(1000) if victim not in pick_sample(b.files, 0.05, s))
    r1 = await _verify(storage, b.name, SAMPLE, sample=0.05, seed=hit)
    assert r1.hashed_files == 2 and [p["key"] for p in r1.problems] == [victim["key"]] and r1.seed == hit
    r2 = await _verify(storage, b.name, SAMPLE, sample=0.05, seed=miss)
    assert r2.ok and r2.hashed_files == 2
    assert pick_sample(b.files, 0.05, hit) == pick_sample(list(reversed(b.files)), 0.05, hit)
    r3 = await _verify(storage, b.name, SAMPLE, sample=0.05)
    assert r3.seed is not None  # chosen, and reported so the run can be repeated
    assert not (await _verify(storage, b.name, SAMPLE, sample=1.0, seed=0)).ok


def test_parse_sample():
    assert parse_sample("5%") == 0.05 and parse_sample("0.25") == 0.25 and parse_sample("100%") == 1.0
    for bad in ("0", "0%", "150%", "2", "five", ""):
        with pytest.raises(UsageError):
            parse_sample(bad)


@pytest.mark.parametrize("fmt", [1, 2])
async def test_meta_problems_of_a_brsm_backup(storage, fmt):
    b = await make_backup(storage, fmt=fmt)
    await storage.put_bytes(meta_file_key(b.name), b"junk")
    r = await _verify(storage, b.name)
    assert [(p["key"], p["problem"]) for p in r.problems] == [(meta_file_key(b.name), "unreadable")]


async def test_incomplete_unreadable_and_unknown(storage):
    inc = await make_backup(storage, kind="incomplete", age_days=2)
    r = await _verify(storage, inc.name, FULL)
    assert not r.ok and r.problems[0]["problem"] == "missing" and "incomplete" in r.problems[0]["detail"]
    bad = await make_backup(storage, age_days=1)
    await storage.put_bytes(manifest_key(bad.name), b"[]")
    r = await _verify(storage, bad.name)
    assert r.problems[0]["problem"] == "unreadable" and r.state == "broken"
    with pytest.raises(UsageError, match="no backup named BACKUP_NOPE"):
        await _verify(storage, "BACKUP_NOPE")


async def test_nebula_br_backup(storage):
    b = await make_backup(storage, kind="nebula-br")
    r = await _verify(storage, b.name)
    assert r.ok and r.made_by == "nebula-br" and not r.checksums
    for mode in (FULL, SAMPLE):  # asked to re-hash and could not: never "ok" (issue 13)
        r = await _verify(storage, b.name, mode, **({"sample": 0.5} if mode == SAMPLE else {}))
        assert not r.ok and r.hashed_files == 0
        assert [p["problem"] for p in r.problems] == ["unverifiable"] and "no checksums" in r.problems[0]["detail"]
    await storage.delete(f"{b.name}/meta/__parts__.sst")
    await storage.delete_prefix(f"{b.name}/data/127.0.0.101:9779/data0/2/")
    r = await _verify(storage, b.name)
    assert {p["key"] for p in r.problems} == {f"{b.name}/meta/__parts__.sst",
                                              f"{b.name}/data/127.0.0.101:9779/data*/2/"}
    await storage.put_bytes(meta_file_key(b.name), b"junk")
    r = await _verify(storage, b.name)
    assert [p["problem"] for p in r.problems] == ["unreadable"]


async def test_a_storage_error_while_hashing_surfaces():
    from brsm.adapters.storage.memory import MemoryStorage
    from brsm.errors import StorageError

    mem = MemoryStorage()
    b = await make_backup(mem, files_per_space=3)
    mem.inject_fault("get", count=-1, permanent=True, skip=3, message="bucket went away")
    with pytest.raises(StorageError, match="bucket went away"):
        await _verify(mem, b.name, FULL, concurrency=3)


def test_a_sample_is_picked_as_the_list_streams_exactly_its_share_and_repeatably():
    """Selection sampling: exactly ceil(share x n) picks, the same for the same seed, and nothing
    held per position (the first picks of 10**12 positions come at once)."""
    import itertools
    import math

    from brsm.workflows.verify import sample_indices, sample_picks

    for n, share in ((1, 0.01), (10, 0.05), (1000, 0.05), (1000, 1.0), (997, 0.333)):
        got = sample_indices(n, share, 42)
        assert len(got) == max(1, math.ceil(share * n))
        assert got == sample_indices(n, share, 42) and got == sorted(set(got)) and all(0 <= i < n for i in got)
    assert sample_indices(1000, 0.05, 1) != sample_indices(1000, 0.05, 2)
    assert sum(itertools.islice(sample_picks(10**12, 0.5, 3), 1000)) > 0
    assert list(sample_picks(0, 0.5, 3)) == []
