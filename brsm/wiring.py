"""The composition root: config + params → real adapters → ports → workflow.

The only module (besides the CLI) that knows which adapter implements which port. Workflows never
import adapters; tests build the same workflows with fakes instead of calling this.
"""
from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from brsm.console.output import Output
from brsm.console.progress import make_progress
from brsm.config import ClusterConfig, cluster_flags, load_cluster
from brsm.part_sizes import part_size_problems
from brsm.engine.workflow import Workflow
from brsm.errors import UsageError
from brsm.ports import HostAddr, Storage


@dataclass
class Built:
    workflow: Workflow
    ports: Any
    closers: list[Any] = field(default_factory=list)

    async def aclose(self) -> None:
        for c in reversed(self.closers):
            try:
                await c.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass


def storage_uri(params: dict[str, Any], cfg: ClusterConfig | None) -> str:
    uri = params.get("storage") or (cfg.storage.default if cfg else None)
    if not uri:
        raise UsageError("no storage given", hint="pass --storage local:///path, s3://bucket/prefix or oss://bucket/prefix")
    return uri


def s3_env_endpoint(environ: Any = None) -> str | None:
    """``AWS_ENDPOINT_URL_S3``, else ``AWS_ENDPOINT_URL`` (botocore's order), when neither --s3-endpoint nor the
    config names one. Passed on as the endpoint, not left to botocore, so a MinIO or Ceph named this way
    gets path-style addressing as a given endpoint does. Read from the environment by every run, resumes
    included: never journaled."""
    env = os.environ if environ is None else environ
    return env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None


def open_storage_for(params: dict[str, Any], cfg: ClusterConfig | None) -> Storage:
    from brsm.adapters.storage import open_storage

    uri = storage_uri(params, cfg)
    # [storage] part_size / multipart_threshold: given only when set, so the backends keep their defaults
    tuning = {k: getattr(cfg.storage, k) for k in ("part_size", "multipart_threshold")
              if cfg and getattr(cfg.storage, k) is not None}
    if cfg:  # the config was checked against its own storage.default; this run may use another store
        problems = part_size_problems(cfg.storage.part_size, cfg.storage.multipart_threshold,
                                      scheme=uri.split("://", 1)[0].lower() if "://" in uri else "",
                                      min_part_size=cfg.storage.min_part_size)
        if problems:
            key, what = problems[0]
            raise UsageError(f"{cfg.path}: storage.{key}: {what}", hint=f"fix it in {cfg.path}")
    return open_storage(
        uri,
        s3_endpoint=params.get("s3_endpoint") or (cfg.storage.s3_endpoint if cfg else None) or s3_env_endpoint(),
        s3_region=params.get("s3_region") or (cfg.storage.s3_region if cfg else None),
        oss_endpoint=params.get("oss_endpoint") or (cfg.storage.oss_endpoint if cfg else None),
        **tuning,
    )


def open_hosts(cfg: ClusterConfig, *, accept_new: bool = False, out: Output | None = None):
    """SSH to the cluster's hosts. ``accept_new`` (--accept-new-host-keys, or the config's
    accept_new_host_keys) accepts the key of a host known_hosts has no entry for, with one warning
    line on stderr per host; workflows journal it (HostKeyAccepted)."""
    import sys

    from brsm.adapters.ssh import SshHosts, SshTarget

    def target(address: str) -> SshTarget:
        h = cfg.host(address)
        return SshTarget(name=address, host=h.ssh_host, port=h.ssh_port, user=h.user, identity=h.identity,
                         known_hosts=h.known_hosts, install_dir=h.install_dir,
                         accept_new_host_keys=accept_new or h.accept_new_host_keys, ssh_config=cfg.ssh.config)

    def warn(key) -> None:
        if out is not None:
            out.err.print(key.warning(), markup=False)
        else:
            print(key.warning(), file=sys.stderr)

    class ConfigHosts(SshHosts):
        """Hosts metad reports but the config does not list get the config's SSH defaults."""

        def host(self, name: str):
            if name not in self._targets:
                self._targets[name] = target(name)
            return super().host(name)

    return ConfigHosts({h.address: target(h.address) for h in cfg.hosts}, on_host_key_accepted=warn)


def open_meta(cfg: ClusterConfig):
    from brsm.adapters.meta import ThriftMeta

    return ThriftMeta([HostAddr.parse(a) for a in cfg.meta])


@dataclass
class ClusterParts:
    """What a backup and a restore open alike: the config, the storage, metad and the hosts."""
    cfg: ClusterConfig
    storage: Storage
    meta: Any
    hosts: Any
    progress: Any

    def ports(self, ports_cls: Any, **kw: Any) -> Any:
        return ports_cls(meta=self.meta, hosts=self.hosts, storage=self.storage, progress=self.progress,
                         install_dir=lambda h: self.cfg.host(h).install_dir, lease_ttl=self.cfg.lease_ttl, **kw)


