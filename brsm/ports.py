"""The ports workflows talk through. Narrow on purpose; adapters and in-process fakes implement them.

Workflows import this module, never asyncssh, aioboto3, oss2 or nebula3. Everything crossing a
port is a plain dataclass defined here, so fakes and real adapters are interchangeable.
"""
from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


# --- meta -----------------------------------------------------------------------------------
@dataclass(frozen=True, order=True)
class HostAddr:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"

    @classmethod
    def parse(cls, s: str) -> "HostAddr":
        host, _, port = s.rpartition(":")
        return cls(host, int(port))


@dataclass(frozen=True)
class ServiceInfo:
    role: str  # "META", "STORAGE", "GRAPH"
    addr: HostAddr
    root: str
    data_paths: tuple[str, ...]


@dataclass(frozen=True)
class Snapshot:
    name: str
    status: str  # "VALID" or "INVALID"
    hosts: str = ""


@dataclass(frozen=True)
class CreatedBackup:
    """What createBackup returned: the name, and the BackupMeta both as raw Thrift bytes (framed
    binary, exactly what `<NAME>.meta` holds) and as the plain facts later steps need."""

    name: str
    meta_bytes: bytes
    spaces: Mapping[int, str]  # space id -> name
    all_spaces: bool
    meta_files: tuple[str, ...]
    # storage host -> list of (space_id, data_path, checkpoint dir on that host)
    checkpoints: Mapping[str, tuple[tuple[int, str, str], ...]]
    storage_hosts: tuple[HostAddr, ...]
    create_time_ms: int
    # meta_files as metad returned them: full paths on the metad host that made the backup
    meta_paths: tuple[str, ...] = ()


@dataclass(frozen=True)
class ListedHost:
    """One entry of metad's ``listHosts``: a service address, its role and whether metad counts it
    ONLINE (it heartbeated lately and the heartbeat was accepted)."""

    addr: HostAddr
    role: str  # "STORAGE", "GRAPH", "META"
    status: str  # "ONLINE" or "OFFLINE"
    version: str = ""  # the daemon's version string from its heartbeat, e.g. "3.8.0"

    @property
    def online(self) -> bool:
        return self.status == "ONLINE"


@dataclass(frozen=True)
class SpaceSchema:
    """A space's schema as metad lists it (listTags, listEdges, listTagIndexes, listEdgeIndexes)."""

    tags: tuple[tuple[int, str, int], ...] = ()  # (tag id, name, version)
    edges: tuple[tuple[int, str, int], ...] = ()  # (edge type, name, version)
    indexes: tuple[tuple[int, str], ...] = ()  # (index id, name), tag and edge indexes


@runtime_checkable
class MetaSstCodec(Protocol):
    """Reads and writes the SST files metad exports and ingests (RocksDB's table format)."""

    def read(self, blobs: Sequence[bytes]) -> dict[bytes, bytes]: ...
    def write(self, puts: dict[bytes, bytes], deletes: set[bytes]) -> bytes: ...


@runtime_checkable
class MetaPort(Protocol):
    async def list_cluster(self) -> list[ServiceInfo]: ...
    async def meta_dir(self, addr: HostAddr | None = None) -> ServiceInfo: ...  # getMetaDirInfo of that metad
    async def list_spaces(self) -> dict[str, int]: ...
    async def list_ft_indexes(self) -> dict[str, int]: ...
    async def list_zones(self) -> dict[str, list[str]]: ...  # zone name -> its hosts "host:port"  # full-text index name -> space id
    async def list_listeners(self, space_id: int) -> list[str]: ...  # "TYPE host:port part N" of a space
    async def create_backup(self, spaces: Sequence[str] | None) -> CreatedBackup: ...
    async def list_snapshots(self) -> list[Snapshot]: ...
    async def drop_snapshots(self, names: Sequence[str]) -> None: ...  # one call per name; a missing one is fine
    async def drop_space(self, name: str) -> None: ...
    async def list_schema(self, space_id: int) -> SpaceSchema: ...
    async def restore_meta(self, addr: HostAddr, files: Sequence[str], host_pairs: Sequence[tuple[HostAddr, HostAddr]]) -> None: ...
    async def list_hosts(self, role: str = "STORAGE") -> list[ListedHost]: ...
    async def close(self) -> None: ...


