"""Where every service of the cluster runs and keeps its data, as a real 3.x cluster tells it.

Two ways, chosen per run and said in one line:

* **with nebula-agent on every host**: ``listCluster`` gives storaged and graphd with their dirs
  (DirInfo root + data paths); its META entries carry no dir (ListClusterInfoProcessor.cpp takes
  them from the meta Raft peers), so each metad is asked ``getMetaDirInfo`` itself;
* **without agents** (``listCluster`` fails with E_LIST_CLUSTER_NO_AGENT_FAILURE on every 3.x
  cluster that never installed one): ``listHosts`` for the addresses, ``getMetaDirInfo`` on each
  metad, and storaged's flagfile (``<install>/etc/nebula-storaged.conf``) over SSH for its data
  paths, relative ones resolved against the install root (the daemons' working directory).

Either way storaged's flagfile is read (the run stops without it), for ``--wal_path`` and the flags
beside it, and checked against the command line of the storaged that runs (brsm.workflows.daemon_flags);
every data path is resolved to its canonical path on its host (checkpoints report resolved paths;
heartbeats do not).
"""
from __future__ import annotations

import posixpath
import re
import shlex
from collections.abc import Awaitable, Callable
from typing import Any

from brsm.errors import MetaError, PreflightFailed
from brsm.ports import HostsPort, MetaPort, ProcessUnseen, ServiceInfo
from brsm.workflows import daemon_flags, services

# nebula's common.thrift ErrorCode (workflows import no Thrift module)
E_LIST_CLUSTER_NO_AGENT_FAILURE = -2072
VIA_AGENTS = "listCluster (nebula-agent on every host)"
VIA_HOSTS = ("listHosts + getMetaDirInfo + storaged flagfiles over SSH (no nebula-agent: listCluster "
             "answered E_LIST_CLUSTER_NO_AGENT_FAILURE)")


def parse_flagfile(text: str) -> dict[str, str]:
    """gflags flagfile text → {flag: value}; the last setting of a flag wins, as in gflags.

    >>> parse_flagfile("--data_path=data/storage\\n# c\\n--wal_path = /w\\n")
    {'data_path': 'data/storage', 'wal_path': '/w'}
    """
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("--") or "=" not in line:
            continue
        k, _, v = line[2:].partition("=")
        out[k.strip()] = v.strip()
    return out


def absolute(path: str, root: str) -> str:
    """A flag's path made absolute the way the daemon does (relative to its working directory).

    >>> absolute("data/storage", "/usr/local/nebula"), absolute("/d", "/x")
    ('/usr/local/nebula/data/storage', '/d')
    """
    return posixpath.normpath(path if posixpath.isabs(path) else posixpath.join(root, path))


def cluster_id_path(flags: dict[str, str], root: str) -> str:
    """Where storaged keeps metad's cluster id: ``--cluster_id_path`` (MetaClient.cpp, default
    "cluster.id"), relative to its working directory (the install root, as nebula.service runs it).

    >>> cluster_id_path({}, "/n"), cluster_id_path({"cluster_id_path": "/ids/c.id"}, "/n")
    ('/n/cluster.id', '/ids/c.id')
    """
    return absolute(flags.get("cluster_id_path") or "cluster.id", root)


def flagfile_path(install_dir: str, svc: str) -> str:
    return posixpath.join(install_dir, "etc", f"nebula-{svc}.conf")


async def _read_text(hosts: HostsPort, host: str, path: str) -> str | None:
    return await hosts.host(host).read_text(path, timeout=30)


def _item(s: ServiceInfo, **extra: Any) -> dict[str, Any]:
    return {"addr": str(s.addr), "host": s.addr.host, "root": s.root, "data_paths": list(s.data_paths), **extra}


