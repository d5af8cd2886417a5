"""An append-only, hash-chained, crash-safe event journal on SQLite. Imports nothing of brsm.

brsm journals every backup/restore step here, so a crashed run can be resumed or rolled back from what was
durably recorded, and an audit can tell whether that record was altered afterwards.

The store (and SQLite, sqlite-utils) is imported on first use of ``Journal``/``Writer``, so a process that
only needs ``journal.redact`` or the error classes (every brsm error scrubs its message) stays light.
"""
from typing import Any

from .errors import JournalCorrupt, JournalError, JournalLocked, UnknownOperation

__all__ = [
    "Journal", "Writer", "Anchor", "Event", "Operation", "VerifyReport", "Problem",
    "JournalError", "JournalCorrupt", "JournalLocked", "UnknownOperation", "SCHEMA_VERSION",
]

_LAZY = {"Journal": "store", "Writer": "store", "Anchor": "anchor", "Event": "model", "Operation": "model", "Problem": "model",
         "VerifyReport": "model", "SCHEMA_VERSION": "schema"}


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'journal' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{mod}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