# --- hosts -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunResult:
    exit_status: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class RemoteFile:
    path: str  # absolute
    size: int


@dataclass(frozen=True)
class DirStat:
    """A directory as lstat saw it: its identity (device, inode), whether the connecting user owns
    it, and whether it is empty. Every component of its path was a real directory (a symbolic link
    is accepted above it only when root owns the link: no one else can have made it)."""

    dev: int
    ino: int
    mine: bool = True
    empty: bool = True

    @property
    def identity(self) -> tuple[int, int]:
        return (self.dev, self.ino)


@runtime_checkable
class HostPort(Protocol):
    """One cluster machine, reached over SSH. ``name`` is the service address (host part)."""

    name: str

    async def run(self, argv: Sequence[str], *, check: bool = True, timeout: float | None = None) -> RunResult: ...
    async def exists(self, path: str) -> bool: ...
    async def walk(self, path: str) -> list[RemoteFile]: ...
    def open_read(self, path: str, *, offset: int = 0, block_size: int = 1 << 20) -> AsyncIterator[bytes]: ...
    async def write_file(self, path: str, chunks: AsyncIterator[bytes], *, mode: int = 0o644) -> int: ...
    async def rename(self, src: str, dst: str) -> None: ...
    async def makedirs(self, path: str) -> None: ...
    async def remove_tree(self, path: str) -> None: ...
    async def free_bytes(self, path: str) -> int: ...
    # A scratch dir: ``make_dir`` creates exactly ``path`` (never an existing one, never through a
    # link; its parent must exist); ``lstat_dir`` is None for a missing path, and raises RemoteError
    # when the path or a component above it is not a real directory.
    async def make_dir(self, path: str) -> DirStat: ...
    async def lstat_dir(self, path: str) -> DirStat | None: ...
    # ``<install_dir>/scripts/nebula.service <action> <name>``; returns whatever it printed and its exit
    # status, never raising on a non-zero one (that script's exit status says little: see
    # brsm.workflows.services). A host that cannot be reached still raises.
    async def service(self, action: str, name: str, *, install_dir: str) -> RunResult: ...
    async def close(self) -> None: ...


@runtime_checkable
class HelperChannel(Protocol):
    """The direct data path's helper running on a host (brsm.adapters.direct_helper documents its
    messages): JSON objects both ways. Closing it, or losing the connection, ends its input, and the
    helper stops at once."""

    async def send(self, msg: dict[str, Any]) -> None: ...
    async def receive(self) -> dict[str, Any] | None: ...  # None: the helper ended
    async def close(self, *, at_once: bool = False) -> int | None: ...  # its exit status, if it gave one
    # at_once: end its input without saying "exit", so it stops in the middle of a request (a file
    # given up on: no part of it is sent after brsm let it go)


@runtime_checkable
class RunsHelper(Protocol):
    """A host that can run the direct data path's helper (the SSH hosts; the fakes cannot)."""

    async def start_helper(self) -> HelperChannel: ...


@runtime_checkable
class HostsPort(Protocol):
    """All hosts of the cluster, pooled: one SSH connection per host, opened on first use."""

    def host(self, name: str) -> HostPort: ...
    async def close(self) -> None: ...


# --- storage ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int


@dataclass
class UploadState:
    """Resumable multipart state, handed to the caller to journal after each part."""

    upload_id: str | None = None
    parts: list[dict[str, Any]] = field(default_factory=list)  # [{"n": 1, "etag": "...", "size": ...}]
    part_size: int = 0


@runtime_checkable
class ByteSource(Protocol):
    """A file that can be streamed from any offset. Handed to ``Storage.put`` instead of a plain
    stream, it lets a backend that keeps a cut upload locally (the local directory) continue it
    without reading the start over SSH again."""

    def open(self, offset: int = 0) -> AsyncIterator[bytes]: ...


