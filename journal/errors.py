"""The journal's own errors, so it stays usable without brsm and callers can map them to their own."""
from __future__ import annotations


class JournalError(Exception):
    """Anything the journal cannot do; sqlite3 errors are chained as __cause__."""


class JournalLocked(JournalError):
    """Another driver holds the operation: resuming twice at once would interleave two runs' facts."""

    def __init__(self, message: str, *, pid: int | None, host: str | None, since: str | None = None) -> None:
        super().__init__(message)
        self.pid = pid
        self.host = host
        self.since = since


class JournalCorrupt(JournalError):
    """The journal file is damaged (not a database, malformed pages) or holds rows it cannot decode:
    it was truncated, overwritten or edited outside the journal. Nothing can be trusted or appended."""


class UnknownOperation(JournalError):
    """The id names no operation (a typo in `brsm resume 7`, or another journal file)."""

    def __init__(self, op_id: int) -> None:
        super().__init__(f"no operation {op_id} in this journal")
        self.op_id = op_id
