"""The ports workflows talk through. Narrow on purpose; adapters and in-process fakes implement them.

Workflows import this module, never asyncssh, aioboto3, oss2 or nebula3. Everything crossing a
port is a plain dataclass defined here, so fakes and real adapters are interchangeable.
"""
from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable


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
class ProcessUnseen:
    """Why a process's command line could not be read (what the host said)."""

    why: str


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
class FileIdentity:
    """What tells a file on a host from any other without reading it (``stat``, in ns): its device
    and inode, its inode's birth time (None where the file system or ``stat`` does not say), its last
    content change (mtime) and its last status change (ctime). Which of them must agree for a hash to
    be reused is ``brsm.workflows.backup.reuse.same_file``'s decision."""

    dev: int
    ino: int
    mtime_ns: int
    btime_ns: int | None
    ctime_ns: int

    def as_list(self) -> list[int | None]:
        return [self.dev, self.ino, self.mtime_ns, self.btime_ns, self.ctime_ns]

    @classmethod
    def from_list(cls, v: Any) -> "FileIdentity | None":
        """From a manifest's or journal's list; None when it is not one (an older brsm wrote none)."""
        ok = lambda x: isinstance(x, int) and not isinstance(x, bool)  # noqa: E731
        if not (isinstance(v, list) and len(v) == 5 and all(ok(x) for i, x in enumerate(v) if i != 3)
                and (v[3] is None or ok(v[3]))):
            return None
        return cls(v[0], v[1], v[2], v[3], v[4])


@dataclass(frozen=True)
class RemoteFile:
    path: str  # absolute
    size: int
    ident: FileIdentity | None = None  # walk_pages says it where the host's stat could


@dataclass(frozen=True)
class FileTally:
    """How many regular files a tree holds and their bytes (apparent sizes), counted without a list."""

    files: int
    bytes: int


@dataclass(frozen=True)
class FileRead:
    """One file of a ``read_files`` answer: its bytes as the host read them, or ``data`` None and
    ``problem`` saying why (not there, not a regular file, not read whole)."""

    path: str
    data: bytes | None
    problem: str = ""


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


PathKind = Literal["file", "none", "other"]  # a regular file; nothing at that name; anything else


@dataclass(frozen=True)
class RealPaths:
    """Paths resolved on a host (symlinks followed). ``paths`` is None when one of them does not
    exist (or could not be resolved); ``problem`` is what the host said then."""

    paths: tuple[str, ...] | None
    problem: str = ""


@dataclass(frozen=True)
class TreeFingerprint:
    """A directory tree's listing in one digest: the SHA-256 of one sorted line per entry below it.
    ``digest`` is None when the dir does not exist; ``symlink`` when the dir itself is a symbolic link
    (its listing would prove nothing, whatever it points at)."""

    digest: str | None
    symlink: bool = False


@dataclass(frozen=True)
class DaemonProbe:
    """One daemon to look at: ``service`` ("metad", "storaged", "graphd") run by
    ``<install_dir>/scripts/nebula.service``, serving on ``address:port``."""

    service: str
    install_dir: str
    address: str
    port: int


@dataclass(frozen=True)
class DaemonSeen:
    """What ``nebula.service status`` printed for one daemon (its exit status says nothing: see
    brsm.workflows.services), and whether its port accepted a connection."""

    status_text: str
    port_open: bool


@dataclass(frozen=True)
class HostCheck:
    """One look at a host: each daemon asked about (missing when the host said nothing of it), and
    the pids of the processes whose working directory or an open file is in one of the dirs."""

    daemons: Mapping[str, DaemonSeen]
    dir_users: tuple[int, ...] = ()


