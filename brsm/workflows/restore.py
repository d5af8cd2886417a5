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
from brsm.workflows import common
from brsm.workflows import catalog, services
from brsm.workflows.layout import MANIFEST, in_progress_key, manifest_key, meta_file_key
from brsm.workflows.limits import TokenBucket, parse_rate
from brsm.workflows.transfer import Limits, download_file, run_bounded

FILE_RESTORED = "FileRestored"
SERVICE_STOPPED = "ServicesStopped"
SERVICE_STARTED = "ServicesStarted"
BATCH = 256
FLUSH_SECONDS = 1.0  # a crash loses at most ~1 s of finished files …
FLUSH_BYTES = 8 << 20  # … and at most ~8 MiB of them: what a resume would copy again
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


def _reduce_restored(acc: dict[str, Any], d: dict[str, Any]) -> None:
    acc.setdefault("restored", {})[d["dest"]] = d


def _reduce_checked_manifest(acc: dict[str, Any], d: dict[str, Any]) -> None:
    acc["manifest_summary"] = d


REDUCERS = {
    common.PREFLIGHT_PASSED: common.reduce_preflight,
    FILE_RESTORED: _reduce_restored,
}


def _p(ctx: StepContext) -> RestorePorts:
    return ctx.ports


def aside_name(ctx: StepContext) -> str:
    return f"nebula_brsm_old_{ctx.op_id}"


def meta_restore_dir(ctx: StepContext, meta_data_path: str) -> str:
    return posixpath.join(meta_data_path, f"brsm_restore_{ctx.op_id}")


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


# -- preflight ------------------------------------------------------------------------------------
async def preflight(ctx: StepContext) -> dict[str, Any]:
    p = _p(ctx)
    services = await common.as_preflight(p.meta.list_cluster())
    topo = common.topology_facts(services)
    names = [m["host"] for m in topo["meta"]] + [s["host"] for s in topo["storage"]] + [g["host"] for g in topo["graph"]]
    try:
        await common.check_ssh(p.hosts, names)
    finally:
        common.record_host_keys(ctx, p.hosts)
    await common.as_preflight(_manifest(ctx))
    return {"topology": topo}


async def attach(ctx: StepContext) -> None:
    ctx.runtime["limits"] = Limits(concurrency=int(ctx.params.get("concurrency") or 8),
                                   per_host=int(ctx.params.get("per_host") or 4),
                                   bucket=TokenBucket(parse_rate(ctx.params.get("rate_limit"))))
    await common.reattach_lease(ctx, _p(ctx).hosts, "restore")


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
    p = _p(ctx)
    p.progress.start("verify", sum(f["size"] for f in m["files"]))
    bad: list[str] = []

    async def one(f: dict[str, Any]) -> None:
        h = hashlib.sha256()
        async for b in p.storage.get(f["key"]):
            h.update(b)
            p.progress.advance("verify", len(b))
        if f["sha256"] is not None and h.hexdigest() != f["sha256"]:
            bad.append(f["key"])

    await run_bounded(m["files"], lambda f: "storage", ctx.runtime["limits"], one)
    p.progress.done("verify")
    if bad:
        raise VerificationFailed(f"backup {ctx.params['name']}: {len(bad)} file(s) do not match their SHA-256, "
                                 f"e.g. {bad[0]}", hint="restore another backup")


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
            seen[s["host"]] = services.ServiceTarget(s["host"], p.install_dir(s["host"]), HostAddr.parse(s["addr"]).port)
    return [seen[h] for h in sorted(seen)]


def _service_timeout(ctx: StepContext) -> float:
    return float(ctx.params.get("service_timeout") or WAIT_SECONDS)


async def _stop(ctx: StepContext, svc: str) -> None:
    await services.stop(_p(ctx).hosts, svc, _targets(ctx, svc), timeout=_service_timeout(ctx))


