"""Which running daemons a restore started itself.

``nebula.service start`` of a daemon that already runs answers ``already running: <pid>`` (exit 1),
and brsm takes that as started: on a resume the daemon an earlier attempt started answers so. But a
daemon an operator (or a supervisor) started by hand while the cluster was down answers the same,
and brsm then waited for a storaged that never came ONLINE (another cluster's id, data brsm did not
put there) and blamed ADD HOSTS. So every pid a restore sees right after its own start is journaled
(:data:`DAEMON_STARTED`, per host and service), and a daemon found "already running" counts as the
restore's only if its pid is one of those.

A journal from before this (its ``DowntimeBegan`` has no ``tracks_starts``) knows no pid: there a
daemon found running is taken as started, as it always was. So is one whose start an earlier attempt
issued without learning its pid (killed in between), and one brsm never saw down after its own stop
(a stop that failed leaves the cluster's original daemon running: it is no stranger): brsm cannot
tell, and never calls a daemon foreign on a guess.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from brsm.engine.state import ABSENT, Event

DAEMON_STARTED = "RestoreDaemonStarted"  # {host, service, pid}: the pid that runs right after brsm's start
DAEMON_START_ISSUED = "RestoreDaemonStartIssued"  # {host, service}: journaled before `nebula.service start`
DAEMON_STOPPED = "RestoreDaemonStopped"  # {host, service}: brsm saw it down after its own stop
TRACKS_STARTS = "tracks_starts"  # optional key of DowntimeBegan: this operation journals the pids it starts

OURS, FOREIGN, UNKNOWN = "ours", "foreign", "unknown"


def key(host: str, service: str) -> str:
    return f"{service}@{host}"


SERVICE_FOUND_RUNNING = "ServiceFoundRunning"


@dataclass(frozen=True)
class DaemonStarted(Event):
    """The pid that runs right after brsm's start (None: none showed)."""

    TYPE: ClassVar[str] = DAEMON_STARTED
    host: str
    service: str
    pid: int | None = ABSENT
    at: float = ABSENT


@dataclass(frozen=True)
class DaemonStartIssued(Event):
    """Journaled before `nebula.service start`."""

    TYPE: ClassVar[str] = DAEMON_START_ISSUED
    host: str
    service: str


@dataclass(frozen=True)
class DaemonStopped(Event):
    """brsm saw the daemon down after its own stop."""

    TYPE: ClassVar[str] = DAEMON_STOPPED
    host: str
    service: str


@dataclass(frozen=True)
class ServiceFoundRunning(Event):
    """A daemon runs where brsm needs it down (``why``); ``foreign_pid``: a start found someone else's."""

    TYPE: ClassVar[str] = SERVICE_FOUND_RUNNING
    host: str
    service: str
    before: str = ABSENT
    why: str = ABSENT
    foreign_pid: int = ABSENT


class OwnDaemons:
    """Per daemon (``key(host, service)``): the pids seen right after brsm's own starts, the starts
    issued and not yet resolved (``pending``), and whether brsm saw it down after its own stop."""

    def __init__(self) -> None:
        self.by_daemon: dict[str, dict[str, Any]] = {}

    def _rec(self, e: Any) -> dict[str, Any]:
        return self.by_daemon.setdefault(key(e.host, e.service), {"pids": [], "pending": 0})

    def fold(self, e: DaemonStarted | DaemonStartIssued | DaemonStopped | ServiceFoundRunning) -> None:
        if isinstance(e, DaemonStarted):
            rec = self._rec(e)
            if e.pid is not ABSENT and e.pid is not None and int(e.pid) not in rec["pids"]:
                rec["pids"].append(int(e.pid))
            rec["pending"] = 0  # the start issued before it learnt its pid
        elif isinstance(e, DaemonStopped):
            self._rec(e)["down_seen"] = True
        elif isinstance(e, DaemonStartIssued):
            rec = self._rec(e)
            rec["pending"] = rec.get("pending", 0) + 1
        elif e.foreign_pid is not ABSENT and e.foreign_pid is not None:
            # the start this attempt issued found someone else's daemon and started nothing, so it
            # leaves no start of brsm's unresolved
            self._rec(e)["pending"] = 0

    def get(self, host: str, service: str) -> dict[str, Any]:
        return self.by_daemon.get(key(host, service)) or {"pids": [], "pending": 0}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OwnDaemons) and self.by_daemon == other.by_daemon

    def __repr__(self) -> str:
        return f"OwnDaemons({self.by_daemon!r})"


def judge(pid: int | None, daemons: OwnDaemons, tracks_starts: bool, host: str, service: str, *,
          issued_now: bool = True) -> str:
    """Whose is the daemon ``service`` on ``host`` that runs as ``pid`` (what ``start`` answered
    "already running", or what status shows)? ``daemons`` and ``tracks_starts``: the operation's
    folded journal (RestoreState). ``issued_now``: this attempt journaled a start intent for it just
    before asking (it is counted in ``pending`` and must not make the answer "unknown" by itself).

    >>> ds = OwnDaemons(); ds.by_daemon["storaged@h"] = {"pids": [42], "pending": 1, "down_seen": True}
    >>> judge(42, ds, True, "h", "storaged"), judge(7, ds, True, "h", "storaged"), judge(7, OwnDaemons(), False, "h", "storaged")
    ('ours', 'foreign', 'unknown')
    """
    rec = daemons.get(host, service)
    if pid is not None and pid in rec["pids"]:
        return OURS
    if not tracks_starts:
        return UNKNOWN  # a journal from before pids were journaled: as brsm always did
    if not rec.get("down_seen"):
        return UNKNOWN  # brsm never saw it down: it may be the daemon that ran before brsm's stop
    if rec.get("pending", 0) > (1 if issued_now else 0):
        return UNKNOWN  # an earlier attempt issued a start and was cut before it saw the pid
    if pid is None:
        return UNKNOWN
    return FOREIGN


def foreign_message(service: str, host: str, pid: int, install_dir: str, op_id: int, mode: str) -> str:
    """The one line a restore stops with when ``service`` on ``host`` runs as a pid it did not start."""
    what = "rollback" if mode == "rollback" else "restore"
    return (f"{service} on {host} is running as pid {pid}, not started by this {what} (someone started it "
            f"while the cluster was down): stop it (`{install_dir}/scripts/nebula.service stop {service}` on "
            f"{host}), then `brsm resume {op_id}` / `brsm rollback {op_id}`")
