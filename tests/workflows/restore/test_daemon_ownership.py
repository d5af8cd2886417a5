"""A daemon started behind brsm's back while the cluster is down is not the restore's own: `nebula.service
start` answers "already running: P" for it exactly as for the daemon an earlier attempt started. brsm
took both as started, waited for a storaged that never came ONLINE and blamed ADD HOSTS. Now every pid
brsm sees after its own start is journaled, and a daemon found running as another pid stops the
restore (exit 5) with one line naming host, service and pid; a journal from before keeps the old way."""
from __future__ import annotations

import doctest

import pytest

from brsm.errors import OperationFailed
from brsm.fakes import FakeCluster, FakeHosts
from brsm.workflows import services
from brsm.workflows.restore import ownership
from brsm.workflows.restore.ownership import FOREIGN, OURS, UNKNOWN
from brsm.workflows.restore.state import DOWNTIME_BEGAN, DowntimeBegan, RestoreState
from brsm.workflows.services import ServiceTarget
from property_tests.campaign_support import World, fast_sleeps, space_data


# -- the pure decision --------------------------------------------------------------------------------------
def folded(*events: tuple[str, dict], tracks: bool = True, stopped: tuple[str, ...] = ("h1", "h2")) -> RestoreState:
    st = RestoreState()
    st.apply(DOWNTIME_BEGAN, {"at": 1.0, **({ownership.TRACKS_STARTS: True} if tracks else {})})
    for h in stopped:  # STOPPED saw every daemon down
        for svc in ("metad", "storaged", "graphd"):
            st.apply(ownership.DAEMON_STOPPED, {"host": h, "service": svc})
    for t, d in events:
        st.apply(t, d)
    return st


def judge(pid: int | None, st: RestoreState, host: str, service: str, **kw) -> str:
    return ownership.judge(pid, st.own_daemons, st.tracks_starts, host, service, **kw)


ISSUED = ownership.DAEMON_START_ISSUED
STARTED = ownership.DAEMON_STARTED


def test_a_pid_this_operation_started_is_its_own_on_a_later_attempt():
    ex = folded((ISSUED, {"host": "h1", "service": "storaged"}), (STARTED, {"host": "h1", "service": "storaged", "pid": 42}),
                (ISSUED, {"host": "h1", "service": "storaged"}))
    assert judge(42, ex, "h1", "storaged") == OURS


def test_another_pid_is_foreign_and_so_is_one_on_another_host_or_service():
    ex = folded((ISSUED, {"host": "h1", "service": "storaged"}), (STARTED, {"host": "h1", "service": "storaged", "pid": 42}),
                (ISSUED, {"host": "h1", "service": "storaged"}))
    assert judge(43, ex, "h1", "storaged") == FOREIGN
    assert judge(42, folded((ISSUED, {"host": "h2", "service": "storaged"})), "h2", "storaged") == FOREIGN
    assert judge(42, ex, "h1", "graphd", issued_now=False) == FOREIGN


def test_a_journal_from_before_pids_were_journaled_takes_a_running_daemon_as_started():
    assert judge(43, folded((ISSUED, {"host": "h1", "service": "storaged"}), tracks=False), "h1", "storaged") == UNKNOWN
    assert judge(43, RestoreState(), "h1", "storaged") == UNKNOWN


def test_a_daemon_brsm_never_saw_down_is_the_original_never_foreign():
    # STOPPED's `nebula.service stop graphd` failed on h1: the graphd running there is the cluster's own
    ex = folded((ISSUED, {"host": "h1", "service": "graphd"}), stopped=("h2",))
    assert judge(77, ex, "h1", "graphd") == UNKNOWN
    assert judge(77, folded((ISSUED, {"host": "h2", "service": "graphd"}), stopped=("h2",)), "h2", "graphd") == FOREIGN


def test_a_start_cut_before_its_pid_was_seen_is_unknown_never_foreign():
    # an earlier attempt issued the start and was killed before the status showed the pid
    ex = folded((ISSUED, {"host": "h1", "service": "metad"}), (ISSUED, {"host": "h1", "service": "metad"}))
    assert judge(9, ex, "h1", "metad") == UNKNOWN
    # … but a start that failed (pid None), or that found someone else's daemon, leaves nothing unresolved
    ex = folded((ISSUED, {"host": "h1", "service": "metad"}), (STARTED, {"host": "h1", "service": "metad", "pid": None}),
                (ISSUED, {"host": "h1", "service": "metad"}))
    assert judge(9, ex, "h1", "metad") == FOREIGN
    ex = folded((ISSUED, {"host": "h1", "service": "metad"}),
                ("ServiceFoundRunning", {"host": "h1", "service": "metad", "foreign_pid": 9}),
                (ISSUED, {"host": "h1", "service": "metad"}))
    assert judge(9, ex, "h1", "metad") == FOREIGN


