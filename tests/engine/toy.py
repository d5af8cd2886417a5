"""A toy world for engine tests: each step has an effect on a fake cluster that its undo removes.

Used by the engine unit tests, the subprocess crash driver and the hypothesis properties, so all
three exercise the same workflow.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from brsm.engine.definitions import BACKUP
from brsm.engine.state import KindState, on
from brsm.engine.step_context import StepContext
from brsm.engine.workflow import Workflow


@dataclass
class World:
    """The fake cluster. Persisted to a JSON file so a crashed process's effects survive it."""

    path: Path | None = None
    effects: dict[str, int] = field(default_factory=dict)  # step -> value it produced
    fail_once: set[str] = field(default_factory=set)
    runs: dict[str, int] = field(default_factory=dict)

    def load(self) -> "World":
        if self.path and self.path.exists():
            self.effects = json.loads(self.path.read_text())
        return self

    def save(self) -> None:
        if self.path:
            self.path.write_text(json.dumps(self.effects))


@dataclass
class ToyState(KindState):
    effects: dict[str, int] = field(default_factory=dict)  # step -> value, as ToyEffect journaled it

    @on("ToyEffect", sets=("effects",))
    def _effect(self, d: dict[str, Any]) -> None:
        self.effects[d["step"]] = d["value"]


def make_workflow(world: World) -> Workflow:
    def step(name: str, value: int):
        async def run(ctx: StepContext) -> dict[str, Any]:
            world.runs[name] = world.runs.get(name, 0) + 1
            if name in world.fail_once:
                world.fail_once.discard(name)
                from brsm.errors import RemoteError

                raise RemoteError(f"{name} failed on purpose", host="toy")
            # Idempotent effect: check before act.
            world.effects.setdefault(name, value + len(ctx.state.facts))
            world.save()
            ctx.record("ToyEffect", {"step": name, "value": world.effects[name]})
            return {f"{name.lower()}_value": world.effects[name]}

        return run

    def undo(name: str):
        async def run(ctx: StepContext) -> None:
            world.effects.pop(name, None)
            world.save()

        return run

    names = BACKUP.steps
    return Workflow(
        kind=BACKUP,
        steps={n: step(n, i * 10) for i, n in enumerate(names)},
        undos={n: undo(n) for n in names},
        state=ToyState,
    )
