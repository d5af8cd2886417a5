"""A backup's spaces may be gone or re-created since it was taken; a deleter honours the lease of
any journal; a failure while a restore has the cluster down names the command that brings it up;
gc never removes data a restore kept on purpose."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from brsm.engine.definitions import RESTORE
from brsm.engine.fold import new_state
from brsm.engine.step_context import Runtime
from brsm.engine.state import STEP_COMPLETED, Event
from brsm.errors import LockHeld, OperationFailed, PreflightFailed, StorageError, VerificationFailed
from brsm.fakes.cluster import FakeCluster
from brsm.fakes.hosts import FakeHosts
from brsm.fakes.meta import FakeMeta
from brsm.workflows import common
from brsm.workflows.lease import Lease
from brsm.workflows.maintenance import LiveOps, judge_set_aside
from brsm.workflows.restore import context, source
from brsm.workflows.restore.state import MANIFEST_JOURNALED, RestoreState


def completed(st, step: str, **facts) -> None:
    """Fold ``step``'s completion with ``facts`` into ``st``, as the journal would."""
    st.data.apply(STEP_COMPLETED, {"step": step, "facts": facts})


class Ctx:
    def __init__(self, **kw) -> None:
        self.events: list[tuple[str, dict]] = []
        self.runtime = Runtime()
        self.op_id = 7
        self.ref = "aaaaaaaaaaaa-7"
        self.__dict__.update(kw)

    def record(self, t, d=None, **_kw):
        if isinstance(t, Event):
            t, d = t.TYPE, t.to_data()
        self.events.append((t, dict(d)))

    @property
    def data(self):
        return self.state.data

    @property
    def params(self):
        return self.state.params


class Notes:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def note(self, text: str) -> None:
        self.lines.append(text)


async def test_listeners_are_asked_only_of_spaces_that_exist_now():
    c = FakeCluster(metas=1, storages=1)
    keep = c.add_space("space2")
    c.listeners[keep] = ["ELASTICSEARCH 127.0.0.1:9 part 1"]
    dropped = 99  # the backup's id of a space dropped since (or re-created under another id)
    ctx, notes = Ctx(), Notes()
    found = await common.warn_not_backed_up(ctx, FakeMeta(c), [dropped, keep], notes, "restore")
    assert found == [f"listener ELASTICSEARCH 127.0.0.1:9 part 1 (space {keep})"]
    # a full restore (None): every space the cluster has now
    assert await common.warn_not_backed_up(Ctx(), FakeMeta(c), None, Notes(), "restore") == found


async def test_the_fake_refuses_listeners_of_an_unknown_space_as_metad_does():
    with pytest.raises(Exception) as e:
        await FakeMeta(FakeCluster(metas=1, storages=1)).list_listeners(99)
    assert getattr(e.value, "code", None) == common.E_SPACE_NOT_FOUND


def _restore_ctx(started=(), completed=(), undone=()) -> Ctx:
    st = new_state(RESTORE, RestoreState)
    st.started, st.completed, st.undone = list(started), list(completed), list(undone)
    return Ctx(state=st)


def test_a_failure_while_the_cluster_may_be_down_names_rollback():
    down = _restore_ctx(started=["CHECKED", "STAGED", "STOPPED", "SET_ASIDE"], completed=["CHECKED", "STAGED", "STOPPED"])
    e = context.down_error(down, PreflightFailed("backup B has no manifest: it is incomplete", hint="see `brsm show`"))
    assert isinstance(e, OperationFailed) and not isinstance(e, PreflightFailed), "never exit 4 once stopped"
    assert "`brsm rollback 7`" in e.hint and "see `brsm show`" in e.hint
    e = context.down_error(down, KeyError("spaces"))
    assert isinstance(e, OperationFailed) and "`brsm rollback 7`" in e.hint
    e = context.down_error(down, VerificationFailed("restored files differ"))
    assert isinstance(e, VerificationFailed) and "`brsm rollback 7`" in e.hint  # exit 6 kept, hint added
    up = _restore_ctx(started=["CHECKED", "STAGED"], completed=["CHECKED"])
    e0 = PreflightFailed("x", hint="y")
    assert context.down_error(up, e0) is e0 and e0.hint == "y"  # before STOPPED: as it was
    rolled = _restore_ctx(started=["CHECKED", "STOPPED"], completed=["CHECKED"], undone=["STOPPED"])
    assert context.down_error(rolled, e0) is e0
    started = _restore_ctx(started=["STOPPED", "STARTED", "CLEANED"], completed=["STOPPED", "STARTED"])
    assert context.down_error(started, e0) is e0  # the restored cluster is up


