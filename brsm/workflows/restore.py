"""Restore: PLANNED → CHECKED → STOPPED → SET_ASIDE → DOWNLOADED → META_RESTORED → STARTED → CLEANED.

The rule that shapes every step: nothing of the cluster's original data is deleted before the
restored cluster has started and answered. Existing data is renamed aside (same filesystem, no
copy, no extra space), and only CLEANED removes it. Rollback renames it back.
"""
from __future__ import annotations

import asyncio
import hashlib
import posixpath
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from brsm import failpoints
from brsm.engine.definitions import RESTORE
from brsm.engine.runner import StepContext, Workflow
from brsm.errors import BrsmError, ObjectNotFound, OperationFailed, PreflightFailed, VerificationFailed
from brsm.ports import HostAddr, HostsPort, MetaPort, Progress, Storage
from brsm.workflows import common, topology
from brsm.workflows import catalog, services
from brsm.workflows.layout import MANIFEST, in_progress_key, manifest_key, meta_file_key
from brsm.workflows.limits import TokenBucket, parse_rate
from brsm.workflows.transfer import EventBatcher, Limits, download_file, run_bounded
from brsm.workflows.verify import rehash

FILE_RESTORED = "FileRestored"
SPACES_DROPPED = "SpacesDropped"
WAIT_SECONDS = services.DEFAULT_TIMEOUT  # per service start/stop (--service-timeout)
CLEAN_AT_ONCE = 32  # set-aside data dirs removed at once by CLEANED
TAMPERED = "the backup was damaged or tampered with; restore another backup (see `brsm show`)"


@dataclass
class RestorePorts:
    meta: MetaPort
    hosts: HostsPort
    storage: Storage
    progress: Progress
    install_dir: Callable[[str], str]
    # `<NAME>.meta` bytes → CreatedBackup: restores nebula-br backups, which have no manifest.
    decode_meta: Callable[[bytes], Any] | None = None
    lease_ttl: float | None = None  # as BackupPorts.lease_ttl
    # the install dir the config names for a host, None when it names none (flags only, or a host not
    # listed): then the daemon's own root (its working dir: nebula.service starts it in the install dir)
    configured_install_dir: Callable[[str], str | None] | None = None


def _reduce_restored(acc: dict[str, Any], d: dict[str, Any]) -> None:
    acc.setdefault("restored", {})[d["dest"]] = d


REDUCERS = {
    common.PREFLIGHT_PASSED: common.reduce_preflight,
    FILE_RESTORED: _reduce_restored,
}


def _p(ctx: StepContext) -> RestorePorts:
    return ctx.ports


def aside_name(ctx: StepContext) -> str:
    return f"nebula_brsm_old_{ctx.ref}"


def meta_restore_dir(ctx: StepContext, meta_data_path: str) -> str:
    return posixpath.join(meta_data_path, f"brsm_restore_{ctx.ref}")


async def _read_checked(ctx: StepContext, key: str, what: str, limit: int) -> bytes:
    """A manifest or ``.meta``: refused unread when its size is absurd (a hostile or garbage file)."""
    st = _p(ctx).storage
    big = catalog.too_big(what, (await st.stat(key)).size, limit)
    if big:
        raise VerificationFailed(f"backup {ctx.params['name']}: {big}", hint=TAMPERED)
    return await st.get_bytes(key)


async def _manifest(ctx: StepContext) -> dict[str, Any]:
    cached = ctx.runtime.get("manifest")
    if cached is None:
        name = ctx.params["name"]
        try:
            raw = await _read_checked(ctx, manifest_key(name), MANIFEST, catalog.MAX_MANIFEST_BYTES)
        except ObjectNotFound as e:
            cached = await _nebula_br_manifest(ctx, name)
            if cached is None:
                raise PreflightFailed(
                    f"backup {name} has no {MANIFEST} (nor a nebula-br {name}.meta) in {_p(ctx).storage.uri}: "
                    "it is incomplete", hint="see `brsm show --storage URI` for complete backups") from e
        else:
            try:
                cached = catalog.parse_manifest(raw, name)
            except ValueError as e:
                raise VerificationFailed(f"backup {name}: {e}", hint=TAMPERED) from e
            await _check_meta(ctx, cached)
        ctx.runtime["manifest"] = cached
    return cached


async def _check_meta(ctx: StepContext, m: dict[str, Any]) -> None:
    """brsm restores from the manifest, but a backup whose ``.meta`` is gone, unreadable or changed
    is damaged (nebula-br could not restore it) and `brsm verify` says so: restore refuses it too."""
    p, name = _p(ctx), ctx.params["name"]
    try:
        raw = await _read_checked(ctx, meta_file_key(name), f"{name}.meta", catalog.MAX_META_BYTES)
    except ObjectNotFound as e:
        raise VerificationFailed(f"backup {name}: {name}.meta is missing", hint=TAMPERED) from e
    changed = catalog.meta_hash_problem(m, hashlib.sha256(raw).hexdigest(), name)
    if changed:
        raise VerificationFailed(f"backup {name}: {changed}", hint=TAMPERED)
    if p.decode_meta is not None:
        try:
            facts = p.decode_meta(raw)
        except ValueError as e:
            raise VerificationFailed(f"backup {name}: {name}.meta is unreadable: {e}", hint=TAMPERED) from e
        if facts.name != name:
            raise VerificationFailed(f"backup {name}: {name}.meta names backup {facts.name!r}", hint=TAMPERED)


