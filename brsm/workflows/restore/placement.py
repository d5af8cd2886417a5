"""Where a restore puts things: pure decisions, no I/O, no StepContext (tested directly).

Host pairing, the destination of every backup file, what goes aside, where the staged tree lives and
how it is swapped into place, which ``cluster.id`` files move, how much space each data path needs,
and whether the restore can stage at all.
"""
from __future__ import annotations

import posixpath
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from brsm.errors import PreflightFailed
from brsm.ports import HostAddr

ABSENT = ".brsm-absent"
CLUSTER_ID = "cluster.id"
STAGED, OFFLINE = "staged", "offline"
MIN_FREE = 64 << 20  # left free on a data path after the restore's files, either way
# While a restore stages, the cluster keeps serving and writing (WAL, flushes, compactions): staging
# must leave it room, or the restore would fill the disk under a live cluster. An offline restore
# fills it only while everything is down.
SERVING_HEADROOM_MIN = 512 << 20
SERVING_HEADROOM_SHARE = 0.10


def aside_name(ref: str) -> str:
    return f"nebula_brsm_old_{ref}"


def staging_name(ref: str) -> str:
    return f"nebula_brsm_new_{ref}"


def meta_restore_dir(meta_data_path: str, ref: str) -> str:
    return posixpath.join(meta_data_path, f"brsm_restore_{ref}")


def meta_restore_dirs(topo: dict[str, Any], ref: str) -> list[tuple[str, str]]:
    """(host, dir) where each metad's copy of the backup's meta SSTs goes (restoreMeta reads them there)."""
    return [(mh["host"], meta_restore_dir(mh["data_paths"][0], ref)) for mh in topo["meta"]]


def pair_hosts(old: list[str], new: list[str], spec: str | None) -> list[tuple[str, str]]:
    """Backup storage host → cluster storage host: by sorted address, or as ``--host-map old=new,…``.

    >>> pair_hosts(["b:1", "a:1"], ["y:1", "x:1"], None)
    [('a:1', 'x:1'), ('b:1', 'y:1')]
    """
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


def storage_roots(svc: dict[str, Any]) -> list[str]:
    """The dirs holding a service's ``nebula`` tree: its data paths, and storaged's --wal_path."""
    return list(svc["data_paths"]) + ([svc["wal_path"]] if svc.get("wal_path") else [])


def target(name: str, key: str, pairs: list[tuple[str, str]], topo: dict[str, Any]) -> tuple[str, str, str] | None:
    """Backup key → (cluster host, destination path, the root it is under) for storage data; None for
    the others (meta SSTs, ``.meta``, the manifest).

    >>> topo = {"storage": [{"addr": "h:9779", "host": "h", "data_paths": ["/d0", "/d1"]}]}
    >>> target("B", "B/data/o:9779/data1/3/data/000009.sst", [("o:9779", "h:9779")], topo)
    ('h', '/d1/nebula/3/data/000009.sst', '/d1')
    """
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


def staged_path(dest: str, root: str, ref: str) -> str:
    """Where a file bound for ``dest`` (under ``root``) is staged: the same relative path under
    ``<root>/nebula_brsm_new_<ref>``, so one rename per root puts the whole tree in place.

    >>> staged_path("/d1/nebula/3/data/9.sst", "/d1", "7")
    '/d1/nebula_brsm_new_7/nebula/3/data/9.sst'
    """
    return posixpath.join(root, staging_name(ref), posixpath.relpath(dest, root))


def data_dirs(topo: dict[str, Any]) -> list[tuple[str, str]]:
    """(host, root) of every storaged and metad root (data paths and --wal_path), and every storaged's
    --rocksdb_wal_dir (whose ``rocksdb_wal`` tree goes aside under the same name)."""
    return sorted({(s["host"], dp) for role in ("storage", "meta") for s in topo[role] for dp in storage_roots(s)}
                  | {(s["host"], s["rocksdb_wal_dir"]) for s in topo["storage"] if s.get("rocksdb_wal_dir")})


ROCKSDB_WAL = "rocksdb_wal"


