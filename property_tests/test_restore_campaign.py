"""Fault campaign: the real restore workflow on the in-process fakes, under faults, crashes and resumes.

Each example first makes a clean backup of the fake cluster, then changes the cluster's data (new
writes, a file rewritten) so "restored" and "rolled back" are told apart, then creates one restore
operation ({"name": NAME, "verify": "quick"}) and interleaves cluster faults (meta error codes on
listCluster/listSpaces/restoreMeta, leader changes, SSH drops mid-file, a host down, disk full,
failing nebula.service/mkdir/rm/... commands), storage faults (get, list, ...), a crash after N
journal appends, and drives (run/resume or rollback). After every drive:

* until STARTED has completed, every data path's original ``<dp>/nebula`` content is either in
  place or, whole, in ``<dp>/nebula_brsm_old_<op>`` (compared file by file on the fake cluster);
* the journal's fold equals the runner's live state, the machine's replay agrees, verify() is ok;
* after ROLLED_BACK or CLEANED no lease dir is left and the cluster is not write-blocked.

At the end the faults are cleared and the operation finished (resume or rollback): restored → the
cluster's space data equals the backup's; rolled back → the cluster's files equal the pre-restore
files; both → services running, no set-aside or download dirs, no lease; a second call is a no-op.
"""
from __future__ import annotations

import asyncio
import posixpath

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule, run_state_machine_as_test

from brsm.engine.definitions import RESTORE
from brsm.engine.step_context import op_ref
from brsm.errors import BrsmError, UsageError
from property_tests.campaign_support import (
    tolerate,
    SimulatedCrash,
    World,
    all_files,
    check_journal,
    data_dirs,
    fast_sleeps,
    leases_left,
    mem,
    nebula_trees,
    remove_holderless_leases,
    remove_unreleased_leases,
    space_data,
    under,
)

META_HOSTS = ["127.0.0.11", "127.0.0.12"]
STORAGE_HOSTS = ["127.0.0.101", "127.0.0.102"]
HOSTS = META_HOSTS + STORAGE_HOSTS
RPCS = ["listCluster", "listSpaces", "restoreMeta"]
CODES = [-2, -8, -24, -2003, -2021]
STORAGE_VERBS = ["get", "get_bytes", "list", "stat"]

CLUSTER_FAULT = st.one_of(
    st.builds(lambda rpc, code, n: ("meta_code", rpc, n, {"code": code}),
              st.sampled_from(RPCS), st.sampled_from(CODES), st.integers(1, 3)),
    st.builds(lambda rpc, n: ("leader_change", rpc, n, {}), st.sampled_from(RPCS + ["*"]), st.integers(1, 5)),
    st.builds(lambda h, b, n: ("disconnect", h, n, {"after_bytes": b}),
              st.sampled_from(HOSTS), st.integers(0, 1200), st.integers(1, 4)),
    st.builds(lambda h, n: ("host_down", h, n, {}), st.sampled_from(HOSTS), st.integers(1, 6)),
    st.builds(lambda h, n: ("disk_full", h, n, {}), st.sampled_from(HOSTS), st.integers(1, 3)),
    st.builds(lambda h, v, n: ("verb_fail", h, n, {"verb": v}), st.sampled_from(HOSTS),
              st.sampled_from(["service", "claim_dir", "remove_tree", "check_login", "free_bytes", "walk",
                               "path_kind", "check_daemons", "hash_files", "fingerprint_trees", "copy_tree",
                               "copy_into", "clock", "read_text", "real_paths", "list_named"]), st.integers(1, 3)),
)


RUNS = {"examples": 0, "drives": 0, "crashes": 0}