async def _nebula_br_manifest(ctx: StepContext, name: str) -> dict[str, Any] | None:
    """A manifest built from a nebula-br backup's ``.meta`` and its listing. It has no checksums:
    files are checked by size only (the journal and the output say so)."""
    p = _p(ctx)
    if p.decode_meta is None:
        return None
    objs = await p.storage.list(f"{name}/")
    keys = {o.key for o in objs}
    if f"{name}/{name}.meta" not in keys or in_progress_key(name) in keys:
        return None
    try:
        facts = p.decode_meta(await p.storage.get_bytes(f"{name}/{name}.meta"))
    except ValueError as e:
        raise VerificationFailed(f"backup {name}: {name}.meta is unreadable: {e}", hint="restore another backup") from e
    files = [{"key": o.key, "size": o.size, "sha256": None} for o in objs
             if o.key.startswith((f"{name}/data/", f"{name}/meta/"))]
    storage = []
    for h in facts.storage_hosts:
        addr = str(h)
        idx = {int(k.split("/")[3][4:]) for k in (f["key"] for f in files)
               if k.startswith(f"{name}/data/{addr}/") and k.split("/")[3][4:].isdigit()}
        n = max(len({dp for _sid, dp, _c in facts.checkpoints.get(addr, ())}), (max(idx) + 1) if idx else 1)
        storage.append({"addr": addr, "host": h.host, "data_paths": [f"data{i}" for i in range(n)]})
    p.progress.note(f"{name} is a nebula-br backup without checksums: files are checked by size only")
    return {"backup_name": name, "tool": "nebula-br", "all_spaces": facts.all_spaces,
            "spaces": {str(k): v for k, v in facts.spaces.items()}, "meta_files": list(facts.meta_files),
            "topology": {"storage": storage}, "files": files}


# -- checksums ------------------------------------------------------------------------------------
UNVERIFIED_ALLOWED = "UnverifiedRestoreAllowed"
UNVERIFIED_HINT = ("restore a backup with a brsm-manifest.json (see `brsm show`: `complete`, not `complete*`); "
                   "only if you trust this one as it is, add --allow-unverified")


def has_checksums(m: dict[str, Any]) -> bool:
    """Every file of the manifest carries a SHA-256 (a brsm manifest does; one built from a nebula-br
    ``.meta`` has none)."""
    return all(f.get("sha256") for f in m["files"])


def unverified_refusal(name: str, m: dict[str, Any], allowed: bool) -> str | None:
    """Why a restore of ``m`` must not go on without ``--allow-unverified`` (None when it may).

    >>> unverified_refusal("BACKUP_1", {"files": [{"key": "k", "size": 1, "sha256": None}]}, False)[:49]
    'backup BACKUP_1 has no checksums (no brsm-manifes'
    """
    if allowed or has_checksums(m):
        return None
    return (f"backup {name} has no checksums (no {MANIFEST}: made by nebula-br, or a brsm backup whose manifest "
            f"was deleted): its {len(m['files'])} file(s) could be checked by size only, so changed bytes would "
            "be restored unnoticed; refused")


# -- preflight ------------------------------------------------------------------------------------
async def preflight(ctx: StepContext) -> dict[str, Any]:
    p = _p(ctx)
    topo = await common.preflight_topology(ctx, p.meta, p.hosts, p.install_dir)
    p.progress.note(f"topology from {topo['source']}")
    m = await common.as_preflight(_manifest(ctx))
    unchecked = unverified_refusal(ctx.params["name"], m, bool(ctx.params.get("allow_unverified")))
    if unchecked:
        raise VerificationFailed(unchecked, hint=UNVERIFIED_HINT)
    if not has_checksums(m):
        p.progress.note(f"WARNING: restoring {ctx.params['name']} WITHOUT CHECKSUMS (--allow-unverified): its "
                        f"{len(m['files'])} file(s) are checked by size only; changed bytes of the same size "
                        "would be restored as they are")
        ctx.record(UNVERIFIED_ALLOWED, {"name": ctx.params["name"], "files": len(m["files"])})
    await common.as_preflight(common.warn_not_backed_up(
        ctx, p.meta, [int(k) for k in m.get("spaces", {})], p.progress,
        "the restore does not bring these back (recreate them after it)"))
    return {"topology": topo}


async def attach(ctx: StepContext) -> None:
    ctx.runtime["limits"] = Limits(concurrency=int(ctx.params.get("concurrency") or 8),
                                   per_host=int(ctx.params.get("per_host") or 4),
                                   bucket=TokenBucket(parse_rate(ctx.params.get("rate_limit"))))
    await common.reattach_lease(ctx, _p(ctx).hosts, "restore", lease_step="CHECKED")


async def detach(ctx: StepContext) -> None:
    common.record_host_keys(ctx, _p(ctx).hosts)
    await common.detach_lease(ctx)


# -- CHECKED --------------------------------------------------------------------------------------
def _pairs(ctx: StepContext, old: list[str], new: list[str]) -> list[tuple[str, str]]:
    spec = ctx.params.get("host_map")
    if not spec:
        key = lambda a: (HostAddr.parse(a).host, HostAddr.parse(a).port)  # noqa: E731
        return list(zip(sorted(old, key=key), sorted(new, key=key)))
    mapping: dict[str, str] = {}
    for item in spec.split(","):
        src, sep, dst = item.partition("=")
        if not sep:
            raise PreflightFailed(f"--host-map item {item!r} is not old=new", hint="e.g. --host-map 10.0.0.1:9779=10.0.1.1:9779")
        mapping[src.strip()] = dst.strip()
    if set(mapping) != set(old) or set(mapping.values()) != set(new):
        raise PreflightFailed(
            f"--host-map must pair every backup host ({', '.join(sorted(old))}) with a distinct cluster host "
            f"({', '.join(sorted(new))})", hint="list each old=new pair once")
    return sorted(mapping.items())


