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
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from journal.redact import scrub_text

from brsm.durations import MAX_SECONDS, DurationError, parse_duration
from brsm.errors import UsageError
from brsm.sizes import exact_size_text
from brsm.store_limits import MAX_PART, MAX_PUT, MIN_PART

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


class _Collector:
    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()
        self.errors: list[str] = []

    def line_of(self, key: str, section: str | None = None, nth: int = 0) -> int | None:
        """Best-effort line number of ``key`` (inside the nth ``[section]``/``[[section]]``)."""
        start = 0
        if section:
            hits = [i for i, l in enumerate(self.lines) if re.match(rf"\s*\[\[?{re.escape(section)}\]\]?\s*$", l)]
            if len(hits) <= nth:
                return (hits[-1] + 1) if hits else None
            start = hits[nth]
        for i in range(start, len(self.lines)):
            if i > start and section and self.lines[i].lstrip().startswith("["):
                break
            if re.match(rf"\s*{re.escape(key)}\s*=", self.lines[i]):
                return i + 1
        return start + 1 if section else None

    def err(self, where: str, msg: str, *, key: str, section: str | None = None, nth: int = 0) -> None:
        line = self.line_of(key, section, nth)
        loc = f"{self.path}:{line}" if line else self.path
        self.errors.append(f"{loc}: {where}: {msg}")


def _port(c: _Collector, v: Any, where: str, key: str, section: str | None, nth: int = 0) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= 65535:
        c.err(where, f"must be a port number 1–65535, not {v!r}", key=key, section=section, nth=nth)
        return 22
    return v


def _bool(c: _Collector, v: Any, where: str, key: str, section: str | None, nth: int = 0) -> bool:
    if not isinstance(v, bool):
        c.err(where, f"must be true or false, not {v!r}", key=key, section=section, nth=nth)
        return False
    return v


def _addr_ok(s: Any) -> bool:
    if not isinstance(s, str):
        return False
    host, _, port = s.rpartition(":")
    return bool(host) and port.isdigit() and 1 <= int(port) <= 65535


_SIZE_UNITS = {"": 1, "b": 1, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30}


def _size(c: _Collector, v: Any, where: str, key: str, section: str) -> int | None:
    """A byte count: a positive integer or a string like "256KiB", "8MiB"."""
    n = None
    if isinstance(v, int) and not isinstance(v, bool):
        n = v
    elif isinstance(v, str):
        m = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]*)\s*", v)
        if m and m.group(2).lower() in _SIZE_UNITS:
            n = int(m.group(1)) * _SIZE_UNITS[m.group(2).lower()]
    if n is None or n <= 0:
        c.err(where, f"must be a positive size in bytes or like \"8MiB\", not {v!r}", key=key, section=section)
        return None
    return n


def _seconds(c: _Collector, v: Any, where: str, key: str, section: str, *,
             maximum: float = MAX_SECONDS) -> float | None:
    """A duration: seconds as a number, or a string like "90s", "10m", "1h" (brsm.durations: finite,
    above zero, at most ``maximum``: TOML's ``inf`` and ``nan`` are numbers too)."""
    try:
        return parse_duration(v, maximum=maximum)
    except DurationError as e:
        c.err(where, str(e), key=key, section=section)
        return None




def _scheme(uri: str | None) -> str | None:
    return uri.split("://", 1)[0].lower() if uri and "://" in uri else None


def part_size_problems(part_size: int | None, threshold: int | None, *, scheme: str | None,
                       min_part_size: int | None = None) -> list[tuple[str, str]]:
    """[(key, what is wrong)] for multipart sizes that cannot work on ``scheme``'s store (None: on S3
    or OSS, whichever is picked later). ``min_part_size`` replaces the store's minimum (an
    S3-compatible store that accepts smaller parts, such as the sandbox's stand-ins).

        part_size_problems(1024, None, scheme="s3")
        -> [("part_size", "1024 bytes is below S3's minimum part of 5 MiB: ...")]
    """
    out = []
    if part_size is not None:
        if min_part_size is not None:
            floor, who = min_part_size, "storage.min_part_size"
        elif scheme in MIN_PART:
            floor, who = MIN_PART[scheme], f"{scheme.upper()}'s minimum part"
        elif scheme is None:
            floor, who = min(MIN_PART.values()), "the smallest part S3 or OSS accept"
        else:  # local storage has no parts
            floor, who = 1, ""
        if part_size < floor:
            out.append(("part_size", f"{exact_size_text(part_size)} is below {who} of {exact_size_text(floor)}: every part but the "
                        "last must be at least that (S3 5 MiB, OSS 100 KiB; set storage.min_part_size only for "
                        "a store that accepts smaller parts)"))
        if part_size > MAX_PART:
            out.append(("part_size", f"{exact_size_text(part_size)} is above the largest part S3 and OSS accept "
                        f"({exact_size_text(MAX_PART)})"))
    if threshold is not None and threshold > MAX_PUT:
        out.append(("multipart_threshold", f"{exact_size_text(threshold)} is above the largest single upload S3 and OSS "
                    f"accept ({exact_size_text(MAX_PUT)}): larger files must go up in parts"))
    return out


