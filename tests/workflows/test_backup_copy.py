"""COPIED on the fakes (brsm/workflows/backup/copy.py, groups.py): the listing streamed into the
copy, small files read in groups, a group's bad answers copied alone, and the resume rule."""
from __future__ import annotations

import hashlib

import pytest

from brsm import failpoints
from brsm.errors import BrsmError, RemoteError
from brsm.fakes.cluster import FakeCluster
from brsm.ports import FileRead
from brsm.workflows.backup import copy, groups
from property_tests.campaign_support import BACKUP_PARAMS, World, fast_sleeps, manifests, mem

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_doctests():
    import doctest

    assert doctest.testmod(groups).failed == 0


def many_files(n: int) -> FakeCluster:
    c = FakeCluster(metas=1, storages=2, data_paths=1, seed=1)
    c.add_space("many", partition_num=2, files_per_path=n, size=300)
    return c


@pytest.fixture
def world_of():
    made = []

    def make(cluster: FakeCluster | None = None) -> World:
        w = World(cluster=cluster)
        made.append(w)
        return w

    with fast_sleeps():
        yield make
        for w in made:
            w.close()


def manifest(w: World, name: str) -> dict:
    return manifests(w.storage)[name]  # either format, its files listed under "files"


def assert_every_file_right(w: World, name: str) -> dict:
    m = manifest(w, name)
    for f in m["files"]:
        files = w.cluster.machine(f["host"]).files  # the checkpoint is dropped by now: its source file
        data = files.get(f["path"], files.get(f["path"].replace(f"/checkpoints/{name}/", "/")))
        stored = mem(w.storage).objects["p/" + f["key"]]
        assert f["sha256"] == hashlib.sha256(stored).hexdigest() and f["size"] == len(stored), f["key"]
        assert data is None or stored == data, f["key"]
    return m


def read_files_calls(w: World) -> int:
    return sum(h.verbs.count("read_files") for h in w.hosts._hosts.values())


def test_small_files_go_in_groups_and_the_plan_is_journaled_first(world_of, monkeypatch):
    monkeypatch.setattr(groups, "GROUP_FILES", 50)
    monkeypatch.setattr(copy, "GROUP_FILES", 50)
    w = world_of(many_files(400))
    op = w.backup_runner.create(BACKUP_PARAMS)
    st = w.run(w.backup_runner.run(op))
    assert st.phase == "done"
    m = assert_every_file_right(w, st.facts["backup_name"])
    n = len(m["files"])
    assert n > 800
    # the data files came in groups of at most 50: a handful of execs, not one per file
    assert 800 // 50 <= read_files_calls(w) <= n // 10
    types = [e.type for e in w.inner.events(op)]
    planned = [e.data for e in w.inner.events(op, "FilesPlanned")]
    assert planned == [{"files": n, "bytes": sum(f["size"] for f in m["files"])}]
    assert types.index("FilesPlanned") < types.index("FileCopied")
    copied = [e for e in w.inner.events(op, "StepCompleted") if e.data.get("step") == "COPIED"]
    assert copied and copied[0].data["facts"]["files"] == n


def test_the_listing_feeds_the_copy_as_it_goes(world_of, monkeypatch):
    """No list of all files: the copy starts before the listing ends, and the listing runs ahead of
    what is stored by a bounded amount (the hosts' queues), not by the whole tree."""
    monkeypatch.setattr(copy, "PAGE", 20)
    w = world_of(many_files(600))
    ahead: list[int] = []
    real = type(w.hosts.host(str(w.cluster.storage_addrs[0].host))).walk_pages

    async def walk_pages(self, path, *, page=1000, timeout=120):
        listed = 0
        async for pg in real(self, path, page=page, timeout=timeout):
            listed += len(pg)
            stored = sum(1 for k in mem(w.storage).objects if "/data/" in k)
            ahead.append(listed - stored)
            yield pg

    monkeypatch.setattr(type(w.hosts.host(str(w.cluster.storage_addrs[0].host))), "walk_pages", walk_pages)
    op = w.backup_runner.create(BACKUP_PARAMS)
    st = w.run(w.backup_runner.run(op))
    assert st.phase == "done"
    n = len(assert_every_file_right(w, st.facts["backup_name"])["files"])
    assert len(ahead) > 10
    bound = 2 * (copy.PAGE + (32 + 2 * 2 + 2) * groups.GROUP_FILES)  # per host: a page + queue + workers' groups
    assert max(ahead) < min(bound, n), (max(ahead), n)