@runtime_checkable
class HostPort(Protocol):
    """One cluster machine, reached over SSH. ``name`` is the service address (host part).

    Workflows ask for what they need done (verbs) and get typed answers; how it is done on the host
    (which command, its quoting, its output format) is the adapter's business alone, so an in-process
    fake implements the meaning and no workflow writes shell. A host that cannot be reached raises
    RemoteError from every verb."""

    name: str

    async def exists(self, path: str) -> bool: ...
    async def walk(self, path: str) -> list[RemoteFile]: ...
    # every regular file under ``path`` (recursive), at most ``page`` to a page, in the order the host
    # lists them (not sorted: nothing holds the whole listing), each with its identity (``ident``); each
    # wait for the host's next bytes gives up after ``timeout`` seconds with a RemoteError, and so does a
    # listing that failed
    def walk_pages(self, path: str, *, page: int = 1000, timeout: float = 120) -> AsyncIterator[list[RemoteFile]]: ...
    # what walk_pages would list, counted on the way (no list is kept); raises as walk_pages does
    async def count_files(self, path: str, *, timeout: float = 120) -> FileTally: ...
    # several small files in one round trip, answered in the order asked: the caller bounds their
    # total size (the answer is held in memory); ``timeout`` bounds the whole read
    async def read_files(self, paths: Sequence[str], *, timeout: float = 300) -> list[FileRead]: ...
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

    # -- asked and answered: a look gives up after ``timeout`` seconds with a RemoteError (None: it may
    # wait as long as the host takes, as a walk does)
    async def check_login(self, *, timeout: float = 30) -> None: ...  # log in and run a command, or raise
    async def read_text(self, path: str, *, timeout: float = 30) -> str | None: ...  # None: cannot read it
    # a running process's arguments (``/proc/<pid>/cmdline``), or a ProcessUnseen saying why they
    # cannot be read (gone, or hidden from this user by a /proc mounted with hidepid)
    async def process_argv(self, pid: int, *, timeout: float = 30) -> "tuple[str, ...] | ProcessUnseen": ...
    # the name itself (a link not followed, a FIFO never opened); raises when the look failed, so a
    # failed look never passes for "nothing there"
    async def path_kind(self, path: str, *, timeout: float) -> PathKind: ...
    # mkdir(2) of exactly ``path``: True when this call created it (an atomic claim), False when not
    async def claim_dir(self, path: str, *, timeout: float) -> bool: ...
    async def clock(self, *, timeout: float) -> float: ...  # the host's time, seconds since the epoch
    # the file system (device number) of each path, links followed; None when any cannot be looked at
    async def device_ids(self, paths: Sequence[str], *, timeout: float = 30) -> tuple[int, ...] | None: ...
    async def real_paths(self, paths: Sequence[str], *, timeout: float = 30) -> RealPaths: ...
    # the full paths of the entries directly in ``path`` whose name matches one of the glob
    # ``patterns`` (only directories when ``dirs_only``); none for a dir that cannot be listed
    async def list_named(self, path: str, patterns: Sequence[str], *, dirs_only: bool = False,
                         timeout: float | None = None) -> list[str]: ...
    # the SHA-256 of each regular file, by path; a file that cannot be read is missing from the answer
    async def hash_files(self, paths: Sequence[str], *, timeout: float = 3600) -> dict[str, str]: ...
    # each dir's fingerprint (``fmt`` 1: regular files by path, size, mtime, inode; 2: every entry by
    # path, type, size, mtime, ctime, inode), ``<dir>/ingest`` left out; raises when the look failed
    async def fingerprint_trees(self, dirs: Sequence[str], *, fmt: int,
                                timeout: float = 3600) -> dict[str, TreeFingerprint]: ...
    # each daemon's status and port, and who uses ``dirs``, in one round trip (this runs in downtime)
    async def check_daemons(self, daemons: Sequence[DaemonProbe], dirs: Sequence[str], *,
                            timeout: float = 60) -> HostCheck: ...

    # -- changed: raise RemoteError when it did not happen
    async def copy_tree(self, src: str, dst: str) -> None: ...  # ``dst`` new; modes, times and links kept
    async def copy_into(self, files: Sequence[str], dest_dir: str) -> None: ...  # each by its own name


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
    multipart_threshold: int = 0  # an object bigger than this goes up in parts
    server_side_copy: bool = False  # ``copy`` makes the object inside the store (no byte through brsm)


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
    # ``dst`` made a whole copy of ``src`` inside the store (S3/OSS CopyObject, in parts above 5 GiB; a
    # hard link on local storage): ObjectNotFound when ``src`` is gone; its ObjectInfo once it is there
    async def copy(self, src: str, dst: str) -> ObjectInfo: ...

    async def put_many(self, items: Sequence[tuple[str, bytes]]) -> list[PutResult]:
        """A group of small objects whose bytes are in memory, each (key, bytes); their results in
        the same order, each SHA-256 that of the bytes given. Keys are distinct. When it returns,
        every object is durable and visible under its key, whole. On an error, which of them were
        stored is not promised (none is visible half-written): the caller treats the group as not
        stored and puts each again alone. Why a verb of its own: a local store pays its durability
        barrier once per group instead of once per file, which is what small files cost."""
        ...

    def get(self, key: str, *, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]: ...
    async def get_bytes(self, key: str) -> bytes: ...
    async def stat(self, key: str) -> ObjectInfo: ...  # raises ObjectNotFound
    async def list(self, prefix: str) -> list[ObjectInfo]: ...  # whole: small listings only (see iter_objects)
    # Every object whose key starts with ``prefix`` (and sorts after ``after``, when given), a page of
    # at most ``page`` at a time, never the whole listing at once: the one way to read a backup's data
    # objects, whose number grows with the cluster's files. In strictly increasing key order: by
    # Unicode code point, Python's ``str`` order, which is the byte order of the keys' UTF-8 (the order
    # S3 and OSS list in; the local and in-memory stores yield the same), so a reader can merge it with
    # another key-ordered stream (a manifest's file list) holding one entry of each.
    def iter_objects(self, prefix: str, *, page: int = 1000, after: str = "") -> AsyncIterator[ObjectInfo]: ...
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


@dataclass(frozen=True)
class BaseFile:
    """One file of an incremental backup's base, as its manifest lists it: the object ``key`` holds
    ``size`` bytes of SHA-256 ``sha256``, read from ``host`` (whose file had identity ``ident``, when
    the manifest says it)."""

    key: str
    size: int
    sha256: str
    host: str = ""
    ident: FileIdentity | None = None


class BaseIndex(Protocol):
    """A base backup's files, answerable by content and by a host file's identity, in bounded memory:
    a million-file base is not held in a dict (an adapter keeps it on disk, gone when closed)."""

    def add(self, files: Sequence[BaseFile]) -> None: ...
    # of ``sizes``, those some base file has (only a file of such a size can be found by content)
    def sizes(self, sizes: Sequence[int]) -> set[int]: ...
    # (size, sha256) -> a key of the base holding those bytes
    def by_content(self, pairs: Sequence[tuple[int, str]]) -> dict[tuple[int, str], str]: ...
    # the base's files last read from ``host`` at each (dev, ino): the candidates to compare identities with
    def by_inode(self, host: str, inodes: Sequence[tuple[int, int]]) -> dict[tuple[int, int], list[BaseFile]]: ...
    def close(self) -> None: ...


class Progress(Protocol):
    def start(self, task: str, total: int | None, unit: str = "B") -> None: ...
    def advance(self, task: str, amount: int) -> None: ...
    def done(self, task: str) -> None: ...
    def note(self, text: str) -> None: ...
