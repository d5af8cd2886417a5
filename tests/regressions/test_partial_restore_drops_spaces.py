"""A restore of chosen spaces drops those spaces before restoreMeta (nebula-br's pkg/restore/restore.go,
``checkAndDropSpaces``): otherwise what metad learned about them since the backup would survive beside
the restored entries. Rollback brings them back exactly (metad's data was copied aside first)."""
from __future__ import annotations

import copy

import pytest

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
