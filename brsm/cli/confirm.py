"""One rule for every command that deletes or takes the cluster down (`start restore`, `cleanup`,
`prune`, `gc`): on a terminal it says what it will do and asks; off a terminal (cron, scripts, a closed
stdin) it needs ``--yes``. ``--confirm`` stays an alias of ``--yes`` for prune and gc, so the scripts and
the nightly recipe written for them still run.

Without a confirmation nothing is done: `start restore` and `cleanup` are refused (exit 2, one line
saying to add ``--yes``); `prune` and `gc` are a dry run, as they always were.

    >>> decide(yes=True, interactive=False)
    'yes'
    >>> decide(yes=False, interactive=False)
    'refuse'
    >>> decide(yes=False, interactive=True)
    'ask'
"""
from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from brsm.errors import UsageError

def decide(*, yes: bool, interactive: bool) -> str:
    """'yes' (go ahead), 'ask' (a person is there: show and ask) or 'refuse' (nobody to ask)."""
    if yes:
        return "yes"
    return "ask" if interactive else "refuse"


def on_terminal(json_: bool = False) -> bool:
    """A person can answer: stdin is a terminal, and the output is not one JSON document for a program."""
    if json_:
        return False
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (AttributeError, ValueError, OSError):  # closed, or replaced by something without a terminal
        return False


def is_yes(answer: str) -> bool:
    """Only an explicit yes: an empty line, EOF or anything else is a no.

    >>> [is_yes(a) for a in ("y", "YES", " yes\\n", "", "n", "yep")]
    [True, True, True, False, False, False]
    """
    return answer.strip().lower() in ("y", "yes")


def ask(lines: Sequence[str], question: str, *, read: Callable[[], str] | None = None) -> bool:
    """Show ``lines`` and ``question [y/N]`` on stderr (stdout may be piped), read one line from stdin."""
    for line in lines:
        sys.stderr.write(line + "\n")
    sys.stderr.write(f"{question} [y/N] ")
    sys.stderr.flush()
    try:
        answer = (read or sys.stdin.readline)()
    except (EOFError, OSError, ValueError):
        answer = ""
    if not answer.endswith("\n"):
        sys.stderr.write("\n")
    return is_yes(answer)


def require(yes: bool, *, json_: bool, command: str, what: str, lines: Sequence[str] = ()) -> None:
    """For `start restore` and `cleanup`: return when confirmed, else UsageError (exit 2), nothing done.

    ``what`` is the effect in a few words ("replaces the cluster's data and stops it"); ``lines`` the
    details shown before the question on a terminal."""
    how = decide(yes=yes, interactive=on_terminal(json_))
    if how == "yes":
        return
    if how == "ask":
        if ask([f"brsm {command} {what}:", *(f"  {l}" for l in lines)], "go ahead?"):
            return
        raise UsageError(f"{command}: not confirmed; nothing was done",
                         hint="answer y to go ahead, or add --yes to run it without asking")
    why = "--json is given" if json_ else "stdin is not a terminal"
    raise UsageError(f"{command} {what}: refusing without --yes, as there is nobody to ask ({why})",
                     hint=f"add --yes to `brsm {command}` in scripts and cron jobs")


def wanted(yes: bool, *, json_: bool, question: str) -> bool:
    """For prune and gc, after their dry run is shown: delete? --yes/--confirm: yes; on a terminal: ask;
    else no (the dry run was the answer)."""
    how = decide(yes=yes, interactive=on_terminal(json_))
    if how == "ask":
        return ask([], question)
    return how == "yes"
