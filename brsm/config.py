"""The cluster configuration file (TOML), loaded into frozen dataclasses.

Order: defaults → file (``--config`` or ``$BRSM_CONFIG``) → flags. Every problem in a file is
collected and reported together as ``file:line: key.path: what is wrong`` (borgmatic collects
schema errors the same way; we add the line). Secrets never live here: S3/OSS credentials come
from the environment or the usual credential files.
"""
from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from journal.redact import scrub_text

from brsm.config_file import file_kind, read_toml
from brsm.config_schema import Bad, Key, Reader, Section, read_document
from brsm.durations import MAX_SECONDS, DurationError, parse_duration
from brsm.errors import UsageError
from brsm.part_sizes import part_size_problems

DEFAULT_INSTALL_DIR = "/usr/local/nebula"
# How long a backup waits for metad's createBackup (writes are blocked while it checkpoints): five
# times the 60 s brsm gives any other meta call. [cluster] create_backup_timeout overrides it.
DEFAULT_CREATE_BACKUP_TIMEOUT = 300.0
MAX_CREATE_BACKUP_TIMEOUT = 86400.0  # a day of blocked writes is already no timeout at all
# [cluster] lease_ttl: how long brsm's cluster lease lives unrefreshed (refreshed every ttl/5, at most
# every 60 s). Short: a run stops sooner when its lease host is unreachable. Long: a dead run's lease
# blocks others longer. Default 300 s.
MIN_LEASE_TTL = 10.0
MAX_LEASE_TTL = 86400.0


@dataclass(frozen=True)
class SshDefaults:
    # None: not set here — the OpenSSH client config's value for the host, else the default (the
    # local user, port 22): brsm's own settings win where they are given, as OpenSSH's flags do
    user: str | None = None
    port: int | None = None
    identity: str | None = None
    known_hosts: str | None = None
    accept_new_host_keys: bool = False  # first contact: accept (loudly) a key known_hosts has no entry for
    config: str | None = None  # OpenSSH client config: None = ~/.ssh/config if it exists, "" = none


@dataclass(frozen=True)
class HostConfig:
    address: str  # the service address metad reports
    ssh_host: str
    ssh_port: int | None  # None: the OpenSSH config's, else 22
    user: str | None  # None: the OpenSSH config's, else the local user
    identity: str | None
    known_hosts: str | None
    install_dir: str
    data_paths: tuple[str, ...] = ()
    accept_new_host_keys: bool = False


@dataclass(frozen=True)
class StorageDefaults:
    default: str | None = None
    s3_endpoint: str | None = None
    s3_region: str | None = None
    oss_endpoint: str | None = None
    # multipart tuning for S3/OSS uploads (None: the backend's defaults, 8 MiB parts above 16 MiB)
    part_size: int | None = None
    multipart_threshold: int | None = None
    # the store's smallest part, for S3-compatible stores that accept less than S3's 5 MiB (checks only)
    min_part_size: int | None = None


@dataclass(frozen=True)
class ClusterConfig:
    path: str | None
    name: str
    meta: tuple[str, ...]
    ssh: SshDefaults
    hosts: tuple[HostConfig, ...]
    storage: StorageDefaults = field(default_factory=StorageDefaults)
    create_backup_timeout: float = DEFAULT_CREATE_BACKUP_TIMEOUT
    lease_ttl: float | None = None
    metrics_file: str | None = None  # [metrics] file: Prometheus textfile written after every operation

    def configured_install_dir(self, address: str) -> str | None:
        """The install_dir a [[hosts]] entry names for this host; None when no entry does."""
        return next((h.install_dir for h in self.hosts if h.address == address), None)

    def host(self, address: str) -> HostConfig:
        """The SSH endpoint for a service host; unknown hosts fall back to the SSH defaults."""
        for h in self.hosts:
            if h.address == address:
                return h
        return HostConfig(address=address, ssh_host=address, ssh_port=self.ssh.port, user=self.ssh.user,
                          identity=self.ssh.identity, known_hosts=self.ssh.known_hosts,
                          install_dir=DEFAULT_INSTALL_DIR, accept_new_host_keys=self.ssh.accept_new_host_keys)


# The checks a key names in the schema: each takes the file's value (and the config file's directory,
# for relative paths) and returns what the config keeps, or raises Bad with the operator's words.