async def discover(meta: MetaPort, hosts: HostsPort, install_dir: Callable[[str], str], *,
                   check_ssh: Callable[[HostsPort, list[str]], Awaitable[None]] | None = None) -> dict[str, Any]:
    """The topology facts both workflows journal: meta/storage/graph lists and ``source``.
    ``check_ssh`` runs on every host named before any is read over SSH."""
    try:
        services = await meta.list_cluster()
        source = VIA_AGENTS
    except MetaError as e:
        if e.code != E_LIST_CLUSTER_NO_AGENT_FAILURE:
            raise
        services = None
        source = VIA_HOSTS
    if services is not None:
        meta_addrs = sorted({s.addr for s in services if s.role == "META"})
        storages = [s for s in services if s.role == "STORAGE"]
        graphs = [s for s in services if s.role == "GRAPH"]
    else:
        meta_addrs = sorted(h.addr for h in await meta.list_hosts("META"))
        storages, graphs = [], []
        for h in await meta.list_hosts("STORAGE"):
            storages.append(ServiceInfo("STORAGE", h.addr, install_dir(h.addr.host), ()))
        for h in await meta.list_hosts("GRAPH"):
            graphs.append(ServiceInfo("GRAPH", h.addr, install_dir(h.addr.host), ()))
    if check_ssh is not None:
        await check_ssh(hosts, sorted({a.host for a in meta_addrs} | {s.addr.host for s in storages}
                                      | {g.addr.host for g in graphs}))
    metas = []
    for a in meta_addrs:
        d = await meta.meta_dir(a)
        metas.append(_item(ServiceInfo("META", a, d.root, d.data_paths)))
    storage_items = [await _storage_item(hosts, s, install_dir) for s in sorted(storages, key=lambda s: s.addr)]
    graph_items = [_item(ServiceInfo("GRAPH", g.addr, g.root or install_dir(g.addr.host), ()))
                   for g in sorted(graphs, key=lambda g: g.addr)]
    # metad's own release (listHosts META: every peer with the answering metad's getOriginVersion(),
    # "" for a build without one) decides the meta wire; the storaged's must be the same release line
    versions = sorted({h.version for h in await meta.list_hosts("META")}
                      | {h.version for h in await meta.list_hosts("STORAGE") if h.online and h.version})
    topo = {"meta": metas, "storage": storage_items, "graph": graph_items, "source": source,
            "nebula_version": versions[0] if len(versions) == 1 else ", ".join(versions),
            "zones": await meta.list_zones()}
    problem = unsupported_version(topo["nebula_version"])
    if problem:
        raise PreflightFailed(problem, hint=VERSION_HINT)
    await _canonical(hosts, topo)
    return topo


async def _storage_item(hosts: HostsPort, s: ServiceInfo, install_dir: Callable[[str], str]) -> dict[str, Any]:
    """One storaged's topology facts: its data paths (from nebula-agent, else its flagfile) and the
    flags brsm reads from the flagfile, checked against the flags it runs with."""
    root = s.root or install_dir(s.addr.host)
    text = await _read_text(hosts, s.addr.host, flagfile_path(root, "storaged"))
    flags = parse_flagfile(text) if text is not None else {}
    dps = list(s.data_paths)
    if not dps:
        if "data_path" not in flags:
            raise PreflightFailed(
                f"cannot find storaged {s.addr}'s data paths: no nebula-agent, and "
                f"{flagfile_path(root, 'storaged')} on {s.addr.host} is missing or sets no --data_path",
                hint="install nebula-agent on every host, or set the host's install_dir in the config")
        dps = [absolute(p, root) for p in flags["data_path"].split(",") if p.strip()]
    facts = storage_flag_facts(flags if text is not None else None, root, str(s.addr),
                               f"{s.addr.host}:{flagfile_path(root, 'storaged')}")
    await _check_running_flags(hosts, str(s.addr), s.addr.host, root, text or "")
    return _item(ServiceInfo("STORAGE", s.addr, root, tuple(dps)), **facts,
                 cluster_id_path=cluster_id_path(flags, root))


RUNNING_FLAGS_HINT = ("put the flags storaged runs with into <install>/etc/nebula-storaged.conf and start it with "
                      "`<install>/scripts/nebula.service restart storaged` (which passes that flagfile alone), then "
                      "retry; brsm reads the running storaged's /proc/<pid>/cmdline over SSH")


