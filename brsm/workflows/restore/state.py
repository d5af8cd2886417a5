"""What a restore knows, folded from its journal: one field per fact, each set by one handler.

CHECKED's ``spaces`` ({id: name}) and STARTED's listed space names are two fields; an older journal's
STARTED that journaled its names as ``spaces`` sets nothing here, so they can never replace the ids.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from brsm.engine.runner import StepContext
from brsm.engine.state import ABSENT, Event, completed, on, on_each
from brsm.workflows.restore import ownership
from brsm.workflows.restore.ledger import FileRestored, RestoredFiles
from brsm.workflows.shared_state import ClusterState, TransferParams

SERVICE_FOUND_RUNNING = ownership.SERVICE_FOUND_RUNNING
# journaled by STARTED right before it starts storaged and graphd on the proved data: a resume of a
# STARTED cut after that point must not prove the data again (the daemons have written into it since,
# as they must) nor take the daemons it started itself for ones started behind its back
SERVICES_STARTING = "RestoredServicesStarting"
DOWNTIME_BEGAN = "DowntimeBegan"  # just before the first service is stopped
DOWNTIME_ENDED = "DowntimeEnded"  # every storaged ONLINE again (restored, or put back by a rollback)
# journaled by CHECKED: the manifest it verified, so no step after it reads the backup's manifest
# again (a backup deleted or changed in storage meanwhile cannot strand a stopped cluster)
MANIFEST_JOURNALED = "RestoreManifestJournaled"
# the same for a format-2 manifest: its header and its file list's tally (count, bytes, SHA-256), not
# its files; the file list is read again from storage, checked against that tally
MANIFEST_HEADER_JOURNALED = "RestoreManifestHeaderJournaled"
META_INGEST_BUILT = "MetaIngestBuilt"  # the SST built for the chosen spaces (base64), reused by a resume
SCRATCH_MAKING = "ScratchDirMaking"  # {host, path}: journaled right before the mkdir
SCRATCH_MADE = "ScratchDirMade"  # {host, path, dev, ino[, taken]}: the dir brsm made (or took back: taken
# "resumed" after a crash right after its mkdir, "legacy" from an operation an older brsm staged)


@dataclass(frozen=True)
class ManifestJournaled(Event):
    TYPE: ClassVar[str] = MANIFEST_JOURNALED
    manifest: dict[str, Any]  # source.for_journal: what every later step needs of it


@dataclass(frozen=True)
class ManifestHeaderJournaled(Event):
    TYPE: ClassVar[str] = MANIFEST_HEADER_JOURNALED
    manifest: dict[str, Any]  # source.for_journal of a format-2 manifest: no files, their tally


@dataclass(frozen=True)
class DowntimeBegan(Event):
    TYPE: ClassVar[str] = DOWNTIME_BEGAN
    at: float
    tracks_starts: bool = ABSENT  # ownership.TRACKS_STARTS: from here on the pids brsm starts are journaled


@dataclass(frozen=True)
class DowntimeEnded(Event):
    TYPE: ClassVar[str] = DOWNTIME_ENDED
    at: float
    seconds: float
    how: str = ABSENT


@dataclass(frozen=True)
class ServicesStarting(Event):
    TYPE: ClassVar[str] = SERVICES_STARTING
    at: float
    services: list[str]


@dataclass(frozen=True)
class ScratchDirMaking(Event):
    TYPE: ClassVar[str] = SCRATCH_MAKING
    host: str
    path: str


@dataclass(frozen=True)
class ScratchDirMade(Event):
    TYPE: ClassVar[str] = SCRATCH_MADE
    host: str
    path: str
    dev: int
    ino: int
    taken: str = ABSENT  # "resumed" or "legacy": taken back rather than made


@dataclass(frozen=True)
class RestoreParams(TransferParams):
    name: str = ""  # the backup to restore
    verify: str | None = None  # "full": re-hash every file in storage before anything stops
    allow_unverified: bool = False  # a backup without checksums (nebula-br's) may be restored
    host_map: Any = None  # {host in the backup: host of the cluster} (placement.pair_hosts)
    offline: bool = False  # download in place while the cluster is down, never stage
    keep_old: bool = False  # CLEANED keeps the set-aside original data
    service_timeout: float | None = None  # seconds per start/stop; None: scaled (control.service_timeout)
    meta_settle_seconds: float | None = None  # wait before restoreMeta; None: partial_meta.SETTLE_SECONDS

    @classmethod
    def from_data(cls, d: Mapping[str, Any]) -> "RestoreParams":
        return cls(**cls.transfer(d), name=d.get("name") or "", verify=d.get("verify"),
                   allow_unverified=bool(d.get("allow_unverified")), host_map=d.get("host_map"),
                   offline=bool(d.get("offline")), keep_old=bool(d.get("keep_old")),
                   service_timeout=float(d["service_timeout"]) if d.get("service_timeout") else None,
                   meta_settle_seconds=float(d["meta_settle_seconds"]) if d.get("meta_settle_seconds") else None)


@dataclass
class RestoreState(ClusterState):
    PARAMS: ClassVar[type[RestoreParams]] = RestoreParams
    params: RestoreParams = field(default_factory=RestoreParams)
    restored: RestoredFiles = field(default_factory=RestoredFiles)
    manifest: dict[str, Any] | None = None  # the backup's manifest as CHECKED verified it
    meta_ingest: dict[str, Any] | None = None  # the chosen spaces' meta SST, built once
    downtime_began: float | None = None  # when the first service was stopped (time.time())
    tracks_starts: bool = False  # this operation journals the pid of every daemon it starts
    downtime_seconds: float | None = None  # first stop → every storaged ONLINE again
    services_starting: dict[str, Any] | None = None
    own_daemons: ownership.OwnDaemons = field(default_factory=ownership.OwnDaemons)
    scratch_making: set[str] = field(default_factory=set)  # "host:path" of every mkdir begun
    scratch: dict[str, list[int]] = field(default_factory=dict)  # "host:path" -> [dev, ino] made or taken
    scratch_legacy: bool = False  # a scratch dir an older brsm made was taken back as it was
    # CHECKED
    pairs: list[tuple[str, str]] | None = None  # (host in the backup, host of the cluster)
    backup_name: str | None = None
    all_spaces: bool = True
    spaces: dict[str, str] | None = None  # the backup's space id -> name
    replaced_spaces: dict[str, str] = field(default_factory=dict)  # re-created since the backup: id now -> name
    mode: str | None = None  # placement.STAGED or in place; None in a journal from before staging
    data_bytes: int = 0  # the bytes this restore puts on the storage hosts (how long their start may take)
    # STAGED: the staged trees' fingerprints, proved again right before STARTED starts a daemon on them
    fingerprints: dict[str, str | None] = field(default_factory=dict)
    fingerprint_format: int = 1

    @on(FileRestored, sets=("restored",))
    def _restored(self, e: FileRestored) -> None:
        self.restored.fold(e)

    @on_each(ManifestJournaled, ManifestHeaderJournaled, sets=("manifest",))
    def _manifest(self, _type: str, e: ManifestJournaled | ManifestHeaderJournaled) -> None:
        self.manifest = e.manifest

    @on(META_INGEST_BUILT, sets=("meta_ingest",))
    def _meta_ingest(self, d: dict[str, Any]) -> None:
        if self.meta_ingest is None:  # the first one built is the one every metad ingests
            self.meta_ingest = d

    @on(DowntimeBegan, sets=("downtime_began", "tracks_starts"))
    def _downtime_began(self, e: DowntimeBegan) -> None:
        if self.downtime_began is None:  # the first stop began the downtime
            self.downtime_began = e.at
            self.tracks_starts = bool(e.tracks_starts)

    @on(DowntimeEnded, sets=("downtime_seconds",))
    def _downtime_ended(self, e: DowntimeEnded) -> None:
        if self.downtime_seconds is None:
            self.downtime_seconds = e.seconds

    @on(ServicesStarting, sets=("services_starting",))
    def _services_starting(self, e: ServicesStarting) -> None:
        if self.services_starting is None:
            self.services_starting = e.to_data()  # STARTED journals it again, in its facts

    @on_each(ownership.DaemonStarted, ownership.DaemonStartIssued, ownership.DaemonStopped,
             ownership.ServiceFoundRunning, sets=("own_daemons",))
    def _daemons(self, _type: str, e: Any) -> None:
        self.own_daemons.fold(e)

    @on(ScratchDirMaking, sets=("scratch_making",))
    def _scratch_making(self, e: ScratchDirMaking) -> None:
        self.scratch_making.add(f"{e.host}:{e.path}")

    @on(ScratchDirMade, sets=("scratch", "scratch_legacy"))
    def _scratch_made(self, e: ScratchDirMade) -> None:
        self.scratch[f"{e.host}:{e.path}"] = [int(e.dev), int(e.ino)]
        if e.taken == "legacy":
            self.scratch_legacy = True

    @completed("CHECKED", sets=("pairs", "backup_name", "all_spaces", "spaces", "replaced_spaces", "mode",
                                     "data_bytes"))
    def _checked(self, f: dict[str, Any]) -> None:
        pairs = f.get("pairs")  # None (a step that needs it fails) in a journal that lacks it
        self.pairs = None if pairs is None else [(o, n) for o, n in pairs]
        self.backup_name = f.get("backup_name")
        self.all_spaces = bool(f.get("all_spaces", True))
        self.spaces = f.get("spaces")
        self.replaced_spaces = f.get("replaced_spaces") or {}  # none in a journal from before it existed
        self.mode = f.get("mode")
        self.data_bytes = int(f.get("bytes") or 0)

    @completed("STAGED", sets=("fingerprints", "fingerprint_format"))
    def _staged(self, f: dict[str, Any]) -> None:
        self.fingerprints = f.get("fingerprints") or {}
        self.fingerprint_format = int(f.get("fingerprint_format", 1))


RestoreContext = StepContext[RestoreState]
