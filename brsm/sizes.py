"""Byte counts as people read them, in powers of 1024 (the units --rate-limit and the config take)."""
from __future__ import annotations

_UNITS = (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10))


def size_text(n: float) -> str:
    """About how much: one decimal above bytes.

    >>> size_text(1536), size_text(1000), size_text(40 * 2**20)
    ('1.5 KiB', '1000 B', '40.0 MiB')
    """
    for unit, size in _UNITS:
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} B"


def exact_size_text(n: int) -> str:
    """Exactly how much, as a config value would be written: the largest unit that divides it.

    >>> exact_size_text(8 << 20), exact_size_text(5 * 2**20 + 1)
    ('8 MiB', '5242881 bytes')
    """
    for unit, size in _UNITS[1:]:
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} bytes"