async def _check_running_flags(hosts: HostsPort, addr: str, host: str, root: str, flagfile_text: str) -> None:
    """The storaged that runs has the flags of its flagfile, or the run stops (brsm.workflows.daemon_flags)."""
    path = flagfile_path(root, "storaged")

    def cannot(why: str, hint: str = RUNNING_FLAGS_HINT) -> PreflightFailed:
        return PreflightFailed(f"cannot tell where storaged {addr} keeps its WALs (--wal_path, --rocksdb_wal_dir): "
                               f"{why}", hint=hint)

    r = await hosts.host(host).service("status", "storaged", install_dir=root)
    st = services.parse_status((r.stdout or "") + (r.stderr or "")).get("storaged")
    if st is None:
        raise cannot(f"`{root}/scripts/nebula.service status storaged` on {host} says nothing brsm knows "
                     f"({services.strip_colors((r.stderr or r.stdout or '').strip())[:200]!r})",
                     hint="brsm asks Nebula's own nebula.service for storaged's pid: set the host's install_dir in the "
                          "config to the dir storaged runs from")
    if not st.running:
        return  # nebula.service starts it with the flagfile: that is the truth
    if st.pid is None:
        raise cannot("nebula.service status says it runs but names no pid")
    argv = await hosts.host(host).process_argv(st.pid, timeout=30)
    if isinstance(argv, ProcessUnseen):
        raise cannot(f"its command line /proc/{st.pid}/cmdline on {host} cannot be read ({argv.why})",
                     hint="let brsm's SSH user read storaged's /proc/<pid>/cmdline (a /proc mounted with hidepid hides "
                          "other users' processes: log in as the user storaged runs as), then retry")

    async def read(p: str) -> str | None:
        return flagfile_text if p == path else await _read_text(hosts, host, p)

    try:
        running = await daemon_flags.running_settings(list(argv), root, read,
                                                      parse_flagfile)
    except daemon_flags.CannotTell as e:
        raise cannot(f"it runs as pid {st.pid}, and {e}") from None
    found = daemon_flags.drift(running, parse_flagfile(flagfile_text), root)
    if found:
        raise PreflightFailed(daemon_flags.drift_refusal(addr, st.pid, f"{host}:{path}", found),
                              hint=RUNNING_FLAGS_HINT)


DEFAULT_MINIMUM_RESERVED_BYTES = 1 << 30  # DiskManager.cpp: DEFINE_uint64(minimum_reserved_bytes, 1UL << 30, …)


def storage_flag_facts(flags: dict[str, str] | None, root: str, addr: str, where: str) -> dict[str, Any]:
    """What storaged's flagfile says about where it writes besides its data paths, and the free space
    it keeps: ``wal_path`` (Raft WALs at ``<wal_path>/nebula/<sid>/wal/<part>``, RocksEngine.cpp),
    ``rocksdb_wal_dir`` (RocksDB's WAL at ``<dir>/rocksdb_wal/<sid>``, RocksEngineConfig.cpp), both
    absolute ("" when unset), and ``minimum_reserved_bytes`` (DiskManager.cpp: below it storaged
    refuses writes). ``flags`` None (the flagfile could not be read): brsm cannot tell whether a live
    WAL lives elsewhere, and a restore that left one beside the restored data would have it replayed
    past the restored commit (RaftPart::start), so the run stops.

    >>> storage_flag_facts({"wal_path": "wal", "minimum_reserved_bytes": "2048"}, "/n", "a:1", "h:/f")
    {'wal_path': '/n/wal', 'rocksdb_wal_dir': '', 'minimum_reserved_bytes': 2048}
    """
    if flags is None:
        raise PreflightFailed(
            f"cannot tell where storaged {addr} keeps its WALs (--wal_path, --rocksdb_wal_dir) nor its disk reserve "
            f"(--minimum_reserved_bytes): its flagfile {where} is missing or unreadable",
            hint="brsm reads <install>/etc/nebula-storaged.conf over SSH: set the host's install_dir in the config to "
                 "the dir storaged runs from, and make the file readable by the SSH user")
    raw = flags.get("minimum_reserved_bytes", "").strip()
    try:
        reserve = int(raw) if raw else DEFAULT_MINIMUM_RESERVED_BYTES
        if reserve < 0:
            raise ValueError(raw)
    except ValueError:
        raise PreflightFailed(f"storaged {addr}: --minimum_reserved_bytes={raw!r} in {where} is not a byte count",
                              hint="fix the flagfile (an unsigned integer, e.g. 1073741824)") from None
    return {"wal_path": absolute(flags["wal_path"], root) if flags.get("wal_path") else "",
            "rocksdb_wal_dir": absolute(flags["rocksdb_wal_dir"], root) if flags.get("rocksdb_wal_dir") else "",
            "minimum_reserved_bytes": reserve}


