"""Short form of the crash-point sweep (the full one is scripts/sweep): every backup state boundary
on local storage, a crash inside an S3 multipart upload, a few restore points from local storage and
one from S3, both recoveries. Each case kills a real brsm process on the sweep's sandbox (small
multipart parts, see tests/reliability/sweep.py)."""
from __future__ import annotations

import pytest

from tests.reliability.sweep import BACKUP_POINTS, Sweeper, sweep_sandbox

pytestmark = pytest.mark.sandbox


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    with sweep_sandbox(tmp_path_factory.mktemp("sweep-sandbox")) as env:
        yield env


@pytest.fixture(scope="module")
def sweeper(sandbox, tmp_path_factory):
    return Sweeper(sandbox, tmp_path_factory.mktemp("sweep"))


@pytest.fixture(scope="module")
def reference(sweeper):
    return sweeper.reference_backup("local")[0]


@pytest.fixture(scope="module")
def s3_reference(sweeper):
    return sweeper.reference_backup("s3")[0]


SHORT_BACKUP = [p for p in BACKUP_POINTS if p.startswith("before:")] + ["after:COPIED", "after:UPLOADED", "file:1"]


@pytest.mark.parametrize("recovery", ["resume", "rollback"])
@pytest.mark.parametrize("point", SHORT_BACKUP)
def test_backup_crash_point(sweeper, reference, point, recovery):
    o = sweeper.backup_case("local", point, recovery, reference)
    assert o.ok, o.detail


@pytest.mark.parametrize("recovery", ["resume", "rollback"])
def test_backup_crash_inside_s3_multipart_upload(sweeper, s3_reference, recovery):
    # resume: also checks (journal) that the open upload is finished in place, journaled parts kept
    o = sweeper.backup_case("s3", "part:2", recovery, s3_reference)
    assert o.ok, o.detail
    if recovery == "resume":
        assert o.detail.startswith("resume finished"), o.detail


@pytest.fixture(scope="module")
def backed_up(sweeper):
    return sweeper.backed_up("local", timed=False)[:3]


@pytest.fixture(scope="module")
def s3_backed_up(sweeper):
    return sweeper.backed_up("s3", timed=False)[:3]


@pytest.mark.parametrize("recovery", ["resume", "rollback"])
@pytest.mark.parametrize("point", ["after:SET_ASIDE", "file:2", "swap:1", "after:META_RESTORED"])
def test_restore_crash_point(sweeper, backed_up, point, recovery):
    loc, name, backed = backed_up
    o = sweeper.restore_case(loc, name, backed, point, recovery, "local")
    assert o.ok, o.detail


@pytest.mark.parametrize("recovery", ["resume", "rollback"])
def test_restore_from_s3_crash_point(sweeper, s3_backed_up, recovery):
    loc, name, backed = s3_backed_up
    o = sweeper.restore_case(loc, name, backed, "file:2", recovery, "s3")
    assert o.ok, o.detail
