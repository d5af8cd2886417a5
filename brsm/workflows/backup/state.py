"""What a backup knows, folded from its journal: one field per fact, each set by one handler."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from brsm.engine.runner import StepContext
from brsm.engine.state import completed, on, on_each
from brsm.engine.state import ABSENT, Event
from brsm.workflows.backup.ledger import CopiedFiles, FileCopied, PartUploaded
from brsm.workflows.shared_state import ClusterState, TransferParams

SNAPSHOT_REQUESTED = "SnapshotRequested"
CREATE_BACKUP_ABANDONED = "CreateBackupAbandoned"
BASE_CHOSEN = "BaseChosen"


@dataclass(frozen=True)
class SnapshotRequested(Event):
    """The cluster's snapshots right before createBackup: one new since is this operation's."""

    TYPE: ClassVar[str] = SNAPSHOT_REQUESTED
    existing: list[str]
    spaces: list[str] = ABSENT


@dataclass(frozen=True)
class CreateBackupAbandoned(Event):
    """brsm gave up on createBackup (its bound, or a signal); metad may still be at work on it."""

    TYPE: ClassVar[str] = CREATE_BACKUP_ABANDONED
    why: str
    after_seconds: float = ABSENT
    bound_seconds: float = ABSENT


@dataclass(frozen=True)
class BaseChosen(Event):
    """What an incremental backup reuses from (``name``; None: no base found, a full backup, ``why``),
    and the base's file list as it was then (a resume reuses from that very list, or from nothing)."""

    TYPE: ClassVar[str] = BASE_CHOSEN
    name: str | None
    why: str
    file_list_sha256: str | None = ABSENT
    files: int = ABSENT
    bytes: int = ABSENT


@dataclass(frozen=True)
class BackupParams(TransferParams):
    spaces: tuple[str, ...] = ()  # the spaces to back up; none: all of them
    incremental_from: str | None = None  # --incremental-from: the base backup named
    incremental: bool = False  # --incremental: the newest complete backup of this cluster, if any

    @classmethod
    def from_data(cls, d: Mapping[str, Any]) -> "BackupParams":
        return cls(**cls.transfer(d), spaces=tuple(d.get("spaces") or ()),
                   incremental_from=d.get("incremental_from") or None, incremental=bool(d.get("incremental")))


@dataclass
class BackupState(ClusterState):
    PARAMS: ClassVar[type[BackupParams]] = BackupParams
    params: BackupParams = field(default_factory=BackupParams)
    files: CopiedFiles = field(default_factory=CopiedFiles)
    # the cluster's snapshots when SNAPSHOTTED asked for one (None: it never asked)
    snapshots_before: list[str] | None = None
    create_backup_abandoned: CreateBackupAbandoned | None = None
    base: BaseChosen | None = None  # an incremental backup's base (its name None: none was found)
    # SNAPSHOTTED: what createBackup made. None: not journaled (before SNAPSHOTTED, or a journal that
    # lacks it), so a step that needs it fails loudly rather than copy or describe nothing
    backup_name: str | None = None
    meta_b64: str | None = None
    spaces: dict[str, str] | None = None  # space id -> name
    all_spaces: bool | None = None
    meta_files: list[str] | None = None
    meta_paths: list[str] = field(default_factory=list)
    checkpoints: dict[str, list[list[str]]] | None = None
    storage_hosts: list[str] | None = None
    create_time_ms: int | None = None

    @on_each(FileCopied, PartUploaded, sets=("files",))
    def _files(self, _type: str, e: FileCopied | PartUploaded) -> None:
        self.files.fold(e)

    @on(SnapshotRequested, sets=("snapshots_before",))
    def _snapshot_requested(self, e: SnapshotRequested) -> None:
        self.snapshots_before = list(e.existing)

    @on(BaseChosen, sets=("base",))
    def _base(self, e: BaseChosen) -> None:
        self.base = e

    @on(CreateBackupAbandoned, sets=("create_backup_abandoned",))
    def _abandoned(self, e: CreateBackupAbandoned) -> None:
        self.create_backup_abandoned = e

    @completed("SNAPSHOTTED", sets=("backup_name", "meta_b64", "spaces", "all_spaces", "meta_files", "meta_paths",
                                    "checkpoints", "storage_hosts", "create_time_ms"))
    def _snapshotted(self, f: dict[str, Any]) -> None:
        # .get: a journal an older brsm wrote may lack a key; the step that needs it fails on the None
        self.backup_name = f.get("backup_name")
        self.meta_b64 = f.get("meta_b64")
        self.spaces = f.get("spaces")
        self.all_spaces = f.get("all_spaces")
        self.meta_files = f.get("meta_files")
        self.meta_paths = f.get("meta_paths") or []
        self.checkpoints = f.get("checkpoints")
        self.storage_hosts = f.get("storage_hosts")
        self.create_time_ms = f.get("create_time_ms")

    @property
    def name(self) -> str:
        """The backup's name, for a step after SNAPSHOTTED."""
        if self.backup_name is None:
            raise AssertionError("SNAPSHOTTED has not completed")
        return self.backup_name


BackupContext = StepContext[BackupState]