def rocksdb_wal_moves(topo: dict[str, Any], ref: str, space_ids: list[str] | None) -> list[tuple[str, str, str, str]]:
    """RocksDB's own WAL of a storaged with --rocksdb_wal_dir (``<dir>/rocksdb_wal/<sid>``,
    RocksEngineConfig.cpp) goes aside with the data: left in place, RocksDB would replay its logs,
    written after the backup, into the restored data when storaged opens it. Nothing is restored
    there: a checkpoint flushes the memtable, so the restored data needs no WAL; storaged makes the
    dir again when it starts.

    >>> rocksdb_wal_moves({"storage": [{"host": "h", "rocksdb_wal_dir": "/w"}]}, "7", ["3"])
    [('h', '/w/rocksdb_wal/3', '/w/nebula_brsm_old_7/3', 'move')]
    """
    aside = aside_name(ref)
    out = []
    for svc in topo["storage"]:
        d = svc.get("rocksdb_wal_dir")
        if not d:
            continue
        live = posixpath.join(d, ROCKSDB_WAL)
        if space_ids is None:
            out.append((svc["host"], live, posixpath.join(d, aside), "move"))
        else:
            out.extend((svc["host"], posixpath.join(live, str(sid)), posixpath.join(d, aside, str(sid)), "move")
                       for sid in sorted(map(str, space_ids)))
    return out


def rocksdb_wal_dir_problem(topo: dict[str, Any]) -> str | None:
    """Why brsm cannot set a storaged's --rocksdb_wal_dir aside on its own (None: it can): the dir is
    also one of its roots (a data path or --wal_path), whose set-aside dir has the same name.

    >>> rocksdb_wal_dir_problem({"storage": [{"addr": "a", "data_paths": ["/d"], "rocksdb_wal_dir": "/d"}]})[:22]
    'storaged a: --rocksdb_'
    """
    for svc in topo["storage"]:
        d = svc.get("rocksdb_wal_dir")
        if d and d.rstrip("/") in {r.rstrip("/") for r in storage_roots(svc)}:
            return (f"storaged {svc['addr']}: --rocksdb_wal_dir {d} is also one of its data paths or its --wal_path; "
                    "brsm sets each of them aside under the same name and cannot restore it")
    return None


def storage_dirs(topo: dict[str, Any]) -> list[tuple[str, str]]:
    return sorted({(s["host"], dp) for s in topo["storage"] for dp in storage_roots(s)})


def moves(topo: dict[str, Any], ref: str, space_ids: list[str] | None) -> list[tuple[str, str, str, str]]:
    """(host, live path, set-aside path, "move"|"copy") for everything the restore replaces.

    All spaces (``space_ids`` None): each root's whole ``nebula`` dir, meta included. Chosen spaces:
    only those spaces' dirs on the storage hosts; the meta data is copied (restoreMeta rewrites those
    spaces' entries in place, and a rollback needs the original back).
    """
    aside = aside_name(ref)
    out = []
    if space_ids is None:
        for role in ("storage", "meta"):
            for svc in topo[role]:
                out.extend((svc["host"], posixpath.join(dp, "nebula"), posixpath.join(dp, aside), "move")
                           for dp in storage_roots(svc))
        out.extend(rocksdb_wal_moves(topo, ref, None))
    else:
        sids = sorted(str(k) for k in space_ids)
        for svc in topo["storage"]:
            for dp in storage_roots(svc):
                out.extend((svc["host"], posixpath.join(dp, "nebula", sid), posixpath.join(dp, aside, sid), "move")
                           for sid in sids)
        for svc in topo["meta"]:
            out.extend((svc["host"], posixpath.join(dp, "nebula"), posixpath.join(dp, aside), "copy")
                       for dp in svc["data_paths"])
        out.extend(rocksdb_wal_moves(topo, ref, sids))
    return sorted(set(out))


def swaps(topo: dict[str, Any], ref: str, space_ids: list[str] | None) -> list[tuple[str, str, str]]:
    """(host, staged dir, live dir) per storage root: what a staged restore renames into place once
    the live data is aside — the root's whole ``nebula`` tree, or each chosen space's dir.

    >>> swaps({"storage": [{"host": "h", "data_paths": ["/d"]}]}, "7", ["3"])
    [('h', '/d/nebula_brsm_new_7/nebula/3', '/d/nebula/3')]
    """
    out = []
    for host, root in storage_dirs(topo):
        staged, live = posixpath.join(root, staging_name(ref), "nebula"), posixpath.join(root, "nebula")
        if space_ids is None:
            out.append((host, staged, live))
        else:
            out.extend((host, posixpath.join(staged, str(s)), posixpath.join(live, str(s))) for s in sorted(map(str, space_ids)))
    return out


