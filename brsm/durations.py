"""Durations, from the config and from flags, read by one parser.

Every duration brsm takes becomes a timeout, a sleep or an age to compare with, so it must be a
finite number of seconds within a bound: ``inf`` (TOML has it), ``nan``, ``-1``, ``1e400`` or a
400-digit number would otherwise be a wait that never ends, a comparison that is always false, or
an OverflowError deep inside asyncio.

    parse_duration("10m") -> 600.0        parse_duration(90) -> 90.0
    parse_duration("inf") -> DurationError("must be a finite duration ...")
"""
from __future__ import annotations

import math
import re

UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# The largest duration anything accepts unless it says otherwise: a century, for ages (--keep-within
# 730d is a real retention policy). A timeout passes its own, smaller maximum.
MAX_SECONDS = 100 * 366 * 86400.0
FORMS = "90s, 10m, 12h, 30d or 2w (a bare number is seconds)"


class DurationError(ValueError):
    """What is wrong with a duration, in words that fit after ``<key or flag>: ``."""


def parse_duration(value: object, *, allow_zero: bool = False, maximum: float = MAX_SECONDS,
                   units: str = "smhdw") -> float:
    """Seconds, finite, above zero (or zero when ``allow_zero``) and at most ``maximum``.

    ``value`` is a number (int or float, never bool) or text: a number with one of ``units``
    (``"90s"``, ``"1.5h"``); a bare number is seconds."""
    seconds = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            seconds = float(value)
        except OverflowError:  # an int too large for a float (TOML integers are unbounded)
            seconds = math.inf
    elif isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]?)\s*", value)
        if m and m.group(2).lower() in UNITS and (not m.group(2) or m.group(2).lower() in units):
            seconds = float(m.group(1)) * UNITS[m.group(2).lower()]
    wanted = "like " + ", ".join(f"\"{x}\"" for x in ("90s", "10m", "1h", "30d", "2w") if x[-1] in units)
    if seconds is None:
        raise DurationError(f"not a duration: {value!r} (write it {wanted}, or a number of seconds)")
    if not math.isfinite(seconds):
        raise DurationError(f"must be a finite duration, not {value!r} (write it {wanted})")
    if seconds < 0 or (seconds == 0 and not allow_zero):
        raise DurationError(f"must be {'zero or more' if allow_zero else 'more than zero'}, not {value!r}")
    if seconds > maximum:
        raise DurationError(f"must be at most {_human(maximum)}, not {value!r}")
    return seconds


def _human(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"
