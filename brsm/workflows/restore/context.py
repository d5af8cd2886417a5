"""What every restore step shares: its ports, the journal's event names, and small accessors."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from brsm.engine.runner import StepContext
from brsm.ports import MetaPort, MetaSstCodec, HostsPort, Progress, Storage
from brsm.workflows import services
from brsm.workflows.restore import placement

FILE_RESTORED = "FileRestored"  # a file downloaded and checked (into the staging dir, or in place offline)
SPACES_DROPPED = "SpacesDropped"
SERVICE_FOUND_RUNNING = "ServiceFoundRunning"
DATA_PROVED = "RestoredDataProved"
# journaled by STARTED right before it starts storaged and graphd on the proved data: a resume of a
# STARTED cut after that point must not prove the data again (the daemons have written into it since,
# as they must) nor take the daemons it started itself for ones started behind its back
SERVICES_STARTING = "RestoredServicesStarting"
DOWNTIME_BEGAN = "DowntimeBegan"  # just before the first service is stopped
DOWNTIME_ENDED = "DowntimeEnded"  # every storaged ONLINE again (restored, or put back by a rollback)
UNVERIFIED_ALLOWED = "UnverifiedRestoreAllowed"
WAIT_SECONDS = services.DEFAULT_TIMEOUT  # per service start/stop (--service-timeout)
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
    lease_ttl: float | None = None  # as BackupPorts.lease_ttl
    # the install dir the config names for a host, None when it names none (flags only, or a host not
    # listed): then the daemon's own root (its working dir: nebula.service starts it in the install dir)
    configured_install_dir: Callable[[str], str | None] | None = None
    # writes the meta SST a restore of chosen spaces ingests (restore.partial_meta); None: the older way,
    # drop the chosen spaces and ingest the backup's tables (the in-process fakes keep no SSTs)
    meta_sst: MetaSstCodec | None = None


def ports(ctx: StepContext) -> RestorePorts:
    return ctx.ports


def partial(ctx: StepContext) -> bool:
    """A restore of chosen spaces (the backup holds only some)."""
    return not ctx.facts.get("all_spaces", True)


def chosen_spaces(ctx: StepContext) -> list[str] | None:
    return sorted(str(k) for k in ctx.facts["spaces"]) if partial(ctx) else None


def staged(ctx: StepContext) -> bool:
    """This run stages (CHECKED chose it); an operation journaled before staging existed did not."""
    return ctx.facts.get("mode") == placement.STAGED


def pairs(ctx: StepContext) -> list[tuple[str, str]]:
    return [(o, n) for o, n in ctx.facts["pairs"]]


def root_of(ctx: StepContext) -> Callable[[dict[str, Any]], str]:
    """A storaged's or graphd's root (where its cluster.id is): metad's word, else the config's."""
    p = ports(ctx)
    return lambda s: s.get("root") or p.install_dir(s["host"])
