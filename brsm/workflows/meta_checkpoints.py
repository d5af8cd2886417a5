"""A snapshot's meta checkpoint (``<meta data path>/nebula/0/checkpoints/<NAME>``): where it is, its
removal on every metad after dropSnapshot, and the stray ones `brsm gc` finds.

DropSnapshotProcessor.cpp (v3.0.0 … v3.8.0) removes it only on the metad that leads when the drop
arrives ("TODO sky : need remove meta checkpoint from slave hosts"); createBackup made it on the metad
that led then. So every deleter that drops a snapshot removes it everywhere after, and gc finds the
ones a metad out of reach kept.
"""
from __future__ import annotations

import asyncio
import posixpath
from collections.abc import Iterable
from typing import Any

from brsm.errors import BrsmError
from brsm.ports import HostsPort, MetaPort
from brsm.retries import META_CHECKPOINT
from brsm.workflows.layout import meta_checkpoint_dir


async def remove_meta_checkpoints(meta: MetaPort, hosts: HostsPort, names: Iterable[str],
                                  progress: Any = None) -> dict[str, list[str]]:
    """After dropSnapshot: the meta checkpoint of each name on every metad, removed where it is still
    there. DropSnapshotProcessor.cpp removes it only on the metad that leads now ("TODO sky : need
    remove meta checkpoint from slave hosts"), so the metad that led at createBackup keeps it for good
    once leadership moved. Only ``BACKUP_*`` names whose snapshot was just dropped come here. Each
    metad is checked again, as ``retries.META_CHECKPOINT`` says, when its getMetaDirInfo answers an
    error or its host drops for a moment; one still out of reach is noted and returned under ``left``
    (the dir stays, as Nebula leaves it; `brsm gc` lists it as a ``meta_checkpoint`` orphan and
    removes it later), never a failure of the step: the snapshot itself is gone.
    Returns ``{"removed": [host:dir], "left": [host:dir (why)]}``."""
    names = sorted({n for n in names if n.startswith("BACKUP_") and "/" not in n and n not in (".", "..")})
    out: dict[str, list[str]] = {"removed": [], "left": []}
    if not names:
        return out
    for h in sorted(await meta.list_hosts("META"), key=lambda h: h.addr):
        where = str(h.addr)
        for attempt in range(META_CHECKPOINT.attempts):
            try:
                await _remove_meta_checkpoints_on(meta, hosts, h.addr, names, out["removed"])
                break
            except BrsmError as e:
                if attempt + 1 < META_CHECKPOINT.attempts:
                    await asyncio.sleep(META_CHECKPOINT.delay(attempt + 1))
                    continue
                out["left"].append(f"{where} ({e})")
                if progress is not None:
                    progress.note(f"run `brsm gc` later to remove the meta checkpoint of {', '.join(names)} left on "
                                  f"metad {where} (a former meta leader keeps it after dropSnapshot; it could not "
                                  f"be checked after {META_CHECKPOINT.attempts} tries): {e}")
    return out


async def _remove_meta_checkpoints_on(meta: MetaPort, hosts: HostsPort, addr: Any, names: list[str],
                                      removed: list[str]) -> None:
    """One metad's meta checkpoints of ``names`` removed where there, each added to ``removed`` (as
    host:dir) once gone, so a try that fails part way keeps what it did. Run again: idempotent."""
    d = await meta.meta_dir(addr)
    host = hosts.host(addr.host)
    for dp in d.data_paths:
        for n in names:
            path = meta_checkpoint_dir(dp, n)
            if await host.exists(path):
                await host.remove_tree(path)
                removed.append(f"{addr.host}:{path}")


async def find_stray(meta: MetaPort, hosts: HostsPort, topology: dict[str, Any], live_names: dict[str, int],
                     held_by: str | None) -> list[dict]:
    """``BACKUP_*`` meta checkpoints (``<meta data path>/nebula/0/checkpoints/<NAME>``) whose snapshot
    metad no longer lists, on every metad: DropSnapshotProcessor.cpp removes a snapshot's meta
    checkpoint only on the metad that leads at the drop, and brsm's removal of the others
    (remove_meta_checkpoints) leaves one it could not reach. The snapshots are listed after the
    dirs: createBackup lists its snapshot before it makes the dir, so a dir seen before a listing that
    lacks its name is no run's. One an unfinished operation of this journal names (``live_names``: name
    -> op id), or seen while a cluster lease is held (``held_by`` names its holders), is in use."""
    found: list[tuple[str, str, str]] = []
    for svc in topology["meta"]:
        h = hosts.host(svc["host"])
        for dp in svc["data_paths"]:
            parent = posixpath.normpath(meta_checkpoint_dir(dp, "."))
            for line in await h.list_named(parent, ["BACKUP_*"], dirs_only=True):
                path = posixpath.normpath(line.strip())
                name = posixpath.basename(path)
                if posixpath.dirname(path) == parent and name.startswith("BACKUP_"):  # only a child of that dir
                    found.append((svc["host"], path, name))
    if not found:
        return []
    snapshots = {s.name for s in await meta.list_snapshots()}
    out = []
    for host, path, name in sorted(found):
        if name in snapshots:
            continue  # its snapshot is listed: a `snapshot` orphan (its removal takes these too) or in use
        if name in live_names:
            out.append({"kind": "in_use", "name": name, "host": host, "path": path,
                        "why": f"the meta checkpoint of operation {live_names[name]}, which has not finished"})
        elif held_by is not None:
            out.append({"kind": "in_use", "name": name, "host": host, "path": path,
                        "why": f"the cluster lease is held by {held_by}: a live run may use it; left alone"})
        else:
            out.append({"kind": "meta_checkpoint", "name": name, "host": host, "path": path,
                        "why": "a meta checkpoint whose snapshot metad no longer lists (a former meta leader "
                               "keeps it after dropSnapshot); no unfinished brsm operation uses it"})
    return out
