"""The sandbox's own failures. The sandbox is the oracle brsm is judged against, so it shares no code
with brsm, its errors included: ``brsm.cli.app`` prints these as it prints brsm's own (one line, a
hint, the exit code), recognising them by class."""
from __future__ import annotations


class SandboxFailure(Exception):
    """Something the sandbox could not do; ``hint`` says what to try."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class SandboxUsageError(SandboxFailure):
    """A bad flag or a sandbox that is not there."""

    exit_code = 2
