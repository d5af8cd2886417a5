"""Fault campaign: the real backup workflow on the in-process fakes, under faults, crashes and resumes.

The machine creates one backup operation and interleaves: cluster faults (meta error codes,
createBackup failing after k hosts, leader changes, SSH drops mid-file, a host down, disk full,
failing commands), storage faults (transient and permanent, on any verb or request, a quota),
a crash after N journal appends, and drives (run/resume or rollback). After every drive it checks
the invariants; at the end it clears the faults, finishes the operation with resume or rollback
and checks the outcome, then that a second call appends nothing and changes nothing.

Profiles: see property_tests/conftest.py ("ci" by default, "campaign" for thousands of examples).
"""
from __future__ import annotations

import hashlib

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule, run_state_machine_as_test

from brsm.engine.definitions import BACKUP
from brsm.errors import BrsmError, UsageError
from property_tests.campaign_support import (
    BACKUP_PARAMS,
    tolerate,
    SimulatedCrash,
    World,
    all_files,
    backup_copy_of_data,
    check_journal,
    fast_sleeps,
    leases_left,
    manifest_problems,
    manifests,
    remove_holderless_leases,
    remove_unreleased_leases,
    mem,
    space_data,
)

META_HOSTS = ["127.0.0.11", "127.0.0.12"]
STORAGE_HOSTS = ["127.0.0.101", "127.0.0.102"]
RPCS = ["listCluster", "listSpaces", "listSnapshots", "createBackup", "dropSnapshot", "getMetaDirInfo"]
CODES = [-2, -8, -24, -26, -2003, -2004]  # E_RPC_FAILURE, E_NO_HOSTS, E_BACKUP_FAILED, ...
STORAGE_VERBS = ["put", "put_many", "put_bytes", "get", "get_bytes", "stat", "list", "delete", "delete_prefix",
                 "abort_uploads", "put_object", "create_upload", "upload_part", "list_parts",
                 "complete_upload", "abort_upload"]

CLUSTER_FAULT = st.one_of(
    st.builds(lambda rpc, code, n: ("meta_code", rpc, n, {"code": code}),
              st.sampled_from(RPCS), st.sampled_from(CODES), st.integers(1, 3)),
    st.builds(lambda k, code: ("meta_code", "createBackup", 1, {"code": code, "after_hosts": k}),
              st.integers(0, 2), st.sampled_from(CODES)),
    st.builds(lambda rpc, n: ("leader_change", rpc, n, {}), st.sampled_from(RPCS + ["*"]), st.integers(1, 5)),
    st.builds(lambda h, b, n: ("disconnect", h, n, {"after_bytes": b}),
              st.sampled_from(META_HOSTS + STORAGE_HOSTS), st.integers(0, 1200), st.integers(1, 4)),
    st.builds(lambda h, n: ("host_down", h, n, {}), st.sampled_from(META_HOSTS + STORAGE_HOSTS), st.integers(1, 6)),
    st.builds(lambda h, n: ("disk_full", h, n, {}), st.sampled_from(META_HOSTS), st.integers(1, 2)),
    st.builds(lambda h, v, n: ("verb_fail", h, n, {"verb": v}), st.sampled_from(META_HOSTS + STORAGE_HOSTS),
              st.sampled_from(["walk", "claim_dir", "remove_tree", "check_login", "free_bytes", "path_kind",
                               "clock", "read_text", "real_paths", "device_ids"]),
              st.integers(1, 3)),
)


RUNS = {"examples": 0, "drives": 0, "crashes": 0, "gc_after_meta_checkpoint_left": 0, "incremental_done_reusing": 0}