async def _start(ctx: StepContext, svc: str) -> None:
    await services.start(_p(ctx).hosts, svc, _targets(ctx, svc), timeout=_service_timeout(ctx))


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
            await _p(ctx).meta.list_cluster()
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
                           for dp in svc["data_paths"])
    else:
        sids = sorted(str(k) for k in ctx.facts["spaces"])
        for svc in topo["storage"]:
            for dp in svc["data_paths"]:
                out.extend((svc["host"], posixpath.join(dp, "nebula", sid), posixpath.join(dp, aside, sid), "move")
                           for sid in sids)
        for svc in topo["meta"]:
            out.extend((svc["host"], posixpath.join(dp, "nebula"), posixpath.join(dp, aside), "copy")
                       for dp in svc["data_paths"])
    return sorted(set(out))


def _data_dirs(ctx: StepContext) -> list[tuple[str, str]]:
    topo = ctx.extra["topology"]
    return sorted({(s["host"], dp) for role in ("storage", "meta") for s in topo[role] for dp in s["data_paths"]})


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
        out.append((host, live, f"{live}.brsm_old_{ctx.op_id}",
                    posixpath.join(root, f".{CLUSTER_ID}.brsm_absent_{ctx.op_id}")))
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
    pending: list[tuple[str, dict[str, Any]]] = []
    last_flush = [time.monotonic()]
    count = 0

    async def one(job: tuple[str, str, dict[str, Any]]) -> None:
        nonlocal count
        host, dest, f = job
        h = p.hosts.host(host)
        await h.makedirs(posixpath.dirname(dest))
        await download_file(f["key"], f["sha256"], f["size"], p.storage, h, dest, limits, p.progress)
        count += 1
        failpoints.hit(f"file:{count}")
        pending.append((FILE_RESTORED, {"key": f["key"], "host": host, "dest": dest, "size": f["size"],
                                        "sha256": f["sha256"]}))
        if (len(pending) >= BATCH or time.monotonic() - last_flush[0] >= FLUSH_SECONDS
                or sum(d["size"] for _, d in pending) >= FLUSH_BYTES):
            last_flush[0] = time.monotonic()
            batch = pending[:]
            pending.clear()
            ctx.record_batch(batch)

    try:
        await run_bounded(todo, lambda j: j[0], limits, one)
    finally:
        ctx.record_batch(pending[:])
        pending.clear()
        p.progress.done("download")
    return {"files": len(jobs), "skipped_on_resume": len(jobs) - len(todo),
            "meta_dirs": sorted({f"{h}:{d}" for h, d in meta_dirs})}


async def undo_downloaded(ctx: StepContext) -> None:
    p = _p(ctx)
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
    await _start(ctx, "metad")
    await _wait_meta(ctx)
    pairs = [(HostAddr.parse(o), HostAddr.parse(n)) for o, n in ctx.facts["pairs"]]
    for mh in ctx.extra["topology"]["meta"]:
        d = meta_restore_dir(ctx, mh["data_paths"][0])
        files = [posixpath.join(d, posixpath.basename(f)) for f in m["meta_files"]]
        await p.meta.restore_meta(HostAddr.parse(mh["addr"]), files, pairs)
    return {"meta_restored_on": [mh["addr"] for mh in ctx.extra["topology"]["meta"]]}


async def undo_meta_restored(ctx: StepContext) -> None:
    await _stop(ctx, "metad")


# -- STARTED --------------------------------------------------------------------------------------
async def started(ctx: StepContext) -> dict[str, Any]:
    """storaged, then graphd, each running and listening on every host; every storaged ONLINE in
    listHosts; the restored spaces listed. Until all of that holds the step fails (and the run rolls
    back): a storaged that does not come up is never reported as restored."""
    p = _p(ctx)
    m = await _manifest(ctx)
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
    return {"spaces": sorted(want), "storage_online": online}


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

    # every set-aside data dir at once (CLEAN_AT_ONCE at a time), one `rm -rf` each
    removed = [r for r in await common.gather_bounded(CLEAN_AT_ONCE, clean, _data_dirs(ctx)) if r]
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