async def wal_link_problem(hosts: HostsPort, topo: dict[str, Any]) -> str | None:
    """What to say when createBackup failed and a storaged keeps its WALs in a --wal_path: a checkpoint
    HARD-LINKS every part's WAL files into ``<data_path>/nebula/<sid>/checkpoints/<name>/wal``
    (NebulaStore::createCheckpoint, FileBasedWal::linkCurrentWAL: ``link()``), which fails with EXDEV
    when the --wal_path is on another filesystem than the data path. The filesystems are compared on
    each host (their device numbers); None when no storaged has a --wal_path."""
    lines, apart = [], []
    for s in topo.get("storage", []):
        if not s.get("wal_path"):
            continue
        paths = [*s["data_paths"], s["wal_path"]]
        devs = await hosts.host(s["host"]).device_ids(paths, timeout=30)
        if devs is not None:
            other = [dp for dp, d in zip(s["data_paths"], devs) if d != devs[-1]]
            if other:
                apart.append(f"storaged {s['addr']}: --wal_path {s['wal_path']} is on another filesystem than its "
                             f"data path {other[0]}")
                continue
        lines.append(f"storaged {s['addr']} keeps its WALs in --wal_path {s['wal_path']}")
    if apart:
        return ("; ".join(apart) + ": Nebula's checkpoint hard-links the WAL files into the data path (link() fails "
                "with EXDEV across filesystems), so createBackup cannot succeed while the WALs are there")
    if lines:
        return ("; ".join(lines) + ": a checkpoint hard-links those WAL files into the data path, and link() fails "
                "(EXDEV, storaged's log says 'Create link failed') when they are on different filesystems")
    return None


async def _canonical(hosts: HostsPort, topo: dict[str, Any]) -> None:
    """Each storage data path's canonical (symlink-free) path on its host, as ``real_paths``."""
    for s in topo["storage"]:
        real = await hosts.host(s["host"]).real_paths(s["data_paths"], timeout=30)
        if real.paths is None:
            raise PreflightFailed(f"data paths of {s['addr']} do not all exist on {s['host']}: "
                                  f"{shlex.join(s['data_paths'])} ({real.problem[:200]})",
                                  hint="is the config's host mapping right (address → SSH host)?")
        s["real_paths"] = list(real.paths)


def data_path_index(storage: dict[str, Any], checkpoint_dp: str) -> int:
    """Index ``i`` of ``data<i>`` for a checkpoint's data path, matched canonically.

    >>> data_path_index({"data_paths": ["/a", "/l"], "real_paths": ["/a", "/r"]}, "/r")
    1
    """
    real = storage.get("real_paths") or storage["data_paths"]
    for i, (dp, rp) in enumerate(zip(storage["data_paths"], real)):
        if checkpoint_dp.rstrip("/") in (dp.rstrip("/"), rp.rstrip("/")):
            return i
    raise PreflightFailed(f"checkpoint data path {checkpoint_dp} of {storage['addr']} is none of its data paths "
                          f"{storage['data_paths']} (canonically {real})",
                          hint="the storaged's --data_path changed since metad learned it; restart it and retry")


def major(version: str | None) -> int | None:
    """The major release of a daemon's version string ("3.8.0", "v3.4.1", "3.8.0-sandbox;…"), or None.

    >>> major("3.8.0"), major("v2.6.2"), major(""), major("nightly")
    (3, 2, None, None)
    """
    m = re.match(r"\s*v?(\d+)\.\d+", version or "")
    return int(m.group(1)) if m else None


