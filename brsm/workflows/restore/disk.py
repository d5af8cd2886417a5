"""The disks a restore writes to, checked before it writes anything: Nebula's own reserve stays free
on every path, and every dir it must set aside can be set aside.

storaged refuses writes on a data path with less than ``--minimum_reserved_bytes`` (default 1 GiB)
available (DiskManager::hasEnoughSpace, FileBasedWal::appendLog): a restore that staged its files
into that reserve would leave a cluster that serves reads and refuses every write. So the files must
fit above the reserve plus a margin (placement.offline_need: 5 % and MIN_FREE) on every path, or the restore refuses before it writes; the
staging headroom (placement.choose_mode) then comes on top of the reserve.
"""
from __future__ import annotations

from typing import Any

from brsm.errors import PreflightFailed
from brsm.workflows import topology
from brsm.workflows.restore import placement

def reserves(topo: dict[str, Any]) -> dict[str, int]:
    """host → the largest ``--minimum_reserved_bytes`` of a storaged there (the default where a journal
    from before this check recorded none)."""
    out: dict[str, int] = {}
    for s in topo["storage"]:
        r = int(s.get("minimum_reserved_bytes", topology.DEFAULT_MINIMUM_RESERVED_BYTES))
        out[s["host"]] = max(out.get(s["host"], 0), r)
    return out


def short_of_reserve(need: dict[tuple[str, str], int], free: dict[tuple[str, str], int],
                     reserve: dict[str, int]) -> list[str]:
    """"host:path" lines for each path where writing the files (with the margin of
    placement.offline_need) would leave less than the reserve available.

    >>> short_of_reserve({("h", "/d"): 1 << 30}, {("h", "/d"): 2 << 30}, {"h": 1 << 30})[0].split(",")[0]
    'h:/d: 2048 MiB free'
    >>> short_of_reserve({("h", "/d"): 1 << 20}, {("h", "/d"): 2 << 30}, {"h": 1 << 30})
    []
    """
    out = []
    for (h, dp), n in sorted(need.items()):
        keep = reserve.get(h, topology.DEFAULT_MINIMUM_RESERVED_BYTES)
        if free[(h, dp)] - placement.offline_need(n) < keep:
            out.append(f"{h}:{dp}: {free[(h, dp)] >> 20} MiB free, the files need {placement.offline_need(n) >> 20} MiB "
                       f"with a margin, and storaged's --minimum_reserved_bytes ({keep >> 20} MiB) must stay free")
    return out


def usable(need: dict[tuple[str, str], int], free: dict[tuple[str, str], int], topo: dict[str, Any]) -> dict[tuple[str, str], int]:
    """The free space the restore may use on each path (what is free less the reserve), after refusing
    a restore that would eat into the reserve or cannot set a dir aside."""
    problem = placement.rocksdb_wal_dir_problem(topo)
    if problem:
        raise PreflightFailed(problem, hint="give --rocksdb_wal_dir a dir of its own (it holds only rocksdb_wal/)")
    res = reserves(topo)
    short = short_of_reserve(need, free, res)
    if short:
        raise PreflightFailed(
            "not enough free space above Nebula's disk reserve: " + "; ".join(short) + " (below the reserve "
            "storaged refuses every write); nothing was changed",
            hint="free space on those paths, or lower --minimum_reserved_bytes in nebula-storaged.conf if the "
                 "reserve is larger than it needs to be")
    return {k: max(0, v - res.get(k[0], topology.DEFAULT_MINIMUM_RESERVED_BYTES))
            for k, v in free.items()}