def open_cluster_parts(params: dict[str, Any], out: Output) -> ClusterParts:
    cfg = load_cluster(params.get("config"), cluster_flags(params))
    storage = open_storage_for(params, cfg)
    meta = open_meta(cfg)
    hosts = open_hosts(cfg, accept_new=bool(params.get("accept_new_host_keys")), out=out)
    return ClusterParts(cfg, storage, meta, hosts, make_progress(as_json=out.as_json))


async def build_backup(params: dict[str, Any], *, op_id: int, out: Output) -> Built:
    from brsm.adapters.base_index import SqliteBaseIndex
    from brsm.home import ensure_home
    from brsm.workflows.backup import BackupPorts, workflow

    c = open_cluster_parts(params, out)
    ports = c.ports(BackupPorts, create_backup_timeout=c.cfg.create_backup_timeout,
                    base_index=lambda: SqliteBaseIndex(str(ensure_home())))
    return Built(workflow(), ports, [c.storage, c.meta, c.hosts])


async def build_restore(params: dict[str, Any], *, op_id: int, out: Output) -> Built:
    from brsm.adapters.meta_codec import created_backup, decode_backup_meta
    from brsm.adapters.meta_sst import RocksMetaSst
    from brsm.workflows.restore import RestorePorts, workflow

    c = open_cluster_parts(params, out)
    ports = c.ports(RestorePorts, decode_meta=lambda b: created_backup(decode_backup_meta(b)),
                    configured_install_dir=c.cfg.configured_install_dir, meta_sst=RocksMetaSst())
    return Built(workflow(), ports, [c.storage, c.meta, c.hosts])


def live_operations(journal: Any, *, exclude: int | None = None):
    """From the journal: operations that may still be resumed, and the backup names they use."""
    from brsm.engine import events as ev
    from brsm.engine.definitions import KINDS
    from brsm.engine.fold import PHASE_FAILED, fold
    from brsm.workflows.maintenance import LiveOps

    from brsm.engine.step_context import op_ref

    live, names, refs, known_refs, kept_old = set(), {}, set(), set(), set()
    ops = list(journal.operations())
    broken: dict[str, int] = {}  # a ref whose lease a later run of this journal took over -> that run
    for op in ops:
        for e in journal.events(op.id, types=["LeaseBroken"]):
            if isinstance(e.data.get("holder_ref"), str):
                broken.setdefault(e.data["holder_ref"], op.id)
    dead: dict[str, tuple[int, str, int]] = {}
    for op in ops:
        ref = op_ref((op.params or {}).get("journal_id"), op.id)
        known_refs.add(ref)
        if op.kind == "restore" and (op.params or {}).get("keep_old"):
            kept_old.add(ref)  # its set-aside original data is kept on purpose: never gc's
        if op.id == exclude or op.kind not in KINDS:
            continue
        st = fold(KINDS[op.kind], journal.events(op.id, types=sorted(ev.ENGINE_EVENTS)))
        if st.finished:
            continue
        live.add(op.id)
        refs.add(ref)
        name = st.facts.get("backup_name") or st.params.get("name")
        if name and not (st.phase == PHASE_FAILED and not st.started):  # refused before any step: holds nothing
            names[name] = op.id
            if ref in broken and broken[ref] != op.id:
                dead[name] = (op.id, ref, broken[ref])
    return LiveOps(frozenset(live), names, refs=frozenset(refs), known_refs=frozenset(known_refs),
                   journal_id=getattr(journal, "journal_id", None), kept_old=frozenset(kept_old), dead=dead)


async def build_maintenance(kind: str, params: dict[str, Any], *, op_id: int, out: Output, journal: Any) -> Built:
    from brsm.workflows.cleanup import cleanup_workflow
    from brsm.workflows.maintenance import MaintenancePorts, gc_workflow

    cfg = load_cluster(params.get("config"), cluster_flags(params)) \
        if params.get("config") or cluster_flags(params) else None
    storage = open_storage_for(params, cfg) if (params.get("storage") or (cfg and cfg.storage.default)) else None
    meta = open_meta(cfg) if cfg else None
    hosts = open_hosts(cfg, accept_new=bool(params.get("accept_new_host_keys")), out=out) if cfg else None
    ports = MaintenancePorts(meta=meta, hosts=hosts, storage=storage,
                             live=live_operations(journal, exclude=op_id),
                             install_dir=(lambda h: cfg.host(h).install_dir) if cfg else None)
    wf = cleanup_workflow() if kind == "cleanup" else gc_workflow()
    return Built(wf, ports, [c for c in (storage, meta, hosts) if c is not None])


