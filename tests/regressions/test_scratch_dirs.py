"""A restore's scratch dirs (``brsm_restore_<ref>`` beside metad's data, ``nebula_brsm_new_<ref>`` beside
each storage root) have predictable names: one planted there was taken as it was, so the staging (and
what metad ingests) could be moved out of the data path with the restore exiting 0. Now each is made
by the restore itself and its identity journaled; a planted one is refused and left where it is; a
crash right after the mkdir still resumes; a dir swapped in after it was made is refused."""
from __future__ import annotations

import pytest

from brsm.errors import BrsmError, VerificationFailed
from brsm.fakes.hosts import FakeHost
from brsm.workflows.restore import placement, scratch
from brsm.workflows.restore.state import SCRATCH_MADE, SCRATCH_MAKING
from property_tests.campaign_support import BACKUP_PARAMS, SimulatedCrash, all_files


def _backup(world) -> str:
    op = world.backup_runner.create(BACKUP_PARAMS)
    st = world.run(world.backup_runner.run(op))
    assert st.phase == "done", st
    return st.facts["backup_name"]


def _meta_dir(world) -> tuple[str, str]:
    ctx = world.restore_box["ctx"]
    return placement.meta_restore_dirs(ctx.data.topo, ctx.ref)[0]


def _events(world, op: int, type_: str) -> list[dict]:
    return [e.data for e in world.inner.events(op) if e.type == type_]


def test_a_scratch_dir_planted_before_the_restore_is_refused_and_left(world):
    name = _backup(world)
    planted: list[tuple[str, str]] = []

    def plant() -> None:  # the moment STAGED begins: the op's ref is known, nothing is staged yet
        host, d = _meta_dir(world)
        world.cluster.machine(host).put(f"{d}/999.sst", b"an SST that is not in the backup")
        planted.append((host, d))

    world.restore_box["at_step"]["STAGED"] = [plant]
    before = all_files(world.cluster)
    rop = world.restore_runner.create({"name": name, "verify": "quick"})
    with pytest.raises(VerificationFailed, match="exists, and brsm did not create it"):
        world.run(world.restore_runner.run(rop))
    st = world.run(world.restore_runner.rollback(rop))
    assert st.phase == "rolled_back", st
    host, d = planted[0]
    assert world.cluster.machine(host).files[f"{d}/999.sst"] == b"an SST that is not in the backup", \
        "the rollback removes only what the restore made"
    assert all_files(world.cluster) == {**before, (host, f"{d}/999.sst"): b"an SST that is not in the backup"}
    assert "restoreMeta" not in world.meta.calls


def test_a_crash_between_the_mkdir_and_its_journaling_resumes(world, monkeypatch):
    name = _backup(world)
    made: list[str] = []
    real = FakeHost.make_dir

    async def make_then_crash(self, path):
        st = await real(self, path)
        if not made:
            made.append(path)
            world.journal.arm(0)  # the ScratchDirMade that follows never reaches the journal
        return st

    monkeypatch.setattr(FakeHost, "make_dir", make_then_crash)
    rop = world.restore_runner.create({"name": name, "verify": "quick"})
    with pytest.raises(SimulatedCrash):
        world.run(world.restore_runner.run(rop))
    world.process_died()
    world.clear_faults()
    assert made and not _events(world, rop, SCRATCH_MADE)
    assert made[0] in [e["path"] for e in _events(world, rop, SCRATCH_MAKING)]
    st = world.run(world.restore_runner.resume(rop))
    assert st.phase == "done", st
    assert made[0] in [e["path"] for e in _events(world, rop, SCRATCH_MADE)], "taken back, and journaled"


def test_a_scratch_dir_replaced_after_it_was_made_is_refused(world):
    name = _backup(world)
    swapped: list[tuple[str, str]] = []

    def swap() -> None:  # between STAGED (made and filled it) and DOWNLOADED (renames it into place)
        ctx = world.restore_box["ctx"]
        host, staged, _live = placement.swaps(ctx.data.topo, ctx.ref, None)[0]
        d = staged.rsplit("/", 1)[0]
        m = world.cluster.machine(host)
        files = {p: b for p, b in m.files.items() if p.startswith(d + "/")}
        m.move(d, d + ".orig")
        for p, b in files.items():  # the same files in another dir at the same name
            m.put(p, b)
        swapped.append((host, d))

    world.restore_box["at_step"]["STOPPED"] = [swap]
    rop = world.restore_runner.create({"name": name, "verify": "quick"})
    with pytest.raises(BrsmError, match="is not the directory brsm created"):
        world.run(world.restore_runner.run(rop))
    assert swapped


def test_an_operation_staged_by_an_older_brsm_still_resumes(world, monkeypatch):
    """Journaled before scratch dirs were (no scratch event, files restored into dirs made on the way):
    the resume takes those dirs back once, journals them, and finishes."""
    name = _backup(world)

    async def old_ensure(ctx, where):  # what an older brsm did: nothing (makedirs on the way)
        return None

    monkeypatch.setattr(scratch, "ensure", old_ensure)
    monkeypatch.setenv("BRSM_FAILPOINTS", "file:2=raise")
    rop = world.restore_runner.create({"name": name, "verify": "quick"})
    with pytest.raises(BrsmError, match="failpoint"):
        world.run(world.restore_runner.run(rop))
    assert not _events(world, rop, SCRATCH_MADE) and _events(world, rop, "FileRestored")
    monkeypatch.undo()
    st = world.run(world.restore_runner.resume(rop))
    assert st.phase == "done", st
    assert _events(world, rop, SCRATCH_MADE), "the dirs found are journaled from then on"
