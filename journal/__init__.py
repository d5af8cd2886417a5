"""An append-only, hash-chained, crash-safe event journal on SQLite. Imports nothing of brsm.

brsm journals every backup/restore step here, so a crashed run can be resumed or rolled back from what was
durably recorded, and an audit can tell whether that record was altered afterwards.
"""
from .errors import JournalCorrupt, JournalError, JournalLocked, UnknownOperation
from .model import Event, Operation, Problem, VerifyReport
from .schema import SCHEMA_VERSION
from .store import Journal, Writer

__all__ = [
    "Journal", "Writer", "Event", "Operation", "VerifyReport", "Problem",
    "JournalError", "JournalCorrupt", "JournalLocked", "UnknownOperation", "SCHEMA_VERSION",
]