def decode_meta_facts(data: bytes):
    """``<NAME>.meta`` bytes → catalog.MetaFacts, for show/verify/prune (the Thrift codec stays out of
    the workflows)."""
    from brsm.adapters.meta_codec import created_backup, decode_backup_meta
    from brsm.workflows.catalog import MetaFacts

    bm = decode_backup_meta(data)
    cb = created_backup(bm, data)
    return MetaFacts(
        name=cb.name,
        create_time_ms=cb.create_time_ms,
        spaces=dict(cb.spaces),
        all_spaces=cb.all_spaces,
        full=True if bm.full is None else bool(bm.full),
        meta_files=cb.meta_files,
        storage_hosts=tuple(str(h) for h in cb.storage_hosts),
        host_spaces={h: tuple(sorted({c[0] for c in cps})) for h, cps in cb.checkpoints.items()},
    )


async def build_prune(params: dict[str, Any], *, op_id: int, out: Output, journal: Any) -> Built:
    from brsm.workflows.prune import PrunePorts, prune_workflow

    cfg = load_cluster(params.get("config"), cluster_flags(params)) \
        if params.get("config") or cluster_flags(params) else None
    storage = open_storage_for(params, cfg)
    # with a cluster config, the cluster's lease is checked before anything is deleted
    meta = open_meta(cfg) if cfg else None
    hosts = open_hosts(cfg, accept_new=bool(params.get("accept_new_host_keys")), out=out) if cfg else None
    ports = PrunePorts(storage=storage, decode_meta=decode_meta_facts,
                       in_use=dict(live_operations(journal, exclude=op_id).names), meta=meta, hosts=hosts,
                       install_dir=(lambda h: cfg.host(h).install_dir) if cfg else None)
    return Built(prune_workflow(), ports, [c for c in (storage, meta, hosts) if c is not None])


def open_check(params: dict[str, Any], *, out: Output) -> tuple[Any, list[Any]]:
    """`brsm check`'s ports (no operation, no journal) and what to close after."""
    from brsm.workflows.check_command import CheckPorts

    cfg = load_cluster(params.get("config"), cluster_flags(params))
    storage = open_storage_for(params, cfg) if (params.get("storage") or cfg.storage.default) else None
    meta = open_meta(cfg)
    hosts = open_hosts(cfg, accept_new=bool(params.get("accept_new_host_keys")), out=out)
    ports = CheckPorts(meta=meta, hosts=hosts, install_dir=lambda h: cfg.host(h).install_dir,
                       configured_install_dir=cfg.configured_install_dir, storage=storage,
                       meta_hosts=tuple(sorted({str(m).rsplit(":", 1)[0] for m in cfg.meta})))
    return ports, [c for c in (storage, meta, hosts) if c is not None]


async def lease_report(params: dict[str, Any], *, out: Output) -> list[str]:
    """The cluster lease (held, stale or invalid) at each configured metad's install dir, read over SSH
    without metad: what a run refused because metad does not answer says about who has the cluster."""
    from brsm.workflows.check_command import lease_results

    cfg = load_cluster(params.get("config"), cluster_flags(params))
    hosts = open_hosts(cfg, accept_new=False, out=out)
    try:
        metas = sorted({str(m).rsplit(":", 1)[0] for m in cfg.meta})
        results = await lease_results(hosts, [(h, cfg.host(h).install_dir) for h in metas])
    finally:
        await hosts.close()
    return [f"{r.name}: {r.detail}" + (f" ({r.hint})" if r.hint else "")
            for r in results if r.detail.startswith(("held by", "stale:", "the cluster lease"))]


_BUILDERS = {"backup": build_backup, "restore": build_restore}


async def build(kind: str, params: dict[str, Any], *, op_id: int, out: Output, journal: Any = None) -> Built:
    """``resume``/``rollback`` only know an op id: its kind and params rebuild everything else."""
    if kind in ("cleanup", "gc"):
        return await build_maintenance(kind, params, op_id=op_id, out=out, journal=journal)
    if kind == "prune":
        return await build_prune(params, op_id=op_id, out=out, journal=journal)
    builder = _BUILDERS.get(kind)
    if builder is None:
        raise UsageError(f"no workflow for operations of kind {kind!r}")
    return await builder(params, op_id=op_id, out=out)


def run_on_storage(params: dict[str, Any], cfg: Any, work: Callable[[Any], Awaitable[Any]]) -> Any:
    """Open the storage, run ``await work(storage)``, close it: a read-only command's one asyncio.run."""
    storage = open_storage_for(params, cfg)

    async def go() -> Any:
        try:
            return await work(storage)
        finally:
            try:
                await storage.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass

    return asyncio.run(go())
