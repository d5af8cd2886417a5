"""One remote command run to its end within a time bound, with the bound kept here, not by asyncssh.

Why not ``conn.run(timeout=...)``: asyncssh bounds it with ``asyncio.wait_for``, which on Python 3.11
returns the command's result when a cancellation arrives in the instant the command ends, and the
cancellation is lost. A backup's copy runs one exec per group of small files, many a second; a
SIGTERM that landed in that instant (seen once in CI) left a copy worker running after the step
was told to stop, and the run waited for it with the cluster lease held. ``asyncio.timeout`` loses
no cancellation. A command cut short, timed out or cancelled, also has its channel closed here,
where asyncssh's ``run`` left it open, and its session slot taken, until the command ended.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncssh

from brsm.concurrency import Overdue, bounded


@dataclass(frozen=True)
class Ran:
    """What a finished command left: the fields of asyncssh's SSHCompletedProcess that brsm reads."""

    exit_status: int | None
    exit_signal: tuple | None
    stdout: Any
    stderr: Any


async def run_to_end(conn: asyncssh.SSHClientConnection, cmd: str, *, timeout: float | None,
                     encoding: str | None, input: Any = None) -> Ran | None:
    """Run ``cmd`` and collect its output; None when it did not end within ``timeout`` seconds."""
    stdin = asyncssh.PIPE if input is not None else asyncssh.DEVNULL
    proc = await conn.create_process(cmd, input=input, stdin=stdin, encoding=encoding)
    try:
        out, err = await bounded(proc.communicate(), timeout)
    except Overdue:
        proc.close()
        return None
    except BaseException:
        proc.close()  # cancelled or failed: the channel goes (a command still writing ends at its next write)
        raise
    return Ran(proc.exit_status, proc.exit_signal, out, err)