class BackupCampaign(RuleBasedStateMachine):
    PARAMS = BACKUP_PARAMS

    def __init__(self) -> None:
        super().__init__()
        RUNS["examples"] += 1
        self.w = World()
        self.c = self.w.cluster
        self.runner = self.w.backup_runner
        self.base: str | None = None  # an incremental campaign's base backup
        self.base_objects: dict[str, bytes] = {}  # and its objects, which nothing may change
        self.before_operation()
        self.original = all_files(self.c)
        self.original_data = space_data(self.c)
        self.op = self.runner.create(self.PARAMS)
        self.first = True
        self.finish = "resume"
        self.log: list[str] = []

    def before_operation(self) -> None:
        """What the world holds before the campaign's operation (nothing here)."""

    @initialize(finish=st.sampled_from(["resume", "rollback"]))
    def choose_finish(self, finish: str) -> None:
        self.finish = finish

    # -- faults ------------------------------------------------------------------------------
    @rule(f=CLUSTER_FAULT)
    def cluster_fault(self, f) -> None:
        kind, target, n, params = f
        self.c.faults.add(kind, target, count=n, **params)

    @rule(f=CLUSTER_FAULT, at=st.sampled_from([*BACKUP.steps, *(f"undo:{s}" for s in BACKUP.steps)]))
    def cluster_fault_at_step(self, f, at: str) -> None:
        """The fault is injected only when that step (or undo) begins, so it hits that step."""
        kind, target, n, params = f
        self.w.backup_box["at_step"].setdefault(at, []).append(
            lambda: self.c.faults.add(kind, target, count=n, **params))

    @rule(verb=st.sampled_from(STORAGE_VERBS), count=st.integers(1, 4), permanent=st.booleans(),
          skip=st.integers(0, 6))
    def storage_fault(self, verb: str, count: int, permanent: bool, skip: int) -> None:
        mem(self.w.storage).inject_fault(verb, count, permanent=permanent, skip=skip)

    @rule(quota=st.integers(0, 30_000))
    def storage_quota(self, quota: int) -> None:
        mem(self.w.storage).quota = mem(self.w.storage).stored_bytes() + quota

    @rule(n=st.integers(0, 40))
    def arm_crash(self, n: int) -> None:
        self.w.journal.arm(n)

    # -- drives --------------------------------------------------------------------------------
    def _drive(self, mode: str) -> None:
        self.w.backup_box.pop("ctx", None)
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
        self.check_after_drive()

    @precondition(lambda self: not self.state().finished)
    @rule(mode=st.sampled_from(["resume", "resume", "resume", "rollback"]))
    def drive(self, mode: str) -> None:
        self._drive(mode)

    @precondition(lambda self: not self.state().finished)
    @rule()
    def resume_now(self) -> None:
        self._drive("resume")

    @precondition(lambda self: not self.state().finished)
    @rule(n=st.integers(0, 40), mode=st.sampled_from(["resume", "resume", "rollback"]))
    def crash_during(self, n: int, mode: str) -> None:
        """A drive whose process dies after n more journal appends."""
        self.w.journal.arm(n)
        self._drive(mode)

    # -- invariants ------------------------------------------------------------------------------
    def state(self):
        return self.runner.state(self.op)

    def check_after_drive(self) -> None:
        ctx = self.w.backup_box.get("ctx")
        st_ = self.w.run(check_journal(self.w.inner, self.op, self.w.backup_wf, ctx.state if ctx else None))
        self.check_world(st_)

    def check_world(self, st_) -> None:
        c = self.c
        # The cluster's data is never touched by a backup.
        now = all_files(c)
        changed = [k for k, v in self.original.items() if now.get(k) != v]
        assert not changed, f"cluster files changed or deleted: {changed[:3]}"
        assert not c.write_blocked, "the cluster is left write-blocked"
        assert not c.backup_running
        assert manifest_problems(self.w.storage) == []
        if st_.finished:
            assert c.snapshots == {}, f"snapshots left after {st_.phase}: {sorted(c.snapshots)}"
            if tolerate("lease_release_read"):
                remove_unreleased_leases(c, self.op)
            assert leases_left(c, tolerate_holderless=tolerate("holderless_lease")) == [], f"lease left after {st_.phase}"

    @invariant()
    def no_background_tasks(self) -> None:
        import asyncio
        left = [t for t in asyncio.all_tasks(self.w.loop) if not t.done()]
        if left and tolerate("lease_task_leak") and all("_refresh_loop" in repr(t) for t in left):
            self.w.process_died()  # KNOWN["lease_task_leak"]
            return
        assert not left, f"tasks left running between drives: {left}"

    # -- the end ---------------------------------------------------------------------------------
    def finish_operation(self) -> None:
        self.w.clear_faults()
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
            if not st_.finished and mode == "resume" and st_.phase == "failed" and \
                    st_.failure and st_.failure.get("error_type") == "UsageError":
                self.finish = "rollback"  # resume refused (snapshot gone): roll back instead
        st_ = self.state()
        assert st_.finished, f"not finished after clearing faults: {st_.phase} {st_.failure} {self.log}"
        ms = mem(self.w.storage)
        for k, v in self.base_objects.items():
            assert ms.objects.get(k) == v, f"the base's object {k} changed or is gone"
        if st_.phase == "done":
            name = st_.facts["backup_name"]
            assert set(manifests(self.w.storage)) == {name} | ({self.base} if self.base else set())
            assert backup_copy_of_data(self.w.storage, name) == self.original_data
            m = manifests(self.w.storage)[name]
            for f in m["meta_files"]:
                assert ms.full_key(f"{name}/meta/{f}") in ms.objects
            assert ms.full_key(f"{name}/{name}.meta") in ms.objects
            keys = {ms.rel_key(k) for k in ms.objects if k not in self.base_objects}
            assert keys == {f["key"] for f in m["files"]} | {f"{name}/{name}.meta", f"{name}/brsm-manifest.json",
                                                             f"{name}/brsm-manifest-files.jsonl"}, \
                sorted(keys - {f["key"] for f in m["files"]})
            for f in m["files"]:
                assert hashlib.sha256(ms.objects[ms.full_key(f["key"])]).hexdigest() == f["sha256"]
        else:
            if tolerate("probe_left"):
                for k in [k for k in ms.objects if ms.rel_key(k).startswith(".brsm-probe-")]:
                    del ms.objects[k]
            assert ms.objects == self.base_objects, \
                f"objects left after rollback: {sorted(set(ms.objects) - set(self.base_objects))[:5]}"
        if tolerate("orphan_upload") and st_.phase == "done":
            ms.uploads.clear()
        assert ms.uploads == {}, "multipart uploads left behind"
        assert self.c.snapshots == {}
        assert leases_left(self.c) == []
        if self.w.meta_checkpoints_left(self.op):
            # a metad brsm could not reach after dropSnapshot keeps the meta checkpoint: `brsm gc` is
            # what removes it, and nothing else may be found
            RUNS["gc_after_meta_checkpoint_left"] += 1
            done = self.w.gc(confirm=True)
            assert done.phase == "done", (done.phase, done.failure)
            assert {o["kind"] for o in done.facts["orphans"]} <= {"meta_checkpoint"}, done.facts["orphans"]
        assert all_files(self.c) == self.original, "cluster files differ from before the backup"
        # Idempotent: a second call appends nothing and changes nothing.
        seq = st_.seq
        before = (dict(ms.objects), all_files(self.c), dict(self.c.snapshots))
        try:
            if st_.phase == "done":
                self.w.run(self.runner.resume(self.op))
            else:
                self.w.run(self.runner.rollback(self.op))
        except UsageError:
            pass
        assert self.state().seq == seq
        assert (dict(ms.objects), all_files(self.c), dict(self.c.snapshots)) == before

    def teardown(self) -> None:
        try:
            self.finish_operation()
        finally:
            self.w.close()