# The release lines brsm was proven against: the sandbox plays each (``--nebula-version``) with the
# meta wire read in Nebula's source at its tag, and the e2e tests back up and restore on them.
PROVEN = ((3, 0), (3, 2), (3, 4), (3, 6), (3, 8))
PROVEN_TEXT = ", ".join(f"{a}.{b}" for a, b in PROVEN)
VERSION_HINT = ("brsm backs up and restores only the Nebula releases it was proven against (" + PROVEN_TEXT
                + ".x); use Nebula's own BR for another, or upgrade brsm")


def release(version: str | None) -> tuple[int, int] | None:
    """(major, minor) of a daemon's version string, or None when it names no release.

    >>> release("3.2.0"), release("v3.8.1"), release("2024.01.01-nightly"), release("")
    ((3, 2), (3, 8), None, None)
    """
    m = re.match(r"\s*v?(\d+)\.(\d+)", version or "")
    if not m or int(m.group(1)) > 99:  # a nightly's date is no release
        return None
    return int(m.group(1)), int(m.group(2))


def unsupported_version(version: str | None) -> str | None:
    """Why brsm must not touch a cluster of this version (None: go on). Only a release brsm was
    proven against is run: the meta wire differs between releases (DropSnapshotReq before 3.3,
    restoreMeta's answer), 2.x in BackupMeta and its layout, and a release not read may differ in
    ways nobody looked at. Unknown is not proven either.

    >>> unsupported_version("3.2.0") is None, unsupported_version("3.9.0")[:26]
    (True, 'the cluster runs Nebula 3.')
    """
    vs = [v for v in (version or "").split(", ")]
    rels = {release(v) for v in vs}
    if not version or None in rels:
        return (f"metad reports no Nebula release (version {version or 'empty'!r}), so brsm cannot tell "
                "which meta protocol it speaks")
    if len(rels) > 1:
        return f"the cluster runs several Nebula releases ({version}): finish the upgrade first"
    (rel,) = rels
    if rel not in PROVEN:
        return f"the cluster runs Nebula {version}, a release brsm was not proven against"
    return None


def version_mismatch(backup_version: str | None, cluster_version: str | None) -> str | None:
    """A backup restores only onto the major release it was taken from (the meta tables and the
    data layout change between majors). Unknown on either side (a nebula-br backup): allowed.

    >>> version_mismatch("3.8.0", "3.6.0") is None, bool(version_mismatch("3.8.0", "4.0.0"))
    (True, True)
    """
    b, c = major(backup_version), major(cluster_version)
    if b is None or c is None or b == c:
        return None
    return f"the backup was taken on Nebula {backup_version}, the cluster runs {cluster_version}: a restore " \
           "across major versions is refused"


def zone_problem(zones: dict[str, list[str]] | None, pairs: list[tuple[str, str]]) -> str | None:
    """Why restoreMeta would abort metad with these host pairs (None: it would not).

    RestoreProcessor::replaceHostInZone does ``CHECK_EQ(1, hosts.size())`` on EVERY zone as soon as
    one pair moves a host, so any zone of several hosts (MERGE ZONE) crashes metad mid-restore.

    >>> zone_problem({"z": ["a:1", "b:1"]}, [("a:1", "a:1")]) is None
    True
    >>> zone_problem({"z": ["a:1", "b:1"]}, [("a:1", "c:1")])[:23]
    'zone z holds 2 hosts (a'
    """
    if not any(o != n for o, n in pairs):
        return None
    big = sorted((z, hs) for z, hs in (zones or {}).items() if len(hs) != 1)
    if not big:
        return None
    z, hs = big[0]
    return (f"zone {z} holds {len(hs)} hosts ({', '.join(hs)}) and the restore moves hosts "
            f"({', '.join(f'{o} → {n}' for o, n in pairs if o != n)}): metad's restoreMeta aborts on a zone of "
            "more than one host when hosts move")