def test_a_groups_bad_answers_are_copied_alone(world_of, monkeypatch):
    """A member missing, renamed, not a regular file, of another size, or the whole read failing:
    those files go the single-file way, and every file of the backup is right."""
    w = world_of(many_files(60))
    host_type = type(w.hosts.host(str(w.cluster.storage_addrs[0].host)))
    real = host_type.read_files
    calls = [0]

    async def read_files(self, paths, *, timeout=300):
        calls[0] += 1
        if calls[0] == 2:
            raise RemoteError(f"{self.name}: connection dropped")
        got = await real(self, paths, timeout=timeout)
        bad = [FileRead(got[0].path, None, "not in the archive"),
               FileRead(got[1].path + "x", got[1].data),  # renamed
               FileRead(got[2].path, None, "a symbolic link, not a regular file"),
               FileRead(got[3].path, (got[3].data or b"") + b"grew")]
        return bad + got[4:]

    monkeypatch.setattr(host_type, "read_files", read_files)
    op = w.backup_runner.create(BACKUP_PARAMS)
    st = w.run(w.backup_runner.run(op))
    assert st.phase == "done"
    assert_every_file_right(w, st.facts["backup_name"])
    assert calls[0] >= 3


def test_a_group_read_that_keeps_dropping_fails_the_copy_without_going_file_by_file(world_of, monkeypatch):
    """A link that drops every group read: the group is tried again whole, as often as one file would
    be, and then the copy fails, as for one file; no storm of single-file reads over that link."""
    w = world_of(many_files(60))
    host_type = type(w.hosts.host(str(w.cluster.storage_addrs[0].host)))
    calls: list[str] = []

    async def read_files(self, paths, *, timeout=300):
        calls.append(self.name)
        raise RemoteError(f"{self.name}: connection dropped")

    monkeypatch.setattr(host_type, "read_files", read_files)
    op = w.backup_runner.create(BACKUP_PARAMS)
    with pytest.raises(RemoteError, match="connection dropped"):
        w.run(w.backup_runner.run(op))
    assert len(calls) >= 3, "a dropped group read was not tried again whole"
    assert sum(h.verbs.count("open_read") for h in w.hosts._hosts.values()) <= len(calls), \
        "the files of a group whose read dropped were read one by one"


def test_failpoint_file_n_fires_per_file_inside_a_group(world_of, monkeypatch):
    """``file:N`` fires after the N-th file is stored and before it is journaled, also inside a
    group; the files of the group stored before it are journaled (in one batch), it is not."""
    w = world_of(many_files(40))
    monkeypatch.setenv(failpoints.ENV, "file:5=raise")
    op = w.backup_runner.create(BACKUP_PARAMS)
    with pytest.raises(BrsmError, match="failpoint file:5"):
        w.run(w.backup_runner.run(op))
    monkeypatch.delenv(failpoints.ENV)
    journaled = {e.data["key"]: e.data for e in w.inner.events(op, "FileCopied")}
    objs = mem(w.storage).objects
    assert len(journaled) >= 4
    for key, d in journaled.items():  # what is journaled is stored, whole
        assert hashlib.sha256(objs["p/" + key]).hexdigest() == d["sha256"]
    stored = {k.removeprefix("p/") for k in objs if "/data/" in k or "/meta/" in k}
    assert stored - set(journaled), "the file the failpoint hit is stored and not journaled"
    batches = [e.seq for e in w.inner.events(op, "FileCopied")]
    assert len(batches) == len(journaled)