class DirectBackupCampaign(BackupCampaign):
    """The same campaign on the direct data path: each fake host's helper (brsm.fakes.helper) sends
    its files to the memory store with the URLs brsm signs; host drops and store faults hit it."""
    PARAMS = {**BACKUP_PARAMS, "data_path": "direct"}

    def finish_operation(self) -> None:
        super().finish_operation()
        st_ = self.state()
        if st_.phase == "done":
            assert st_.facts["data_path"] == "direct" and st_.facts["bytes_sent"] == 0, st_.facts


class IncrementalBackupCampaign(BackupCampaign):
    """The same campaign on an incremental backup (issue 26): a full backup is made first, unfaulted,
    then a space is written, and the operation is ``--incremental`` (every file above 0 bytes may be
    reused, so reuse, hashing and sends all happen on the campaign's small files). Faults on the
    store's copies too; the base must come out of everything unchanged, and the backup whole."""
    PARAMS = {**BACKUP_PARAMS, "incremental": True}

    def before_operation(self) -> None:
        op = self.runner.create(BACKUP_PARAMS)
        done = self.w.run(self.runner.run(op))
        assert done.phase == "done", done.failure
        self.base = done.facts["backup_name"]
        assert self.c.write("basketball", b"new bytes " * 50)
        self.base_objects = dict(mem(self.w.storage).objects)

    @rule(verb=st.sampled_from(["copy_object", "upload_part_copy", "get", "get_bytes"]), count=st.integers(1, 4),
          permanent=st.booleans(), skip=st.integers(0, 6))
    def copy_fault(self, verb: str, count: int, permanent: bool, skip: int) -> None:
        mem(self.w.storage).inject_fault(verb, count, permanent=permanent, skip=skip)

    @rule()
    def base_deleted(self) -> None:
        """prune or a person deletes the base mid-run: what was copied from it stays whole."""
        ms = mem(self.w.storage)
        for k in self.base_objects:
            ms.objects.pop(k, None)
        self.base, self.base_objects = None, {}

    def finish_operation(self) -> None:
        super().finish_operation()
        st_ = self.state()
        if st_.phase == "done":
            assert "files_reused" in st_.facts, st_.facts
            RUNS["incremental_done_reusing"] += st_.facts["files_reused"] > 0


def test_backup_campaign():
    with fast_sleeps():
        run_state_machine_as_test(BackupCampaign, settings=settings())  # the loaded profile
    print(f"BackupCampaign: {RUNS}")


def test_backup_campaign_on_the_direct_path():
    with fast_sleeps():
        run_state_machine_as_test(DirectBackupCampaign, settings=settings())
    print(f"DirectBackupCampaign: {RUNS}")


def test_incremental_backup_campaign(monkeypatch):
    from brsm.workflows.backup import reuse

    monkeypatch.setattr(reuse, "REUSE_FROM", 1)  # the campaign's files are small
    with fast_sleeps():
        run_state_machine_as_test(IncrementalBackupCampaign, settings=settings())
    print(f"IncrementalBackupCampaign: {RUNS}")
