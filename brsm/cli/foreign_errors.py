"""What the CLI does with an error that is not a BrsmError: click's own (bad arguments, --help's
exit), the sandbox's, the journal's, and anything unexpected, each with its exit code and hint."""
from __future__ import annotations

import sys
import traceback

import click

from brsm.errors import LockHeld, UsageError, VerificationFailed


def _click_families() -> tuple[tuple, tuple, tuple]:
    """Typer 0.29 parses with its own copy of click (``typer._click``), whose exceptions are not
    click's: a bad argument would otherwise end as an 'unexpected error' with a traceback."""
    mods = [click.exceptions]
    try:
        from typer._click import exceptions
        mods.append(exceptions)
    except ImportError:
        pass
    def family(name: str) -> tuple:
        return tuple(getattr(m, name) for m in mods if hasattr(m, name))
    return family("Exit"), family("ClickException"), family("Abort")


CLICK_EXIT, CLICK_ERROR, CLICK_ABORT = _click_families()


def print_trace() -> None:
    """The traceback of the exception being handled, credentials scrubbed (an SDK's message may hold one)."""
    from journal.redact import scrub_text

    sys.stderr.write(scrub_text(traceback.format_exc()))


def is_sandbox_failure(e: Exception) -> bool:
    errors = sys.modules.get("brsm.sandbox.errors")
    return errors is not None and isinstance(e, errors.SandboxFailure)


def map_foreign(e: Exception) -> tuple[int, str, str | None]:
    import journal  # here, not at the top: `brsm --help` opens no journal

    if isinstance(e, journal.JournalError):
        if isinstance(e, journal.JournalLocked):
            return LockHeld.exit_code, str(e), "wait for it to finish, or stop that process first"
        if isinstance(e, journal.UnknownOperation):
            return UsageError.exit_code, str(e), "see `brsm ops` for operation ids"
        if isinstance(e, journal.JournalCorrupt):
            from brsm.home import brsm_home

            p = brsm_home() / "journal.db"
            return (VerificationFailed.exit_code, f"the journal is damaged: {e}",
                    f"keep a copy for investigation, then move {p} and its -wal/-shm files aside: brsm starts "
                    "a new journal; `brsm gc` finds what unfinished operations left on the cluster and storage")
        return 1, f"journal: {e}", None
    return 1, f"unexpected error: {type(e).__name__}: {e}", "please report this with the output of --debug"
