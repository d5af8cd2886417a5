"""Before a command touches a cluster: the unfinished operations of this journal on that cluster, first.

A restore killed in SET_ASIDE leaves the cluster down, and every later command only says that metad
cannot be reached; an operator may then start metad by hand on an emptied data dir. So every command
that touches a cluster (start, resume, rollback, check, gc, cleanup) first says which operation of
this journal is unfinished there and what brings the cluster back, before anything else can fail:

    operation 7 (restore) unfinished at SET_ASIDE since 2026-12-07T03:12:09Z: the cluster is down;
    `brsm rollback 7` brings it back

Operations refused or failed before their first step hold nothing and are not named. The cluster lease
(whichever journal holds it) is named by the lock message and by `brsm check`.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

from brsm.engine import events as ev
from brsm.engine.definitions import KINDS
from brsm.engine.fold import PHASE_FAILED, PHASE_ROLLING_BACK, OperationState, fold

# a restore's steps between which its cluster is down (stopped, not yet started again)
_DOWN_FROM, _DOWN_UNTIL = "STOPPED", "STARTED"


def cluster_down(kind: str, st: OperationState) -> bool:
    """A restore that stopped the cluster and has neither started it again nor been rolled back.

    >>> from brsm.engine.fold import new_state
    >>> st = new_state("restore"); st.started = ["CHECKED", "STAGED", "STOPPED", "SET_ASIDE"]
    >>> st.completed = ["CHECKED", "STAGED", "STOPPED"]
    >>> cluster_down("restore", st), cluster_down("backup", st)
    (True, False)
    """
    if kind != "restore" or st.finished or _DOWN_FROM not in st.started:
        return False
    if _DOWN_UNTIL in st.completed:
        return False
    return not (st.phase == PHASE_ROLLING_BACK and _DOWN_FROM in st.undone)


def unfinished_line(op_id: int, kind: str, st: OperationState, since: str) -> str | None:
    """The one line naming an unfinished operation and what to do; None when it holds nothing.

    >>> from brsm.engine.fold import new_state
    >>> st = new_state("restore"); st.started = ["CHECKED", "STAGED", "STOPPED", "SET_ASIDE"]
    >>> st.completed = ["CHECKED", "STAGED", "STOPPED"]; st.pending = "SET_ASIDE"
    >>> unfinished_line(7, "restore", st, "T")
    'operation 7 (restore) unfinished at SET_ASIDE since T: the cluster is down; `brsm rollback 7` brings it back'
    """
    from brsm.cli.hints import allowed

    if st.finished or (st.phase == PHASE_FAILED and not st.started):
        return None
    at = st.pending or (st.failure or {}).get("step") or st.last_completed
    can = allowed(st)
    head = f"operation {op_id} ({kind}) " + (
        f"rolled back only in part (stopped at {st.undo_pending or (st.to_undo or [at])[0]})"
        if st.phase == PHASE_ROLLING_BACK else f"unfinished at {at}") + f" since {since}"
    if cluster_down(kind, st):
        if "rollback" in can:
            return f"{head}: the cluster is down; `brsm rollback {op_id}` brings it back"
        return f"{head}: the cluster is down; `brsm resume {op_id}` finishes the restore and starts it"
    holds = "it may hold the cluster lease" + (" and a snapshot" if kind == "backup" else "")
    todo = " or ".join(f"`brsm {c} {op_id}`" for c in ("resume", "rollback") if c in can)
    return f"{head}: {holds}; {todo}" if todo else f"{head}: {holds}"


def _same_cluster(loader: Callable[[str], Any]) -> Callable[[str | None, str | None], bool]:
    """Two config paths name the same cluster: the same file, or configs with a common metad address."""
    cache: dict[str, Any] = {}

    def metas(path: str) -> frozenset[str]:
        if path not in cache:
            try:
                cache[path] = frozenset(str(m) for m in loader(path).meta)
            except Exception:  # noqa: BLE001 - a config gone or broken: judged by its path alone
                cache[path] = frozenset()
        return cache[path]

    def same(a: str | None, b: str | None) -> bool:
        if not a or not b:
            return False
        if os.path.abspath(a) == os.path.abspath(b):
            return True
        return bool(metas(a) & metas(b))

    return same


def unfinished_on(journal: Any, config: str | None, *, exclude: int | None = None,
                  loader: Callable[[str], Any] | None = None) -> list[str]:
    """The lines for this journal's unfinished operations on the cluster of ``config``, oldest first."""
    if not config:
        return []
    if loader is None:
        from brsm.config import load_config

        loader = load_config
    same = _same_cluster(loader)
    lines = []
    for op in journal.operations():
        if op.id == exclude or op.kind not in KINDS:
            continue
        params = op.params if isinstance(op.params, dict) else {}
        if not same(params.get("config"), config):
            continue
        try:
            evs = list(journal.events(op.id, types=sorted(ev.ENGINE_EVENTS)))
            st = fold(KINDS[op.kind], evs)
        except Exception:  # noqa: BLE001 - edited events: `brsm ops` and `journal verify` name them
            continue
        line = unfinished_line(op.id, op.kind, st, evs[-1].time if evs else op.created)
        if line:
            lines.append((op.id, line))
    return [line for _, line in sorted(lines)]


def warn_unfinished(config: str | None, *, exclude: int | None = None, journal: Any = None) -> list[str]:
    """Print the lines on stderr (stdout stays one JSON document under --json); never fails the command."""
    try:
        if journal is None:
            from brsm.cli.journal_commands import open_journal

            j = open_journal(only_if_there=True)
            if j is None:
                return []
            try:
                lines = unfinished_on(j, config, exclude=exclude)
            finally:
                j.close()
        else:
            lines = unfinished_on(journal, config, exclude=exclude)
    except Exception as e:  # noqa: BLE001 - a warning must never replace the command's own outcome
        sys.stderr.write(f"brsm: warning: could not look for unfinished operations: {type(e).__name__}: {e}\n")
        return []
    for line in lines:
        sys.stderr.write(f"brsm: {line}\n")
    sys.stderr.flush()
    return lines
