"""Short form of the sweep's chosen-spaces family (the full one is `scripts/sweep --only chosen-spaces`):
a `--spaces space1` backup restored on three metads, killed in META_RESTORED, where brsm's SST is
ingested metad by metad, and recovered both ways (checks in ChosenSpacesSweeper.chosen_case)."""
from __future__ import annotations

import pytest

from tests.reliability.sweep import ChosenSpacesSweeper, raft_sandbox

pytestmark = pytest.mark.sandbox


@pytest.fixture(scope="module")
def sweeper(tmp_path_factory):
    base = tmp_path_factory.mktemp("sweep-3metad")
    with raft_sandbox(base) as env:
        yield ChosenSpacesSweeper(env, base / "work")


@pytest.fixture(scope="module")
def backed_up(sweeper):
    return sweeper.chosen_backed_up()[0]


@pytest.mark.parametrize("recovery", ["resume", "rollback"])
@pytest.mark.parametrize("point", ["before:META_RESTORED", "after:META_RESTORED"])
def test_chosen_spaces_restore_crash_point(sweeper, backed_up, point, recovery):
    o = sweeper.chosen_case(*backed_up, point, recovery)
    assert o.ok, o.detail


def test_chosen_spaces_restore_killed_after_started_rolls_back_to_the_data_before(sweeper, backed_up):
    """Once STARTED is journaled a rollback must still find the chosen spaces' set-aside dirs by id
    (the sweep found it looking for them by name, and the original space data lost)."""
    o = sweeper.chosen_case(*backed_up, "after:STARTED", "rollback")
    assert o.ok, o.detail