def test_the_refusal_is_one_line_saying_what_to_do():
    line = ownership.foreign_message("storaged", "10.0.0.2", 4242, "/opt/nebula", 7, "resume")
    assert "\n" not in line
    assert line == ("storaged on 10.0.0.2 is running as pid 4242, not started by this restore (someone started it "
                    "while the cluster was down): stop it (`/opt/nebula/scripts/nebula.service stop storaged` on "
                    "10.0.0.2), then `brsm resume 7` / `brsm rollback 7`")


def test_doctests():
    assert doctest.testmod(ownership).failed == 0


# -- services.start with a watch, over the fake's nebula.service ----------------------------------------------
def storages(c) -> list[ServiceTarget]:
    return [ServiceTarget(a.host, c.install_dir, a.port) for a in c.storage_addrs]


async def test_start_journals_the_pids_it_starts_and_refuses_a_daemon_it_did_not():
    c = FakeCluster(metas=1, storages=3, service_lag=2)
    hosts = FakeHosts(c)
    seen: dict[str, int | None] = {}
    mine: set[int] = set()
    watch = services.StartWatch(
        issued=lambda ts: None,
        started=lambda t, pid: (seen.__setitem__(t.host, pid), mine.add(pid)),
        foreign=lambda t, pid: None if pid in mine else f"{t.host} runs {pid}, not ours")
    await services.stop(hosts, "storaged", storages(c))
    await services.start(hosts, "storaged", storages(c), watch=watch)
    assert set(seen) == {a.host for a in c.storage_addrs} and all(seen[h] == c.machine(h).pids["storaged"] for h in seen)
    await services.start(hosts, "storaged", storages(c), watch=watch)  # ours, "already running": fine
    behind = c.storage_addrs[1].host
    c.stop_service(behind, "storaged", kill=True)
    c.start_service(behind, "storaged")  # an operator, by hand: another pid
    with pytest.raises(services.ForeignDaemon) as e:
        await services.start(hosts, "storaged", storages(c), watch=watch)
    assert e.value.message == f"{behind} runs {c.machine(behind).pids['storaged']}, not ours"
    assert e.value.exit_code == 5 and e.value.keeps_operation


async def test_a_storaged_that_exits_is_not_blamed_on_add_hosts(monkeypatch):
    monkeypatch.setattr(services, "EXITED_GRACE", 0.5)
    c = FakeCluster(metas=1, storages=3, service_lag=2)
    hosts = FakeHosts(c)
    target = storages(c)[:1]
    await services.stop(hosts, "storaged", target)
    real_start = c.start_service

    def dies(host, svc):
        out = real_start(host, svc)
        c.machine(host).running[svc] = False
        return out

    c.start_service = dies
    with pytest.raises(OperationFailed, match="storaged exited after it was started") as e:
        await services.start(hosts, "storaged", target, timeout=60)
    assert "ADD HOSTS" not in e.value.hint and "log" in e.value.hint


# -- a restore, on the in-process fakes -----------------------------------------------------------------------
@pytest.fixture
def world():
    with fast_sleeps():
        w = World()
        try:
            yield w
        finally:
            w.close()


def events(w: World, op: int, type_: str) -> list[dict]:
    return [e.data for e in w.inner.events(op) if e.type == type_]