async def checked(ctx: StepContext) -> dict[str, Any]:
    p = _p(ctx)
    m = await _manifest(ctx)
    topo = ctx.extra["topology"]
    if not m.get("all_spaces", True):
        await _check_space_ids(ctx, m)
    old_storage = {s["addr"]: s for s in m["topology"]["storage"]}
    new_storage = {s["addr"]: s for s in topo["storage"]}
    if len(old_storage) != len(new_storage):
        raise PreflightFailed(f"topology differs: the backup has {len(old_storage)} storage hosts, the cluster "
                              f"{len(new_storage)}", hint="restore onto a cluster with the same number of storage hosts")
    pairs = _pairs(ctx, list(old_storage), list(new_storage))
    for old, new in pairs:
        if len(old_storage[old]["data_paths"]) != len(new_storage[new]["data_paths"]):
            raise PreflightFailed(
                f"topology differs: {old} had {len(old_storage[old]['data_paths'])} data path(s), {new} has "
                f"{len(new_storage[new]['data_paths'])}", hint="restore onto hosts with as many data paths")
    _check_keys(ctx.params["name"], m)
    # zones restoreMeta will rewrite: the backup's for all spaces (its zone table is restored), the
    # cluster's for chosen spaces (its own stays)
    zones = (m.get("topology") or {}).get("zones") if m.get("all_spaces", True) else topo.get("zones")
    if zones is None:
        zones = topo.get("zones")  # a backup that did not record them: the cluster's are the best guess
    crash = topology.zone_problem(zones, pairs)
    if crash:
        raise PreflightFailed(crash, hint="restore onto the hosts the backup was taken from (no --host-map), or "
                                          "split the zone into one zone per host first")
    wrong = topology.version_mismatch((m.get("topology") or {}).get("nebula_version"), topo.get("nebula_version"))
    if wrong:
        raise PreflightFailed(wrong, hint="restore it onto a cluster of the same major release, then upgrade")
    # Verify the backup before touching the cluster.
    present = {o.key: o.size for o in await p.storage.list(f"{ctx.params['name']}/")}
    bad = [f["key"] for f in m["files"] if present.get(f["key"]) != f["size"]]
    if bad:
        raise VerificationFailed(f"backup {ctx.params['name']} is damaged: {len(bad)} file(s) missing or of the "
                                 f"wrong size, e.g. {bad[0]}", hint="restore another backup; see `brsm verify`")
    if ctx.params.get("verify") == "full":
        await _verify_full(ctx, m)
    # Free space: the rename aside costs nothing; the incoming files must fit.
    need: dict[tuple[str, str], int] = {}
    for f in m["files"]:
        tgt = _target(ctx, m, f["key"], pairs, topo)
        if tgt:
            need[(tgt[0], tgt[2])] = need.get((tgt[0], tgt[2]), 0) + f["size"]
    short = []
    for (host, dp), n in sorted(need.items()):
        free = await p.hosts.host(host).free_bytes(dp)
        if free < n * 1.05 + (64 << 20):
            short.append(f"{host}:{dp} needs {n >> 20} MiB, has {free >> 20} MiB free")
    if short:
        raise PreflightFailed("not enough free space: " + "; ".join(short), hint="free space on those data paths")
    lease = common.make_lease(ctx, p.hosts, "restore")
    await lease.acquire()
    p.progress.note("host pairing (backup → cluster): " + ", ".join(f"{o} → {n}" for o, n in pairs))
    return {"pairs": [list(x) for x in pairs], "backup_name": ctx.params["name"], "files": len(m["files"]),
            "all_spaces": bool(m.get("all_spaces", True)), "spaces": m["spaces"],
            "bytes": sum(f["size"] for f in m["files"])}


def _check_keys(name: str, m: dict[str, Any]) -> None:
    """A manifest is data from storage, not trusted code: every key must stay inside ``<NAME>/``
    (no ``..``, no absolute or empty segments), so no download can land outside its data path."""
    for f in m.get("files", []):
        key = f.get("key", "")
        parts = key.split("/")
        if (not isinstance(key, str) or parts[0] != name or len(parts) < 3 or any(seg in ("", ".", "..") for seg in parts)
                or "\x00" in key):
            raise VerificationFailed(f"backup {name}: manifest names a file outside the backup: {key!r}",
                                     hint="the manifest was tampered with; restore another backup")
        if not isinstance(f.get("size"), int) or f["size"] < 0 or f["size"] > 1 << 44:
            raise VerificationFailed(f"backup {name}: manifest claims an impossible size for {key!r}",
                                     hint="the manifest was tampered with; restore another backup")


async def _check_space_ids(ctx: StepContext, m: dict[str, Any]) -> None:
    """A backup of chosen spaces replaces only those: their ids must still be theirs in the cluster."""
    current = await _p(ctx).meta.list_spaces()
    by_id = {v: k for k, v in current.items()}
    for sid, name in m["spaces"].items():
        sid = int(sid)
        if name in current and current[name] != sid:
            raise PreflightFailed(f"space {name} has id {current[name]} in the cluster but {sid} in the backup",
                                  hint="it was dropped and re-created since the backup; drop it, then restore")
        if sid in by_id and by_id[sid] != name:
            raise PreflightFailed(f"space id {sid} belongs to {by_id[sid]} in the cluster, to {name} in the backup",
                                  hint="a restore of selected spaces cannot move a space to another id")


