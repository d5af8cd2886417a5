"""Ctrl-C during a backup's upload keeps what was uploaded (for `brsm resume`) instead of rolling back.

An operator who presses Ctrl-C three hours into a backup wants the terminal back and the cluster free,
not three hours of uploads deleted. So SIGINT during COPIED or UPLOADED of a `brsm start backup`, once
anything is in storage, keeps the operation: the files and journaled parts stay, the cluster lease is
released at once (nothing on the cluster is write-blocked by a backup after its snapshot), and
`brsm resume` continues where it stopped.

The snapshot stays too. A resume can only continue from the snapshot the uploaded files came from: a
new snapshot is another point in time, and its files could not be mixed with the uploaded ones (the
backup's resume refuses one whose snapshot is gone). It costs disk space on the storage hosts (its
checkpoints hard-link SST files compaction would free) until `brsm resume` finishes the backup, which
drops it as always, or `brsm rollback` removes the uploads and drops it.

SIGTERM keeps the rollback: it is how systemd and schedulers stop a run, and nobody is at a terminal to
read "resume or roll back"; a cluster nobody looks at must not keep a snapshot and a half backup.
--keep-on-failure keeps everything (lease included), as before.
"""
from __future__ import annotations

from typing import Any

from brsm.engine.fold import OperationState
from brsm.workflows.backup.state import BackupState

KEEP_SIGNALS = ("SIGINT",)
KEEP_STEPS = ("COPIED", "UPLOADED")


def uploaded(st: OperationState) -> tuple[int, int]:
    """(files, bytes) in storage so far: whole files journaled as copied, plus the journaled parts of
    files under way (a resume continues those from their last part)."""
    if not isinstance(st.data, BackupState):  # other kinds copy nothing
        return 0, 0
    ledger = st.data.files
    uploads = list(ledger.uploads())  # the few large files under way
    files, size = ledger.totals()
    files += sum(1 for v in uploads if v.get("parts"))
    size += sum(int(p.get("size") or 0) for v in uploads for p in v.get("parts") or [])
    return files, size


def keep_interrupted(kind: str, signal: str, step: str, st: OperationState) -> bool:
    """Keep (True) rather than roll back a run ``signal`` stopped in ``step``."""
    return (kind == "backup" and signal in KEEP_SIGNALS and step in KEEP_STEPS
            and st.kind.done_step not in st.started and uploaded(st)[0] > 0)


def mib(n: int) -> str:
    return f"{n / 1048576:.1f} MiB"


def kept_message(op_id: int, kind: str, signal: str, step: str, st: OperationState) -> str:
    files, size = uploaded(st)
    snap = st.facts.get("backup_name")
    return (f"operation {op_id} ({kind}) interrupted by {signal} during {step}: the cluster is released; "
            f"{files} file(s) ({mib(size)}) already uploaded are kept"
            + (f", with snapshot {snap} on the cluster (it holds disk space until then)" if snap else "")
            + f": `brsm resume {op_id}` continues from there, `brsm rollback {op_id}` removes them"
            + (" and drops the snapshot" if snap else ""))


def policy(kind: str) -> Any:
    """The runner's keep_interrupted for an operation of ``kind`` started by `brsm start`."""
    return lambda signal, step, st: keep_interrupted(kind, signal, step, st)
