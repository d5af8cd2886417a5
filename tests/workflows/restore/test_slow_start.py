"""A storaged that loads its parts slowly (StorageServer::start opens the ports only after the kvstore;
MetaClient::waitForMetadReady makes it ONLINE before that), on the in-process fakes: STARTED waits,
and one still loading when --service-timeout ends keeps the restore for `brsm resume`, never rolls
it back; one metad refuses (another cluster's id) still fails STARTED and rolls back."""
from __future__ import annotations

import pytest

from brsm.errors import OperationFailed
from brsm.fakes.cluster import CLUSTER_ID_FILE, encode_cluster_id
from brsm.workflows.restore.control import StillLoading
from property_tests.campaign_support import World, all_files, fast_sleeps, space_data


@pytest.fixture
def world():
    with fast_sleeps():
        w = World()
        try:
            yield w
        finally:
            w.close()


def test_a_storaged_still_loading_keeps_the_restore_for_resume(world):
    w, c = world, world.cluster
    name = w.make_backup()
    at_backup = space_data(c)
    c.write("basketball")
    slow = c.storage_addrs[1].host
    w.restore_box["at_step"]["STARTED"] = [lambda: c.loading.add(slow)]
    op = w.restore_runner.create({"name": name, "verify": "quick", "service_timeout": 5})
    with pytest.raises(StillLoading, match="still loading its parts; the restore is kept") as e:
        w.run(w.restore_runner.run(op, auto_rollback=True))
    assert f"brsm resume {op}" in e.value.hint
    st = w.restore_runner.state(op)
    assert st.phase == "failed" and not st.undone, "not rolled back"
    assert c.service_up(slow, "storaged") and c.storaged_online(slow) and not c.service_listening(slow, "storaged")
    w.clear_faults()
    c.loading.clear()  # it finished loading
    st = w.run(w.restore_runner.resume(op, auto_rollback=True))
    assert st.phase == "done", st.failure
    assert space_data(c) == at_backup


def test_a_storaged_metad_refuses_still_fails_started_and_rolls_back(world):
    w, c = world, world.cluster
    name = w.make_backup()
    c.write("football")
    before = all_files(c)
    bad = c.storage_addrs[0].host

    def wrong_id():
        c.machine(bad).put(f"{c.install_dir}/{CLUSTER_ID_FILE}", encode_cluster_id(123456789))

    w.restore_box["at_step"]["STARTED"] = [wrong_id]
    op = w.restore_runner.create({"name": name, "verify": "quick", "service_timeout": 5})
    with pytest.raises(OperationFailed) as e:
        w.run(w.restore_runner.run(op, auto_rollback=True))
    assert not isinstance(e.value, StillLoading)
    st = w.restore_runner.state(op)
    assert st.phase == "rolled_back" and all_files(c) == before


def test_the_default_start_wait_grows_with_the_data_checked_restores(world):
    """No --service-timeout: the wait is the floor, or 2 s per GiB of a storage host's share of what
    CHECKED found the restore puts down, whichever is longer (it read a size nothing journaled, and
    so was always the floor)."""
    from brsm.workflows.restore import control
    from brsm.workflows.services import START_FLOOR, start_timeout

    w = world
    op = w.restore_runner.create({"name": w.make_backup(), "verify": "quick"})
    w.run(w.restore_runner.run(op))
    st = w.restore_runner.state(op)
    hosts = len({s["host"] for s in st.data.topology["storage"]})
    assert st.data.data_bytes == st.data.manifest["file_list"]["total_bytes"] > 0  # journaled with the header
    ctx = type("Ctx", (), {"data": st.data})()
    assert control.service_timeout(ctx) == start_timeout(st.data.data_bytes, hosts) == START_FLOOR
    st.data.data_bytes = 3 << 40  # 3 TiB over this cluster's storage hosts
    assert control.service_timeout(ctx) == start_timeout(3 << 40, hosts) > START_FLOOR
