"""gflags-style flag parsing for the sandbox stand-ins.

Accepted forms (as Nebula's binaries accept them):
  --flagfile=FILE        one ``--key=value`` per line, ``#`` comments and blank lines ignored
  --key=value            on the command line; later occurrences win, command line wins over flagfile
  --key / --nokey        booleans
Unknown keys are kept (Nebula's conf files carry many flags we ignore).
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Sequence


class FlagError(ValueError):
    pass


def _parse_items(items: Iterable[str], out: dict[str, str], *, base_dir: str | None, depth: int) -> None:
    for raw in items:
        item = raw.strip()
        if not item or item.startswith("#"):
            continue
        if not item.startswith("-"):
            raise FlagError(f"not a flag: {item!r}")
        item = item.lstrip("-")
        if "=" in item:
            key, value = item.split("=", 1)
        elif item.startswith("no") and len(item) > 2:
            key, value = item[2:], "false"
        else:
            key, value = item, "true"
        key = key.strip()
        value = value.strip()
        if key == "flagfile":
            path = value
            if base_dir and not os.path.isabs(path):
                path = os.path.join(base_dir, path)
            if depth > 8:
                raise FlagError("flagfile nesting too deep")
            with open(path, encoding="utf-8") as fh:
                _parse_items(fh.read().splitlines(), out, base_dir=os.path.dirname(os.path.abspath(path)),
                             depth=depth + 1)
            continue
        out[key] = value


def parse_flags(argv: Sequence[str], defaults: dict[str, str] | None = None) -> "Flags":
    """Parse ``argv`` (without the program name). Flagfiles are read where they appear, so a
    ``--key=value`` after ``--flagfile`` overrides the file."""
    values: dict[str, str] = dict(defaults or {})
    _parse_items(argv, values, base_dir=None, depth=0)
    return Flags(values)


class Flags:
    def __init__(self, values: dict[str, str]) -> None:
        self.values = values

    def __contains__(self, key: str) -> bool:
        return key in self.values

    def get(self, key: str, default: str | None = None) -> str | None:
        return self.values.get(key, default)

    def str(self, key: str, default: str | None = None) -> str:
        v = self.values.get(key, default)
        if v is None:
            raise FlagError(f"missing required flag --{key}")
        return v

    def int(self, key: str, default: int | None = None) -> int:
        v = self.values.get(key)
        if v is None or v == "":
            if default is None:
                raise FlagError(f"missing required flag --{key}")
            return default
        try:
            return int(v)
        except ValueError as exc:
            raise FlagError(f"--{key}={v!r} is not an integer") from exc

    def float(self, key: str, default: float) -> float:
        v = self.values.get(key)
        return default if v in (None, "") else float(v)

    def bool(self, key: str, default: bool = False) -> bool:
        v = self.values.get(key)
        if v is None or v == "":
            return default
        return v.lower() in ("1", "true", "yes", "on")

    def list(self, key: str, default: list[str] | None = None) -> list[str]:
        v = self.values.get(key)
        if v is None or v.strip() == "":
            return list(default or [])
        return [p.strip() for p in v.split(",") if p.strip()]


def parse_hostport(text: str) -> tuple[str, int]:
    host, _, port = text.strip().rpartition(":")
    if not host or not port.isdigit():
        raise FlagError(f"bad host:port {text!r}")
    return host, int(port)