async def _verify_full(ctx: StepContext, m: dict[str, Any]) -> None:
    """``--verify full``: every object re-hashed before anything stops (brsm.workflows.verify.rehash,
    the one re-hash, bounded by --concurrency)."""
    p = _p(ctx)
    files = [f for f in m["files"] if f["sha256"] is not None]  # a nebula-br backup's: sizes only, later
    problems = await rehash(p.storage, files, concurrency=ctx.runtime["limits"].concurrency, progress=p.progress)
    if problems:
        raise VerificationFailed(f"backup {ctx.params['name']}: {len(problems)} file(s) do not match their SHA-256, "
                                 f"e.g. {problems[0]['key']} ({problems[0]['problem']})", hint="restore another backup")


async def undo_checked(ctx: StepContext) -> None:
    if "topology" in ctx.extra:
        await common.make_lease(ctx, _p(ctx).hosts, "restore").release()


def _target(ctx: StepContext, m: dict[str, Any], key: str, pairs: list[tuple[str, str]],
            topo: dict[str, Any]) -> tuple[str, str, str] | None:
    """Backup key → (cluster host, destination path, data path) for storage data; None for others."""
    name = ctx.params["name"]
    parts = key.split("/")
    if len(parts) < 6 or parts[0] != name or parts[1] != "data":
        return None
    old_addr, dp_name, space, rel = parts[2], parts[3], parts[4], "/".join(parts[5:])
    new_addr = dict(pairs)[old_addr]
    svc = next(s for s in topo["storage"] if s["addr"] == new_addr)
    dp = svc["data_paths"][int(dp_name[4:])]
    if rel.startswith("wal/") and svc.get("wal_path"):
        # storaged --wal_path: WALs live at <wal_path>/nebula/<sid>/wal/<part> (RocksEngine.cpp);
        # a checkpoint carries them beside its data, the restore puts them where storaged reads them
        return svc["host"], posixpath.join(svc["wal_path"], "nebula", space, rel), svc["wal_path"]
    return svc["host"], posixpath.join(dp, "nebula", space, rel), dp


# -- STOPPED --------------------------------------------------------------------------------------
ROLE_OF = {"metad": "meta", "storaged": "storage", "graphd": "graph"}


def _hosts_by_role(ctx: StepContext) -> dict[str, list[str]]:
    topo = ctx.extra["topology"]
    return {svc: sorted({s["host"] for s in topo[ROLE_OF[svc]]}) for svc in ("graphd", "storaged", "metad")}


def _targets(ctx: StepContext, svc: str) -> list[services.ServiceTarget]:
    """Every host running ``svc``, its install dir (config) and the port it serves on (topology)."""
    p = _p(ctx)
    seen: dict[str, services.ServiceTarget] = {}
    for s in ctx.extra["topology"][ROLE_OF[svc]]:
        if s["host"] not in seen:
            seen[s["host"]] = services.ServiceTarget(s["host"], _install_dir(p, s), HostAddr.parse(s["addr"]).port)
    return [seen[h] for h in sorted(seen)]


def _install_dir(p: RestorePorts, svc: dict[str, Any]) -> str:
    return services.script_dir(svc, p.configured_install_dir, p.install_dir)


def _service_timeout(ctx: StepContext) -> float:
    return float(ctx.params.get("service_timeout") or WAIT_SECONDS)


async def _stop(ctx: StepContext, svc: str) -> None:
    targets = _targets(ctx, svc)
    with _hosts_task(ctx, f"stop {svc}", len(targets)):
        await services.stop(_p(ctx).hosts, svc, targets, timeout=_service_timeout(ctx))


async def _start(ctx: StepContext, svc: str) -> None:
    targets = _targets(ctx, svc)
    with _hosts_task(ctx, f"start {svc}", len(targets)):
        await services.start(_p(ctx).hosts, svc, targets, timeout=_service_timeout(ctx))


class _hosts_task:
    """A progress task (rich on a terminal, a JSON line with --json) for a wait on every host at once:
    started before it, advanced to the total and done once every host got there (issue 13: a restore
    was silent for half its time while daemons stopped and started)."""

    def __init__(self, ctx: StepContext, task: str, total: int, unit: str = "hosts") -> None:
        self.progress, self.task, self.total, self.unit = _p(ctx).progress, task, total, unit

    def __enter__(self) -> "_hosts_task":
        self.progress.start(self.task, self.total, unit=self.unit)
        return self

    def __exit__(self, exc_type, *_exc) -> None:
        if exc_type is None:
            self.progress.advance(self.task, self.total)
        self.progress.done(self.task)


async def stopped(ctx: StepContext) -> dict[str, Any]:
    roles = _hosts_by_role(ctx)
    for svc in ("graphd", "storaged", "metad"):
        await _stop(ctx, svc)
    return {"stopped": roles}


async def _start_all(ctx: StepContext) -> None:
    await _start(ctx, "metad")
    await _wait_meta(ctx)
    await _start(ctx, "storaged")
    await _wait_storage_online(ctx)
    await _start(ctx, "graphd")


async def undo_stopped(ctx: StepContext) -> None:
    await _start_all(ctx)