def test_a_storaged_restarted_by_hand_after_the_starts_stops_the_resume_until_it_is_stopped(world, monkeypatch):
    """STARTED started every daemon and was cut (started:1); an operator then restarts storaged on one
    host by hand. The resume took it as its own; now it names it, exits 5, starts nothing on top and
    rolls nothing back; once it is stopped the resume finishes with the backup's data."""
    w, c = world, world.cluster
    name = w.make_backup()
    at_backup = space_data(c)
    c.write("basketball")
    op = w.restore_runner.create({"name": name, "verify": "quick", "service_timeout": 5})
    monkeypatch.setenv("BRSM_FAILPOINTS", "started:1=raise")
    with pytest.raises(OperationFailed):
        w.run(w.restore_runner.run(op))
    monkeypatch.delenv("BRSM_FAILPOINTS")
    ours = {d["host"]: d["pid"] for d in events(w, op, ownership.DAEMON_STARTED) if d["service"] == "storaged"}
    assert set(ours) == {a.host for a in c.storage_addrs}
    behind = c.storage_addrs[-1].host
    c.stop_service(behind, "storaged", kill=True)
    c.start_service(behind, "storaged")
    foreign = c.machine(behind).pids["storaged"]
    assert foreign != ours[behind]
    c.stop_service(c.leader.host, "graphd", kill=True)  # down: the resume would start it beside the foreign one
    for _ in range(2):  # the refusal holds on every resume while it runs
        with pytest.raises(services.ForeignDaemon) as e:
            w.run(w.restore_runner.resume(op, auto_rollback=True))
        assert e.value.exit_code == 5
        assert e.value.message.startswith(f"storaged on {behind} is running as pid {foreign}, not started by this "
                                          f"restore (someone started it while the cluster was down): stop it (`")
        assert f"`brsm resume {op}` / `brsm rollback {op}`" in e.value.message
        assert "ADD HOSTS" not in e.value.message + (e.value.hint or "")
        st = w.restore_runner.state(op)
        assert st.phase == "failed" and not st.undone, "nothing rolled back"
        assert c.machine(behind).pids["storaged"] == foreign, "nothing started on top of it, nor stopped"
        assert not c.service_up(c.leader.host, "graphd"), "nothing started beside it either"
    found = events(w, op, "ServiceFoundRunning")
    assert found and all(d["host"] == behind and d["foreign_pid"] == foreign for d in found)
    c.stop_service(behind, "storaged", kill=True)
    st = w.run(w.restore_runner.resume(op, auto_rollback=True))
    assert st.phase == "done", st.failure
    assert space_data(c) == at_backup


def test_the_rollback_refuses_a_metad_started_by_hand_before_its_start(world, monkeypatch):
    """A rollback from after SET_ASIDE: its undo of STOPPED starts metad, storaged, graphd again. A
    metad started by hand right before that start (after the rollback's own down checks) is not the
    operation's: the rollback stops there; once it is stopped, the rollback finishes with the original data."""
    w, c = world, world.cluster
    name = w.make_backup()
    c.write("football")
    before = space_data(c)
    op = w.restore_runner.create({"name": name, "verify": "quick", "service_timeout": 5})
    monkeypatch.setenv("BRSM_FAILPOINTS", "after:SET_ASIDE=raise")
    with pytest.raises(OperationFailed):
        w.run(w.restore_runner.run(op))
    monkeypatch.delenv("BRSM_FAILPOINTS")
    meta_host = c.leader.host
    w.restore_box["at_step"]["undo:STOPPED"] = [lambda: c.start_service(meta_host, "metad")]
    with pytest.raises(services.ForeignDaemon, match=f"metad on {meta_host} is running as pid \\d+, not started by "
                                                      "this rollback"):
        w.run(w.restore_runner.rollback(op))
    assert not c.service_up(c.storage_addrs[0].host, "storaged"), "nothing started after it"
    c.stop_service(meta_host, "metad", kill=True)
    w.clear_faults()
    st = w.run(w.restore_runner.rollback(op))
    assert st.phase == "rolled_back", st.failure
    assert space_data(c) == before


def test_a_journal_from_before_pids_were_journaled_still_resumes_as_it_did(world, monkeypatch):
    """An operation whose earlier attempts ran before this change (DowntimeBegan without tracks_starts,
    no pids journaled): its resume cannot tell an earlier attempt's daemon from another, so it takes a
    running one as started, as brsm always did, and finishes."""
    from brsm.workflows.restore import control, swap
    w, c = world, world.cluster
    name = w.make_backup()
    at_backup = space_data(c)
    c.write("basketball")
    op = w.restore_runner.create({"name": name, "verify": "quick", "service_timeout": 5})
    monkeypatch.setattr(swap, "DowntimeBegan", lambda at, tracks_starts: DowntimeBegan(at=at))  # no such key then
    monkeypatch.setattr(control, "start_watch", lambda ctx, svc: None)  # the old code journaled no pid
    monkeypatch.setenv("BRSM_FAILPOINTS", "started:1=raise")
    with pytest.raises(OperationFailed):
        w.run(w.restore_runner.run(op))
    monkeypatch.undo()
    assert not events(w, op, ownership.DAEMON_STARTED)
    behind = c.storage_addrs[-1].host
    c.stop_service(behind, "storaged", kill=True)
    c.start_service(behind, "storaged")
    st = w.run(w.restore_runner.resume(op, auto_rollback=True))
    assert st.phase == "done", st.failure
    assert space_data(c) == at_backup


def _at_started_1(monkeypatch, action):
    from brsm.workflows.restore import finish
    real = finish.failpoints.hit

    def hit(point: str) -> None:
        if point == "started:1":
            action()
        real(point)

    monkeypatch.setattr(finish.failpoints, "hit", hit)