async def test_the_manifest_checked_journaled_is_never_read_again():
    class Gone:
        uri = "local:///gone"

        async def stat(self, key):
            raise StorageError("deleted by a prune", permanent=True)

        get_bytes = list = stat

    m = {"backup_name": "B", "all_spaces": True, "spaces": {"1": "s"}, "meta_files": [], "files": []}
    st = new_state(RESTORE, RestoreState)
    st.data.apply(MANIFEST_JOURNALED, {"manifest": m})
    ctx = Ctx(state=st, ports=SimpleNamespace(storage=Gone(), decode_meta=None))
    assert await source.manifest(ctx) == m


def test_re_created_spaces_are_set_aside_with_the_chosen_ones():
    st = new_state(RESTORE, RestoreState)
    completed(st, "CHECKED", all_spaces=False, spaces={"3": "space1"}, replaced_spaces={"12": "space1"})
    assert context.set_aside_spaces(Ctx(state=st)) == ["12", "3"]
    completed(st, "CHECKED", all_spaces=False, spaces={"3": "space1"})  # a journal from before it existed
    assert context.set_aside_spaces(Ctx(state=st)) == ["3"]
    completed(st, "CHECKED", all_spaces=True, spaces={"3": "space1"})
    assert context.set_aside_spaces(Ctx(state=st)) is None


def test_chosen_spaces_are_ids_also_in_a_journal_whose_started_journaled_names():
    st = new_state(RESTORE, RestoreState)
    completed(st, "CHECKED", all_spaces=False, spaces={"3": "space1"})
    assert context.chosen_spaces(Ctx(state=st)) == ["3"]
    # before STARTED journaled them as spaces_listed, its names replaced CHECKED's ids in the fold;
    # now STARTED's facts set no field of CHECKED's
    completed(st, "STARTED", spaces=["space1"], storage_online=[], proved={})
    assert context.chosen_spaces(Ctx(state=st)) == ["3"]
    assert context.set_aside_spaces(Ctx(state=st)) == ["3"]


async def test_deleters_see_a_lease_of_any_journal_and_refuse_naming_it():
    c = FakeCluster(metas=1, storages=1)
    hosts, meta = FakeHosts(c), FakeMeta(c)
    assert await common.held_leases(None, None, None) is None  # no cluster to look at
    assert await common.held_leases(meta, hosts, lambda h: c.install_dir) == []
    topo = await common.discover_topology(meta, hosts, lambda h: c.install_dir)
    m = topo["meta"][0]
    theirs = Lease([(hosts.host(m["host"]), f"{m['root']}/brsm.lease")], op_id=38, ref="bbbbbbbbbbbb-38",
                   kind="restore", who="other@box")
    await theirs.acquire()
    try:
        held = await common.held_leases(meta, hosts, lambda h: c.install_dir, mine="aaaaaaaaaaaa-38")
        assert [h.owner for h in held] == ["bbbbbbbbbbbb-38"]
        with pytest.raises(LockHeld) as e:
            common.refuse_while_leased("prune", held)
        assert "operation 38 of journal bbbbbbbbbbbb (restore) by other@box" in e.value.message
        assert "nothing was deleted" in e.value.message
        assert await common.held_leases(meta, hosts, lambda h: c.install_dir, mine="bbbbbbbbbbbb-38") == []
    finally:
        await theirs.release()
    common.refuse_while_leased("prune", [])
    common.refuse_while_leased("prune", None)


def test_data_a_restore_kept_with_keep_old_is_never_gc_s():
    live = LiveOps(known_refs=frozenset({"aaaaaaaaaaaa-2", "aaaaaaaaaaaa-4"}), kept_old=frozenset({"aaaaaaaaaaaa-4"}))
    assert judge_set_aside("aaaaaaaaaaaa-4", live)[0] == "kept_old"
    assert judge_set_aside("aaaaaaaaaaaa-2", live)[0] == "set_aside"


