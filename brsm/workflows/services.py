"""Service control on the cluster's hosts, through Nebula's own ``<install>/scripts/nebula.service``.

How that script behaves (vesoft-inc/nebula ``scripts/nebula.service`` and ``scripts/utils.sh``), and
so what brsm must not assume:

- ``status`` **always exits 0**. Only its text says whether a daemon runs:
  ``[INFO] nebula-storaged(<git sha>): Running as 4242, Listening on 9779`` or ``…: Exited``.
- ``start`` of a daemon that already runs prints ``[ERROR] nebula-storaged already running: 4242``
  and **exits 1** (with ``all`` it exits at the first such daemon). Otherwise it returns as soon as
  the daemon forked, long before it listens: a storaged listens only once metad accepted its
  heartbeat (it is registered, ``ADD HOSTS``, and its ``cluster.id`` matches).
- ``stop`` sends SIGTERM and **returns at once**; the process exits (and its port closes) later.

So brsm reads the status text, never its exit code; takes "already running" on start as started
(unless the caller's :class:`StartWatch` knows the pid is not one it started: then it stops there);
after ``stop`` waits until the process is gone **and** its port is closed; after ``start`` until it
runs **and** its port is open. Every host at once, each wait bounded, and a failure names every host
that did not get there and why.

The parsing (``parse_status``, ``already_running``) is pure; ``start``/``stop`` drive it over
``HostsPort``, whose ``check_daemons`` asks a host for each daemon's status, its port, and who uses
the data dirs in one round trip.
"""
from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from brsm.errors import BrsmError, OperationFailed
from brsm.ports import DaemonProbe, HostsPort, RunResult

DEFAULT_TIMEOUT = 90.0
# A storaged opens its ports only once it has loaded every part (StorageServer::start), which on a
# large data set takes minutes: the wait for one that runs and loads is scaled to its data, from at
# least START_FLOOR seconds (brsm once waited a fixed DEFAULT_TIMEOUT and rolled back a good restore).
START_FLOOR = 300.0
START_SECONDS_PER_GIB = 2.0
FIRST_POLL = 0.05   # the first re-check after start/stop comes quickly …
MAX_POLL = 0.5      # … then backs off to twice a second (each poll is one exec; this wait is downtime)
EXITED_GRACE = 5.0  # a daemon seen "Exited" this long after a start that said nothing failing has died
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]|[\x01\x02]")
_STATUS = re.compile(r"nebula-(?P<svc>[A-Za-z_-]+)\((?P<version>[^)]*)\):\s*"
                     r"(?:Running as (?P<pid>\d*), Listening on (?P<port>\d+)|(?P<exited>Exited))")
_ALREADY = re.compile(r"nebula-(?P<svc>[A-Za-z_-]+) already running: (?P<pid>\d+)")


@dataclass(frozen=True)
class ServiceStatus:
    """One daemon as ``nebula.service status`` reports it."""

    service: str
    running: bool
    pid: int | None = None
    port: int | None = None  # the port of its config file, printed whether or not it listens
    version: str = ""


@dataclass(frozen=True)
class ServiceTarget:
    """Where one daemon runs: the host (its service address, as HostsPort names hosts), the install
    dir holding ``scripts/nebula.service``, and the port the daemon serves on (from the topology)."""

    host: str
    install_dir: str
    port: int


def strip_colors(text: str) -> str:
    """The script colours its words when it runs on a terminal; the text without those codes."""
    return _ANSI.sub("", text)


def parse_status(text: str) -> dict[str, ServiceStatus]:
    """``nebula.service status`` output → ``{service: ServiceStatus}``; lines it does not know (WARN
    lines, the environment checks) are skipped.

    >>> parse_status("[INFO] nebula-storaged(5d43e44): Running as 4242, Listening on 9779\\n"
    ...              "[INFO] nebula-graphd(5d43e44): Exited\\n")["storaged"]
    ServiceStatus(service='storaged', running=True, pid=4242, port=9779, version='5d43e44')
    """
    out: dict[str, ServiceStatus] = {}
    for line in strip_colors(text).splitlines():
        m = _STATUS.search(line)
        if not m:
            continue
        svc = m["svc"]
        if m["exited"]:
            out[svc] = ServiceStatus(svc, False, version=m["version"])
        else:
            # "Running as , Listening on N": the pid file went between the script's check and its
            # `cat` of it (a daemon exiting right then, as the status poll after a stop meets it):
            # running, pid unknown; the next poll tells
            out[svc] = ServiceStatus(svc, True, int(m["pid"]) if m["pid"] else None, int(m["port"]), m["version"])
    return out