@dataclass(frozen=True)
class ClusterIdFile:
    """A ``cluster.id`` the restore sets aside: live path, set-aside path, and the marker that says
    there was none (so a rollback leaves none)."""

    host: str
    live: str
    aside: str
    absent_marker: str


def cluster_id_files(topo: dict[str, Any], root_of: Callable[[dict[str, Any]], str], ref: str) -> list[ClusterIdFile]:
    """Every storaged and graphd root's ``cluster.id``: storaged keeps metad's cluster id there (its
    working directory, the install root), metad makes a new one on fresh data, and a storaged whose
    file names another cluster is refused (E_WRONGCLUSTER) — so the files go aside with the data, as
    nebula-br's pkg/restore/restore.go does, and come back on rollback.

    >>> cluster_id_files({"storage": [{"host": "h", "root": "/n"}], "graph": []}, lambda s: s["root"], "7")
    [ClusterIdFile(host='h', live='/n/cluster.id', aside='/n/cluster.id.brsm_old_7', absent_marker='/n/.cluster.id.brsm_absent_7')]
    >>> cluster_id_files({"storage": [{"host": "h", "root": "/n", "cluster_id_path": "/i/c.id"}], "graph": []},
    ...                  lambda s: s["root"], "7")[0].absent_marker
    '/i/.c.id.brsm_absent_7'
    """
    # a storaged's ``--cluster_id_path`` (topology: read from its flagfile) moves it elsewhere
    lives = sorted({(s["host"], s.get("cluster_id_path") or posixpath.join(root_of(s), CLUSTER_ID))
                    for role in ("storage", "graph") for s in topo[role]})
    return [ClusterIdFile(host, live, live + f".brsm_old_{ref}",
                          posixpath.join(posixpath.dirname(live), f".{posixpath.basename(live)}.brsm_absent_{ref}"))
            for host, live in lives]


# -- free space and the restore's mode ----------------------------------------------------------------
def offline_need(size: int) -> int:
    """Free bytes an offline restore needs on a data path receiving ``size`` bytes (the live data is
    renamed aside, which costs nothing)."""
    return int(size * 1.05) + MIN_FREE


def staged_need(size: int) -> int:
    """The same, plus room for the cluster that keeps serving (and writing) while the files stage."""
    return offline_need(size) + max(SERVING_HEADROOM_MIN, int(size * SERVING_HEADROOM_SHARE))


@dataclass(frozen=True)
class ModeChoice:
    mode: str | None  # STAGED, OFFLINE, or None: not even an offline restore fits
    why: str
    short: tuple[str, ...] = ()  # "host:path needs N MiB, has M MiB free" for the paths that do not fit


def choose_mode(need: dict[tuple[str, str], int], free: dict[tuple[str, str], int], offline: bool) -> ModeChoice:
    """Staged unless ``offline`` was asked for or staging does not fit where an offline restore does.

    >>> choose_mode({("h", "/d"): 1 << 30}, {("h", "/d"): 10 << 30}, False).mode
    'staged'
    >>> c = choose_mode({("h", "/d"): 1 << 30}, {("h", "/d"): (1 << 30) + (200 << 20)}, False)
    >>> c.mode, c.why[:44]
    ('offline', 'staging does not fit beside the live data of')
    """
    def shortfall(fn: Callable[[int], int]) -> tuple[str, ...]:
        return tuple(f"{h}:{dp} needs {fn(n) >> 20} MiB, has {free[(h, dp)] >> 20} MiB free"
                     for (h, dp), n in sorted(need.items()) if free[(h, dp)] < fn(n))

    short_offline = shortfall(offline_need)
    if short_offline:
        return ModeChoice(None, "not enough free space: " + "; ".join(short_offline), short_offline)
    if offline:
        return ModeChoice(OFFLINE, "--offline: every service stops before the download")
    short_staged = shortfall(staged_need)
    if short_staged:
        return ModeChoice(OFFLINE, "staging does not fit beside the live data of a serving cluster ("
                          + "; ".join(short_staged) + "): restoring offline, the cluster is down for the download")
    return ModeChoice(STAGED, "staging while the cluster serves; it is down only for the swap")