async def test_gc_counts_and_journals_only_what_is_gone():
    from brsm.engine.definitions import GC
    from brsm.workflows import maintenance

    class Meta:  # Nebula 3.0-3.2 metad: dropSnapshot with a list answers SUCCEEDED and drops nothing
        def __init__(self, really: bool) -> None:
            self.names, self.really = {"BACKUP_2020_01_01_00_00_00", "BACKUP_2020_01_02_00_00_00"}, really

        async def drop_snapshots(self, names):
            if self.really:
                self.names -= set(names)

        async def list_snapshots(self):
            return [SimpleNamespace(name=n) for n in self.names]

    for really in (False, True):
        st = new_state(GC, maintenance.GcState)
        st.data.apply("OperationCreated", {"params": {"confirm": True}})
        st.data.apply(STEP_COMPLETED, {"step": "SCANNED", "facts": {
            "orphans": [{"kind": "snapshot", "name": "BACKUP_2020_01_01_00_00_00", "why": "x"}]}})
        ctx = Ctx(state=st, ports=maintenance.MaintenancePorts(meta=Meta(really), hosts=None, storage=None,
                                                               live=LiveOps()))
        ctx.record = lambda t, d, ctx=ctx: (ctx.events.append((t, dict(d))), ctx.data.apply(t, dict(d)))
        if really:
            assert (await maintenance.gc_remove(ctx))["removed"] == 1
            assert [t for t, _ in ctx.events] == [maintenance.REMOVED]
        else:
            with pytest.raises(OperationFailed) as e:
                await maintenance.gc_remove(ctx)
            assert "BACKUP_2020_01_01_00_00_00" in e.value.message and "still there" in e.value.message
            assert [t for t, _ in ctx.events] == [maintenance.NOT_REMOVED]


def test_the_examples_in_the_docstrings_hold():
    import doctest

    assert doctest.testmod(source).failed == 0


@pytest.mark.parametrize("started", [["CHECKED", "STAGED"], ["CHECKED", "STAGED", "STOPPED"]])
async def test_a_resume_of_an_older_restore_journals_its_manifest_while_the_cluster_serves(started):
    """A restore journaled before CHECKED kept the manifest: its resume journals it while the cluster
    still serves; once STOPPED has begun nothing is read or written up front (the steps read storage
    as before, and a failure names `brsm rollback N`)."""
    from brsm.adapters.storage import open_storage
    from brsm.workflows.restore import checked
    from tests.operating.conftest import make_backup

    storage = open_storage("memory://older-restore")
    made = await make_backup(storage)
    st = new_state(RESTORE, RestoreState)
    st.data.apply("OperationCreated", {"params": {"name": made.name}})
    st.started, st.completed = list(started), ["CHECKED"]
    ctx = Ctx(state=st, mode="resume", ports=SimpleNamespace(storage=storage, hosts=None, decode_meta=None,
                                                             progress=Notes()))
    await checked.attach(ctx)
    journaled = [d["manifest"] for t, d in ctx.events if t == MANIFEST_JOURNALED]
    if "STOPPED" in started:
        assert journaled == []
    else:
        assert [f["key"] for f in journaled[0]["files"]] == [f["key"] for f in made.files]
        assert set(journaled[0]["files"][0]) == {"key", "size", "sha256"}


async def test_gc_leaves_every_incomplete_backup_while_another_run_holds_the_lease():
    from brsm.adapters.storage import open_storage
    from brsm.workflows import maintenance
    from tests.operating.conftest import make_backup

    storage = open_storage("memory://gc-under-lease")
    made = await make_backup(storage, kind="incomplete", age_days=30)
    p = maintenance.MaintenancePorts(meta=None, hosts=None, storage=storage, live=LiveOps())
    free = await maintenance._orphan_backups(p, frozenset(), None, set(), grace_seconds=3600)
    assert [(o["kind"], o["name"]) for o in free] == [("incomplete_backup", made.name)]
    held = await maintenance._orphan_backups(p, frozenset(), "operation 3 of journal bbbbbbbbbbbb (restore)", set(),
                                             grace_seconds=3600)
    assert [(o["kind"], o["name"]) for o in held] == [("in_use", made.name)]
    assert "operation 3 of journal bbbbbbbbbbbb (restore)" in held[0]["why"]
