"""Writes the journals kept in this directory, once, with the brsm of the day they were made.

They exist so a later brsm can prove it still folds, resumes and rolls back what an earlier one wrote
(test_old_journals.py): never regenerate them to make that test pass. Each scenario dir holds
``journal.db`` (the real SQLite journal, closed cleanly) and ``world.pickle``: the in-process fakes
(cluster and memory storage) as the journal left them, plus the files the test compares against.
The fakes are pickled whole; if they change shape, a new scenario is added beside the old ones.

Run: ``python -m tests.journal_fixtures.make_fixtures`` (from the repo root).
"""
from __future__ import annotations

import os
import pickle
import shutil
import sys
from pathlib import Path

from brsm import failpoints
from brsm.errors import BrsmError
from property_tests.campaign_support import (BACKUP_PARAMS, SimulatedCrash, World, all_files, fast_sleeps, mem,
                                              space_data)

HERE = Path(__file__).parent


def _save(w: World, name: str, **expected) -> None:
    out = HERE / name
    out.mkdir(exist_ok=True)
    w.process_died()
    w.inner.close()
    shutil.copyfile(Path(w._tmp.name) / "journal.db", out / "journal.db")
    world = {"cluster": w.cluster, "objects": dict(mem(w.storage).objects), "expected": expected}
    (out / "world.pickle").write_bytes(pickle.dumps(world))
    w.inner = type(w.inner).open(Path(w._tmp.name) / "journal.db")  # so close() closes something


def _killer(w: World):
    """The process dies here: this and every later journal append never happens."""
    def kill() -> None:
        w.journal.arm(0)
        raise SimulatedCrash()
    return kill


def backup_done() -> None:
    """A finished backup of every space."""
    w = World()
    try:
        name = w.make_backup()
        _save(w, "backup_done", backup_name=name, op=1)
    finally:
        w.close()


def backup_failed() -> None:
    """A backup whose COPIED failed on storage (the puts refused), not rolled back."""
    w = World()
    try:
        before = all_files(w.cluster)
        op = w.backup_runner.create(BACKUP_PARAMS)
        mem(w.storage).inject_fault("put", 1000, permanent=True)
        try:
            w.run(w.backup_runner.run(op))
        except BrsmError:
            pass
        else:
            raise AssertionError("the backup should have failed")
        w.clear_faults()
        _save(w, "backup_failed", op=op, files_before=before)
    finally:
        w.close()


def restore_killed_after_set_aside() -> None:
    """A restore of every space killed right after DOWNLOADED's intent (SET_ASIDE completed)."""
    w = World()
    try:
        name = w.make_backup()
        backup_data = space_data(w.cluster)
        assert w.cluster.write("football", b"written after the backup")
        before = all_files(w.cluster)
        op = w.restore_runner.create({"name": name, "verify": "quick"})
        w.restore_box["at_step"]["DOWNLOADED"] = [_killer(w)]
        try:
            w.run(w.restore_runner.run(op))
        except SimulatedCrash:
            pass
        else:
            raise AssertionError("the restore should have been killed")
        w.journal.arm(None)
        _save(w, "restore_killed_after_set_aside", op=op, backup_name=name, files_before=before,
              backup_data=backup_data)
    finally:
        w.close()


def restore_failed_after_started() -> None:
    """A restore of one chosen space that failed once STARTED was journaled (the space names and ids
    case), not rolled back."""
    w = World()
    try:
        bop = w.backup_runner.create({**BACKUP_PARAMS, "spaces": ["football"]})
        name = w.run(w.backup_runner.run(bop)).facts["backup_name"]
        backup_data = space_data(w.cluster)
        assert w.cluster.write("football", b"written after the backup")
        before = all_files(w.cluster)
        os.environ[failpoints.ENV] = "after:STARTED=raise"
        op = w.restore_runner.create({"name": name, "verify": "quick"})
        try:
            w.run(w.restore_runner.run(op))
        except BrsmError:
            pass
        else:
            raise AssertionError("the restore should have failed")
        finally:
            del os.environ[failpoints.ENV]
        _save(w, "restore_failed_after_started", op=op, backup_name=name, files_before=before,
              backup_data=backup_data)
    finally:
        w.close()


if __name__ == "__main__":
    with fast_sleeps():
        for make in (backup_done, backup_failed, restore_killed_after_set_aside, restore_failed_after_started):
            if len(sys.argv) < 2 or make.__name__ in sys.argv[1:]:
                make()
                print("wrote", make.__name__)