def _part_limits(c: _Collector, sizes: dict[str, int | None], default: str | None) -> None:
    """At load time, not minutes into an upload: the part size against the minimum of the store the
    config names (the smaller of S3's and OSS's when it names none; the storage a run opens is checked
    again then) and the stores' maxima. A file that would need more than 10,000 parts gets a larger
    part for itself (``choose_part_size``), so the part count needs no setting here."""
    for key, msg in part_size_problems(sizes.get("part_size"), sizes.get("multipart_threshold"),
                                       scheme=_scheme(default), min_part_size=sizes.get("min_part_size")):
        c.err(f"storage.{key}", msg, key=key, section="storage")


def _regular(c: _Collector, path: str | None, where: str, key: str, section: str, nth: int = 0) -> None:
    """A path that exists must be a regular file (or a symlink to one); a missing one is reported
    where it is used (known_hosts may be created by --accept-new-host-keys)."""
    if not path:
        return
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    if not stat.S_ISREG(mode):
        c.err(where, f"{path} is {_kind(mode)}, not a file", key=key, section=section, nth=nth)


def _expand(p: str | None, base: Path) -> str | None:
    if p is None:
        return None
    q = Path(os.path.expanduser(p))
    return str(q if q.is_absolute() else (base / q).resolve())


MAX_CONFIG_BYTES = 1 << 20


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def read_regular_file(p: Path, *, what: str, limit: int, hint: str) -> str:
    """The text of ``p`` if it is a regular file of at most ``limit`` bytes; else one UsageError at once.

    Opened with O_NONBLOCK (a FIFO would otherwise block the open until a writer came) and checked
    with fstat on that descriptor, so what is read is what was checked: /dev/zero, a FIFO or a
    directory is refused without reading a byte."""
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0))
    except OSError as e:
        raise UsageError(f"cannot read {what} {p}: {e.strerror or e}", hint=hint) from e
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UsageError(f"cannot read {what} {p}: it is {_kind(st.st_mode)}, not a file", hint=hint)
        if st.st_size > limit:
            raise UsageError(f"cannot read {what} {p}: {st.st_size} bytes is too large for a {what} "
                             f"(at most {limit >> 10} KiB)", hint=hint)
        data = b""
        while len(data) <= limit:
            chunk = os.read(fd, limit + 1 - len(data))
            if not chunk:
                break
            data += chunk
    except OSError as e:
        raise UsageError(f"cannot read {what} {p}: {e.strerror or e}", hint=hint) from e
    finally:
        os.close(fd)
    if len(data) > limit:
        raise UsageError(f"cannot read {what} {p}: it grew past {limit >> 10} KiB while read", hint=hint)
    try:
        return data.decode()
    except UnicodeDecodeError as e:
        raise UsageError(f"cannot read {what} {p}: not UTF-8 text ({e.reason} at byte {e.start})", hint=hint) from e


def load_config(path: str | os.PathLike[str] | None) -> ClusterConfig:
    if path is None:
        path = os.environ.get("BRSM_CONFIG")
    if not path:
        raise UsageError("no cluster config given, and no --meta",
                         hint="pass --config FILE, set BRSM_CONFIG, or name the cluster as nebula-br does: --meta "
                              "HOST:PORT of metad (with --ssh-user, --ssh-key if needed)")
    p = Path(path)
    data, text = _read_toml(p)
    return parse_config(data, str(p), text)


