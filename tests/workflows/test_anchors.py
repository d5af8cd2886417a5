"""Anchors in a storage: written by a restore (best effort), found again in manifests and records, an
unreadable one reported, an older brsm's manifest (no anchor) and nebula-br's backups left out."""
from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import pytest

from brsm.adapters.storage import open_storage
from brsm.engine.runner import StepContext
from brsm.engine.fold import new_state
from brsm.engine.definitions import KINDS
from brsm.errors import StorageError
from brsm.workflows import anchors
from brsm.workflows.layout import manifest_key
from journal import Anchor, Journal


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def journal(tmp_path):
    j = Journal.open(tmp_path / "home" / "journal.db")
    op = j.create_operation(kind="restore", params={"name": "BACKUP_1"}, who="w", version="v")
    with j.driver(op.id) as w:
        w.append("A", {})
    yield j
    j.close()


class Ctx:
    """What write_anchor uses of a StepContext."""

    def __init__(self, anchor, op_id=1):
        self.op_id, self.ref, self.params = op_id, f"{anchor['journal_id'] if anchor else 'x'}-{op_id}", {"name": "BACKUP_1"}
        self._anchor = anchor
        self.recorded: list[tuple[str, dict]] = []
        self.notes: list[str] = []
        self.ports = SimpleNamespace(progress=SimpleNamespace(note=self.notes.append))

    def journal_anchor(self):
        return self._anchor

    def record(self, type_, data):
        self.recorded.append((type_, dict(data)))


def test_a_restore_writes_its_record_where_it_is_found_again(journal, tmp_path):
    st = open_storage(f"local://{tmp_path / 'store'}")
    a = journal.anchor().to_dict()
    ctx = Ctx(a)
    run(anchors.write_anchor(ctx, st, "restore"))
    key = f"brsm-journal-anchors/{journal.journal_id}/restore-1.json"
    assert ctx.recorded == [(anchors.JOURNAL_ANCHORED, {"key": key, "operations": 1})]
    (found,) = run(anchors.find_anchors(st))
    assert (found.source, found.journal_id, found.error) == (key, journal.journal_id, None)
    assert journal.check_anchors([Anchor.from_dict(found.anchor)]) == [[]]
    run(st.close())


def test_a_storage_that_refuses_the_record_does_not_fail_the_restore(journal):
    class ReadOnly:
        async def put_bytes(self, key, data):
            raise StorageError("AccessDenied: read-only credentials", permanent=True)

    ctx = Ctx(journal.anchor().to_dict())
    run(anchors.write_anchor(ctx, ReadOnly(), "restore"))
    assert [t for t, _ in ctx.recorded] == [anchors.JOURNAL_ANCHOR_NOT_WRITTEN]
    assert "AccessDenied" in ctx.recorded[0][1]["error"] and "not written" in ctx.notes[0]


def test_a_journal_that_takes_no_anchors_writes_nothing():
    class Nothing:
        async def put_bytes(self, key, data):
            raise AssertionError("nothing to write")

    ctx = Ctx(None)
    run(anchors.write_anchor(ctx, Nothing(), "restore"))
    assert ctx.recorded == []


def test_manifests_and_records_are_found_and_the_unreadable_reported(journal, tmp_path):
    st = open_storage(f"local://{tmp_path / 'store'}")
    a = journal.anchor().to_dict()
    jid = journal.journal_id

    async def plant():
        await st.put_bytes(manifest_key("BACKUP_A"), json.dumps({"format": 1, "journal_anchor": a}).encode())
        await st.put_bytes(manifest_key("BACKUP_OLD"), json.dumps({"format": 1}).encode())  # an older brsm's
        await st.put_bytes("BACKUP_BR/BACKUP_BR.meta", b"nebula-br")  # nebula-br's: no manifest
        await st.put_bytes(manifest_key("BACKUP_BAD"), b"{truncated")
        await st.put_bytes(f"brsm-journal-anchors/{jid}/restore-2.json", b"not json")
        await st.put_bytes(f"brsm-journal-anchors/{jid}/restore-3.json",
                           json.dumps({"journal_anchor": {**a, "journal_id": "0123456789ab"}}).encode())
        other = {**a, "journal_id": "0123456789ab"}
        await st.put_bytes("brsm-journal-anchors/0123456789ab/restore-1.json",
                           json.dumps({"journal_anchor": other}).encode())

    run(plant())
    found = {f.source: f for f in run(anchors.find_anchors(st))}
    # the journal id is random: compare as sets ordered the same way, not against a written order
    assert sorted(found) == sorted(["BACKUP_A/brsm-manifest.json", "BACKUP_BAD/brsm-manifest.json",
                                    "brsm-journal-anchors/0123456789ab/restore-1.json",
                                    f"brsm-journal-anchors/{jid}/restore-2.json",
                                    f"brsm-journal-anchors/{jid}/restore-3.json"])
    assert found["BACKUP_A/brsm-manifest.json"].anchor == a
    bad = found["BACKUP_BAD/brsm-manifest.json"]
    assert bad.journal_id is None and "unreadable" in bad.error
    assert found[f"brsm-journal-anchors/{jid}/restore-2.json"].journal_id == jid
    assert "unreadable" in found[f"brsm-journal-anchors/{jid}/restore-2.json"].error
    assert "not an anchor record" in found[f"brsm-journal-anchors/{jid}/restore-3.json"].error
    assert found["brsm-journal-anchors/0123456789ab/restore-1.json"].journal_id == "0123456789ab"
    run(st.close())


def test_the_step_context_takes_the_anchor_from_the_driving_journal(journal):
    with journal.driver(1) as w:
        ctx = StepContext(op_id=1, mode="run", state=new_state(KINDS["restore"]), ports=None, writer=w)
        a = ctx.journal_anchor()
    assert a["journal_id"] == journal.journal_id and a["heads"][0][0] == 1
    bare = StepContext(op_id=1, mode="run", state=new_state(KINDS["restore"]), ports=None,
                       writer=SimpleNamespace(append=None))
    assert bare.journal_anchor() is None


def test_a_storage_failure_is_raised_not_reported_as_a_damaged_anchor(journal, tmp_path):
    st = open_storage(f"local://{tmp_path / 'store'}", retry=False)
    run(st.put_bytes(f"brsm-journal-anchors/{journal.journal_id}/restore-1.json",
                     json.dumps({"journal_anchor": journal.anchor().to_dict()}).encode()))

    class Flaky:
        def __getattr__(self, name):
            return getattr(st, name)

        async def get_bytes(self, key):
            raise StorageError("connection reset")

    with pytest.raises(StorageError, match="connection reset"):
        run(anchors.find_anchors(Flaky()))
    run(st.close())
