"""`brsm check`: every preflight a backup and a restore make, without changing anything (pgBackRest's
``check``). Each check is independent and reported on its own line, so one unreachable host does not
hide a full disk on another: an operator fixes everything in one round, before 3 a.m.

Nothing on the cluster changes (no lease, no snapshot, no service touched: ``nebula.service status``
only); on the storage, the probe object a backup's preflight writes is written, read back and deleted,
and with S3/OSS every host sends the same signed probe part the direct data path's preflight sends
(its upload aborted at once).
"""
from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from brsm.errors import BrsmError, MetaError
from brsm.ports import HostsPort, MetaPort, Storage
from brsm.workflows import direct, services, topology
from brsm.workflows.common import discover_topology
from brsm.workflows.layout import lease_path
from brsm.errors import InvalidLease
from brsm.workflows.lease import host_clock, lease_exists, read_holder
from brsm.workflows.lease_holder import invalid_lease, is_stale, too_far_ahead

# a data path with less free space than this is reported full (a checkpoint alone needs room)
FULL_BELOW = 1 << 30



@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str
    hint: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"check": self.name, "ok": self.ok, "detail": self.detail, "hint": self.hint}


@dataclass
class CheckPorts:
    meta: MetaPort
    hosts: HostsPort
    install_dir: Callable[[str], str]
    configured_install_dir: Callable[[str], str | None]
    storage: Storage | None = None
    # the config's metad hosts: where the lease is looked for when metad does not answer
    meta_hosts: tuple[str, ...] = ()


def _fail(name: str, e: BaseException) -> CheckResult:
    if isinstance(e, BrsmError):
        return CheckResult(name, False, e.message, e.hint)
    return CheckResult(name, False, f"{type(e).__name__}: {e}")


async def _addresses(p: CheckPorts) -> dict[str, set[str]]:
    """host -> roles, from metad alone (no SSH): what the per-host checks cover even when the full
    topology cannot be read."""
    out: dict[str, set[str]] = {}
    for role in ("META", "STORAGE", "GRAPH"):
        for h in await p.meta.list_hosts(role):
            out.setdefault(h.addr.host, set()).add(role.lower())
    return out


async def _agents(p: CheckPorts, hosts: dict[str, set[str]]) -> CheckResult:
    """nebula-agent on every host, or on none: brsm works either way, but a cluster where some hosts
    run one and others not is half-deployed (nebula-br's listCluster fails on it)."""
    what = "nebula-agent"
    try:
        await p.meta.list_cluster()
        return CheckResult(what, True, "on every host (listCluster answers)")
    except MetaError as e:
        if e.code != topology.E_LIST_CLUSTER_NO_AGENT_FAILURE:
            return _fail(what, e)
    try:
        agents = {a.addr.host for a in await p.meta.list_hosts("AGENT") if a.online}
    except BrsmError as e:
        return _fail(what, e)
    if not agents:
        return CheckResult(what, True, "on no host: brsm reads storaged's flagfiles over SSH instead (nebula-br "
                                       "needs agents)")
    missing = sorted(set(hosts) - agents)
    return CheckResult(what, False, f"missing on {', '.join(missing)} while {len(agents)} host(s) run one: "
                                    "listCluster fails (E_LIST_CLUSTER_NO_AGENT_FAILURE)",
                       "start nebula-agent on those hosts (or on none)")


async def _ssh(p: CheckPorts, host: str) -> CheckResult:
    try:
        await p.hosts.host(host).check_login(timeout=30)
        return CheckResult(f"ssh {host}", True, "login and host key ok")
    except BrsmError as e:
        return _fail(f"ssh {host}", e)


async def _service(p: CheckPorts, svc: dict[str, Any], name: str) -> CheckResult:
    host = svc["host"]
    install = services.script_dir(svc, p.configured_install_dir, p.install_dir)
    what = f"nebula.service {name} on {host}"
    try:
        r = await p.hosts.host(host).service("status", name, install_dir=install)
    except BrsmError as e:
        return _fail(what, e)
    st = services.parse_status(r.stdout).get(name)
    if st is None:
        return CheckResult(what, False, f"`{install}/scripts/nebula.service status {name}` said nothing about it "
                                        f"(exit {r.exit_status})",
                           "set the host's install_dir in the config ([[hosts]] install_dir)")
    if not st.running:
        return CheckResult(what, False, f"{name} is not running", "start it before a backup")
    return CheckResult(what, True, f"running as pid {st.pid or '?'}" + (f", port {st.port}" if st.port else ""))


async def _space(p: CheckPorts, svc: dict[str, Any]) -> list[CheckResult]:
    out = []
    h = p.hosts.host(svc["host"])
    for dp in svc["data_paths"]:
        what = f"data path {svc['host']}:{dp}"
        try:
            if not await h.exists(dp):
                out.append(CheckResult(what, False, "does not exist", "is the host mapping in the config right?"))
                continue
            free = await h.free_bytes(dp)
        except BrsmError as e:
            out.append(_fail(what, e))
            continue
        if free < FULL_BELOW:
            out.append(CheckResult(what, False, f"only {free >> 20} MiB free",
                                   "free space there: a backup's checkpoint and a restore's data need room"))
        else:
            out.append(CheckResult(what, True, f"{free >> 30} GiB free"))
    return out


async def _lease(p: CheckPorts, topo: dict[str, Any]) -> list[CheckResult]:
    return await lease_results(p.hosts, [(m["host"], m["root"]) for m in topo["meta"]])