def _read_toml(p: Path) -> tuple[dict[str, Any], str]:
    text = read_regular_file(p, what="config", limit=MAX_CONFIG_BYTES, hint="check the path given to --config")
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"{p}: not valid TOML: {e}", hint="fix the syntax at the line named") from e


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
        data, text = _read_toml(Path(path))
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
    c = _Collector(path, text)
    base = Path(path).resolve().parent if path not in ("<config>", "<flags>") else Path.cwd()
    known_top = {"cluster", "ssh", "hosts", "storage", "limits", "metrics"}
    for k in data:
        if k not in known_top:
            c.err(k, f"unknown section (expected one of {', '.join(sorted(known_top))})", key=k)

    cl = data.get("cluster", {})
    if not isinstance(cl, dict):
        c.err("cluster", "must be a table", key="cluster")
        cl = {}
    meta = cl.get("meta")
    if isinstance(meta, str):
        meta = [meta]
    if not meta:
        c.err("cluster.meta", "missing: list the metad addresses, e.g. meta = [\"10.0.0.1:9559\"]",
              key="meta", section="cluster")
        meta = []
    elif not isinstance(meta, list) or not all(_addr_ok(m) for m in meta):
        c.err("cluster.meta", f"must be a list of host:port strings, not {meta!r}", key="meta", section="cluster")
        meta = []

    cluster_keys = ("name", "meta", "create_backup_timeout", "lease_ttl")
    for k in cl:
        if k not in cluster_keys:
            c.err(f"cluster.{k}", f"unknown key (expected {', '.join(cluster_keys)})", key=k, section="cluster")

    cbt = (_seconds(c, cl["create_backup_timeout"], "cluster.create_backup_timeout", "create_backup_timeout",
                    "cluster", maximum=MAX_CREATE_BACKUP_TIMEOUT)
           if "create_backup_timeout" in cl else None) or DEFAULT_CREATE_BACKUP_TIMEOUT
    ttl = _seconds(c, cl["lease_ttl"], "cluster.lease_ttl", "lease_ttl", "cluster") if "lease_ttl" in cl else None
    if ttl is not None and not MIN_LEASE_TTL <= ttl <= MAX_LEASE_TTL:
        c.err("cluster.lease_ttl", f"must be between {MIN_LEASE_TTL:.0f} s and {MAX_LEASE_TTL / 3600:.0f} h, "
                                   f"not {cl['lease_ttl']!r}", key="lease_ttl", section="cluster")
        ttl = None

    s = data.get("ssh", {})
    if not isinstance(s, dict):
        c.err("ssh", "must be a table", key="ssh")
        s = {}
    cfg_file = s.get("config")
    if cfg_file is not None and not isinstance(cfg_file, str):
        c.err("ssh.config", "must be a path (\"\" = read no OpenSSH config)", key="config", section="ssh")
        cfg_file = None
    sshd = SshDefaults(
        user=str(s["user"]) if s.get("user") else None,
        port=_port(c, s["port"], "ssh.port", "port", "ssh") if "port" in s else None,
        config=(_expand(cfg_file, base) if cfg_file else cfg_file),
        identity=_expand(s.get("identity"), base),
        known_hosts=_expand(s.get("known_hosts"), base),
        accept_new_host_keys=_bool(c, s.get("accept_new_host_keys", False), "ssh.accept_new_host_keys",
                                   "accept_new_host_keys", "ssh"),
    )
    for k in s:
        if k not in ("user", "port", "identity", "known_hosts", "accept_new_host_keys", "config"):
            c.err(f"ssh.{k}", "unknown key (expected user, port, identity, known_hosts, accept_new_host_keys, config)",
                  key=k, section="ssh")

    hosts: list[HostConfig] = []
    raw_hosts = data.get("hosts", [])
    if not isinstance(raw_hosts, list):
        c.err("hosts", "must be an array of tables ([[hosts]])", key="hosts")
        raw_hosts = []
    seen: set[str] = set()
    allowed = {"address", "ssh_host", "ssh_port", "user", "identity", "known_hosts", "install_dir", "data_paths",
               "accept_new_host_keys"}
    for i, h in enumerate(raw_hosts):
        where = f"hosts[{i}]"
        if not isinstance(h, dict):
            c.err(where, "must be a table", key="hosts", section="hosts", nth=i)
            continue
        for k in h:
            if k not in allowed:
                c.err(f"{where}.{k}", f"unknown key (expected {', '.join(sorted(allowed))})", key=k, section="hosts", nth=i)
        addr = h.get("address")
        if not isinstance(addr, str) or not addr:
            c.err(f"{where}.address", "missing: the host's service address as metad reports it", key="address",
                  section="hosts", nth=i)
            continue
        if addr in seen:
            c.err(f"{where}.address", f"{addr} is listed twice", key="address", section="hosts", nth=i)
        seen.add(addr)
        dps = h.get("data_paths", [])
        if not isinstance(dps, list):
            c.err(f"{where}.data_paths", "must be a list of paths", key="data_paths", section="hosts", nth=i)
            dps = []
        hosts.append(HostConfig(
            address=addr,
            ssh_host=str(h.get("ssh_host", addr)),
            ssh_port=(_port(c, h["ssh_port"], f"{where}.ssh_port", "ssh_port", "hosts", i) if "ssh_port" in h
                      else sshd.port),
            user=str(h["user"]) if h.get("user") else sshd.user,
            identity=_expand(h.get("identity"), base) or sshd.identity,
            known_hosts=_expand(h.get("known_hosts"), base) or sshd.known_hosts,
            install_dir=str(h.get("install_dir", DEFAULT_INSTALL_DIR)),
            data_paths=tuple(str(d) for d in dps),
            accept_new_host_keys=_bool(c, h.get("accept_new_host_keys", sshd.accept_new_host_keys),
                                       f"{where}.accept_new_host_keys", "accept_new_host_keys", "hosts", i),
        ))

    lim = data.get("limits", {})
    if not isinstance(lim, dict):
        c.err("limits", "must be a table", key="limits")
        lim = {}
    for k in lim:  # the section is reserved: a limit written here would silently not apply
        c.err(f"limits.{k}", "unknown key ([limits] takes no keys yet: give --concurrency, --per-host and "
              "--rate-limit on the command line)", key=k, section="limits")

    mt = data.get("metrics", {})
    if not isinstance(mt, dict):
        c.err("metrics", "must be a table", key="metrics")
        mt = {}
    for k in mt:
        if k != "file":
            c.err(f"metrics.{k}", "unknown key (expected file)", key=k, section="metrics")
    metrics_file = mt.get("file")
    if metrics_file is not None and (not isinstance(metrics_file, str) or not metrics_file.strip()):
        c.err("metrics.file", f"must be a file path, not {metrics_file!r}", key="file", section="metrics")
        metrics_file = None
    elif metrics_file is not None:
        metrics_file = _expand(metrics_file, base)

    # SSH keys and known_hosts files are read whole: /dev/zero or a FIFO there would hang or fill memory
    # at the first connection, and known_hosts = "/dev/null" would make every key a first contact.
    _regular(c, sshd.identity, "ssh.identity", "identity", "ssh")
    _regular(c, sshd.known_hosts, "ssh.known_hosts", "known_hosts", "ssh")
    for i, h in enumerate(raw_hosts if isinstance(raw_hosts, list) else []):
        if isinstance(h, dict):
            for k in ("identity", "known_hosts"):
                if isinstance(h.get(k), str):
                    _regular(c, _expand(h[k], base), f"hosts[{i}].{k}", k, "hosts", i)

    st = data.get("storage", {})
    if not isinstance(st, dict):
        c.err("storage", "must be a table", key="storage")
        st = {}
    storage_keys = ("default", "s3_endpoint", "s3_region", "oss_endpoint", "part_size", "multipart_threshold",
                    "min_part_size")
    for k in st:
        if k not in storage_keys:
            c.err(f"storage.{k}", f"unknown key (expected {', '.join(storage_keys)})", key=k, section="storage")
        elif re.search(r"secret|password|key_id|access_key", k, re.I):
            c.err(f"storage.{k}", "secrets do not belong in the config; use the environment", key=k, section="storage")

    for k in ("default", "s3_endpoint", "s3_region", "oss_endpoint"):
        v = st.get(k)
        if isinstance(v, str) and scrub_text(v) != v:  # s3://KEY:SECRET@…, https://TOKEN@…, ?Signature=…
            c.err(f"storage.{k}", f"{scrub_text(v)} carries a credential; credentials come from the environment",
                  key=k, section="storage")
        elif k.endswith("_endpoint") and isinstance(v, str) and re.search(r"[?#\s\x00-\x1f\x7f]", v):
            c.err(f"storage.{k}", "is not an endpoint URL: no '?', '#', spaces or control characters "
                                  "(e.g. \"https://s3.example.com:9000\")", key=k, section="storage")

    sizes = {k: _size(c, st[k], f"storage.{k}", k, "storage") if k in st else None
             for k in ("part_size", "multipart_threshold", "min_part_size")}
    _part_limits(c, sizes, st.get("default") if isinstance(st.get("default"), str) else None)

    if c.errors:
        raise UsageError(
            f"{len(c.errors)} problem(s) in the config:\n  " + "\n  ".join(c.errors),
            hint="fix the lines named above; `brsm config check FILE` re-checks",
        )
    return ClusterConfig(
        path=path,
        name=str(cl.get("name", "cluster")),
        meta=tuple(meta),
        ssh=sshd,
        hosts=tuple(hosts),
        create_backup_timeout=cbt,
        lease_ttl=ttl,
        metrics_file=metrics_file,
        storage=StorageDefaults(
            default=st.get("default"), s3_endpoint=st.get("s3_endpoint"), s3_region=st.get("s3_region"),
            oss_endpoint=st.get("oss_endpoint"), **sizes,
        ),
    )
