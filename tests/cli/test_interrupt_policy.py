"""Ctrl-C of a backup's upload keeps what was uploaded for `brsm resume` (brsm.cli.interrupts); SIGTERM,
and a Ctrl-C before anything is in storage, roll back as before. The rule, and the runner keeping the
operation and asking the workflow to let the cluster go (ctx.runtime.release_lease)."""
from __future__ import annotations

import pytest
from journal import Journal

from brsm.cli.interrupts import keep_interrupted, kept_message, policy, uploaded
from brsm.engine.definitions import BACKUP
from brsm.engine.fold import PHASE_FAILED, PHASE_ROLLED_BACK, new_state
from brsm.engine.runner import Runner
from brsm.workflows.backup.ledger import FILE_COPIED, PART_UPLOADED
from brsm.workflows.backup.state import BackupState
from tests.engine.test_interrupts import drive_and_interrupt, hanging
from tests.engine.toy import World, make_workflow


def backup_state(*, copied=(), parts=(), started=("LOCKED", "SNAPSHOTTED", "COPIED")):
    st = new_state(BACKUP, BackupState)
    st.started = list(started)
    st.facts["backup_name"] = "BACKUP_2026_01_01_00_00_00"
    for k, n in copied:
        st.data.apply(FILE_COPIED, {"key": k, "size": n})
    for k, n in parts:
        st.data.apply(PART_UPLOADED, {"key": k, "upload_id": "u", "part_size": 8, "n": 1, "etag": "e", "size": n})
    return st


def test_what_is_kept():
    some = backup_state(copied=[("a", 3 << 20)], parts=[("b", 1 << 20)])
    assert uploaded(some) == (2, 4 << 20)
    assert keep_interrupted("backup", "SIGINT", "COPIED", some)
    assert keep_interrupted("backup", "SIGINT", "UPLOADED", some)
    assert not keep_interrupted("backup", "SIGTERM", "COPIED", some)  # systemd stop: rolled back
    assert not keep_interrupted("backup", "SIGINT", "SNAPSHOTTED", some)
    assert not keep_interrupted("restore", "SIGINT", "COPIED", some)
    assert not keep_interrupted("backup", "SIGINT", "COPIED", backup_state())  # nothing uploaded: nothing to keep
    final = backup_state(copied=[("a", 1)], started=("LOCKED", "SNAPSHOTTED", "COPIED", "UPLOADED", "CLEANED"))
    assert not keep_interrupted("backup", "SIGINT", "CLEANED", final)


def test_the_message_says_what_is_kept_and_what_to_do():
    text = kept_message(7, "backup", "SIGINT", "COPIED", backup_state(copied=[("a", 3 << 20)]))
    assert text == ("operation 7 (backup) interrupted by SIGINT during COPIED: the cluster is released; 1 file(s) "
                    "(3.0 MiB) already uploaded are kept, with snapshot BACKUP_2026_01_01_00_00_00 on the cluster "
                    "(it holds disk space until then): `brsm resume 7` continues from there, `brsm rollback 7` "
                    "removes them and drops the snapshot")


@pytest.fixture
def journal(tmp_path):
    j = Journal.open(tmp_path / "journal.db")
    yield j
    j.close()


async def _interrupted(journal, sig: str, keep):
    world = World()
    wf, entered = hanging(make_workflow(world), step="UPLOADED")
    seen = {}

    async def detach(ctx):
        seen["release_lease"] = ctx.runtime.release_lease

    async def attach(ctx):
        pass

    wf.attach, wf.detach = attach, detach  # the runner calls detach after an attach
    r = Runner(journal, wf)
    r.keep_interrupted = keep
    op = r.create({})
    err = await drive_and_interrupt(r, r.run(op, auto_rollback=True), entered, sig)
    return r, op, err, world, seen


async def test_the_runner_keeps_an_interrupted_run_its_rule_keeps_and_asks_to_release_the_lease(journal):
    asked = []

    def keep(sig, step, st):
        asked.append((sig, step))
        return sig == "SIGINT"

    r, op, err, world, seen = await _interrupted(journal, "SIGINT", keep)
    assert err.exit_code == 130 and asked == [("SIGINT", "UPLOADED")]
    assert r.state(op).phase == PHASE_FAILED and set(world.effects) == {"LOCKED", "SNAPSHOTTED", "COPIED"}
    assert r.kept_interrupted and seen["release_lease"] is True


async def test_sigterm_still_rolls_back(journal):
    r, op, err, world, seen = await _interrupted(journal, "SIGTERM", lambda sig, step, st: sig == "SIGINT")
    assert err.exit_code == 143 and r.state(op).phase == PHASE_ROLLED_BACK and world.effects == {}
    assert not r.kept_interrupted and not seen.get("release_lease")


def test_the_cli_policy_is_the_rule_for_its_kind():
    some = backup_state(copied=[("a", 1)])
    assert policy("backup")("SIGINT", "COPIED", some) and not policy("restore")("SIGINT", "COPIED", some)
