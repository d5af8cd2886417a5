"""Progress for long transfers: rich bars on a terminal, JSON lines on stderr with --json, else quiet
but for notes (a line each on stderr: a run waiting on metad says so even under systemd)."""
from __future__ import annotations

import json
import sys
import time
from typing import Any

from brsm.sizes import size_text


class NullProgress:
    def start(self, task: str, total: int | None, unit: str = "B") -> None: ...
    def advance(self, task: str, amount: int) -> None: ...
    def done(self, task: str) -> None: ...
    def note(self, text: str) -> None: ...


class QuietProgress(NullProgress):
    """Off a terminal: no bars, but every note as one line on stderr."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream or sys.stderr

    def note(self, text: str) -> None:
        from brsm.console.output import shown

        self.stream.write(f"brsm: {shown(text)}\n")
        self.stream.flush()


class JsonProgress:
    """At most one line per task per second, so a 100,000-file run stays parseable and small."""

    def __init__(self, stream: Any = None, every: float = 1.0) -> None:
        self.stream = stream or sys.stderr
        self.every = every
        self.tasks: dict[str, dict[str, Any]] = {}

    def _emit(self, task: str, final: bool = False) -> None:
        t = self.tasks[task]
        self.stream.write(json.dumps({"progress": task, "done": t["done"], "total": t["total"], "unit": t["unit"],
                                      "final": final}) + "\n")
        self.stream.flush()
        t["last"] = time.monotonic()

    def start(self, task: str, total: int | None, unit: str = "B") -> None:
        self.tasks[task] = {"done": 0, "total": total, "unit": unit, "last": 0.0}
        self._emit(task)

    def advance(self, task: str, amount: int) -> None:
        t = self.tasks.get(task)
        if t is None:
            return
        t["done"] += amount
        if time.monotonic() - t["last"] >= self.every:
            self._emit(task)

    def done(self, task: str) -> None:
        if task in self.tasks:
            self._emit(task, final=True)

    def note(self, text: str) -> None:
        self.stream.write(json.dumps({"note": text}) + "\n")
        self.stream.flush()


def binary_rate(bytes_per_second: float | None) -> str:
    """A speed in the units --rate-limit takes (KiB/s, MiB/s, GiB/s: powers of 1024), never rich's
    decimal MB/s beside a flag in MiB/s.

    >>> binary_rate(40 * 2**20), binary_rate(None)
    ('40.0 MiB/s', '?')
    """
    return "?" if bytes_per_second is None else f"{size_text(bytes_per_second)}/s"


def _speed_column() -> Any:
    from rich.progress import ProgressColumn
    from rich.text import Text

    class BinarySpeedColumn(ProgressColumn):
        def render(self, task: Any) -> Text:
            return Text(binary_rate(task.finished_speed or task.speed), style="progress.data.speed")

    return BinarySpeedColumn()


class RichProgress:
    def __init__(self) -> None:
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

        self.p = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(binary_units=True),
                          _speed_column(), TimeRemainingColumn(), transient=False,
                          console=__import__("rich.console", fromlist=["Console"]).Console(stderr=True))
        self.ids: dict[str, Any] = {}
        self.running = False

    def start(self, task: str, total: int | None, unit: str = "B") -> None:
        if not self.running:
            self.p.start()
            self.running = True
        self.ids[task] = self.p.add_task(task, total=total)

    def advance(self, task: str, amount: int) -> None:
        if task in self.ids:
            self.p.advance(self.ids[task], amount)

    def done(self, task: str) -> None:
        if task in self.ids:
            self.p.stop_task(self.ids[task])
        if self.running and all(self.p.tasks[i].finished or not self.p.tasks[i].started
                                for i in range(len(self.p.tasks))):
            self.p.stop()
            self.running = False

    def note(self, text: str) -> None:
        from brsm.console.output import shown

        self.p.console.print(shown(text), markup=False)


class WarningsOnly(NullProgress):
    """--quiet: no bars and no notes, but a warning still goes to stderr."""

    def __init__(self, stream: Any = None) -> None:
        self.notes = QuietProgress(stream)

    def note(self, text: str) -> None:
        from brsm.console.output import is_warning

        if is_warning(text):
            self.notes.note(text)


def make_progress(*, as_json: bool) -> Any:
    from brsm.console import output

    if as_json:
        return JsonProgress()
    if output.QUIET:
        return WarningsOnly()
    if sys.stderr.isatty():
        return RichProgress()
    return QuietProgress()
