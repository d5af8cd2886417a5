"""Our own exception hierarchy.

Only the CLI catches these, prints ``message`` and ``hint`` on one line each and exits with
``exit_code``; library code raises and never exits. The codes are documented in docs/exit-codes.md.
"""
from __future__ import annotations

from journal.redact import scrub_text


class BrsmError(Exception):
    """``message`` and ``hint`` are scrubbed of credentials when set (a URI the user typed, an SDK's
    error text): an error is printed, logged and journaled, and the journal cannot be edited.

    ``refusal``: the error refuses to begin (a check failed, bad input, the cluster is another run's);
    raised before an operation's first effect, it ends the operation REFUSED (brsm.engine.runner.is_refusal).
    ``op_id``/``state``: the operation it ended and that operation's state, when there is one (set by the
    CLI's driver; JSON errors carry them)."""

    exit_code = 1
    refusal = False
    op_id: int | None = None
    state: str | None = None

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        super().__init__(self.message)
        self.hint = hint

    @property
    def message(self) -> str:
        return self._message

    @message.setter
    def message(self, value: str) -> None:
        self._message = scrub_text(str(value))
        self.args = (self._message,)

    @property
    def hint(self) -> str | None:
        return self._hint

    @hint.setter
    def hint(self, value: str | None) -> None:
        self._hint = None if value is None else scrub_text(str(value))

    def __str__(self) -> str:
        return self.message


class UsageError(BrsmError):
    """Bad flags, a bad config file, an unknown operation id."""

    exit_code = 2
    refusal = True


class LockHeld(BrsmError):
    """Another process drives this operation, or another run holds the cluster lease."""

    exit_code = 3
    refusal = True


class InvalidLease(LockHeld):
    """The cluster's lease names no holder brsm can judge (holder.json not JSON, a field of the wrong type
    or out of range, not a regular file): nobody can say whether its run lives, so it is never taken
    over silently; the hint says how to clear it."""


class LeaseLost(LockHeld):
    """The run's cluster lease was taken over, removed, or could not be refreshed before it would
    expire: the run stopped where it was. Never rolled back by itself, because undoing touches the
    cluster that another run may now hold; ``brsm resume``/``rollback`` take the lease back first."""

    keeps_operation = True
    refusal = False  # the run had the lease and worked under it


class PreflightFailed(BrsmError):
    """A check before any side effect failed: nothing on the cluster was touched."""

    exit_code = 4
    refusal = True


class OperationFailed(BrsmError):
    """A step failed after side effects began; the journal says what to resume or roll back."""

    exit_code = 5


class MetaError(OperationFailed):
    """metad answered with a non-zero code, or could not be reached."""

    def __init__(self, message: str, *, code: int | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.code = code


class RemoteError(OperationFailed):
    """A command or file transfer on a cluster host failed."""

    def __init__(self, message: str, *, host: str | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.host = host


class PathRefused(RemoteError):
    """A path on a host is not what brsm may work in (a symlink or another non-directory where a
    directory brsm made should be): the host answered, and what it said is a refusal, not a failure
    a retry could mend."""


class StorageError(OperationFailed):
    """The backup storage failed. ``permanent`` says whether a retry can help."""

    def __init__(self, message: str, *, permanent: bool = False, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.permanent = permanent
        # the store layer could not retry this one: the bytes must come again from their source (a
        # stream it had consumed, an upload the store dropped); only whoever can reopen that may
        self.resend = False


class ObjectNotFound(StorageError):
    def __init__(self, key: str) -> None:
        super().__init__(f"object not found: {key}", permanent=True)
        self.key = key


class VerificationFailed(BrsmError):
    """A backup or journal failed its check: hashes differ, files missing, chain broken."""

    exit_code = 6
    refusal = True


class Interrupted(BrsmError):
    """A signal (SIGINT, SIGTERM) ended the run; its exit code is 128 + the signal's number."""

    exit_code = 130

    def __init__(self, message: str, *, signal: str | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.signal = signal
        if signal is not None:
            import signal as _signal

            try:
                self.exit_code = 128 + _signal.Signals[signal].value
            except KeyError:  # not a signal name: keep Ctrl-C's code
                pass