async def lease_results(hosts: HostsPort, metas: list[tuple[str, str]]) -> list[CheckResult]:
    """The lease at each (metad host, its root): free, held (by whom, and where that run's journal is),
    stale (whose run is gone, and what brings back a cluster its restore stopped) or invalid."""
    out = []
    for host, root in metas:
        h = hosts.host(host)
        path = lease_path(root)
        what = f"lease on {host}"
        try:
            if not await lease_exists(h, path):
                out.append(CheckResult(what, True, "free"))
                continue
            holder = await read_holder(h, path)
            now = await host_clock(h)
        except InvalidLease as e:
            bad = invalid_lease(host, path, e.message)
            out.append(CheckResult(what, False, bad.message, bad.hint))
            continue
        except BrsmError as e:
            out.append(_fail(what, e))
            continue
        far = too_far_ahead(holder, now) if holder is not None else None
        if far is not None:
            bad = invalid_lease(host, path, far)
            out.append(CheckResult(what, False, bad.message, bad.hint))
        elif holder is not None and not is_stale(holder, now):
            out.append(CheckResult(what, False, f"held by {holder.describe()}", holder.where_to_continue()))
        elif holder is not None:
            back = (f"; if that restore stopped the cluster, `brsm rollback {holder.op_id}` in its journal "
                    f"({holder.journal}) brings it back" if holder.kind == "restore" else "")
            out.append(CheckResult(what, True, f"stale: {holder.describe()}, whose run is gone (the next run "
                                               f"takes it over){back}"))
        else:
            out.append(CheckResult(what, True, "a dir without holder (taken over by the next run)"))
    return out


async def run_checks(p: CheckPorts) -> list[CheckResult]:
    results: list[CheckResult] = []
    try:
        hosts = await _addresses(p)
        results.append(CheckResult("metad", True, f"answers; {len(hosts)} host(s) listed"))
    except BrsmError as e:
        # Nothing else can be known without metad but the lease (over SSH, at each configured metad's
        # install dir): a run that stopped the cluster and died still names itself there.
        guess = {"meta": [{"host": h, "root": p.install_dir(h)} for h in p.meta_hosts]}
        return [_fail("metad", e), *await _lease(p, guess)]
    results.extend(await asyncio.gather(*(_ssh(p, h) for h in sorted(hosts))))
    results.append(await _agents(p, hosts))
    try:
        topo = await discover_topology(p.meta, p.hosts, p.install_dir)
    except BrsmError as e:
        results.append(_fail("topology", e))
        return results
    results.append(CheckResult("topology", True, f"from {topo['source']}: {len(topo['meta'])} metad, "
                                                 f"{len(topo['storage'])} storaged, {len(topo['graph'])} graphd"))
    version = topo.get("nebula_version")
    bad = topology.unsupported_version(version)
    results.append(CheckResult("nebula version", bad is None, bad or f"{version or 'unknown'}"))
    checks = []
    for role, name in (("meta", "metad"), ("storage", "storaged"), ("graph", "graphd")):
        checks.extend(_service(p, s, name) for s in topo[role])
    results.extend(await asyncio.gather(*checks))
    for role in ("meta", "storage"):
        for s in topo[role]:
            results.extend(await _space(p, s))
    results.extend(await _lease(p, topo))
    if p.storage is not None:
        results.append(await _probe(p.storage))
        results.extend(await _direct(p, topo))
    return results


async def _direct(p: CheckPorts, topo: dict[str, Any]) -> list[CheckResult]:
    """The direct data path's preflight, host by host (the same signed probe ``--data-path auto``
    sends): a host that cannot go direct does not stop a backup (auto goes through brsm), but it makes
    every run slower and moves the bytes across this machine, so check names it rather than passing."""
    storage = p.storage
    if storage is None or not storage.properties().signs_urls:
        return []
    names = sorted({s["host"] for role in ("storage", "meta") for s in topo[role]})
    still_open: dict[str, bool] = {}

    def note(key: str, gone: bool) -> None:
        if gone:
            still_open.pop(key, None)
        else:
            still_open[key] = True

    whys = await asyncio.gather(*(direct.probe_host(p.hosts.host(n), storage, note) for n in names))
    out = []
    for name, why in zip(names, whys):
        what = f"direct data path {name}"
        if why is None:
            out.append(CheckResult(what, True, "the host sends and fetches its own bytes (signed probe ok)"))
        else:
            out.append(CheckResult(what, False, why, "backups and restores still run, through brsm (the bytes cross "
                                                     "this machine); fix this host for the direct path, or pass "
                                                     "--data-path via-brsm to runs to choose that"))
    if still_open:
        out.append(CheckResult(f"storage {storage.uri}", False,
                               f"the store would not abort the probe upload(s) {', '.join(sorted(still_open))}",
                               "abort those multipart uploads in the store's console (brsm must be able to abort "
                               "uploads: rollback and cleanup do)"))
    return out


async def _probe(storage: Storage) -> CheckResult:
    """Write, read back and delete one small object, as a backup's preflight does (this one is not
    journaled: check runs no operation; its key is unique and it is deleted at once)."""
    what = f"storage {storage.uri}"
    key = f".brsm-check-{uuid.uuid4().hex}"
    try:
        await storage.put_bytes(key, b"brsm check")
    except BrsmError as e:
        return _fail(what, e)
    try:
        same = await storage.get_bytes(key) == b"brsm check"
    except BrsmError as e:
        same = None
        failure: CheckResult | None = _fail(what, e)
    else:
        failure = None
    try:
        await storage.delete(key)
    except BrsmError as e:
        return CheckResult(what, False, f"took a write but refused to delete it ({key}): {e.message}",
                           "brsm must be able to delete (rollback, cleanup, prune); remove that object by hand")
    if failure is not None:
        return failure
    if not same:
        return CheckResult(what, False, "a probe object read back different bytes")
    return CheckResult(what, True, "write, read back and delete ok")