@pytest.mark.parametrize("absent_most", [copy.ABSENT_MOST, 1])
def test_resume_copies_again_only_what_is_not_there_with_its_size(world_of, monkeypatch, absent_most):
    """A file journaled as copied counts only if its object is there with that size. The resume lists
    the backup once, beside the journal, and stats nothing; when more journaled files are missing
    than it keeps names of (``absent_most`` 1, two missing here), it looks each up instead."""
    monkeypatch.setattr(copy, "ABSENT_MOST", absent_most)
    w = world_of(many_files(30))
    op = w.backup_runner.create(BACKUP_PARAMS)
    monkeypatch.setenv(failpoints.ENV, "file:50=raise")
    with pytest.raises(BrsmError, match="file:50"):
        w.run(w.backup_runner.run(op))
    monkeypatch.delenv(failpoints.ENV)
    copied = {e.data["key"]: e.data for e in w.inner.events(op, "FileCopied")}
    assert len(copied) >= 40
    objs = mem(w.storage).objects
    gone, shrunk = sorted(copied)[3], sorted(copied)[7]
    del objs["p/" + gone]
    objs["p/" + shrunk] = objs["p/" + shrunk][:-1]
    lists_before = mem(w.storage).requests["list_objects"]
    stats_before = mem(w.storage).requests["head_object"]
    st = w.run(w.backup_runner.resume(op))
    assert st.phase == "done"
    assert_every_file_right(w, st.facts["backup_name"])
    again = {e.data["key"] for e in w.inner.events(op, "FileCopied")} - (set(copied) - {gone, shrunk})
    resent = [e.data["key"] for e in w.inner.events(op, "FileCopied")][len(copied):]
    assert gone in resent and shrunk in resent
    assert not (set(resent) & (set(copied) - {gone, shrunk})), "a file there with its size was copied again"
    facts = [e.data["facts"] for e in w.inner.events(op, "StepCompleted") if e.data.get("step") == "COPIED"][-1]
    assert facts["skipped_on_resume"] == len(copied) - 2 and again
    # COPIED listed the backup once (UPLOADED's own check, outside this step, lists it once more)
    assert mem(w.storage).requests["list_objects"] - lists_before <= 3
    stats = mem(w.storage).requests["head_object"] - stats_before
    if absent_most == 1:
        assert stats >= len(copied) - 2  # each journaled file looked up
    else:
        assert stats < 10, "a resume that listed the backup stats no journaled file"


def test_a_host_whose_group_reads_fail_is_copied_file_by_file(world_of):
    """``read_files`` failing on a host (its tar exits non-zero every time): every file of that host
    goes the single-file way, and the backup is whole."""
    w = world_of(many_files(50))
    host = w.cluster.storage_addrs[0].host
    w.cluster.faults.add("verb_fail", host, count=None, verb="read_files", stderr="tar: broken")
    op = w.backup_runner.create(BACKUP_PARAMS)
    st = w.run(w.backup_runner.run(op))
    assert st.phase == "done"
    m = assert_every_file_right(w, st.facts["backup_name"])
    assert sum(1 for f in m["files"] if f["host"] == host) > 50
    assert w.hosts.host(host).verbs.count("read_files") >= 1


def test_a_listing_that_fails_fails_the_step_and_resume_finishes(world_of):
    w = world_of(many_files(20))
    host = w.cluster.storage_addrs[1].host
    w.cluster.faults.add("verb_fail", host, count=1, verb="walk_pages", stderr="find: I/O error")
    op = w.backup_runner.create(BACKUP_PARAMS)
    with pytest.raises(RemoteError, match="cannot list .*I/O error"):
        w.run(w.backup_runner.run(op))
    st = w.run(w.backup_runner.resume(op))
    assert st.phase == "done"
    assert_every_file_right(w, st.facts["backup_name"])


def test_a_copy_that_fails_closes_every_listing_at_once(world_of, monkeypatch):
    """No host's `find` outlives the step: each listing still open when a file fails is closed before
    COPIED's failure is journaled, not whenever the garbage collector gets to it."""
    monkeypatch.setattr(copy, "PAGE", 5)
    monkeypatch.setattr(copy, "GROUP_FILES", 2)  # far more groups than a host's queue holds
    w = world_of(many_files(200))
    host_type = type(w.hosts.host(str(w.cluster.storage_addrs[0].host)))
    real = host_type.walk_pages
    opened, closed = [], []

    async def walk_pages(self, path, *, page=1000, timeout=120):
        opened.append(path)
        try:
            async for pg in real(self, path, page=page, timeout=timeout):
                yield pg
        finally:
            closed.append(path)

    monkeypatch.setattr(host_type, "walk_pages", walk_pages)
    at_failure: list[list[str]] = []
    real_run_fed = copy.run_fed

    async def run_fed(*a, **kw):
        try:
            return await real_run_fed(*a, **kw)
        finally:
            at_failure.append(list(closed))  # before anything else runs: no finalizer task yet

    monkeypatch.setattr(copy, "run_fed", run_fed)
    mem(w.storage).inject_fault("put", -1, permanent=True, skip=30)  # every put after the 30th
    op = w.backup_runner.create(BACKUP_PARAMS)
    with pytest.raises(BrsmError):
        w.run(w.backup_runner.run(op))
    assert opened and len(opened) < 4, opened  # the failure came while listings were open
    assert sorted(at_failure[0]) == sorted(opened)


