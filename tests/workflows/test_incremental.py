"""Incremental backups by content on the fakes (brsm/workflows/backup/reuse.py, copy.py): what the base
holds is copied inside the storage and never sent, identity is content (the renamed-bytes trap), the
base's identities spare the hashing, and a base that changed or vanished makes files sent, never a
backup that points at nothing."""
from __future__ import annotations

import hashlib

import pytest

from brsm.errors import PreflightFailed
from brsm.fakes.cluster import FakeCluster
from brsm.workflows.backup import reuse
from property_tests.campaign_support import BACKUP_PARAMS, World, fast_sleeps, manifests, mem

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
SIZE = 80_000  # its WALs (a quarter) too are above reuse.REUSE_FROM


def test_doctests():
    import doctest

    assert doctest.testmod(reuse).failed == 0


def cluster() -> FakeCluster:
    c = FakeCluster(metas=1, storages=2, data_paths=1, seed=3)
    c.add_space("big", partition_num=2, files_per_path=6, size=SIZE)
    return c


@pytest.fixture
def w():
    with fast_sleeps():
        world = World(cluster=cluster())
        yield world
        world.close()


def backup(w: World, **params) -> dict:
    op = w.backup_runner.create({**BACKUP_PARAMS, **params})
    st = w.run(w.backup_runner.run(op))
    assert st.phase == "done", st
    return {"op": op, "name": st.facts["backup_name"], "copied": copied_facts(w, op)}


def copied_facts(w: World, op: int) -> dict:
    return [e for e in w.inner.events(op, "StepCompleted") if e.data.get("step") == "COPIED"][-1].data["facts"]


def files_of(w: World, name: str) -> list[dict]:
    return manifests(w.storage)[name]["files"]


def stored(w: World, key: str) -> bytes:
    return mem(w.storage).objects["p/" + key]


def assert_whole(w: World, name: str) -> None:
    """Every file the manifest lists is in storage under the backup's own key with its SHA-256."""
    for f in files_of(w, name):
        assert hashlib.sha256(stored(w, f["key"])).hexdigest() == f["sha256"], f["key"]


def hashed_paths(w: World) -> int:
    return sum(h.verbs.count("hash_files") for h in w.hosts._hosts.values())


def test_an_incremental_copies_what_the_base_holds_and_sends_what_changed(w):
    full = backup(w)
    assert full["copied"]["bytes_sent"] > 12 * SIZE
    assert all("ident" in f for f in files_of(w, full["name"]) if f["size"] >= SIZE)
    w.cluster.write("big", b"n" * SIZE)  # one new SST
    inc = backup(w, incremental=True)
    c = inc["copied"]
    assert c["base"] == full["name"]
    files = files_of(w, inc["name"])
    base_shas = {f["sha256"] for f in files_of(w, full["name"])}
    new = [f for f in files if f["sha256"] not in base_shas]
    assert len(new) == 1 and new[0]["size"] == SIZE and "reused_from" not in new[0]
    reused = [f for f in files if f.get("reused_from") == full["name"]]
    assert len(reused) == 12 + 2  # six SSTs a host, and the two WALs (rewritten: found by hashing)
    assert c["files_reused"] == len(reused) and c["bytes_reused"] == sum(f["size"] for f in reused)
    assert c["bytes_sent"] < full["copied"]["bytes_sent"] / 3
    # the SSTs were the base's very files (a checkpoint links them): hashed are only the WALs (copied
    # into the checkpoint: new files) and the new SST (of a size the base has)
    assert c["files_hashed"] == 3
    assert_whole(w, inc["name"])
    header = manifests(w.storage)[inc["name"]]["incremental"]
    assert header["base"] == full["name"] and header["files_reused"] == len(reused)
    assert header["bytes_sent"] == sum(f["size"] for f in files) - header["bytes_reused"]


def test_deleting_the_base_leaves_the_incremental_whole(w):
    full = backup(w)
    inc = backup(w, incremental_from=full["name"])
    objs = mem(w.storage).objects
    for k in [k for k in objs if k.startswith(f"p/{full['name']}")]:
        del objs[k]
    assert_whole(w, inc["name"])


