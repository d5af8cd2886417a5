"""Where brsm keeps its own state: ``$BRSM_HOME`` (default ``~/.local/state/brsm``), mode 0700.

    journal_path()  ->  Path('/home/u/.local/state/brsm/journal.db')   (the directory made 0700 if missing)
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

from brsm.errors import UsageError


def brsm_home() -> Path:
    env = os.environ.get("BRSM_HOME")
    return Path(env).expanduser() if env else Path.home() / ".local" / "state" / "brsm"


def _unusable(home: Path, why: str) -> UsageError:
    where = "BRSM_HOME" if os.environ.get("BRSM_HOME") else "brsm's home"
    return UsageError(f"{where} {home} {why}",
                      hint="point BRSM_HOME at a directory of yours (brsm creates it, mode 0700), "
                           "or unset it for ~/.local/state/brsm")


def ensure_home() -> Path:
    """The home directory, created 0700 (the parents it needs with the usual mode) when missing.

    A home that exists but is not a directory (a file, a FIFO, a dangling symlink) or cannot be
    written is a configuration error: one line, exit 2, never a traceback."""
    home = brsm_home()
    try:
        st = home.stat()
    except FileNotFoundError:
        if home.is_symlink():
            raise _unusable(home, "is a symlink to nothing") from None
        try:
            home.parent.mkdir(parents=True, exist_ok=True)
            home.mkdir(mode=0o700)
            os.chmod(home, 0o700)  # mkdir's mode is filtered by the umask
        except FileExistsError:
            pass  # another brsm made it at the same moment
        except OSError as e:
            raise _unusable(home, f"cannot be created: {e.strerror or e}") from e
        return home
    except NotADirectoryError:
        raise _unusable(home, "is inside something that is not a directory") from None
    except OSError as e:
        raise _unusable(home, f"cannot be read: {e.strerror or e}") from e
    if not stat.S_ISDIR(st.st_mode):
        raise _unusable(home, "is not a directory")
    if not os.access(home, os.W_OK | os.X_OK):
        raise _unusable(home, "is not writable by this user")
    return home


def journal_path() -> Path:
    return ensure_home() / "journal.db"


def logs_dir() -> Path:
    return brsm_home() / "logs"