def test_no_group_is_over_its_bounds(world_of, monkeypatch):
    monkeypatch.setattr(copy, "GROUP_FILES", 7)
    monkeypatch.setattr(copy, "GROUP_BYTES", 1000)  # the fake's files are 300 bytes: 3 to a group
    w = world_of(many_files(30))
    host_type = type(w.hosts.host(str(w.cluster.storage_addrs[0].host)))
    real = host_type.read_files
    asked: list[int] = []

    async def read_files(self, paths, *, timeout=300):
        asked.append(sum(len(self.m.files[p]) for p in paths))
        assert len(paths) <= 7
        return await real(self, paths, timeout=timeout)

    monkeypatch.setattr(host_type, "read_files", read_files)
    op = w.backup_runner.create(BACKUP_PARAMS)
    assert w.run(w.backup_runner.run(op)).phase == "done"
    assert asked and max(asked) <= 1000, asked


def test_a_host_with_few_small_files_still_copies_per_host_at_a_time():
    """Groups are cut so each of a host's --per-host workers gets one: 680 files on a host with
    per_host 4 make groups of 170, not one group of 680 put one file after another."""
    assert [copy.group_files(n, 4) for n in (680, 1_000_000, 3, 0)] == [170, groups.GROUP_FILES, 16, 16]
    assert copy.group_files(680, 1) == 680
    import doctest

    assert doctest.testmod(copy).failed == 0


def test_a_groups_files_are_stored_by_one_put_many(world_of, monkeypatch):
    """A group's members go to storage in one put_many (a local store pays its durability barrier
    once for them), not one put each."""
    monkeypatch.setattr(groups, "GROUP_FILES", 50)
    monkeypatch.setattr(copy, "GROUP_FILES", 50)
    w = world_of(many_files(200))
    store = mem(w.storage)
    real = type(store).put_many
    sizes: list[int] = []

    async def put_many(self, items):
        sizes.append(len(items))
        return await real(self, items)

    monkeypatch.setattr(type(store), "put_many", put_many)
    op = w.backup_runner.create(BACKUP_PARAMS)
    st = w.run(w.backup_runner.run(op))
    assert st.phase == "done"
    n = len(assert_every_file_right(w, st.facts["backup_name"])["files"])
    assert len(sizes) == read_files_calls(w) and max(sizes) == 50
    assert sum(sizes) > n * 3 // 4  # the small files went in groups


def test_a_group_whose_put_many_fails_is_copied_file_by_file(world_of):
    """put_many failing for good (its retries spent): which members were stored is not known, so
    none is journaled by the group; each is copied again alone, and journaled once."""
    w = world_of(many_files(60))
    mem(w.storage).inject_fault("put_many", count=-1, permanent=True)
    op = w.backup_runner.create(BACKUP_PARAMS)
    st = w.run(w.backup_runner.run(op))
    assert st.phase == "done"
    assert_every_file_right(w, st.facts["backup_name"])
    keys = [e.data["key"] for e in w.inner.events(op, "FileCopied")]
    assert len(keys) == len(set(keys)), "every file journaled once"
    assert read_files_calls(w) > 0


def test_a_put_many_failing_midway_journals_none_of_its_group(world_of, monkeypatch):
    """A transient failure after some members were stored (the retry wrapper's attempts spent on
    it): the group journals nothing, its files go alone, and every file of the backup is right."""
    w = world_of(many_files(60))
    store = mem(w.storage)
    real = type(store).put_many
    failed: list[int] = []

    async def put_many(self, items):
        try:
            return await real(self, items)
        except BrsmError:
            failed.append(len(items))
            raise

    monkeypatch.setattr(type(store), "put_many", put_many)
    store.inject_fault("put", count=3, skip=5)  # 3 puts in a row fail: every attempt of one group
    op = w.backup_runner.create(BACKUP_PARAMS)
    st = w.run(w.backup_runner.run(op))
    assert st.phase == "done"
    assert len(failed) == 3 and failed[0] > 5, "a group failed midway, on each of its attempts"
    assert_every_file_right(w, st.facts["backup_name"])
    keys = [e.data["key"] for e in w.inner.events(op, "FileCopied")]
    assert len(keys) == len(set(keys))