async def _wait_meta(ctx: StepContext) -> None:
    deadline = time.monotonic() + _service_timeout(ctx)
    while True:
        try:
            await _p(ctx).meta.list_spaces()
            return
        except BrsmError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def _wait_storage_online(ctx: StepContext) -> list[str]:
    """Until metad's listHosts counts every storaged of the topology ONLINE (its heartbeat accepted)."""
    want = sorted({s["addr"] for s in ctx.extra["topology"]["storage"]})
    timeout = _service_timeout(ctx)
    t0, slept, pause = time.monotonic(), 0.0, 0.1
    while True:
        listed = {str(h.addr): h for h in await _p(ctx).meta.list_hosts("STORAGE")}
        missing = [a for a in want if not (a in listed and listed[a].online)]
        if not missing:
            return want
        if max(time.monotonic() - t0, slept) >= timeout:
            why = "; ".join(f"{a}: {listed[a].status if a in listed else 'not listed'}" for a in missing)
            raise OperationFailed(
                f"after the restore {len(missing)} of {len(want)} storaged are not ONLINE in metad's listHosts "
                f"within {timeout:.0f} s: {why}",
                hint="a storaged is ONLINE once metad accepts its heartbeats: check its host is registered "
                     "(ADD HOSTS) and its <install>/cluster.id; look at the storaged and metad logs")
        await asyncio.sleep(pause)
        slept += pause
        pause = min(1.0, pause * 2)


# -- still down? ----------------------------------------------------------------------------------
# Issue 13: a storaged started behind brsm's back (an operator, a rebooted host) during DOWNLOADED
# made the restore finish with data that was neither the backup's nor the original. Before every step
# that renames, writes or starts (and every undo that renames data back) brsm checks again that the
# daemons it stopped are down: no pid in `nebula.service status`, the port closed, no process using
# the data dirs. Otherwise it journals ServiceFoundRunning and stops there (exit 5), touching nothing.
SERVICE_FOUND_RUNNING = "ServiceFoundRunning"
DATA_PROVED = "RestoredDataProved"
ALL_DOWN = ("graphd", "storaged", "metad")
STARTED_BY_US = ("graphd", "storaged")  # metad runs (ours) from META_RESTORED on


class ServicesNotDown(OperationFailed):
    """A daemon brsm stopped runs again (or its port or data dirs are in use): brsm will not act on a belief."""


def _dirs_of(ctx: StepContext, svcs: tuple[str, ...]) -> dict[str, list[str]]:
    topo = ctx.extra["topology"]
    out: dict[str, list[str]] = {}
    for svc in svcs:
        role = ROLE_OF[svc]
        if role == "graph":
            continue
        for s in topo[role]:
            out.setdefault(s["host"], []).extend(dp for dp in s["data_paths"] if dp not in out.get(s["host"], []))
    return out


async def _ensure_down(ctx: StepContext, before: str, svcs: tuple[str, ...] = ALL_DOWN) -> None:
    """Refuse to go on with ``before`` unless every daemon of ``svcs`` is down on every host and no
    process uses their data dirs."""
    p = _p(ctx)
    p.progress.note(f"checking that {', '.join(svcs)} are still down before {before}")
    found: list[tuple[str, str, str]] = []
    for svc in svcs:
        found += [(h, svc, why) for h, why in await services.find_running(p.hosts, svc, _targets(ctx, svc))]
    if not found:
        found += [(h, "data dir", why) for h, why in await services.find_dir_users(p.hosts, _dirs_of(ctx, svcs))]
    if not found:
        return
    for host, svc, why in found:
        ctx.record(SERVICE_FOUND_RUNNING, {"before": before, "host": host, "service": svc, "why": why})
    text = "; ".join(f"{h}: {why}" for h, _svc, why in found)
    where = ", ".join(sorted({h for h, _, _ in found}))
    raise ServicesNotDown(
        f"refusing to go on with {before}: what brsm stopped for this restore is not down any more on "
        f"{len({h for h, _, _ in found})} host(s): {text}; stop it there (`nebula.service stop "
        f"{found[0][1] if found[0][1] in ALL_DOWN else '<service>'}`) before brsm goes on",
        hint=f"someone or something (a reboot, an operator, systemd) started it behind brsm's back: stop it on "
             f"{where} (`<install>/scripts/nebula.service stop <service>`), find out why, then "
             f"`brsm resume {ctx.op_id}` (continues) or `brsm rollback {ctx.op_id}` (puts the original data back)")


async def _prove_restored(ctx: StepContext) -> dict[str, Any]:
    """Re-hash on the hosts every restored file that has a SHA-256 in the manifest (sha256sum, all
    hosts at once), right before anything is started on it: what starts is the backup, byte for byte."""
    p = _p(ctx)
    by_host: dict[str, list[dict[str, Any]]] = {}
    for d in ctx.extra.get("restored", {}).values():
        if d.get("sha256"):
            by_host.setdefault(d["host"], []).append(d)
    total = sum(d["size"] for ds in by_host.values() for d in ds)
    p.progress.start("re-hash restored files", total)
    bad: list[str] = []

    async def one(host: str) -> None:
        files = sorted(by_host[host], key=lambda d: d["dest"])
        for i in range(0, len(files), 64):
            batch = files[i:i + 64]
            r = await p.hosts.host(host).run(["sha256sum", "--", *(d["dest"] for d in batch)], check=False,
                                            timeout=3600)
            got = parse_sha256sum(r.stdout)
            for d in batch:
                if got.get(d["dest"]) != d["sha256"]:
                    bad.append(f"{host}:{d['dest']} ({'missing' if d['dest'] not in got else 'changed'})")
            p.progress.advance("re-hash restored files", sum(d["size"] for d in batch))

    try:
        await asyncio.gather(*(one(h) for h in sorted(by_host)))
    finally:
        p.progress.done("re-hash restored files")
    if bad:
        raise VerificationFailed(
            f"before starting the restored cluster, {len(bad)} restored file(s) differ from the backup's SHA-256, "
            f"e.g. {bad[0]}: something wrote into the data dirs since they were downloaded",
            hint=f"nothing was started on it; `brsm rollback {ctx.op_id}` puts the original data back")
    facts = {"files": sum(len(v) for v in by_host.values()), "bytes": total, "hosts": sorted(by_host)}
    ctx.record(DATA_PROVED, facts)
    return facts


