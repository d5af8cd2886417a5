"""Where things go in a backup: nebula-br's layout, plus our manifest (written last)."""
from __future__ import annotations

import posixpath
import re

from brsm.ports import HostAddr

MANIFEST = "brsm-manifest.json"  # the header (format 2), or the whole manifest (format 1); written last
MANIFEST_FILES = "brsm-manifest-files.jsonl"  # format 2's file list, one JSON line per file


IN_PROGRESS = "brsm-in-progress"

# metad names backups BACKUP_YYYY_MM_DD_HH_MM_SS; brsm and nebula-br list every top-level BACKUP* entry
_BACKUP_NAME = re.compile(r"BACKUP[A-Za-z0-9_.-]{0,200}")


def bad_backup_name(name: str) -> str | None:
    """Why ``name`` cannot be a backup's name (it is one directory of the storage and one snapshot of the
    cluster), or None. ``bad_backup_name("../../etc")`` -> "not a backup name: '../../etc' (…)"."""
    if isinstance(name, str) and _BACKUP_NAME.fullmatch(name):
        return None
    return (f"not a backup name: {name!r} (a backup's name is BACKUP followed by letters, digits, '_', '.' or '-'; "
            "no '/', no '..')")


def in_progress_key(name: str) -> str:
    """Present from the first copied file until the manifest is written: without it, a crash between
    writing ``.meta`` and the manifest would leave what looks like a finished nebula-br backup."""
    return f"{name}/{IN_PROGRESS}"


def meta_file_key(name: str) -> str:
    return f"{name}/{name}.meta"


def manifest_key(name: str) -> str:
    return f"{name}/{MANIFEST}"


def manifest_files_key(name: str) -> str:
    return f"{name}/{MANIFEST_FILES}"


def meta_sst_key(name: str, file: str) -> str:
    return f"{name}/meta/{posixpath.basename(file)}"


def data_key(name: str, host: HostAddr, dp_index: int, space_id: int, rel: str) -> str:
    """``<NAME>/data/<host>:<port>/data<i>/<spaceId>/<rel>`` with rel under data/ or wal/."""
    return f"{name}/data/{host.host}:{host.port}/data{dp_index}/{space_id}/{rel}"


def meta_checkpoint_dir(meta_data_path: str, name: str) -> str:
    """Where metad exports a snapshot's tables (RocksEngine::backupTable: the meta engine's root is
    ``<data_path>/nebula/0``, meta being space 0).

    >>> meta_checkpoint_dir("/n/data/meta/", "BACKUP_2026_01_02_03_04_05")
    '/n/data/meta/nebula/0/checkpoints/BACKUP_2026_01_02_03_04_05'
    """
    return posixpath.join(meta_data_path.rstrip("/") or "/", "nebula", "0", "checkpoints", name)


def lease_path(root: str) -> str:
    return posixpath.join(root, "brsm.lease")
