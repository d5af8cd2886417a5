"""A small reader for a declared TOML schema: sections, their keys, and one check per key.

The schema says what a config may hold; this module only walks it, so adding a key is one line in
the table and not another branch in a long function. Every problem is collected, none stops the
read: an operator fixing a file wants all of its lines named at once, each as
``file:line: section.key: what is wrong``.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class Bad(Exception):
    """A value a check refuses; its text is what the operator reads after ``section.key:``."""


def as_is(v: Any, base: Path) -> Any:
    return v


@dataclass(frozen=True)
class Key:
    name: str
    # the value to keep, from the file's value and the config file's directory; raises Bad
    check: Callable[[Any, Path], Any] = as_is
    missing: str | None = None  # the error when the key is absent; None: it may be left out


@dataclass(frozen=True)
class Section:
    name: str
    keys: tuple[Key, ...]
    many: bool = False  # [[name]]: an array of tables
    unknown: str | None = None  # the error for an undeclared key; None: "unknown key (expected …)"
    sort_expected: bool = False  # list the expected keys sorted rather than in declared order

    def unknown_message(self) -> str:
        if self.unknown is not None:
            return self.unknown
        names = [k.name for k in self.keys]
        return f"unknown key (expected {', '.join(sorted(names) if self.sort_expected else names)})"


class Reader:
    """Collects problems, each placed at its best-guess line of the file's text."""

    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()
        self.errors: list[str] = []

    def line_of(self, key: str, section: str | None = None, nth: int = 0) -> int | None:
        """Best-effort line number of ``key`` (inside the nth ``[section]``/``[[section]]``)."""
        start = 0
        if section:
            hits = [i for i, l in enumerate(self.lines) if re.match(rf"\s*\[\[?{re.escape(section)}\]\]?\s*$", l)]
            if len(hits) <= nth:
                return (hits[-1] + 1) if hits else None
            start = hits[nth]
        for i in range(start, len(self.lines)):
            if i > start and section and self.lines[i].lstrip().startswith("["):
                break
            if re.match(rf"\s*{re.escape(key)}\s*=", self.lines[i]):
                return i + 1
        return start + 1 if section else None

    def err(self, where: str, msg: str, *, key: str, section: str | None = None, nth: int = 0) -> None:
        line = self.line_of(key, section, nth)
        loc = f"{self.path}:{line}" if line else self.path
        self.errors.append(f"{loc}: {where}: {msg}")


Table = dict[str, Any]


def read_document(r: Reader, data: dict[str, Any], schema: tuple[Section, ...], base: Path
                  ) -> dict[str, Table | list[Table | None]]:
    """Each section's checked values (a list of tables for an array section; None for an entry that
    is not a table). A key that is absent or refused is left out: the caller supplies its default."""
    known = sorted(s.name for s in schema)
    for k in data:
        if k not in known:
            r.err(k, f"unknown section (expected one of {', '.join(known)})", key=k)
    return {s.name: _read_section(r, data.get(s.name, [] if s.many else {}), s, base) for s in schema}


def _read_section(r: Reader, raw: Any, s: Section, base: Path) -> Table | list[Table | None]:
    if s.many:
        if not isinstance(raw, list):
            r.err(s.name, f"must be an array of tables ([[{s.name}]])", key=s.name)
            return []
        return [_read_table(r, t, s, base, nth=i) for i, t in enumerate(raw)]
    if not isinstance(raw, dict):
        r.err(s.name, "must be a table", key=s.name)
        raw = {}
    return _read_table(r, raw, s, base) or {}


def _read_table(r: Reader, raw: Any, s: Section, base: Path, nth: int | None = None) -> Table | None:
    where, i = (s.name, 0) if nth is None else (f"{s.name}[{nth}]", nth)
    if not isinstance(raw, dict):
        r.err(where, "must be a table", key=s.name, section=s.name, nth=i)
        return None
    names = {k.name for k in s.keys}
    for k in raw:
        if k not in names:
            r.err(f"{where}.{k}", s.unknown_message(), key=k, section=s.name, nth=i)
    out: Table = {}
    for key in s.keys:
        if key.name not in raw:
            if key.missing:
                r.err(f"{where}.{key.name}", key.missing, key=key.name, section=s.name, nth=i)
            continue
        try:
            out[key.name] = key.check(raw[key.name], base)
        except Bad as e:
            r.err(f"{where}.{key.name}", str(e), key=key.name, section=s.name, nth=i)
    return out