def _port(v: Any, base: Path) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= 65535:
        raise Bad(f"must be a port number 1–65535, not {v!r}")
    return v


def _bool(v: Any, base: Path) -> bool:
    if not isinstance(v, bool):
        raise Bad(f"must be true or false, not {v!r}")
    return v


def _text(v: Any, base: Path) -> str:
    return str(v)


def _text_or_none(v: Any, base: Path) -> str | None:
    return str(v) if v else None


def _addr_ok(s: Any) -> bool:
    if not isinstance(s, str):
        return False
    host, _, port = s.rpartition(":")
    return bool(host) and port.isdigit() and 1 <= int(port) <= 65535


_META_MISSING = "missing: list the metad addresses, e.g. meta = [\"10.0.0.1:9559\"]"


def _meta(v: Any, base: Path) -> tuple[str, ...]:
    meta = [v] if isinstance(v, str) else v
    if not meta:
        raise Bad(_META_MISSING)
    if not isinstance(meta, list) or not all(_addr_ok(m) for m in meta):
        raise Bad(f"must be a list of host:port strings, not {meta!r}")
    return tuple(meta)


def _seconds(maximum: float = MAX_SECONDS) -> Callable[[Any, Path], float]:
    """A duration: seconds as a number, or a string like "90s", "10m", "1h" (brsm.durations: finite,
    above zero, at most ``maximum``: TOML's ``inf`` and ``nan`` are numbers too)."""
    def check(v: Any, base: Path) -> float:
        try:
            return parse_duration(v, maximum=maximum)
        except DurationError as e:
            raise Bad(str(e)) from None
    return check


def _lease_ttl(v: Any, base: Path) -> float:
    ttl = _seconds()(v, base)
    if not MIN_LEASE_TTL <= ttl <= MAX_LEASE_TTL:
        raise Bad(f"must be between {MIN_LEASE_TTL:.0f} s and {MAX_LEASE_TTL / 3600:.0f} h, not {v!r}")
    return ttl


_SIZE_UNITS = {"": 1, "b": 1, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30}


def _size(v: Any, base: Path) -> int:
    """A byte count: a positive integer or a string like "256KiB", "8MiB"."""
    n = None
    if isinstance(v, int) and not isinstance(v, bool):
        n = v
    elif isinstance(v, str):
        m = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]*)\s*", v)
        if m and m.group(2).lower() in _SIZE_UNITS:
            n = int(m.group(1)) * _SIZE_UNITS[m.group(2).lower()]
    if n is None or n <= 0:
        raise Bad(f"must be a positive size in bytes or like \"8MiB\", not {v!r}")
    return n


def _expand(p: str | None, base: Path) -> str | None:
    if p is None:
        return None
    q = Path(os.path.expanduser(p))
    return str(q if q.is_absolute() else (base / q).resolve())


def _key_file(v: Any, base: Path) -> str | None:
    """An SSH key or known_hosts file, read whole at the first connection: /dev/zero or a FIFO there
    would hang or fill memory, and known_hosts = "/dev/null" would make every key a first contact.
    A path that exists must be a regular file (or a symlink to one); a missing one is reported where
    it is used (known_hosts may be created by --accept-new-host-keys)."""
    path = _expand(v, base)
    try:
        mode = os.stat(path).st_mode if path else None
    except OSError:
        mode = None
    if mode is not None and not stat.S_ISREG(mode):
        raise Bad(f"{path} is {file_kind(mode)}, not a file")
    return path


def _ssh_config(v: Any, base: Path) -> str | None:
    if not isinstance(v, str):
        raise Bad("must be a path (\"\" = read no OpenSSH config)")
    return _expand(v, base) if v else v


def _address(v: Any, base: Path) -> str:
    if not isinstance(v, str) or not v:
        raise Bad(_ADDRESS_MISSING)
    return v


_ADDRESS_MISSING = "missing: the host's service address as metad reports it"


def _data_paths(v: Any, base: Path) -> tuple[str, ...]:
    if not isinstance(v, list):
        raise Bad("must be a list of paths")
    return tuple(str(d) for d in v)


