"""Who holds a cluster lease: the ``holder.json`` record, checked field by field before it is
believed, and the pure judgements on it (stale, too far ahead, what a takeover says)."""
from __future__ import annotations

import math
import os
import re
import shlex
import socket
import time
from dataclasses import asdict, dataclass

from brsm.errors import InvalidLease

ABANDONED_AFTER = 10.0  # seconds a lease dir may show no holder.json before it counts as abandoned
# The longest lease brsm writes (brsm.config MAX_LEASE_TTL), and the clock skew a holder may have on
# top: an expiry further ahead than that was not written by a brsm and would never go stale.
MAX_AHEAD = 86400.0 + 3600.0
_REF = re.compile(r"^(?:[0-9A-Za-z]{1,64}-)?[0-9]{1,18}$")


@dataclass(frozen=True)
class LeaseInfo:
    op_id: int
    kind: str
    who: str
    machine: str
    pid: int
    expires: float
    # <journal id>-<op id> (brsm.engine.step_context.op_ref); "" in a holder.json an older brsm wrote
    ref: str = ""
    # BRSM_HOME of the journal that holds it ("" in a holder.json an older brsm wrote): with ``who``
    # (user@host) it says where `brsm resume N` must run, since operation N of another journal is not it
    home: str = ""

    @property
    def owner(self) -> str:
        """Who holds it, across journals: the ref, or the bare op id an older brsm wrote. Operation 38
        of one journal is never operation 38 of another."""
        return self.ref or str(self.op_id)

    @property
    def journal(self) -> str:
        """Where the holder's journal is: ``user@host:BRSM_HOME`` (``user@host`` from an older brsm)."""
        return f"{self.who}:{self.home}" if self.home else self.who

    def describe(self) -> str:
        try:
            until = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.expires))
        except (OverflowError, ValueError, OSError):  # an expiry no clock reaches (too_far_ahead)
            until = f"{self.expires:.6g}"
        journal = f" of journal {self.ref.rsplit('-', 1)[0]}" if "-" in self.ref else ""
        return (f"operation {self.op_id}{journal} ({self.kind}) by {self.journal}, pid {self.pid} on {self.machine}, "
                f"until {until}")

    def where_to_continue(self) -> str:
        """The hint that sends an operator to the holder's own journal, never to their operation N."""
        at = f" on {self.machine}" + (f" with BRSM_HOME={self.home}" if self.home else " (in that user's BRSM_HOME)")
        return (f"wait for it to finish; if that process died, `brsm resume {self.op_id}` or "
                f"`brsm rollback {self.op_id}`, run{at} (its journal), takes its lease back at once")


@dataclass(frozen=True)
class NoHolder(LeaseInfo):
    """What a lease dir without ``holder.json`` is taken over from (for the caller's journal)."""

    def describe(self) -> str:
        return f"nobody (the lease dir stayed without holder.json for {ABANDONED_AFTER:.0f} s: its run was " \
               "killed between creating it and writing its holder)"


def holder_problem(raw: object) -> str | None:
    """Why a decoded ``holder.json`` is not a lease brsm wrote (None: it is). Every field is checked:
    a pid of 0 or -1 is "alive" to ``kill(pid, 0)``, an expiry of 1e300 never passes, a ref that is not
    a string breaks every comparison. Keys brsm does not know are ignored (a newer brsm's).

    >>> holder_problem({"op_id": 3, "kind": "backup", "who": "a@b", "machine": "b", "pid": 7, "expires": 1.5e9})
    >>> holder_problem({"op_id": 3, "kind": "backup", "who": "a@b", "machine": "b", "pid": 0, "expires": 1.5e9})
    'pid is 0, not a process id'
    >>> holder_problem({"op_id": 3, "kind": "backup", "who": "a@b", "machine": "b", "pid": 7, "expires": "soon"})
    "expires is 'soon', not a time"
    """
    if not isinstance(raw, dict):
        return f"it holds {type(raw).__name__} JSON, not an object"

    def integer(v: object) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    for key in ("op_id", "kind", "who", "machine", "pid", "expires"):
        if key not in raw:
            return f"it has no {key}"
    if not integer(raw["op_id"]) or raw["op_id"] < 1:
        return f"op_id is {raw['op_id']!r:.40}, not an operation id"
    for key in ("kind", "who", "machine"):
        if not isinstance(raw[key], str) or not raw[key] or len(raw[key]) > 256 or _control(raw[key]):
            return f"{key} is {raw[key]!r:.40}, not a name"
    if not integer(raw["pid"]) or not 1 <= raw["pid"] < 2**31:
        return f"pid is {raw['pid']!r:.40}, not a process id"
    e = raw["expires"]
    if not (integer(e) or isinstance(e, float)) or not math.isfinite(e) or e <= 0:
        return f"expires is {e!r:.40}, not a time"
    ref = raw.get("ref", "")
    if not isinstance(ref, str) or (ref and not _REF.match(ref)):
        return f"ref is {ref!r:.40}, not <journal id>-<operation id>"
    home = raw.get("home", "")
    if not isinstance(home, str) or len(home) > 4096 or _control(home):
        return f"home is {home!r:.40}, not a path"
    return None