def parse_sha256sum(stdout: str) -> dict[str, str]:
    """``sha256sum`` output → ``{path: hex}`` (lines it cannot read are skipped).

    >>> parse_sha256sum("ab" * 32 + "  /d/x.sst\n")
    {'/d/x.sst': 'abababababababababababababababababababababababababababababababab'}
    """
    out = {}
    for line in stdout.splitlines():
        digest, sep, path = line.partition("  ")
        if sep and len(digest) == 64 and not digest.startswith("\\"):
            out[path] = digest
    return out


# -- SET_ASIDE ------------------------------------------------------------------------------------
ABSENT = ".brsm-absent"


def _partial(ctx: StepContext) -> bool:
    return not ctx.facts.get("all_spaces", True)


def _moves(ctx: StepContext) -> list[tuple[str, str, str, str]]:
    """(host, live path, set-aside path, "move"|"copy") for everything the restore replaces.

    All spaces: each data path's whole ``nebula`` dir, meta included. Chosen spaces: only those
    spaces' dirs on the storage hosts; the meta data is copied (restoreMeta rewrites those spaces'
    entries in place, and a rollback needs the original back).
    """
    topo = ctx.extra["topology"]
    aside = aside_name(ctx)
    out = []
    if not _partial(ctx):
        for role in ("storage", "meta"):
            for svc in topo[role]:
                out.extend((svc["host"], posixpath.join(dp, "nebula"), posixpath.join(dp, aside), "move")
                           for dp in _storage_roots(svc))
    else:
        sids = sorted(str(k) for k in ctx.facts["spaces"])
        for svc in topo["storage"]:
            for dp in _storage_roots(svc):
                out.extend((svc["host"], posixpath.join(dp, "nebula", sid), posixpath.join(dp, aside, sid), "move")
                           for sid in sids)
        for svc in topo["meta"]:
            out.extend((svc["host"], posixpath.join(dp, "nebula"), posixpath.join(dp, aside), "copy")
                       for dp in svc["data_paths"])
    return sorted(set(out))


def _storage_roots(svc: dict[str, Any]) -> list[str]:
    """The dirs holding a service's ``nebula`` tree: its data paths, and storaged's --wal_path."""
    return list(svc["data_paths"]) + ([svc["wal_path"]] if svc.get("wal_path") else [])


def _data_dirs(ctx: StepContext) -> list[tuple[str, str]]:
    topo = ctx.extra["topology"]
    return sorted({(s["host"], dp) for role in ("storage", "meta") for s in topo[role] for dp in _storage_roots(s)})


# cluster.id: storaged keeps metad's cluster id in ``cluster.id`` under its working directory (the
# install root, DirInfo.root); metad keeps its own in its data and makes a new one on fresh data. A
# storaged whose file names another cluster is refused (E_WRONGCLUSTER) and never comes up, so the
# files go aside with the data (as nebula-br's pkg/restore/restore.go does) and come back on rollback.
CLUSTER_ID = "cluster.id"


def _cluster_id_files(ctx: StepContext) -> list[tuple[str, str, str, str]]:
    """(host, live file, set-aside file, "was absent" marker) for every storaged and graphd root,
    e.g. for root /usr/local/nebula in operation 7: ``("127.0.0.101", "/usr/local/nebula/cluster.id",
    "/usr/local/nebula/cluster.id.brsm_old_7", "/usr/local/nebula/.cluster.id.brsm_absent_7")``."""
    p = _p(ctx)
    topo = ctx.extra["topology"]
    roots = sorted({(s["host"], s.get("root") or p.install_dir(s["host"]))
                    for role in ("storage", "graph") for s in topo[role]})
    out = []
    for host, root in roots:
        live = posixpath.join(root, CLUSTER_ID)
        out.append((host, live, f"{live}.brsm_old_{ctx.ref}",
                    posixpath.join(root, f".{CLUSTER_ID}.brsm_absent_{ctx.ref}")))
    return out


async def _set_aside_cluster_ids(ctx: StepContext) -> list[dict[str, str]]:
    p = _p(ctx)
    out = []
    for host, live, aside, marker in _cluster_id_files(ctx):
        h = p.hosts.host(host)
        if await h.exists(aside):
            state = "moved"  # by an earlier attempt
        elif await h.exists(marker):
            state = "absent"
        elif await h.exists(live):
            await h.rename(live, aside)
            state = "moved"
        else:
            await h.write_file(marker, _one(b"there was no cluster.id here before the restore\n"))
            state = "absent"
        out.append({"host": host, "path": live, "aside": aside if state == "moved" else marker, "state": state})
    return out


async def _put_back_cluster_ids(ctx: StepContext) -> None:
    """Each root as before SET_ASIDE: the original file back, or none if there was none. Repeatable."""
    p = _p(ctx)
    for host, live, aside, marker in _cluster_id_files(ctx):
        h = p.hosts.host(host)
        if await h.exists(aside):
            if await h.exists(live):
                await h.remove_tree(live)  # written by the restored cluster
            await h.rename(aside, live)
        elif await h.exists(marker):
            if await h.exists(live):
                await h.remove_tree(live)
            await h.remove_tree(marker)