def _metrics_file(v: Any, base: Path) -> str | None:
    if not isinstance(v, str) or not v.strip():
        raise Bad(f"must be a file path, not {v!r}")
    return _expand(v, base)


def _store_text(v: Any, base: Path) -> Any:
    """A storage URI or region: credentials come from the environment, never from here
    (s3://KEY:SECRET@…, https://TOKEN@…, ?Signature=…)."""
    if isinstance(v, str) and scrub_text(v) != v:
        raise Bad(f"{scrub_text(v)} carries a credential; credentials come from the environment")
    return v


def _endpoint(v: Any, base: Path) -> Any:
    v = _store_text(v, base)
    if isinstance(v, str) and re.search(r"[?#\s\x00-\x1f\x7f]", v):
        raise Bad("is not an endpoint URL: no '?', '#', spaces or control characters "
                  "(e.g. \"https://s3.example.com:9000\")")
    return v


# What a config file may hold. Absent keys take their defaults where the config is built below;
# a [[hosts]] entry takes what it leaves out from [ssh].
SCHEMA = (
    Section("cluster", (Key("name", _text), Key("meta", _meta, missing=_META_MISSING),
                        Key("create_backup_timeout", _seconds(MAX_CREATE_BACKUP_TIMEOUT)),
                        Key("lease_ttl", _lease_ttl))),
    Section("ssh", (Key("user", _text_or_none), Key("port", _port), Key("identity", _key_file),
                    Key("known_hosts", _key_file), Key("accept_new_host_keys", _bool), Key("config", _ssh_config))),
    Section("hosts", (Key("address", _address, missing=_ADDRESS_MISSING), Key("ssh_host", _text),
                      Key("ssh_port", _port), Key("user", _text_or_none), Key("identity", _key_file),
                      Key("known_hosts", _key_file), Key("install_dir", _text), Key("data_paths", _data_paths),
                      Key("accept_new_host_keys", _bool)), many=True, sort_expected=True),
    Section("storage", (Key("default", _store_text), Key("s3_endpoint", _endpoint), Key("s3_region", _store_text),
                        Key("oss_endpoint", _endpoint), Key("part_size", _size), Key("multipart_threshold", _size),
                        Key("min_part_size", _size))),
    # reserved: a limit written here would silently not apply
    Section("limits", (), unknown="unknown key ([limits] takes no keys yet: give --concurrency, --per-host and "
                                  "--rate-limit on the command line)"),
    Section("metrics", (Key("file", _metrics_file),)),
)


def load_config(path: str | os.PathLike[str] | None) -> ClusterConfig:
    if path is None:
        path = os.environ.get("BRSM_CONFIG")
    if not path:
        raise UsageError("no cluster config given, and no --meta",
                         hint="pass --config FILE, set BRSM_CONFIG, or name the cluster as nebula-br does: --meta "
                              "HOST:PORT of metad (with --ssh-user, --ssh-key if needed)")
    p = Path(path)
    data, text = read_toml(p)
    return parse_config(data, str(p), text)


# The flags that stand for config keys, as nebula-br users give them (`br backup full --meta …`), and
# the key each one sets. Order of precedence: built-in defaults < config file (--config or
# $BRSM_CONFIG) < these flags. A flag sets the [ssh] default: a [[hosts]] entry that names its own
# user, port, identity or known_hosts keeps it (the more specific line wins).
FLAG_KEYS = {"meta": ("cluster", "meta"), "ssh_user": ("ssh", "user"), "ssh_port": ("ssh", "port"),
             "ssh_key": ("ssh", "identity"), "known_hosts": ("ssh", "known_hosts")}


def cluster_flags(params: dict[str, Any]) -> dict[str, Any]:
    """The config flags among an operation's params (those given)."""
    return {k: params[k] for k in FLAG_KEYS if params.get(k) not in (None, "", [])}


