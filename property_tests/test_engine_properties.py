"""Hypothesis: random runs, failures, crashes, resumes and rollbacks of the toy workflow.

A crash is simulated in-process by a journal writer that, once its budget of appends is spent,
raises ``SimulatedCrash`` (a BaseException) on every further append: exactly what a dead process
leaves behind, since nothing after the crash reaches the journal.
"""
from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from journal import Journal

from brsm.engine.fold import PHASE_DONE, PHASE_ROLLED_BACK, fold
from brsm.engine.machine import replay
from brsm.engine.runner import Runner
from brsm.errors import BrsmError
from tests.engine.toy import World, make_workflow

STEPS = ("LOCKED", "SNAPSHOTTED", "COPIED", "UPLOADED", "CLEANED")


class SimulatedCrash(BaseException):
    pass


class CrashingJournal:
    """Wraps a Journal; ``arm(n)`` lets n more appends through, then every append crashes."""

    def __init__(self, inner: Journal) -> None:
        self.inner = inner
        self.budget: int | None = None

    def arm(self, n: int | None) -> None:
        self.budget = n

    def _spend(self) -> None:
        if self.budget is not None:
            if self.budget <= 0:
                raise SimulatedCrash()
            self.budget -= 1

    def driver(self, op_id):
        outer = self
        cm = self.inner.driver(op_id)

        class _CM:
            def __enter__(self_inner):
                w = cm.__enter__()

                class _W:
                    def append(self_w, t, d, **kw):
                        outer._spend()
                        return w.append(t, d)

                    def append_batch(self_w, items):
                        outer._spend()
                        return w.append_batch(items)

                    def extend(self_w, items, **kw):
                        outer._spend()
                        return w.extend(items, **kw)

                return _W()

            def __exit__(self_inner, *exc):
                return cm.__exit__(*exc)

        return _CM()

    def __getattr__(self, name):
        return getattr(self.inner, name)


action = st.one_of(
    st.tuples(st.just("fail"), st.sampled_from(STEPS)),
    st.tuples(st.just("crash"), st.integers(min_value=0, max_value=14)),
    st.tuples(st.just("resume"), st.none()),
    st.tuples(st.just("rollback"), st.none()),
)


def reference_facts() -> dict:
    with tempfile.TemporaryDirectory() as d:
        j = Journal.open(Path(d) / "j.db")
        r = Runner(j, make_workflow(World()))
        op = r.create({})
        facts = asyncio.run(r.run(op)).facts
        j.close()
        return facts


REFERENCE = reference_facts()


async def scenario(actions, finish: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        inner = Journal.open(Path(d) / "j.db")
        j = CrashingJournal(inner)
        world = World()
        wf = make_workflow(world)
        r = Runner(j, wf)
        op = r.create({})
        first = True
        for kind, arg in actions:
            j.arm(None)
            if kind == "fail":
                world.fail_once = {arg}
                continue
            if kind == "crash":
                j.arm(arg)
                continue_mode = "run"
            else:
                continue_mode = kind
            try:
                if continue_mode == "rollback":
                    await r.rollback(op)
                else:
                    await (r.run(op) if first else r.resume(op))
                first = False
            except SimulatedCrash:
                first = False
            except BrsmError:
                first = False
            # The live fold is deterministic and the machine's replay agrees with it.
            events = list(inner.events(op))
            a = fold("backup", events, wf.state)
            b = fold("backup", events, wf.state)
            assert (a.state, a.facts, a.data, a.completed, a.undone) == (b.state, b.facts, b.data, b.completed, b.undone)
            assert (await replay(a.kind, events)).state == a.state
            assert inner.verify(op).ok
        j.arm(None)
        world.fail_once = set()
        st_now = r.state(op)
        started_before = set(st_now.started)
        cleaning = "CLEANED" in st_now.started and st_now.phase != "rolling_back"
        if (st_now.phase == PHASE_ROLLED_BACK or st_now.phase == "rolling_back" or finish == "rollback") and not (
                cleaning and st_now.phase != PHASE_ROLLED_BACK):
            if st_now.phase == PHASE_DONE:
                return  # a finished backup is not rolled back (cleanup deletes it instead)
            final = await r.rollback(op)
            assert final.phase == PHASE_ROLLED_BACK
            # Rollback undid exactly the steps that may have taken effect, and nothing is left.
            assert world.effects == {}
            assert set(final.undone) == set(final.started)
            assert set(final.started) >= started_before
            again = await r.rollback(op)
            assert again.seq == final.seq  # idempotent: nothing appended
        else:
            final = await r.resume(op)
            assert final.phase == PHASE_DONE
            assert final.facts == REFERENCE
            assert set(world.effects) == set(STEPS)
            again = await r.resume(op)
            assert again.seq == final.seq
        inner.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(action, max_size=6), st.sampled_from(["resume", "rollback"]))
def test_random_histories_recover(actions, finish):
    asyncio.run(scenario(actions, finish))
