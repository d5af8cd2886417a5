"""A restore on the streamed manifest: a format-2 backup restores with only its header journaled; a
file list changed after CHECKED is refused before a byte is downloaded; and a backup written before
format 2 (one JSON object with its files) still lists, verifies and restores."""
from __future__ import annotations

import json

import pytest

from brsm.cli.ops_commands import decode_meta
from brsm.errors import OperationFailed, PreflightFailed, VerificationFailed
from brsm.workflows import catalog, verify
from brsm.workflows.layout import manifest_files_key, manifest_key
from brsm.workflows.restore.ledger import FileRestored
from brsm.workflows.restore.state import MANIFEST_HEADER_JOURNALED, MANIFEST_JOURNALED
from property_tests.campaign_support import World, fast_sleeps, mem, space_data


@pytest.fixture
def world():
    with fast_sleeps():
        w = World()
        try:
            yield w
        finally:
            w.close()


def to_format_1(w: World, name: str) -> dict:
    """Rewrite a backup's manifest as brsm wrote it before format 2: one JSON object, its files inside
    (sorted by key, with host and path), ``total_bytes``, no file list object."""
    st = w.storage
    header = json.loads(w.run(st.get_bytes(manifest_key(name))))
    files = [json.loads(x) for x in w.run(st.get_bytes(manifest_files_key(name))).decode().splitlines()]
    w.run(st.delete(manifest_files_key(name)))
    old = {k: v for k, v in header.items() if k != "file_list"}
    old.update({"format": 1, "files": files, "total_bytes": sum(f["size"] for f in files)})
    w.run(st.put_bytes(manifest_key(name), json.dumps(old, sort_keys=True, indent=1).encode()))
    return old


def events(w: World, op: int, kind: str) -> list:
    return [e.data for e in w.inner.events(op, kind)]


def test_a_format_2_restore_journals_the_header_and_tally_not_the_files(world):
    w, c = world, world.cluster
    name = w.make_backup()
    at_backup = space_data(c)
    assert w.run(w.storage.stat(manifest_files_key(name))).size > 0
    c.write("basketball")
    op = w.restore_runner.create({"name": name, "verify": "full"})
    st = w.run(w.restore_runner.run(op))
    assert st.phase == "done", st.failure
    assert space_data(c) == at_backup
    [j] = events(w, op, MANIFEST_HEADER_JOURNALED)
    assert "files" not in j["manifest"] and j["manifest"]["file_list"]["count"] > 0
    assert events(w, op, MANIFEST_JOURNALED) == []


def test_a_file_list_changed_after_checked_is_refused_before_a_byte_is_downloaded(world):
    w, c = world, world.cluster
    name = w.make_backup()
    key = manifest_files_key(name)

    raw = w.run(w.storage.get_bytes(key))
    cut = raw[:raw.rindex(b"\n", 0, len(raw) - 1) + 1]
    full = next(k for k in mem(w.storage).objects if k.endswith(key))

    def drop_last_line():  # in the step's own loop: straight into the store's objects
        mem(w.storage).objects[full] = cut

    w.restore_box["at_step"]["STAGED"] = [drop_last_line]
    op = w.restore_runner.create({"name": name, "verify": "quick"})
    with pytest.raises(VerificationFailed, match="truncated or altered"):
        w.run(w.restore_runner.run(op))
    assert events(w, op, FileRestored.TYPE) == []  # the whole list is proved first
    assert c.service_up(c.storage_addrs[0].host, "storaged")  # staged: the cluster was never stopped


def test_a_file_list_deleted_after_checked_is_refused_naming_the_rollback(world):
    w = world
    name = w.make_backup()
    full = next(k for k in mem(w.storage).objects if k.endswith(manifest_files_key(name)))
    w.restore_box["at_step"]["STAGED"] = [lambda: mem(w.storage).objects.pop(full)]
    op = w.restore_runner.create({"name": name, "verify": "quick"})
    with pytest.raises(OperationFailed, match="brsm-manifest-files.jsonl is gone") as e:
        w.run(w.restore_runner.run(op))
    assert f"brsm rollback {op}" in e.value.hint
    assert events(w, op, FileRestored.TYPE) == []


def test_a_backup_written_before_format_2_lists_verifies_and_restores(world):
    w, c = world, world.cluster
    name = w.make_backup()
    old = to_format_1(w, name)
    at_backup = space_data(c)
    [e] = w.run(catalog.list_backups(w.storage, decode_meta=decode_meta))
    assert (e.state, e.files, e.bytes) == (catalog.COMPLETE, len(old["files"]), old["total_bytes"]), e.problems
    r = w.run(verify.verify_backup(w.storage, name, decode_meta=decode_meta, mode=verify.FULL))
    assert r.ok and r.hashed_files == len(old["files"]), r.problems
    c.write("basketball")
    op = w.restore_runner.create({"name": name, "verify": "full"})
    st = w.run(w.restore_runner.run(op))
    assert st.phase == "done", st.failure
    assert space_data(c) == at_backup
    [j] = events(w, op, MANIFEST_JOURNALED)  # as brsm journaled it before format 2: with its files
    assert len(j["manifest"]["files"]) == len(old["files"])


def test_a_backup_of_a_newer_format_is_refused_as_such_not_as_damaged(world):
    w = world
    name = w.make_backup()
    header = json.loads(w.run(w.storage.get_bytes(manifest_key(name))))
    w.run(w.storage.put_bytes(manifest_key(name), json.dumps({**header, "format": 3}).encode()))
    op = w.restore_runner.create({"name": name, "verify": "quick"})
    with pytest.raises(PreflightFailed, match="has format 3, newer than this brsm reads") as e:
        w.run(w.restore_runner.run(op))
    assert "newer one" in e.value.hint and "tampered" not in e.value.hint
    [b] = w.run(catalog.list_backups(w.storage, decode_meta=decode_meta))
    assert b.state == catalog.BROKEN and "read this backup with a newer brsm" in b.problems[0]
