"""Short form of the crash-point sweep (the full one is scripts/sweep): local storage, every backup
state boundary, a few restore points, both recoveries. Each case kills a real brsm process."""
from __future__ import annotations

import pytest

from tests.e2e.conftest import sandbox  # noqa: F401 - the module's sandbox fixture
from tests.reliability.sweep import BACKUP_POINTS, Sweeper

pytestmark = pytest.mark.sandbox


@pytest.fixture(scope="module")
def sweeper(sandbox, tmp_path_factory):  # noqa: F811
    return Sweeper(sandbox, tmp_path_factory.mktemp("sweep"))


@pytest.fixture(scope="module")
def reference(sweeper):
    return sweeper.reference_backup("local")


SHORT_BACKUP = [p for p in BACKUP_POINTS if p.startswith("before:")] + ["after:COPIED", "after:UPLOADED", "file:1"]


@pytest.mark.parametrize("recovery", ["resume", "rollback"])
@pytest.mark.parametrize("point", SHORT_BACKUP)
def test_backup_crash_point(sweeper, reference, point, recovery):
    o = sweeper.backup_case("local", point, recovery, reference)
    assert o.ok, o.detail


@pytest.fixture(scope="module")
def backed_up(sweeper, sandbox):  # noqa: F811
    loc = sweeper.storage("local")
    backed = sandbox.checksum()
    name = sandbox.ok("start", "backup", "--config", sandbox.config, *loc)["facts"]["backup_name"]
    return loc, name, backed


@pytest.mark.parametrize("recovery", ["resume", "rollback"])
@pytest.mark.parametrize("point", ["after:SET_ASIDE", "file:2", "after:META_RESTORED"])
def test_restore_crash_point(sweeper, backed_up, point, recovery):
    loc, name, backed = backed_up
    o = sweeper.restore_case(loc, name, backed, point, recovery, "local")
    assert o.ok, o.detail
