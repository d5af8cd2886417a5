"""A restore of chosen spaces drops those spaces before restoreMeta (nebula-br's pkg/restore/restore.go,
``checkAndDropSpaces``): otherwise what metad learned about them since the backup would survive beside
the restored entries. Rollback brings them back exactly (metad's data was copied aside first)."""
from __future__ import annotations

import copy

import pytest

from brsm import failpoints
from brsm.errors import BrsmError
from property_tests.campaign_support import BACKUP_PARAMS, all_files


def _backup_of_one_space(world) -> str:
    op = world.backup_runner.create({**BACKUP_PARAMS, "spaces": ["football"]})
    st = world.run(world.backup_runner.run(op))
    assert st.phase == "done", st
    return st.facts["backup_name"]


def test_chosen_spaces_are_dropped_before_restore_meta(world):
    name = _backup_of_one_space(world)
    names_before = {s.name for s in world.cluster.spaces.values()}
    world.meta.calls.clear()
    rop = world.restore_runner.create({"name": name, "verify": "quick"})
    st = world.run(world.restore_runner.run(rop))
    assert st.phase == "done", st
    calls = world.meta.calls
    assert "dropSpace" in calls and calls.index("dropSpace") < calls.index("restoreMeta")
    assert st.facts["spaces_dropped"] == ["football"]
    assert {s.name for s in world.cluster.spaces.values()} == names_before


def test_rollback_after_the_drop_brings_the_cluster_back_exactly(world):
    name = _backup_of_one_space(world)
    files_before = all_files(world.cluster)
    spaces_before = copy.deepcopy(world.cluster.spaces)

    def fail() -> None:
        raise BrsmError("injected: storaged would not start")
    world.restore_box["at_step"]["STARTED"] = [fail]
    rop = world.restore_runner.create({"name": name, "verify": "quick"})
    with pytest.raises(BrsmError):
        world.run(world.restore_runner.run(rop))
    st = world.run(world.restore_runner.rollback(rop))
    assert st.phase == "rolled_back", st
    assert {k: (v.name, v.parts) for k, v in world.cluster.spaces.items()} == \
        {k: (v.name, v.parts) for k, v in spaces_before.items()}
    assert all_files(world.cluster) == files_before


def test_rollback_after_the_restored_cluster_started_puts_the_original_space_data_back(world, monkeypatch):
    """The sweep's chosen-spaces finding (after:STARTED, start:CLEANED): STARTED journaled the restored
    space *names* under CHECKED's fact ``spaces`` ({id: name}); the fold let them replace it, so every
    undo looked for ``nebula/<name>``, put nothing back, and undo of SET_ASIDE removed the set-aside
    parent with the original space dirs still in it, leaving the backup's data under the old meta."""
    name = _backup_of_one_space(world)
    assert world.cluster.write("football", b"written after the backup")
    files_before = all_files(world.cluster)
    monkeypatch.setenv(failpoints.ENV, "after:STARTED=raise")  # STARTED journaled, then the run fails
    rop = world.restore_runner.create({"name": name, "verify": "quick"})
    with pytest.raises(BrsmError):
        world.run(world.restore_runner.run(rop))
    monkeypatch.delenv(failpoints.ENV)
    st = world.run(world.restore_runner.rollback(rop))
    assert st.phase == "rolled_back", st
    assert all_files(world.cluster) == files_before


def test_rollback_never_removes_a_set_aside_dir_that_still_holds_files(world, monkeypatch):
    """Undo of SET_ASIDE removes the emptied parent of the chosen spaces' set-aside dirs; one that still
    holds a file (data the undo did not put back) is refused and kept, never `rm -rf`-ed."""
    name = _backup_of_one_space(world)
    monkeypatch.setenv(failpoints.ENV, "after:STARTED=raise")
    rop = world.restore_runner.create({"name": name, "verify": "quick"})
    with pytest.raises(BrsmError):
        world.run(world.restore_runner.run(rop))
    monkeypatch.delenv(failpoints.ENV)
    c = world.cluster
    host, dp = next((a.host, c.storage_paths[a][0]) for a in c.storage_addrs)
    aside = next(p for p in c.machine(host).files if "/nebula_brsm_old_" in p).split("/nebula_brsm_old_")[1].split("/")[0]
    left = f"{dp}/nebula_brsm_old_{aside}/77/data/000001.sst"
    c.machine(host).put(left, b"not put back")
    with pytest.raises(BrsmError) as e:
        world.run(world.restore_runner.rollback(rop))
    assert "still holds 1 file(s)" in e.value.message and left in e.value.message
    assert c.machine(host).files[left] == b"not put back"
