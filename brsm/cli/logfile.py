"""brsm's own log, ``$BRSM_HOME/logs/brsm.log``: one line per command and its exit, traces of
surprises, every line scrubbed of credentials, never on stderr."""
from __future__ import annotations

import logging
import os

from brsm.errors import BrsmError


class ScrubbingFormatter(logging.Formatter):
    """brsm.log is kept and shared: every line, tracebacks included, has credentials scrubbed."""

    def format(self, record: logging.LogRecord) -> str:
        from journal.redact import scrub_text

        return scrub_text(super().format(record))


def open_log():
    """``$BRSM_HOME/logs/brsm.log`` (0600): one line per command and its exit, traces of surprises.
    Messages only, never params, and every line scrubbed: a secret must not reach it."""
    from brsm.home import logs_dir

    log = logging.getLogger("brsm")
    want = str(logs_dir() / "brsm.log")
    if any(getattr(h, "baseFilename", None) == want for h in log.handlers):
        return log
    for h in list(log.handlers):  # $BRSM_HOME changed (tests, or main() called twice)
        log.removeHandler(h)
        h.close()
    log.setLevel(logging.INFO)
    log.propagate = False
    try:
        from brsm.home import ensure_home

        ensure_home()  # 0700 when brsm makes it; not a directory: the command says so (exit 2), not the log
        d = logs_dir()
        d.mkdir(exist_ok=True, mode=0o700)
        path = d / "brsm.log"
        # never through a link planted at the name (it would be chmodded and written): ELOOP, no log
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(fd, 0o600)
        finally:
            os.close(fd)
        h = logging.FileHandler(path)
        h.setFormatter(ScrubbingFormatter("%(asctime)s %(process)d %(levelname)s %(message)s"))
        log.addHandler(h)
        # library warnings and what libraries log at WARNING or above: here, never on stderr (brsm.cli)
        for other in (logging.getLogger("py.warnings"), logging.getLogger()):
            for old in [x for x in other.handlers if isinstance(x, logging.FileHandler)
                        and isinstance(x.formatter, ScrubbingFormatter)]:
                other.removeHandler(old)
            other.addHandler(h)
    except (OSError, BrsmError):
        log.addHandler(logging.NullHandler())
    return log
