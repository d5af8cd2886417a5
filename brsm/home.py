"""Where brsm keeps its own state: ``$BRSM_HOME`` (default ``~/.local/state/brsm``)."""
from __future__ import annotations

import os
from pathlib import Path


def brsm_home() -> Path:
    env = os.environ.get("BRSM_HOME")
    return Path(env).expanduser() if env else Path.home() / ".local" / "state" / "brsm"


def journal_path() -> Path:
    return brsm_home() / "journal.db"


def logs_dir() -> Path:
    return brsm_home() / "logs"
