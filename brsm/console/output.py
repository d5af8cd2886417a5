"""Everything the CLI shows goes through here: rich on a terminal, one JSON document with --json.

With ``--json`` stdout carries exactly one JSON document (the command's result or its error) so
scripts can parse it; progress is then written to stderr as JSON lines, never to stdout.

Nothing leaves unscrubbed: every text and every JSON document goes through journal.redact's rules, so
a credential in a URI the user typed (or in an SDK's error) is printed as ``<redacted>``.
"""
from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from journal.redact import redact, scrub_text, suspect
from rich.console import Console
from rich.table import Table


class _Console(Console):
    """A rich console that scrubs credentials from the text it is given to print."""

    def print(self, *objects: Any, **kw: Any) -> None:  # type: ignore[override]
        super().print(*(scrub_text(o) if isinstance(o, str) else o for o in objects), **kw)


def _json(data: Any) -> str:
    text = json.dumps(data, default=str, sort_keys=True)
    return json.dumps(redact(json.loads(text)), sort_keys=True) if suspect(text) else text


class Output:
    def __init__(self, *, as_json: bool) -> None:
        self.as_json = as_json
        # Off a terminal rich would squeeze tables to 80 columns and cut ids and times: give room.
        self.out = _Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 220)
        self.err = _Console(stderr=True, highlight=False, soft_wrap=True)

    def result(self, data: Any, *, text: str | None = None) -> None:
        if self.as_json:
            sys.stdout.write(_json(data) + "\n")
        elif text is not None:
            self.out.print(text, markup=False)

    def table(self, title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        t = Table(title=title, show_lines=False)
        for c in columns:
            t.add_column(c)
        for r in rows:
            t.add_row(*("" if v is None else scrub_text(str(v)) for v in r))
        self.out.print(t)

    def line(self, text: str) -> None:
        """Plain human output; silent under --json."""
        if not self.as_json:
            self.out.print(text, markup=False)

    def error(self, message: str, hint: str | None, code: int, **about: object) -> None:
        """``about``: what the error concerns (``op_id``, ``state``), in the JSON document only."""
        if self.as_json:
            sys.stdout.write(_json({"error": message, "hint": hint, "exit_code": code, **about}) + "\n")
            return
        self.err.print(f"brsm: error: {message}", markup=False)
        if hint:
            self.err.print(f"hint: {hint}", markup=False)