def reopenable(chunks: "AsyncIterator[bytes] | ByteSource") -> bool:
    """A ByteSource (openable again, at any offset), not a plain stream that passes only once."""
    return not hasattr(chunks, "__aiter__")


def stream_of(chunks: "AsyncIterator[bytes] | ByteSource", offset: int = 0) -> AsyncIterator[bytes]:
    """The byte stream of ``chunks`` from ``offset`` (a plain stream can only start at 0)."""
    if not reopenable(chunks):
        if offset:
            raise ValueError("a plain stream cannot start at an offset")
        return chunks  # type: ignore[return-value]
    return chunks.open(offset)


@dataclass(frozen=True)
class PutResult:
    """What the target confirmed: bytes stored and the SHA-256 of the bytes the adapter received."""

    size: int
    sha256: str


@dataclass(frozen=True)
class StorageProperties:
    """What a store can do, asked once instead of probed (restic's ``Backend.Properties()``).

    ``multipart``: the upload verbs work (``begin_upload`` … ``abort_upload``); ``signs_urls``: so do
    ``part_url`` and ``get_url``, and a host may move its own bytes (the direct data path). A verb the
    store cannot do raises NotImplementedError. Part sizes in bytes; 0 where there are no parts.
    """

    multipart: bool = False
    signs_urls: bool = False
    part_size: int = 0  # what a new upload's parts get (the configured size; a huge object gets bigger ones)
    min_part_size: int = 0  # every part but the last at least this
    max_part_size: int = 0
    max_parts: int = 0
    server_side_copy: bool = False  # no store offers it to brsm yet


@runtime_checkable
class Storage(Protocol):
    """restic's few verbs, and the direct data path's upload and signing verbs. Keys are relative to
    the storage root, with '/' separators."""

    uri: str

    def properties(self) -> StorageProperties: ...
    async def put(self, key: str, chunks: AsyncIterator[bytes] | ByteSource, size: int, *,
                  state: UploadState | None = None,
                  on_part: Callable[[UploadState], Any] | None = None) -> PutResult: ...  # on_part: journal a part
    async def put_bytes(self, key: str, data: bytes) -> None: ...  # atomic, for commit files
    def get(self, key: str, *, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]: ...
    async def get_bytes(self, key: str) -> bytes: ...
    async def stat(self, key: str) -> ObjectInfo: ...  # raises ObjectNotFound
    async def list(self, prefix: str) -> list[ObjectInfo]: ...
    async def list_dirs(self, prefix: str) -> list[str]: ...
    async def delete(self, key: str) -> None: ...  # missing is fine
    async def delete_prefix(self, prefix: str) -> int: ...
    async def abort_uploads(self, prefix: str) -> int: ...
    # -- a multipart upload whose parts someone else sends (``properties().multipart``) --
    async def begin_upload(self, key: str) -> str: ...  # the upload id
    # {n: {"etag", "size", …}} of the parts the store holds, or None when the upload is gone
    async def uploaded_parts(self, key: str, upload_id: str) -> dict[int, dict[str, Any]] | None: ...
    async def finish_upload(self, key: str, upload_id: str, parts: list[dict[str, Any]]) -> None: ...
    async def abort_upload(self, key: str, upload_id: str) -> None: ...  # a gone upload is fine
    # -- signed URLs (``properties().signs_urls``): they carry a signature, never journal or log one --
    async def part_url(self, key: str, upload_id: str, n: int, md5: str, expires: int) -> str: ...
    async def get_url(self, key: str, expires: int) -> str: ...
    async def close(self) -> None: ...


class Progress(Protocol):
    def start(self, task: str, total: int | None, unit: str = "B") -> None: ...
    def advance(self, task: str, amount: int) -> None: ...
    def done(self, task: str) -> None: ...
    def note(self, text: str) -> None: ...