def test_same_names_and_sizes_with_other_bytes_are_sent_not_reused(w):
    """After a restore RocksDB reuses file numbers: the host's 000001.sst may hold other bytes than
    the base's 000001.sst, with the same size. Its identity is another file's, so it is hashed, and
    its hash is not the base's: it is sent."""
    full = backup(w)
    m = w.cluster.host_of(w.cluster.storage_addrs[0])
    live = [p for p in m.under("/") if p.endswith("/000001.sst") and "/checkpoints/" not in p]
    assert live
    for p in live:
        m.put(p, bytes(b ^ 0xFF for b in m.files[p]))  # same name, same size, other bytes, a new inode
    inc = backup(w, incremental_from=full["name"])
    got = {(f["host"], f["path"].split("/checkpoints/")[0] + "/data/" + f["path"].rsplit("/", 1)[1]): f
           for f in files_of(w, inc["name"])}
    host = str(w.cluster.storage_addrs[0].host)
    for p in live:
        f = got[(host, p)]
        assert "reused_from" not in f
        assert stored(w, f["key"]) == m.files[p]
    assert_whole(w, inc["name"])


def test_a_base_gone_before_the_copy_makes_every_file_sent(w):
    full = backup(w)

    def drop_base() -> None:
        objs = mem(w.storage).objects
        for k in [k for k in objs if k.startswith(f"p/{full['name']}/")]:
            del objs[k]

    w.backup_box["at_step"]["COPIED"] = [drop_base]
    inc = backup(w, incremental_from=full["name"])
    assert inc["copied"]["files_reused"] == 0
    assert all("reused_from" not in f for f in files_of(w, inc["name"]))
    assert_whole(w, inc["name"])
    assert [e.data["base"] for e in w.inner.events(inc["op"], "BaseDropped")] == [full["name"]]


def test_a_base_object_gone_mid_run_makes_that_file_sent(w):
    full = backup(w)
    victim = next(f for f in files_of(w, full["name"]) if f["size"] >= SIZE)
    del mem(w.storage).objects["p/" + victim["key"]]
    inc = backup(w, incremental_from=full["name"])
    files = files_of(w, inc["name"])
    assert_whole(w, inc["name"])
    same = [f for f in files if f["path"].rsplit("/", 1)[1] == victim["path"].rsplit("/", 1)[1]
            and f["host"] == victim["host"] and f["size"] == victim["size"] and f["sha256"] == victim["sha256"]]
    assert same and all("reused_from" not in f for f in same)
    assert inc["copied"]["files_reused"] >= 10


def test_incremental_with_no_base_is_a_full_backup_and_says_why(w):
    inc = backup(w, incremental=True)
    chosen = [e.data for e in w.inner.events(inc["op"], "BaseChosen")]
    assert chosen and chosen[0]["name"] is None and "full backup" in chosen[0]["why"]
    assert inc["copied"]["files_reused"] == 0
    assert_whole(w, inc["name"])


def test_a_named_base_that_is_no_complete_brsm_backup_is_refused_before_anything(w):
    op = w.backup_runner.create({**BACKUP_PARAMS, "incremental_from": "BACKUP_2020_01_01_00_00_00"})
    with pytest.raises(PreflightFailed, match="not a complete brsm backup"):
        w.run(w.backup_runner.run(op))
    assert not any(k.startswith("p/BACKUP") for k in mem(w.storage).objects)


def test_a_base_that_cannot_be_indexed_makes_a_full_backup_not_a_failure(w):
    """The scratch index is written to BRSM_HOME: a full disk there costs the reuse, not the backup."""
    from brsm.errors import OperationFailed
    from brsm.fakes.base_index import MemoryBaseIndex

    class FullDisk(MemoryBaseIndex):
        def add(self, files):
            raise OperationFailed("the base's index could not be written: database or disk is full")

    full = backup(w)
    w.backup_runner.ports.base_index = FullDisk
    inc = backup(w, incremental_from=full["name"])
    assert inc["copied"]["files_reused"] == 0
    assert_whole(w, inc["name"])
    (dropped,) = [e.data for e in w.inner.events(inc["op"], "BaseDropped")]
    assert "could not be read or indexed" in dropped["why"] and "disk is full" in dropped["why"]
