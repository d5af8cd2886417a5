"""Shared harness of the backup and restore fault campaigns (and the regression tests).

Builds the real workflows' ports over the in-process fakes (``FakeCluster`` with ``FakeMeta`` and
``FakeHosts``, a memory storage behind the real retry wrapper) and drives them through the real
``Runner`` on the real journal. A crash is simulated as in ``test_engine_properties``: a journal
wrapper whose writer raises ``SimulatedCrash`` (a BaseException) once its budget of appends is spent.

Backoffs are real ``asyncio.sleep`` calls in brsm (0.2 s to 8 s); ``fast_sleeps()`` turns every
sleep shorter than 5 s into a bare yield so a campaign explores many histories per second. Long
sleeps (the lease refresh loop) are left alone.
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import posixpath
import shutil
import tempfile
from pathlib import Path
from typing import Any

from journal import Journal

from brsm.adapters.storage import open_storage
from brsm.adapters.storage.memory import MemoryStorage
from brsm.engine.fold import fold
from brsm.engine.machine import replay
from brsm.engine.runner import Runner, StepContext, Workflow
from brsm.fakes.base_index import MemoryBaseIndex
from brsm.fakes import FakeCluster, FakeHosts, FakeMeta
from brsm.workflows import backup as backup_wf
from brsm.workflows.backup.context import SNAPSHOT_DROPPED
from brsm.workflows import restore as restore_wf
from brsm.workflows.layout import MANIFEST, lease_path

# Bugs found by the campaigns (each has a strict-xfail regression test in tests/regressions/). While
# they are open the machines tolerate exactly their symptom so a campaign can look for new ones;
# BRSM_CAMPAIGN_STRICT=1 turns every tolerance off, BRSM_CAMPAIGN_STRICT=key1,key2 only those.
_STRICT = {k.strip() for k in os.environ.get("BRSM_CAMPAIGN_STRICT", "").split(",") if k.strip()}
STRICT = "1" in _STRICT


def tolerate(known: str) -> bool:
    """Whether the machines look past the symptom of the open bug ``KNOWN[known]``."""
    assert known in KNOWN, known
    return not (STRICT or known in _STRICT or known in FIXED)
KNOWN = {
    "probe_left": "test_probe_object_removed_when_preflight_read_back_fails",
    "orphan_upload": "test_resume_after_crash_mid_multipart_leaves_no_upload",
    "lease_task_leak": "test_relocking_after_reattach_leaks_no_refresh_task",
    "holderless_lease": "test_lease_dir_removed_when_holder_write_fails",
    "rollback_after_cleaned": "test_rollback_refused_after_cleanup_began",
    "lease_release_read": "test_lease_released_even_if_holder_read_drops",
}

# Fixed in brsm (their regression tests pass); the machines no longer look past these symptoms.
FIXED = {"probe_left", "orphan_upload", "lease_task_leak", "holderless_lease", "rollback_after_cleaned",
         "lease_release_read"}

BACKUP_PARAMS = {"spaces": [], "concurrency": 4, "per_host": 2, "lease_ttl": 300}
SPACES = ("basketball", "football")


class SimulatedCrash(BaseException):
    """The process died: nothing after it reaches the journal."""


class CrashingJournal:
    """Wraps a Journal; ``arm(n)`` lets n more appends (or batches) through, then every append crashes."""

    def __init__(self, inner: Journal) -> None:
        self.inner = inner
        self.budget: int | None = None
        self.crashed = False

    def arm(self, n: int | None) -> None:
        self.budget = n
        self.crashed = False

    def _spend(self) -> None:
        if self.budget is not None:
            if self.budget <= 0:
                self.crashed = True
                raise SimulatedCrash()
            self.budget -= 1

    def driver(self, op_id: int):
        outer = self
        cm = self.inner.driver(op_id)

        class _W:
            def __init__(self, w: Any) -> None:
                self.w = w

            def append(self, t, d, **kw):
                outer._spend()
                return self.w.append(t, d, **kw)

            def append_batch(self, items):
                outer._spend()
                return self.w.append_batch(items)

            def extend(self, items, **kw):
                outer._spend()
                return self.w.extend(items, **kw)

        class _CM:
            def __enter__(self):
                return _W(cm.__enter__())

            def __exit__(self, *exc):
                return cm.__exit__(*exc)

        return _CM()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class NullProgress:
    def start(self, task: str, total: int | None, unit: str = "B") -> None:
        pass

    def advance(self, task: str, amount: int) -> None:
        pass

    def done(self, task: str) -> None:
        pass

    def note(self, text: str) -> None:
        pass


_real_sleep = asyncio.sleep


async def _fast_sleep(delay: float, result: Any = None) -> Any:
    return await _real_sleep(0 if delay < 5 else delay, result)


@contextlib.contextmanager
def fast_sleeps():
    asyncio.sleep = _fast_sleep
    try:
        yield
    finally:
        asyncio.sleep = _real_sleep


def make_storage(**options: Any):
    """The memory backend behind the real retry wrapper (no waiting between retries)."""
    opts = {"multipart_threshold": 600, "part_size": 256, "block_size": 128} | options
    return open_storage("memory://b/p", retry_options={"sleep": lambda d: _real_sleep(0), "attempts": 3}, **opts)


def mem(storage: Any) -> Any:
    """The MemoryStorage under the retry wrapper."""
    return getattr(storage, "inner", storage)


def make_cluster(seed: int = 0) -> FakeCluster:
    c = FakeCluster(metas=2, storages=2, data_paths=2, seed=seed)
    for name in SPACES:
        c.add_space(name, partition_num=4, files_per_path=2, size=900)
    return c


def capture(wf: Workflow) -> tuple[Workflow, dict[str, Any]]:
    """Wrap attach so the live StepContext of the last drive is kept (its state is the runner's live
    state), and every step and undo so faults can be timed to fire once that step begins:
    ``box["at_step"][("STEP" | "undo:STEP")]`` holds callables run (once) right before it."""
    box: dict[str, Any] = {"at_step": {}}
    inner = wf.attach

    async def attach(ctx: StepContext) -> None:
        box["ctx"] = ctx
        if inner is not None:
            await inner(ctx)

    def timed(name: str, fn: Any) -> Any:
        async def run(ctx: StepContext) -> Any:
            for arm in box["at_step"].pop(name, []):
                arm()
            return await fn(ctx)
        return run

    return Workflow(kind=wf.kind, steps={k: timed(k, f) for k, f in wf.steps.items()},
                    undos={k: timed(f"undo:{k}", f) for k, f in wf.undos.items()}, state=wf.state,
                    preflight=wf.preflight, attach=attach, detach=wf.detach), box


# -- the world as files -------------------------------------------------------------------------
def all_files(c: FakeCluster) -> dict[tuple[str, str], bytes]:
    return {(h, p): b for h, m in c.machines.items() for p, b in m.files.items()}


def under(c: FakeCluster, host: str, path: str) -> dict[str, bytes]:
    m = c.machine(host)
    base = m.norm(path).rstrip("/") + "/"
    return {p[len(base):]: m.files[p] for p in m.under(path)}


def data_dirs(c: FakeCluster) -> list[tuple[str, str]]:
    out = [(a.host, c.meta_paths[a]) for a in c.meta_addrs]
    out += [(a.host, dp) for a in c.storage_addrs for dp in c.storage_paths[a]]
    return sorted(set(out))


def nebula_trees(c: FakeCluster) -> dict[tuple[str, str], dict[str, bytes]]:
    return {(h, dp): under(c, h, posixpath.join(dp, "nebula")) for h, dp in data_dirs(c)}


def space_data(c: FakeCluster) -> dict[int, dict[tuple[str, str], bytes]]:
    return {sid: c.space_files(sid) for sid in sorted(c.spaces)}


def leases_left(c: FakeCluster, *, tolerate_holderless: bool = False) -> list[str]:
    out = []
    for a in c.meta_addrs:
        m = c.host_of(a)
        p = lease_path(c.install_dir)
        if m.exists(p):
            if tolerate_holderless and not m.under(p):
                continue
            out.append(f"{a.host}:{p}")
    return out


def remove_unreleased_leases(c: FakeCluster, op: int) -> None:
    """KNOWN["lease_release_read"]: a release whose holder read dropped leaves our lease behind; drop
    it (as its expiry would) when an SSH fault fired on that host during the example."""
    for a in c.meta_addrs:
        m = c.host_of(a)
        p = lease_path(c.install_dir)
        holder = m.files.get(m.norm(f"{p}/holder.json"))
        if holder is None or json.loads(holder).get("op_id") != op:
            continue
        if any(k in ("disconnect", "host_down") and t in (a.host, "*") for k, t in c.faults.fired):
            m.remove_tree(p)


def remove_holderless_leases(c: FakeCluster) -> None:
    """What an operator does for KNOWN["holderless_lease"]: remove a lease dir that names no holder."""
    for a in c.meta_addrs:
        m = c.host_of(a)
        p = lease_path(c.install_dir)
        if m.exists(p) and not m.under(p):
            m.remove_tree(p)


def manifests(storage: Any) -> dict[str, dict[str, Any]]:
    """Backup name -> parsed manifest, for every manifest present in storage."""
    ms = mem(storage)
    out = {}
    for full, data in ms.objects.items():
        rel = ms.rel_key(full)
        if rel.endswith("/" + MANIFEST):
            m = out[rel.split("/")[0]] = json.loads(data)
            if "file_list" in m:  # format 2: its files in their own object, one JSON line each
                lines = ms.objects.get(ms.full_key(m["file_list"]["key"]), b"").decode().splitlines()
                m["files"] = [json.loads(x) for x in lines]
    return out


def manifest_problems(storage: Any) -> list[str]:
    """A complete backup (one with a manifest) has every manifest file in storage with its SHA-256."""
    ms = mem(storage)
    problems = []
    for name, m in manifests(storage).items():
        for f in m["files"]:
            data = ms.objects.get(ms.full_key(f["key"]))
            if data is None:
                problems.append(f"{name}: {f['key']} missing")
            elif len(data) != f["size"] or hashlib.sha256(data).hexdigest() != f["sha256"]:
                problems.append(f"{name}: {f['key']} differs from the manifest")
    return problems


def backup_copy_of_data(storage: Any, name: str) -> dict[int, dict[tuple[str, str], bytes]]:
    """The space data a backup holds, in ``FakeCluster.space_files`` form: {sid: {(addr#i, rel): bytes}}."""
    ms = mem(storage)
    out: dict[int, dict[tuple[str, str], bytes]] = {}
    pre = f"{name}/data/"
    for full, data in ms.objects.items():
        rel = ms.rel_key(full)
        if not rel.startswith(pre):
            continue
        addr, dpi, sid, rest = rel[len(pre):].split("/", 3)
        out.setdefault(int(sid), {})[(f"{addr}#{int(dpi[4:])}", rest)] = data
    return out


# -- journal checks -------------------------------------------------------------------------------
def _view(s: Any) -> tuple:
    return (s.phase, s.state, tuple(s.completed), tuple(s.started), tuple(s.undone), s.pending, s.undo_pending,
            json.dumps(s.facts, sort_keys=True, default=str), s.data,
            s.seq)


async def check_journal(journal: Journal, op: int, wf: Workflow, live: Any | None) -> Any:
    """fold(events) equals the live state, the machine's replay agrees, the hash chain verifies."""
    events = list(journal.events(op))
    folded = fold(wf.kind, events, wf.state)
    if live is not None:
        assert _view(live) == _view(folded), "the runner's live state differs from the fold of its journal"
    assert (await replay(wf.kind, events)).state == folded.state
    rep = journal.verify(op)
    assert rep.ok, rep.problems
    return folded


class World:
    """One cluster, one storage, one journal (in a temp dir), the two workflows wired like wiring.py does."""

    def __init__(self, seed: int = 0, *, cluster: FakeCluster | None = None, journal_file: Path | None = None,
                 objects: dict[str, bytes] | None = None, **storage_options: Any) -> None:
        """``cluster``, ``journal_file`` (copied, never written) and ``objects`` (the storage's): a world
        some earlier run left, as tests/journal_fixtures keeps them."""
        self._tmp = tempfile.TemporaryDirectory(dir="/dev/shm" if Path("/dev/shm").is_dir() else None)
        if journal_file is not None:
            shutil.copyfile(journal_file, Path(self._tmp.name) / "journal.db")
        self.inner = Journal.open(Path(self._tmp.name) / "journal.db")
        self.journal = CrashingJournal(self.inner)
        self.cluster = cluster if cluster is not None else make_cluster(seed)
        self.storage = make_storage(**storage_options)
        if objects is not None:
            mem(self.storage).objects.update(objects)
        mem(self.storage).signs_urls = True  # the direct data path's campaigns (brsm.fakes.helper)
        self.cluster.signed_http = MemoryStorage.signed_request  # how the fake hosts' helpers reach the store
        self.meta = FakeMeta(self.cluster)
        self.hosts = FakeHosts(self.cluster)
        self.backup_wf, self.backup_box = capture(backup_wf.workflow())
        self.restore_wf, self.restore_box = capture(restore_wf.workflow())
        self.base_indexes: list[MemoryBaseIndex] = []
        self.backup_runner = Runner(self.journal, self.backup_wf, backup_wf.BackupPorts(
            meta=self.meta, hosts=self.hosts, storage=self.storage, progress=NullProgress(),
            base_index=self._base_index))
        self.restore_runner = Runner(self.journal, self.restore_wf, restore_wf.RestorePorts(
            meta=self.meta, hosts=self.hosts, storage=self.storage, progress=NullProgress(),
            install_dir=lambda h: self.cluster.machine(h).install_dir))
        self.loop = asyncio.new_event_loop()

    def _base_index(self) -> MemoryBaseIndex:
        self.base_indexes.append(MemoryBaseIndex())
        return self.base_indexes[-1]

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def clear_faults(self) -> None:
        self.backup_box["at_step"].clear()
        self.restore_box["at_step"].clear()
        self.cluster.faults.clear()
        mem(self.storage).clear_faults()
        mem(self.storage).quota = None
        self.journal.arm(None)

    def process_died(self) -> None:
        """What a dead process leaves: no tasks of it run on (a lease refresh loop, a worker)."""
        pending = [t for t in asyncio.all_tasks(self.loop) if not t.done()]
        for t in pending:
            t.cancel()
        if pending:
            self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))

    def close(self) -> None:
        try:
            pending = [t for t in asyncio.all_tasks(self.loop) if not t.done()]
            for t in pending:
                t.cancel()
            if pending:
                self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        finally:
            self.loop.close()
            self.inner.close()
            self._tmp.cleanup()

    def gc(self, *, confirm: bool) -> Any:
        """``brsm gc`` on this world (``--yes`` when ``confirm``), wired as brsm.wiring.build_maintenance
        wires it: its live operations read from this journal. Returns gc's final state."""
        from brsm.wiring import live_operations
        from brsm.workflows.maintenance import MaintenancePorts, gc_workflow

        runner = Runner(self.journal, gc_workflow(), MaintenancePorts(
            meta=self.meta, hosts=self.hosts, storage=self.storage, live=live_operations(self.inner),
            progress=NullProgress(), install_dir=lambda h: self.cluster.machine(h).install_dir))
        op = runner.create({"confirm": confirm, "grace_seconds": 0})
        return self.run(runner.run(op))

    def meta_checkpoints_left(self, op: int) -> list[str]:
        """The metads whose meta checkpoint operation ``op`` could not remove after dropSnapshot (its
        SnapshotDropped events' ``meta_checkpoints.left``): `brsm gc` is what removes them."""
        return [w for e in self.inner.events(op, types=[SNAPSHOT_DROPPED])
                for w in ((e.data.get("meta_checkpoints") or {}).get("left") or [])]

    def make_backup(self) -> str:
        """A clean backup (no faults): returns its name."""
        op = self.backup_runner.create(BACKUP_PARAMS)
        st = self.run(self.backup_runner.run(op))
        assert st.phase == "done"
        return st.facts["backup_name"]
