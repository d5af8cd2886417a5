"""Everything the CLI shows goes through here: rich on a terminal, one JSON document with --json.

With ``--json`` stdout carries exactly one JSON document (the command's result or its error) so
scripts can parse it; progress is then written to stderr as JSON lines, never to stdout.
"""
from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table


class Output:
    def __init__(self, *, as_json: bool) -> None:
        self.as_json = as_json
        # Off a terminal rich would squeeze tables to 80 columns and cut ids and times: give room.
        self.out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 220)
        self.err = Console(stderr=True, highlight=False, soft_wrap=True)

    def result(self, data: Any, *, text: str | None = None) -> None:
        if self.as_json:
            sys.stdout.write(json.dumps(data, default=str, sort_keys=True) + "\n")
        elif text is not None:
            self.out.print(text, markup=False)

    def table(self, title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        t = Table(title=title, show_lines=False)
        for c in columns:
            t.add_column(c)
        for r in rows:
            t.add_row(*("" if v is None else str(v) for v in r))
        self.out.print(t)

    def line(self, text: str) -> None:
        """Plain human output; silent under --json."""
        if not self.as_json:
            self.out.print(text, markup=False)

    def progress_event(self, data: dict[str, Any]) -> None:
        if self.as_json:
            sys.stderr.write(json.dumps(data, default=str, sort_keys=True) + "\n")

    def error(self, message: str, hint: str | None, code: int) -> None:
        if self.as_json:
            sys.stdout.write(json.dumps({"error": message, "hint": hint, "exit_code": code}) + "\n")
            return
        self.err.print(f"brsm: error: {message}", markup=False)
        if hint:
            self.err.print(f"hint: {hint}", markup=False)