def test_the_wait_for_online_names_a_storaged_replaced_by_hand_not_add_hosts(world, monkeypatch):
    """brsm's storaged came up; before it was ONLINE someone restarted it by hand with another cluster's
    id: it never comes ONLINE. The failure named ADD HOSTS and cluster.id; now it names the pid brsm
    did not start, exits 5, and keeps the operation (no rollback stops that daemon)."""
    from brsm.fakes.cluster import CLUSTER_ID_FILE, encode_cluster_id
    w, c = world, world.cluster
    name = w.make_backup()
    c.write("basketball")
    behind = c.storage_addrs[0].host

    def replace() -> None:
        c.stop_service(behind, "storaged", kill=True)
        c.machine(behind).put(f"{c.install_dir}/{CLUSTER_ID_FILE}", encode_cluster_id(123456789))
        c.start_service(behind, "storaged")

    _at_started_1(monkeypatch, replace)
    op = w.restore_runner.create({"name": name, "verify": "quick", "service_timeout": 5})
    with pytest.raises(services.ForeignDaemon) as e:
        w.run(w.restore_runner.run(op, auto_rollback=True))
    pid = c.machine(behind).pids["storaged"]
    assert e.value.message.startswith(f"storaged on {behind} is running as pid {pid}, not started by this restore")
    assert "not ONLINE" in e.value.hint
    st = w.restore_runner.state(op)
    assert st.phase == "failed" and not st.undone and c.machine(behind).pids["storaged"] == pid


def test_the_wait_for_online_names_a_storaged_that_exited_not_add_hosts(world, monkeypatch):
    w, c = world, world.cluster
    name = w.make_backup()
    c.write("basketball")
    gone = c.storage_addrs[0].host
    _at_started_1(monkeypatch, lambda: c.stop_service(gone, "storaged", kill=True))
    op = w.restore_runner.create({"name": name, "verify": "quick", "service_timeout": 5})
    with pytest.raises(OperationFailed) as e:
        w.run(w.restore_runner.run(op))
    assert f"storaged on {gone} is not running (it exited: see its log under" in e.value.message
    assert "ADD HOSTS" not in e.value.hint.split("; the cluster's services may be down")[0]


def test_a_daemon_whose_stop_failed_is_the_clusters_own_and_the_rollback_starts_around_it(world):
    """STOPPED's `nebula.service stop` failed on one host (exit 1): that graphd never stopped, its pid is
    the cluster's original. The rollback's start finds it "already running"; brsm never saw it down, so
    it is no stranger (a campaign found the rollback refusing it as foreign) and the rollback finishes."""
    w, c = world, world.cluster
    name = w.make_backup()
    c.write("football")
    before = space_data(c)
    host = c.leader.host
    w.restore_box["at_step"]["STOPPED"] = [lambda: c.faults.add(
        "verb_fail", host, count=1, verb="service")]
    op = w.restore_runner.create({"name": name, "verify": "quick", "service_timeout": 5})
    with pytest.raises(OperationFailed, match="did not stop"):
        w.run(w.restore_runner.run(op))
    running = [s for s in ("graphd", "storaged", "metad") if c.service_up(host, s)]
    assert running, "one daemon brsm did not stop"
    st = w.run(w.restore_runner.rollback(op))
    assert st.phase == "rolled_back", st.failure
    assert space_data(c) == before


def test_a_process_using_a_data_dir_stops_the_restore_until_it_is_gone(world):
    """Not a daemon but some other process (a shell left in the dir, a backup agent) uses a storaged's
    data dir once the cluster is down: the restore refuses to touch the data, names the pid, and
    finishes on resume once that process is gone. The fakes could not say so before their hosts did
    verbs (their `find /proc` found nothing), so no test on them reached this refusal."""
    w, c = world, world.cluster
    name = w.make_backup()
    backed = space_data(c)
    c.write("football")
    addr = c.storage_addrs[0]
    m = c.machine(addr.host)
    stray = f"{c.storage_paths[addr][0]}/nebula/stray.log"
    w.restore_box["at_step"]["SET_ASIDE"] = [lambda: m.holders.__setitem__(stray, 31337)]
    op = w.restore_runner.create({"name": name, "verify": "quick", "service_timeout": 5})
    with pytest.raises(OperationFailed, match=f"{addr.host}: process\\(es\\) 31337 use "):
        w.run(w.restore_runner.run(op))
    m.holders.clear()
    st = w.run(w.restore_runner.resume(op))
    assert st.phase == "done", st.failure
    assert space_data(c) == backed
