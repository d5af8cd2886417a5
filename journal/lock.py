"""One driver per operation, enforced by the OS rather than by a row in the database.

flock(2) is released by the kernel when the holder dies, however it dies, so a crashed run never leaves a
stale lock behind, and it conflicts between two open() calls of the same process too. The file is never
unlinked: unlinking a lock file races with a process that has opened but not yet locked it.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from .chain import utc_now
from .errors import JournalError, JournalLocked


def _read_holder(fd: int) -> dict:
    # The holder writes its identity right after locking; give it a moment if we caught it in between.
    for _ in range(50):
        try:
            raw = os.pread(fd, 4096, 0)
        except OSError:
            return {}
        if raw:
            try:
                info = json.loads(raw)
                return info if isinstance(info, dict) else {}
            except ValueError:
                pass
        time.sleep(0.01)
    return {}


class OperationLock:
    def __init__(self, path: Path, op_id: int) -> None:
        self.path = path
        self.op_id = op_id
        self._fd: int | None = None

    def acquire(self) -> None:
        if self._fd is not None:
            raise JournalError(f"lock on operation {self.op_id} already held by this object")
        try:
            if not self.path.parent.exists():
                self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                os.chmod(self.path.parent, 0o700)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise JournalError(f"cannot open lock file {self.path}: {e}") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            info = _read_holder(fd)
            os.close(fd)
            pid, host, since = info.get("pid"), info.get("host"), info.get("started")
            raise JournalLocked(
                f"operation {self.op_id} is being driven by pid {pid if pid is not None else '?'} on host "
                f"{host or '?'} (since {since or '?'}); wait for it to finish or stop that process",
                pid=pid, host=host, since=since,
            ) from e
        except OSError as e:
            os.close(fd)
            raise JournalError(f"cannot lock {self.path}: {e}") from e
        try:
            os.fchmod(fd, 0o600)
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                      "started": utc_now(), "op_id": self.op_id}).encode(), 0)
        except OSError as e:
            os.close(fd)
            raise JournalError(f"cannot write lock file {self.path}: {e}") from e
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)  # stale identity would mislead whoever reads it next
        except OSError:
            pass
        finally:
            os.close(fd)  # closing the only descriptor drops the flock
