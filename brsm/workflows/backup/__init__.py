"""Backup: PLANNED → LOCKED → SNAPSHOTTED → COPIED → UPLOADED → CLEANED.

Each step is idempotent (check before act) because a crash between its intent and its completion
makes resume run it again; each has a compensation for rollback, equally safe to repeat.

One module a phase: ``check`` (preflight, LOCKED), ``snapshot`` (SNAPSHOTTED), ``copy`` (COPIED),
``finish`` (UPLOADED, CLEANED); ``context`` holds the ports and event names. The journal's file-level
events are folded here (REDUCERS).
"""
from __future__ import annotations

from typing import Any

from brsm.engine.definitions import BACKUP
from brsm.engine.runner import Workflow
from brsm.workflows import common
from brsm.workflows.backup import check, copy, finish, snapshot
from brsm.workflows.backup.context import (CREATE_BACKUP_ABANDONED, FILE_COPIED, PART_UPLOADED, SNAPSHOT_REQUESTED,
                                           BackupPorts)

__all__ = ["BackupPorts", "workflow"]


def _reduce_copied(acc: dict[str, Any], d: dict[str, Any]) -> None:
    acc.setdefault("copied", {})[d["key"]] = d
    acc.get("parts", {}).pop(d["key"], None)


def _reduce_part(acc: dict[str, Any], d: dict[str, Any]) -> None:
    st = acc.setdefault("parts", {}).get(d["key"])
    if st is None or st["upload_id"] != d["upload_id"]:
        st = {"upload_id": d["upload_id"], "part_size": d["part_size"], "parts": []}
        acc["parts"][d["key"]] = st
    st["parts"] = [p for p in st["parts"] if p["n"] != d["n"]] + [{"n": d["n"], "etag": d["etag"], "size": d["size"]}]


def _reduce_snapshot_requested(acc: dict[str, Any], d: dict[str, Any]) -> None:
    acc["snapshots_before"] = d["existing"]


def _reduce_abandoned(acc: dict[str, Any], d: dict[str, Any]) -> None:
    acc["create_backup_abandoned"] = d


REDUCERS = {
    common.PREFLIGHT_PASSED: common.reduce_preflight,
    common.PROBE_WRITTEN: common.reduce_probe_written,
    common.PROBE_REMOVED: common.reduce_probe_removed,
    FILE_COPIED: _reduce_copied,
    PART_UPLOADED: _reduce_part,
    SNAPSHOT_REQUESTED: _reduce_snapshot_requested,
    CREATE_BACKUP_ABANDONED: _reduce_abandoned,
}


# step, what does it, what undoes it (CLEANED is final: nothing after it to undo)
PHASES = [
    ("LOCKED", check.locked, check.undo_locked),
    ("SNAPSHOTTED", snapshot.snapshotted, snapshot.undo_snapshotted),
    ("COPIED", copy.copied, copy.undo_copied),
    ("UPLOADED", finish.uploaded, finish.undo_uploaded),
    ("CLEANED", finish.cleaned, None),
]


def workflow() -> Workflow:
    return Workflow.of_phases(BACKUP, PHASES, reducers=REDUCERS, entry=check)