def already_running(text: str, svc: str) -> int | None:
    """The pid in ``[ERROR] nebula-<svc> already running: <pid>`` (what ``start`` prints, exit 1,
    for a daemon that runs), or None.

    >>> already_running("[ERROR] nebula-metad already running: 77\\n", "metad")
    77
    """
    for m in _ALREADY.finditer(strip_colors(text)):
        if m["svc"] == svc:
            return int(m["pid"])
    return None


def script_dir(svc: dict[str, Any], configured: Callable[[str], str | None] | None,
               default: Callable[[str], str]) -> str:
    """Where nebula.service is for a topology service: the config's install_dir for its host, else (no
    config line for the host) the daemon's root as metad reports it (nebula.service starts a daemon in
    its install dir), else the default. ``configured`` None: the config's answer (default included)."""
    if configured is None:
        return default(svc["host"])
    return configured(svc["host"]) or svc.get("root") or default(svc["host"])


def _tail(r: RunResult, lines: int = 6) -> str:
    text = strip_colors((r.stderr or "") + (r.stdout or "")).strip()
    return " | ".join(text.splitlines()[-lines:])


class _Stuck(Exception):
    """One host did not get where it should; the message names why (collected per host). ``loading``:
    the daemon runs (its pid alive) and has not opened its port yet: it may still be loading."""

    def __init__(self, message: str, *, loading: bool = False, exited: bool = False) -> None:
        super().__init__(message)
        self.loading = loading
        self.exited = exited


class _Foreign(_Stuck):
    """The daemon a start found "already running" is not one this operation started."""


@dataclass(frozen=True)
class StartWatch:
    """What the caller of :func:`start` knows about the daemons it started (a restore journals them):
    ``issued(targets)`` once, right before ``nebula.service start`` on each of them; ``started(target, pid)`` once the pid that
    runs after brsm's own start is known (None: the start failed, nothing of brsm's runs);
    ``foreign(target, pid)`` for a daemon found "already running": a one-line refusal if that pid is
    not the caller's, else None (then it counts as started, and ``started`` is called with it)."""

    issued: Callable[[Sequence[ServiceTarget]], None]
    started: Callable[[ServiceTarget, int | None], None]
    foreign: Callable[[ServiceTarget, int], str | None]


class ForeignDaemon(OperationFailed):
    """A start found the daemon running as a pid the operation did not start (someone started it behind
    brsm's back): brsm stops there, starts nothing on top of it and undoes nothing by itself (an
    automatic rollback would stop that daemon and rename data under whoever started it)."""

    keeps_operation = True

    def __init__(self, message: str, *, hint: str | None = None, found: Sequence[tuple[str, int]] = ()) -> None:
        super().__init__(message, hint=hint)
        self.found = list(found)


class NotListeningYet(OperationFailed):
    """Every daemon that did not start in time runs and has not opened its port yet (``hosts``): it may
    be loading its data still, which is no reason to undo anything."""

    def __init__(self, message: str, *, hint: str | None = None, hosts: Sequence[str] = ()) -> None:
        super().__init__(message, hint=hint)
        self.hosts = list(hosts)


def start_timeout(data_bytes: int, hosts: int) -> float:
    """How long a start may take when no --service-timeout was given: :data:`START_FLOOR`, or
    :data:`START_SECONDS_PER_GIB` per GiB of one host's share of ``data_bytes`` if that is longer.

    >>> start_timeout(0, 3), start_timeout(3 << 40, 3)
    (300.0, 2138.0)
    """
    per_host = data_bytes / max(1, hosts)
    return max(START_FLOOR, DEFAULT_TIMEOUT + START_SECONDS_PER_GIB * per_host / (1 << 30))


async def _probe(hosts: HostsPort, t: ServiceTarget, svc: str) -> tuple[ServiceStatus, bool]:
    """``svc`` on ``t`` as ``nebula.service status`` reports it, and whether its port accepts
    connections: one exec."""
    checks, _users = await check_host(hosts, t.host, [(svc, t)], [])
    st, port_open = checks.get(svc, (None, False))
    if st is None:
        raise _Stuck(f"`nebula.service status {svc}` said nothing about {svc} (is {t.install_dir}/scripts/"
                     "nebula.service there?)")
    return st, port_open