class RestoreCampaign(RuleBasedStateMachine):
    PARAMS: dict = {"verify": "quick"}

    def __init__(self) -> None:
        super().__init__()
        RUNS["examples"] += 1
        self.w = World()
        c = self.c = self.w.cluster
        self.name = self.w.make_backup()
        self.backup_data = space_data(c)
        self.backup_spaces = {s.name: s.id for s in c.spaces.values()}
        # Change the data after the backup, so a restore and a rollback look different.
        c.write("basketball")
        c.write("football")
        sid = c.space_id("football")
        addr, dp = c.part_location(sid, 1)
        m = c.host_of(addr)
        victim = m.under(f"{dp}/nebula/{sid}/data")[0]
        m.files[victim] = b"changed after the backup" + m.files[victim]
        self.pre = nebula_trees(c)
        self.pre_all = all_files(c)
        self.pre_data = space_data(c)
        self.runner = self.w.restore_runner
        self.op = self.runner.create({"name": self.name, **self.PARAMS})
        self.ref = op_ref(self.w.inner.journal_id, self.op)  # Runner.create puts the journal id in the params
        self.aside = f"nebula_brsm_old_{self.ref}"
        self.first = True
        self.finish = "resume"
        self.log: list[str] = []

    @initialize(finish=st.sampled_from(["resume", "rollback"]))
    def choose_finish(self, finish: str) -> None:
        self.finish = finish

    # -- faults ------------------------------------------------------------------------------
    @rule(f=CLUSTER_FAULT)
    def cluster_fault(self, f) -> None:
        kind, target, n, params = f
        self.c.faults.add(kind, target, count=n, **params)

    @rule(f=CLUSTER_FAULT, at=st.sampled_from([*RESTORE.steps, *(f"undo:{s}" for s in RESTORE.steps)]))
    def cluster_fault_at_step(self, f, at: str) -> None:
        """The fault is injected only when that step (or undo) begins, so it hits that step."""
        kind, target, n, params = f
        self.w.restore_box["at_step"].setdefault(at, []).append(
            lambda: self.c.faults.add(kind, target, count=n, **params))

    @rule(i=st.integers(0, 50), at=st.sampled_from(RESTORE.steps))
    def stray_process_at_step(self, i: int, at: str) -> None:
        """From that step on, some process (a shell left in the dir, a backup agent) uses a data dir:
        the check that the cluster is down sees it (HostPort.check_daemons) until faults are cleared."""
        host, dp = data_dirs(self.c)[i % len(data_dirs(self.c))]
        m = self.c.machine(host)
        self.w.restore_box["at_step"].setdefault(at, []).append(
            lambda: m.holders.__setitem__(posixpath.join(dp, "nebula", "stray"), 31337))

    @rule(verb=st.sampled_from(STORAGE_VERBS), count=st.integers(1, 4), permanent=st.booleans(),
          skip=st.integers(0, 8))
    def storage_fault(self, verb: str, count: int, permanent: bool, skip: int) -> None:
        mem(self.w.storage).inject_fault(verb, count, permanent=permanent, skip=skip)

    @rule(n=st.integers(0, 60))
    def arm_crash(self, n: int) -> None:
        self.w.journal.arm(n)

    # -- drives --------------------------------------------------------------------------------
    def state(self):
        return self.runner.state(self.op)

    def _drive(self, mode: str) -> None:
        st0 = self.state()
        if mode == "rollback" and tolerate("rollback_after_cleaned") and "CLEANED" in st0.started and st0.phase != "rolling_back":
            mode = "resume"  # KNOWN["rollback_after_cleaned"]: such a rollback mixes old and new data
        self.w.restore_box.pop("ctx", None)
        try:
            if mode == "rollback":
                self.w.run(self.runner.rollback(self.op))
            elif self.first:
                self.w.run(self.runner.run(self.op))
            else:
                self.w.run(self.runner.resume(self.op))
            outcome = "ok"
        except SimulatedCrash:
            outcome = "crash"
            self.w.process_died()
        except BrsmError as e:
            outcome = f"{type(e).__name__}: {e.message[:200]}"
        self.first = False
        self.w.journal.arm(None)
        self.log.append(f"{mode}: {outcome}")
        RUNS["drives"] += 1
        RUNS["crashes"] += outcome == "crash"
        ctx = self.w.restore_box.get("ctx")
        st_ = self.w.run(check_journal(self.w.inner, self.op, self.w.restore_wf, ctx.state if ctx else None))
        self.check_world(st_)

    @precondition(lambda self: not self.state().finished)
    @rule(mode=st.sampled_from(["resume", "resume", "resume", "rollback"]))
    def drive(self, mode: str) -> None:
        self._drive(mode)

    @precondition(lambda self: not self.state().finished)
    @rule()
    def resume_now(self) -> None:
        self._drive("resume")

    @precondition(lambda self: not self.state().finished)
    @rule(n=st.integers(0, 60), mode=st.sampled_from(["resume", "resume", "rollback"]))
    def crash_during(self, n: int, mode: str) -> None:
        """A drive whose process dies after n more journal appends."""
        self.w.journal.arm(n)
        self._drive(mode)

    # -- invariants ------------------------------------------------------------------------------
    def check_world(self, st_) -> None:
        c = self.c
        assert not c.write_blocked
        if "STARTED" not in st_.completed:
            for (host, dp), original in self.pre.items():
                live = under(c, host, posixpath.join(dp, "nebula"))
                aside = under(c, host, posixpath.join(dp, self.aside))
                assert original in (live, aside), (
                    f"{host}:{dp}/nebula: the original data is neither in place nor set aside "
                    f"(phase {st_.phase}, completed {st_.completed}, undone {st_.undone}; {self.log})")
        if st_.finished:
            if tolerate("lease_release_read"):
                remove_unreleased_leases(c, self.op)
            assert leases_left(c, tolerate_holderless=tolerate("holderless_lease")) == [], f"lease left after {st_.phase}"

    @invariant()
    def no_background_tasks(self) -> None:
        left = [t for t in asyncio.all_tasks(self.w.loop) if not t.done()]
        if left and tolerate("lease_task_leak") and all("_refresh_loop" in repr(t) for t in left):
            self.w.process_died()  # KNOWN["lease_task_leak"]
            return
        assert not left, f"tasks left running between drives: {left}"

    # -- the end ---------------------------------------------------------------------------------
    def finish_operation(self) -> None:
        self.w.clear_faults()
        for m in self.c.machines.values():
            m.holders.clear()
        if tolerate("holderless_lease"):
            remove_holderless_leases(self.c)  # KNOWN["holderless_lease"]
        for _ in range(3):
            st_ = self.state()
            if st_.finished:
                break
            mode = "rollback" if (self.finish == "rollback" or st_.phase in ("rolling_back", "rolled_back")) \
                else "resume"
            self._drive(mode)
            if mode == "rollback" and self.log[-1].startswith("rollback: UsageError"):
                self.finish = "resume"  # rollback refused (e.g. once CLEANED began): finish forward
        st_ = self.state()
        assert st_.finished, f"not finished after clearing faults: {st_.phase} {st_.failure} {self.log}"
        c = self.c
        if st_.phase == "done":
            assert space_data(c) == self.backup_data, "the restored cluster's data differs from the backup"
            assert {s.name: s.id for s in c.spaces.values()} == self.backup_spaces
        else:
            assert nebula_trees(c) == self.pre, "rolled back, but the data differs from before the restore"
            assert space_data(c) == self.pre_data
            now = all_files(c)
            assert now == self.pre_all, sorted(set(now) ^ set(self.pre_all))[:5]
        for host, dp in data_dirs(c):
            m = c.machine(host)
            left = [d for d in (posixpath.join(dp, self.aside), posixpath.join(dp, f"brsm_restore_{self.ref}"))
                    if m.exists(d)]
            assert not left, f"{host}: {left} left after {st_.phase}"
        stopped = [(h, s) for h, m in c.machines.items() for s, up in m.running.items() if not up]
        assert not stopped, f"services left stopped after {st_.phase}: {stopped}"
        assert leases_left(c) == []
        assert c.snapshots == {}
        # Idempotent: a second call appends nothing and changes nothing.
        before = all_files(c)
        try:
            if st_.phase == "done":
                self.w.run(self.runner.resume(self.op))
            else:
                self.w.run(self.runner.rollback(self.op))
        except UsageError:
            pass
        assert self.state().seq == st_.seq
        assert all_files(c) == before

    def teardown(self) -> None:
        try:
            self.finish_operation()
        finally:
            self.w.close()


def test_restore_campaign():
    with fast_sleeps():
        run_state_machine_as_test(RestoreCampaign, settings=settings())  # the loaded profile
    print(f"RestoreCampaign: {RUNS}")


class DirectRestoreCampaign(RestoreCampaign):
    """The same campaign on the direct data path: each fake host's helper (brsm.fakes.helper) fetches
    its files from the memory store with the URLs brsm signs; host drops and store faults hit it."""
    PARAMS = {"verify": "quick", "data_path": "direct"}

    def finish_operation(self) -> None:
        super().finish_operation()
        st_ = self.state()
        if st_.phase == "done":
            assert st_.facts["data_path"] == "direct", st_.facts


def test_restore_campaign_on_the_direct_path():
    with fast_sleeps():
        run_state_machine_as_test(DirectRestoreCampaign, settings=settings())
    print(f"DirectRestoreCampaign: {RUNS}")