async def set_aside(ctx: StepContext) -> dict[str, Any]:
    p = _p(ctx)
    await _ensure_down(ctx, "SET_ASIDE")
    done = []
    for host, src, dst, mode in _moves(ctx):
        h = p.hosts.host(host)
        if await h.exists(dst):
            continue  # done by an earlier attempt
        await h.makedirs(posixpath.dirname(dst))
        if not await h.exists(src):
            await h.makedirs(dst)  # nothing there: remember that, so rollback leaves nothing either
            await h.write_file(posixpath.join(dst, ABSENT), _one(b"absent"))
        elif mode == "move":
            await h.rename(src, dst)
        else:
            tmp = dst + ".brsm-tmp"
            if await h.exists(tmp):
                await h.remove_tree(tmp)  # a copy cut short by a crash
            await h.run(["cp", "-a", src, tmp])
            await h.rename(tmp, dst)
        done.append(f"{host}:{src}")
    cluster_ids = await _set_aside_cluster_ids(ctx)
    return {"set_aside": done, "aside_name": aside_name(ctx), "cluster_ids": cluster_ids}


async def _one(data: bytes):
    yield data


async def undo_set_aside(ctx: StepContext) -> None:
    p = _p(ctx)
    await _ensure_down(ctx, "putting the original data back (undo of SET_ASIDE)")
    for host, src, dst, _mode in _moves(ctx):
        h = p.hosts.host(host)
        if not await h.exists(dst):
            continue  # already moved back (or never moved)
        if await h.exists(src):
            await h.remove_tree(src)  # restored data only: the original is safe in dst
        if await h.exists(posixpath.join(dst, ABSENT)):
            await h.remove_tree(dst)
        else:
            await h.rename(dst, src)
    for host, dp in _data_dirs(ctx):  # the (now empty) parents of a chosen-spaces set-aside
        d = posixpath.join(dp, aside_name(ctx))
        if await p.hosts.host(host).exists(d):
            await p.hosts.host(host).remove_tree(d)
    await _put_back_cluster_ids(ctx)


# -- DOWNLOADED -----------------------------------------------------------------------------------
async def downloaded(ctx: StepContext) -> dict[str, Any]:
    p = _p(ctx)
    await _ensure_down(ctx, "DOWNLOADED")
    m = await _manifest(ctx)
    topo = ctx.extra["topology"]
    pairs = [tuple(x) for x in ctx.facts["pairs"]]
    jobs: list[tuple[str, str, dict[str, Any]]] = []
    meta_dirs = []
    for f in m["files"]:
        tgt = _target(ctx, m, f["key"], pairs, topo)
        if tgt:
            jobs.append((tgt[0], tgt[1], f))
        elif f["key"].startswith(f"{ctx.params['name']}/meta/"):
            for mh in topo["meta"]:
                d = meta_restore_dir(ctx, mh["data_paths"][0])
                meta_dirs.append((mh["host"], d))
                jobs.append((mh["host"], posixpath.join(d, posixpath.basename(f["key"])), f))
    done = ctx.extra.get("restored", {})
    todo = []
    for host, dest, f in jobs:
        prev = done.get(dest)
        if prev and prev["sha256"] == f["sha256"] and prev["size"] == f["size"] and await p.hosts.host(host).exists(dest):
            continue
        todo.append((host, dest, f))
    limits: Limits = ctx.runtime["limits"]
    p.progress.start("download", sum(f["size"] for _, _, f in todo))
    events = EventBatcher(ctx.record_batch)
    count = 0

    async def one(job: tuple[str, str, dict[str, Any]]) -> None:
        nonlocal count
        host, dest, f = job
        h = p.hosts.host(host)
        await h.makedirs(posixpath.dirname(dest))
        await download_file(f["key"], f["sha256"], f["size"], p.storage, h, dest, limits, p.progress)
        count += 1
        failpoints.hit(f"file:{count}")
        events.add(FILE_RESTORED, {"key": f["key"], "host": host, "dest": dest, "size": f["size"],
                                   "sha256": f["sha256"]})

    try:
        await run_bounded(todo, lambda j: j[0], limits, one)
    finally:
        events.flush()  # what finished is journaled even when another file failed
        p.progress.done("download")
    return {"files": len(jobs), "skipped_on_resume": len(jobs) - len(todo),
            "meta_dirs": sorted({f"{h}:{d}" for h, d in meta_dirs})}


async def undo_downloaded(ctx: StepContext) -> None:
    p = _p(ctx)
    await _ensure_down(ctx, "removing the downloaded data (undo of DOWNLOADED)")
    for host, src, dst, mode in _moves(ctx):
        h = p.hosts.host(host)
        # Only where the original is safe aside may the restored dir go.
        if mode == "move" and await h.exists(dst) and await h.exists(src):
            await h.remove_tree(src)
    for mh in ctx.extra["topology"]["meta"]:
        d = meta_restore_dir(ctx, mh["data_paths"][0])
        if await p.hosts.host(mh["host"]).exists(d):
            await p.hosts.host(mh["host"]).remove_tree(d)


# -- META_RESTORED --------------------------------------------------------------------------------
async def meta_restored(ctx: StepContext) -> dict[str, Any]:
    p = _p(ctx)
    m = await _manifest(ctx)
    # on a resume metad may run already (started by an earlier attempt of this step); the others must not
    await _ensure_down(ctx, "META_RESTORED", ALL_DOWN if ctx.mode == "run" else STARTED_BY_US)
    await _start(ctx, "metad")
    await _wait_meta(ctx)
    dropped = await _drop_chosen_spaces(ctx, m) if _partial(ctx) else []
    pairs = [(HostAddr.parse(o), HostAddr.parse(n)) for o, n in ctx.facts["pairs"]]
    for mh in ctx.extra["topology"]["meta"]:
        # restoreMeta unlinks the SSTs it ingested (RestoreProcessor.cpp): hand it copies, so this
        # step can run again after a crash (ingesting the same tables twice changes nothing)
        d = meta_restore_dir(ctx, mh["data_paths"][0])
        ingest = posixpath.join(d, "ingest")
        h = p.hosts.host(mh["host"])
        if await h.exists(ingest):
            await h.remove_tree(ingest)
        await h.makedirs(ingest)
        names = [posixpath.basename(f) for f in m["meta_files"]]
        await h.run(["cp", "-t", ingest, "--", *(posixpath.join(d, n) for n in names)])
        await p.meta.restore_meta(HostAddr.parse(mh["addr"]), [posixpath.join(ingest, n) for n in names], pairs)
    return {"meta_restored_on": [mh["addr"] for mh in ctx.extra["topology"]["meta"]], "spaces_dropped": dropped}