def _control(text: str) -> bool:
    """Control characters (a terminal escape, a newline) in a name brsm prints: never brsm's own."""
    return any(ord(c) < 32 or ord(c) == 127 for c in text)


def holder_from(raw: object) -> LeaseInfo:
    """The holder a decoded ``holder.json`` names; ``InvalidLease`` when it is not one brsm wrote."""
    why = holder_problem(raw)
    if why is not None:
        raise InvalidLease(f"holder.json {why}")
    assert isinstance(raw, dict)
    known = set(LeaseInfo.__dataclass_fields__)
    info = LeaseInfo(**{k: v for k, v in raw.items() if k in known})
    return LeaseInfo(**{**asdict(info), "expires": float(info.expires)})


def too_far_ahead(info: LeaseInfo, now: float) -> str | None:
    """An expiry no brsm writes (further ahead than the longest lease): never stale, so invalid."""
    if info.expires > now + MAX_AHEAD:
        return (f"expires {info.expires:.6g}, {(info.expires - now) / 86400:.0f} days ahead of the host's clock "
                f"(a brsm lease lives at most {(MAX_AHEAD - 3600) / 3600:.0f} h)")
    return None


def invalid_lease(host: str, path: str, why: str) -> InvalidLease:
    return InvalidLease(
        f"the cluster lease {host}:{path} is invalid: {why}; brsm cannot tell who holds it",
        hint=f"make sure no brsm run is using the cluster, then remove it: `ssh {host} {shlex.join(['rm', '-r', path])}` "
             f"(or `brsm gc --config FILE --confirm`, which removes invalid leases)")


def takeover_note(host: str, holder: LeaseInfo, own_journal: str | None, config: str | None) -> str:
    """What a run says when it takes a dead run's lease over: who it was, what such a run leaves (its
    snapshot on every storaged, a partial backup; a restore: set-aside data), and what removes it.

    >>> h = LeaseInfo(4, "backup", "alice@ops1", "ops1", 77, 0.0, ref="db53aa00ffee-4", home="/srv/brsm")
    >>> takeover_note("m1", h, "db53aa00ffee", "/c.toml")  # doctest: +ELLIPSIS
    'took over the cluster lease on m1 from operation 4 ... its run is gone and may have left its snapshot ... `brsm rollback 4` removes them'
    """
    if isinstance(holder, NoHolder):
        return (f"took over the cluster lease on {host} from {holder.describe()}; it began no snapshot under it")
    left = ("its snapshot on every storaged (BACKUP_…) and a partial backup in its storage" if holder.kind == "backup"
            else "a stopped cluster, set-aside data (nebula_brsm_old_…) and staged downloads"
            if holder.kind == "restore" else "what it was removing, half removed")
    journal = holder.ref.rsplit("-", 1)[0] if "-" in holder.ref else None
    if journal is not None and journal == own_journal:
        todo = f"`brsm rollback {holder.op_id}` removes them"
    else:
        where = f" on {holder.machine} with BRSM_HOME={holder.home}" if holder.home else f" on {holder.machine}"
        gc = f"`brsm gc --config {config}`" if config else "`brsm gc --config FILE`"
        todo = (f"`brsm rollback {holder.op_id}`{where} removes them, or {gc} lists them and --confirm "
                f"removes them")
    return (f"took over the cluster lease on {host} from {holder.describe()}: its run is gone and may have "
            f"left {left}; {todo}")


def _pid_alive(pid: int) -> bool:
    if pid < 1:  # kill(0) and kill(-1) signal groups: never a sign that one process lives
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_stale(info: LeaseInfo, now: float | None = None) -> bool:
    """``now`` in the lease host's clock (``Lease`` passes it); this machine's clock when not given."""
    now = time.time() if now is None else now
    if info.expires > now:
        return False  # an expiry too far ahead (too_far_ahead) is never stale either: it is invalid
    if info.machine == socket.gethostname():
        return not _pid_alive(info.pid)
    return True
