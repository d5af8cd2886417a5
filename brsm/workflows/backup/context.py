"""What every backup step shares: its ports and the journal's event names."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from brsm.workflows.backup.state import BackupContext
from brsm.ports import BaseIndex, HostsPort, MetaPort, Progress, Storage

DEFAULT_INSTALL_DIR = "/usr/local/nebula"
SNAPSHOT_DROPPED = "SnapshotDropped"
FILES_PLANNED = "FilesPlanned"
BASE_DROPPED = "BaseDropped"  # an incremental's base could not be used after all: every file is sent
PLAN_WALKS = 32  # checkpoint dirs listed at once while planning the copy


def _no_index() -> BaseIndex:
    raise AssertionError("an incremental backup needs BackupPorts.base_index (brsm.wiring gives one)")


@dataclass
class BackupPorts:
    meta: MetaPort
    hosts: HostsPort
    storage: Storage
    progress: Progress
    # where Nebula is installed on a host (its flagfiles), for clusters without nebula-agent
    install_dir: Callable[[str], str] = lambda host: DEFAULT_INSTALL_DIR
    # seconds SNAPSHOTTED waits for metad's createBackup ([cluster] create_backup_timeout)
    create_backup_timeout: float = 300.0
    # seconds a lease lives unrefreshed ([cluster] lease_ttl); None: the operation's param or 300
    lease_ttl: float | None = None
    # a new, empty index of an incremental backup's base (brsm.adapters.base_index on a scratch file)
    base_index: Callable[[], BaseIndex] = lambda: _no_index()


def ports(ctx: BackupContext) -> BackupPorts:
    """The one way a step reaches its ports: the engine's ``ctx.ports`` serves every kind, untyped;
    this names the ones a backup step has."""
    return ctx.ports