async def _drop_chosen_spaces(ctx: StepContext, m: dict[str, Any]) -> list[str]:
    """A backup of chosen spaces replaces those spaces' meta entries: drop them first, as nebula-br's
    ``checkAndDropSpaces`` does, or what was added since the backup (tags, edges, indexes, roles of
    that space) would survive beside the restored entries. Done while storaged is down (it never
    sees the drop: the same space id is back before it starts) and after metad's data was copied
    aside in SET_ASIDE, so a rollback brings the spaces back exactly. Safe to repeat: a space
    already gone is skipped, and CHECKED made sure each name still has the backup's id."""
    p = _p(ctx)
    current = await p.meta.list_spaces()
    dropped = []
    for sid, name in sorted(m["spaces"].items()):
        if current.get(name) == int(sid):
            await p.meta.drop_space(name)
            dropped.append(name)
    if dropped:
        ctx.record(SPACES_DROPPED, {"spaces": dropped, "why": "replaced by the backup's (restore of chosen spaces)"})
    return dropped


async def undo_meta_restored(ctx: StepContext) -> None:
    await _stop(ctx, "metad")


# -- STARTED --------------------------------------------------------------------------------------
async def started(ctx: StepContext) -> dict[str, Any]:
    """storaged, then graphd, each running and listening on every host; every storaged ONLINE in
    listHosts; the restored spaces listed. Until all of that holds the step fails (and the run rolls
    back): a storaged that does not come up is never reported as restored."""
    p = _p(ctx)
    m = await _manifest(ctx)
    await _ensure_down(ctx, "STARTED", STARTED_BY_US)
    proved = await _prove_restored(ctx)
    await _ensure_down(ctx, "STARTED", STARTED_BY_US)  # nothing started while the files were re-hashed
    await _start(ctx, "storaged")
    await _start(ctx, "graphd")
    online = await _wait_storage_online(ctx)
    want = set(m["spaces"].values())
    deadline = time.monotonic() + _service_timeout(ctx)
    while True:
        have = set(await p.meta.list_spaces())
        if want <= have:
            break
        if time.monotonic() > deadline:
            raise OperationFailed(f"after restore metad lists spaces {sorted(have)}, expected {sorted(want)}",
                                  hint=f"`brsm rollback {ctx.op_id}` brings the old data back")
        await asyncio.sleep(0.5)
    return {"spaces": sorted(want), "storage_online": online, "proved": proved}


async def undo_started(ctx: StepContext) -> None:
    await _stop(ctx, "graphd")
    await _stop(ctx, "storaged")


# -- CLEANED --------------------------------------------------------------------------------------
async def cleaned(ctx: StepContext) -> dict[str, Any]:
    p = _p(ctx)

    async def clean(data_dir: tuple[str, str]) -> str | None:
        host, dp = data_dir
        h = p.hosts.host(host)
        aside = posixpath.join(dp, aside_name(ctx))
        if not ctx.params.get("keep_old") and await h.exists(aside):
            await h.remove_tree(aside)
            return f"{host}:{aside}"
        return None

    # every set-aside data dir at once (CLEAN_AT_ONCE at a time), one `rm -rf` each, one progress step each
    dirs = _data_dirs(ctx)
    p.progress.start("remove set-aside data", len(dirs), unit="dirs")

    async def clean_one(data_dir: tuple[str, str]) -> str | None:
        try:
            return await clean(data_dir)
        finally:
            p.progress.advance("remove set-aside data", 1)

    try:
        removed = [r for r in await common.gather_bounded(CLEAN_AT_ONCE, clean_one, dirs) if r]
    finally:
        p.progress.done("remove set-aside data")
    for host, _live, aside, marker in _cluster_id_files(ctx):
        h = p.hosts.host(host)
        if await h.exists(marker):
            await h.remove_tree(marker)
        if not ctx.params.get("keep_old") and await h.exists(aside):
            await h.remove_tree(aside)
            removed.append(f"{host}:{aside}")
    for mh in ctx.extra["topology"]["meta"]:
        d = meta_restore_dir(ctx, mh["data_paths"][0])
        if await p.hosts.host(mh["host"]).exists(d):
            await p.hosts.host(mh["host"]).remove_tree(d)
    await common.make_lease(ctx, p.hosts, "restore").release()
    return {"removed_aside": removed, "kept_aside": bool(ctx.params.get("keep_old"))}


def workflow() -> Workflow:
    return Workflow(
        kind=RESTORE,
        steps={"CHECKED": checked, "STOPPED": stopped, "SET_ASIDE": set_aside, "DOWNLOADED": downloaded,
               "META_RESTORED": meta_restored, "STARTED": started, "CLEANED": cleaned},
        undos={"CHECKED": undo_checked, "STOPPED": undo_stopped, "SET_ASIDE": undo_set_aside,
               "DOWNLOADED": undo_downloaded, "META_RESTORED": undo_meta_restored, "STARTED": undo_started},
        reducers=REDUCERS,
        preflight=preflight,
        attach=attach,
        detach=detach,
    )