def load_cluster(path: str | os.PathLike[str] | None, flags: dict[str, Any] | None = None) -> ClusterConfig:
    """The cluster's config: the file (--config, else $BRSM_CONFIG), overlaid with the flags; flags
    alone (--meta at least) need no file. Checked as one document, with the same messages."""
    flags = {k: v for k, v in (flags or {}).items() if v not in (None, "", [])}
    if not flags:
        return load_config(path)
    path = path or os.environ.get("BRSM_CONFIG") or None
    data: dict[str, Any] = {}
    text = ""
    if path:
        data, text = read_toml(Path(path))
    elif "meta" not in flags:
        raise UsageError("no cluster given: --meta is needed without a config file",
                         hint="e.g. --meta 10.0.0.1:9559,10.0.0.2:9559 --ssh-user nebula --ssh-key ~/.ssh/id_ed25519, "
                              "or --config FILE")
    for k, v in flags.items():
        section, key = FLAG_KEYS[k]
        if not isinstance(data.get(section, {}), dict):
            continue  # the file's own error is reported by parse_config
        if k in ("ssh_key", "known_hosts"):
            v = os.path.abspath(os.path.expanduser(str(v)))  # a flag's path is relative to where it was typed
        data.setdefault(section, {})[key] = v
    return parse_config(data, str(path) if path else "<flags>", text)


def parse_config(data: dict[str, Any], path: str = "<config>", text: str = "") -> ClusterConfig:
    """The config ``data`` describes, or one UsageError naming every problem in it."""
    r = Reader(path, text)
    base = Path(path).resolve().parent if path not in ("<config>", "<flags>") else Path.cwd()
    doc = read_document(r, data, SCHEMA, base)
    cl, st = doc["cluster"], doc["storage"]
    sshd = SshDefaults(**doc["ssh"])
    hosts = _hosts(r, doc["hosts"], sshd)
    _part_limits(r, st, _raw_default_store(data))
    if r.errors:
        raise UsageError(
            f"{len(r.errors)} problem(s) in the config:\n  " + "\n  ".join(r.errors),
            hint="fix the lines named above; `brsm config check FILE` re-checks",
        )
    return ClusterConfig(
        path=path,
        name=cl.get("name", "cluster"),
        meta=cl.get("meta", ()),
        ssh=sshd,
        hosts=hosts,
        create_backup_timeout=cl.get("create_backup_timeout", DEFAULT_CREATE_BACKUP_TIMEOUT),
        lease_ttl=cl.get("lease_ttl"),
        metrics_file=doc["metrics"].get("file"),
        storage=StorageDefaults(**st),
    )


def _hosts(r: Reader, entries: list[dict[str, Any] | None], sshd: SshDefaults) -> tuple[HostConfig, ...]:
    """The [[hosts]] entries with an address, each filling what it leaves out from [ssh]."""
    hosts: list[HostConfig] = []
    seen: set[str] = set()
    for i, h in enumerate(entries):
        if h is None or "address" not in h:
            continue
        addr = h["address"]
        if addr in seen:
            r.err(f"hosts[{i}].address", f"{addr} is listed twice", key="address", section="hosts", nth=i)
        seen.add(addr)
        hosts.append(HostConfig(
            address=addr,
            ssh_host=h.get("ssh_host", addr),
            ssh_port=h.get("ssh_port", sshd.port),
            user=h.get("user") or sshd.user,
            identity=h.get("identity") or sshd.identity,
            known_hosts=h.get("known_hosts") or sshd.known_hosts,
            install_dir=h.get("install_dir", DEFAULT_INSTALL_DIR),
            data_paths=h.get("data_paths", ()),
            accept_new_host_keys=h.get("accept_new_host_keys", sshd.accept_new_host_keys),
        ))
    return tuple(hosts)


def _raw_default_store(data: dict[str, Any]) -> str | None:
    """[storage] default as written (even one refused for carrying a credential names its store)."""
    st = data.get("storage")
    default = st.get("default") if isinstance(st, dict) else None
    return default if isinstance(default, str) else None


def _part_limits(r: Reader, st: dict[str, Any], default: str | None) -> None:
    """At load time, not minutes into an upload: the part size against the minimum of the store the
    config names (the smaller of S3's and OSS's when it names none; the storage a run opens is checked
    again then) and the stores' maxima. A file that would need more than 10,000 parts gets a larger
    part for itself (``choose_part_size``), so the part count needs no setting here."""
    scheme = default.split("://", 1)[0].lower() if default and "://" in default else None
    for key, msg in part_size_problems(st.get("part_size"), st.get("multipart_threshold"),
                                       scheme=scheme, min_part_size=st.get("min_part_size")):
        r.err(f"storage.{key}", msg, key=key, section="storage")
