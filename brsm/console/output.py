"""Everything the CLI shows goes through here: rich on a terminal, one JSON document with --json.

With ``--json`` stdout carries exactly one JSON document (the command's result or its error) so
scripts can parse it; progress is then written to stderr as JSON lines, never to stdout.

Nothing leaves unscrubbed: every text and every JSON document goes through journal.redact's rules, so
a credential in a URI the user typed (or in an SDK's error) is printed as ``<redacted>``.
"""
from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Sequence
from typing import Any

import re

from journal.redact import redact, scrub_text, suspect
from rich.console import Console
from rich.table import Table
from rich.text import Text

# What must never reach a terminal as itself: C0 and C1 controls and DEL (an ESC starts a sequence
# that recolours, moves the cursor, retitles the window or rewrites what was printed; a CR or newline
# forges a line), and the invisible format characters that reorder or hide text (bidi overrides and
# isolates, zero-width marks, line/paragraph separators).
_HIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(m: re.Match[str]) -> str:
    c = m.group(0)
    return _NAMED.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")


def visible(text: Any, *, newlines: bool = False) -> str:
    """``text`` with every control or invisible format character written out (``\\x1b``, ``\\n``,
    ``\\u202e``): the one renderer for text on its way to a terminal, since names from metad, the
    storage and the hosts can hold anything. ``newlines=True`` keeps line breaks (brsm's own
    multi-line messages); the names inside such a message are rendered by the code that builds it.

        visible("sp\\x1b[2Jace\\nfake line") -> 'sp\\\\x1b[2Jace\\\\nfake line'
    """
    s = str(text)
    if newlines:
        return "\n".join(_HIDDEN.sub(_escape, part) for part in s.split("\n"))
    return _HIDDEN.sub(_escape, s)


def shown(text: Any) -> str:
    """What the terminal gets for one value: credentials scrubbed, controls made visible."""
    return visible(scrub_text(str(text)))


def cell(value: Any) -> Text:
    """A table cell: shown, and plain text (a ``[bold]`` in a name is not rich markup)."""
    return Text("" if value is None else shown(value))


class _Console(Console):
    """A rich console that scrubs credentials from the text it is given to print and makes control
    characters visible (line breaks are kept: several lines in one call are brsm's own)."""

    def print(self, *objects: Any, **kw: Any) -> None:  # type: ignore[override]
        super().print(*(visible(scrub_text(o), newlines=True) if isinstance(o, str) else o for o in objects), **kw)


def _json(data: Any) -> str:
    text = json.dumps(data, default=str, sort_keys=True)
    return json.dumps(redact(json.loads(text)), sort_keys=True) if suspect(text) else text


# ``--quiet`` (set by the CLI for one command): errors and warnings only, for cron, which mails
# whatever a job prints. --json output is the command's result and is printed either way.
QUIET = False


def is_warning(text: str) -> bool:
    """A line --quiet still prints: a warning (what a person must look at even when all went well)."""
    return text.lstrip().lower().startswith(("warning", "brsm: warning"))


class Output:
    def __init__(self, *, as_json: bool) -> None:
        self.as_json = as_json
        self.quiet = QUIET
        # Off a terminal rich would squeeze tables to 80 columns and cut ids and times: give room,
        # unless $COLUMNS says how wide (rich reads it then, as on a terminal).
        wide = sys.stdout.isatty() or (os.environ.get("COLUMNS") or "").strip().isdigit()
        self.out = _Console(highlight=False, soft_wrap=True, width=None if wide else 220, quiet=self.quiet)
        self.err = _Console(stderr=True, highlight=False, soft_wrap=True)

    def result(self, data: Any, *, text: str | None = None) -> None:
        if self.as_json:
            sys.stdout.write(_json(data) + "\n")
        elif text is not None:
            self.out.print(text, markup=False)

    def table(self, title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        t = Table(title=None if title is None else cell(title), show_lines=False)
        for c in columns:
            t.add_column(c)
        for r in rows:
            t.add_row(*(cell(v) for v in r))
        self.out.print(t)

    def line(self, text: str) -> None:
        """Plain human output, one line (a newline inside it is shown as ``\\n``); silent under --json."""
        if not self.as_json:
            if self.quiet and is_warning(text):
                self.err.print(shown(text), markup=False)
            else:
                self.out.print(shown(text), markup=False)

    def error(self, message: str, hint: str | None, code: int, **about: object) -> None:
        """``about``: what the error concerns (``op_id``, ``state``), in the JSON document only."""
        if self.as_json:
            sys.stdout.write(_json({"error": message, "hint": hint, "exit_code": code, **about}) + "\n")
            return
        self.err.print(f"brsm: error: {message}", markup=False)
        if hint:  # one line, always: a newline in a name inside it is written out
            self.err.print(f"hint: {shown(hint)}", markup=False)