class _Clock:
    """A bounded wait: over after ``timeout`` seconds of wall time, or of requested sleeps (so a
    test that makes sleeps instant still ends)."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.t0 = time.monotonic()
        self.slept = 0.0
        self.interval = FIRST_POLL

    def elapsed(self) -> float:
        return max(time.monotonic() - self.t0, self.slept)

    def over(self) -> bool:
        return self.elapsed() >= self.timeout

    async def sleep(self) -> None:
        await asyncio.sleep(self.interval)
        self.slept += self.interval
        self.interval = min(MAX_POLL, self.interval * 2)


async def _stop_one(hosts: HostsPort, svc: str, t: ServiceTarget, timeout: float, action: str,
                    on_down: Callable[[ServiceTarget], None] | None = None) -> None:
    r = await hosts.host(t.host).service(action, svc, install_dir=t.install_dir)
    if r.exit_status != 0:
        raise _Stuck(f"`nebula.service {action} {svc}` exited with status {r.exit_status}: {_tail(r)}")
    clock = _Clock(timeout)
    while True:
        st, port_open = await _probe(hosts, t, svc)
        if not st.running:
            if not port_open:
                if on_down is not None:
                    on_down(t)
                return
            why = f"the process is gone but port {t.port} still accepts connections"
        else:
            why = f"still running as pid {st.pid or '?'}"
        if clock.over():
            raise _Stuck(f"{svc} did not stop within {timeout:.0f} s: {why}")
        await clock.sleep()


async def _start_one(hosts: HostsPort, svc: str, t: ServiceTarget, timeout: float,
                     watch: StartWatch | None = None) -> None:
    r = await hosts.host(t.host).service("start", svc, install_dir=t.install_dir)
    found = already_running(r.stdout + r.stderr, svc)
    if r.exit_status != 0 and found is None:
        if watch is not None:
            watch.started(t, None)
        raise _Stuck(f"`nebula.service start {svc}` exited with status {r.exit_status}: {_tail(r)}")
    known = False  # the pid that runs is journaled (or not to be)
    if found is not None and watch is not None:
        refusal = watch.foreign(t, found)
        if refusal is not None:
            raise _Foreign(refusal)
        watch.started(t, found)
        known = True
    clock = _Clock(timeout)
    seen_running = False
    while True:
        st, port_open = await _probe(hosts, t, svc)
        if st.running:
            seen_running = True
            if watch is not None and not known and st.pid is not None:
                watch.started(t, st.pid)
                known = True
            if port_open:
                return
            why = f"running as pid {st.pid or '?'} but not listening on port {t.port}"
        else:
            if seen_running or clock.elapsed() >= EXITED_GRACE:
                if watch is not None and not known:
                    watch.started(t, None)
                raise _Stuck(f"{svc} exited after it was started (see its log under {t.install_dir}/logs)",
                             exited=True)
            why = "not running"
        if clock.over():
            raise _Stuck(f"{svc} did not come up within {timeout:.0f} s: {why}", loading=st.running)
        await clock.sleep()


def _hint(svc: str, action: str, hosts: list[str], *, all_exited: bool = False) -> str:
    where = ", ".join(hosts)
    if action == "start" and all_exited:
        # it died: its log says why; ADD HOSTS and cluster.id keep a storaged running, never kill it
        return f"{svc} exited after brsm started it: its log under <install>/logs on {where} says why"
    if action == "start" and svc == "storaged":
        return (f"a storaged listens only once metad accepts its heartbeat: its host must be registered "
                f"(ADD HOSTS) and <install>/cluster.id must hold this cluster's id (metad's log says "
                f"E_MACHINE_NOT_FOUND or E_WRONGCLUSTER); look at the storaged log on {where}")
    if action == "start":
        return f"look at the {svc} log under <install>/logs on {where}"
    return (f"stop it by hand on {where} (`nebula.service stop {svc}`, or `kill` if it hangs) and check "
            f"that nothing else holds its port")


async def _each(hosts: HostsPort, svc: str, action: str, targets: Sequence[ServiceTarget], work) -> None:
    results = await asyncio.gather(*(work(t) for t in targets), return_exceptions=True)
    stuck: list[tuple[str, str]] = []
    for t, res in zip(targets, results):
        if isinstance(res, _Stuck):
            stuck.append((t.host, str(res)))
        elif isinstance(res, BrsmError):
            stuck.append((t.host, res.message[len(t.host) + 2:] if res.message.startswith(f"{t.host}: ")
                          else res.message))
        elif isinstance(res, BaseException):
            raise res
    foreign = [(t.host, str(res)) for t, res in zip(targets, results) if isinstance(res, _Foreign)]
    if foreign:
        pids = [(h, int(m[1])) for h, why in foreign if (m := re.search(r"running as pid (\d+)", why))]
        raise ForeignDaemon("; ".join(why for _, why in foreign), found=pids,
                            hint="brsm starts nothing on top of a daemon it did not start, and undoes nothing by itself")
    if stuck:
        names = [h for h, _ in stuck]
        loading = {t.host for t, res in zip(targets, results) if isinstance(res, _Stuck) and res.loading}
        if action == "start" and set(names) <= loading:
            raise NotListeningYet(f"{svc} did not {action} on {len(stuck)} of {len(targets)} host(s): "
                                  + "; ".join(f"{h}: {why}" for h, why in stuck), hint=_hint(svc, action, names),
                                  hosts=names)
        exited = {t.host for t, res in zip(targets, results) if isinstance(res, _Stuck) and res.exited}
        raise OperationFailed(f"{svc} did not {action} on {len(stuck)} of {len(targets)} host(s): "
                              + "; ".join(f"{h}: {why}" for h, why in stuck),
                              hint=_hint(svc, action, names, all_exited=set(names) <= exited))


async def stop(hosts: HostsPort, svc: str, targets: Sequence[ServiceTarget], *,
               timeout: float = DEFAULT_TIMEOUT, kill: bool = False,
               on_down: Callable[[ServiceTarget], None] | None = None) -> None:
    """``nebula.service stop <svc>`` on every target at once, then wait (at most ``timeout``) until each
    daemon is gone and its port closed. ``kill`` sends SIGKILL (``nebula.service kill``) instead.
    ``on_down(target)`` once each is seen down."""
    action = "kill" if kill else "stop"
    await _each(hosts, svc, "stop", targets, lambda t: _stop_one(hosts, svc, t, timeout, action, on_down))


async def start(hosts: HostsPort, svc: str, targets: Sequence[ServiceTarget], *,
                timeout: float = DEFAULT_TIMEOUT, watch: StartWatch | None = None) -> None:
    """``nebula.service start <svc>`` on every target at once ("already running" counts as started,
    unless ``watch`` says that pid is not the caller's: :class:`ForeignDaemon`), then wait (at most
    ``timeout``) until each daemon runs and its port accepts connections."""
    if watch is not None:
        watch.issued(list(targets))
    await _each(hosts, svc, "start", targets, lambda t: _start_one(hosts, svc, t, timeout, watch))


# -- still down? (a daemon started behind brsm's back during a restore) -------------------------------
async def check_host(hosts: HostsPort, host: str, checks: Sequence[tuple[str, ServiceTarget]],
                     dirs: Sequence[str]) -> tuple[dict[str, tuple[ServiceStatus | None, bool]], list[int]]:
    """``({svc: (its status, or None when the host said nothing of it; whether its port is open)},
    pids of the processes using ``dirs``)``, in one round trip."""
    probes = [DaemonProbe(svc, t.install_dir, t.host, int(t.port)) for svc, t in checks]
    seen = await hosts.host(host).check_daemons(probes, dirs, timeout=60)
    out = {svc: (parse_status(d.status_text).get(svc), d.port_open) for svc, d in seen.daemons.items()}
    return out, list(seen.dir_users)


async def find_not_down(hosts: HostsPort, checks: Sequence[tuple[str, ServiceTarget]],
                        dirs_by_host: dict[str, Sequence[str]]) -> tuple[list[tuple[str, str, str]], list[tuple[str, str]]]:
    """Every (svc, target) and every host's data dirs, one exec per host, every host at once:
    ``([(host, svc, why)] for each daemon not down — its status names a pid, or its port accepts
    connections — , [(host, why)] for each host where a process uses its data dirs)``."""
    by_host: dict[str, list[tuple[str, ServiceTarget]]] = {}
    for svc, t in checks:
        by_host.setdefault(t.host, []).append((svc, t))
    hosts_all = sorted(set(by_host) | set(dirs_by_host))

    async def one(host: str) -> tuple[list[tuple[str, str, str]], list[tuple[str, str]]]:
        mine, dirs = by_host.get(host, []), list(dirs_by_host.get(host, ()))
        got, pids = await check_host(hosts, host, mine, dirs)
        running = []
        for svc, t in mine:
            st, port_open = got.get(svc, (None, False))
            if st is None:
                running.append((host, svc, f"`nebula.service status {svc}` said nothing about {svc}"))
            elif st.running:
                running.append((host, svc, f"{svc} is running as pid {st.pid or '?'}"))
            elif port_open:
                running.append((host, svc, f"port {t.port} ({svc}'s) accepts connections"))
        users = [(host, f"process(es) {', '.join(map(str, pids))} use {', '.join(dirs)}")] if pids else []
        return running, users

    results = await asyncio.gather(*(one(h) for h in hosts_all))
    return [r for rs, _ in results for r in rs], [u for _, us in results for u in us]
