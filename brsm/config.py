"""The cluster configuration file (TOML), loaded into frozen dataclasses.

Order: defaults → file (``--config`` or ``$BRSM_CONFIG``) → flags. Every problem in a file is
collected and reported together as ``file:line: key.path: what is wrong`` (borgmatic collects
schema errors the same way; we add the line). Secrets never live here: S3/OSS credentials come
from the environment or the usual credential files.
"""
from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from brsm.errors import UsageError

DEFAULT_INSTALL_DIR = "/usr/local/nebula"


@dataclass(frozen=True)
class SshDefaults:
    user: str
    port: int = 22
    identity: str | None = None
    known_hosts: str | None = None
    accept_new_host_keys: bool = False  # first contact: accept (loudly) a key known_hosts has no entry for


@dataclass(frozen=True)
class HostConfig:
    address: str  # the service address metad reports
    ssh_host: str
    ssh_port: int
    user: str
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


@dataclass(frozen=True)
class ClusterConfig:
    path: str | None
    name: str
    meta: tuple[str, ...]
    ssh: SshDefaults
    hosts: tuple[HostConfig, ...]
    storage: StorageDefaults = field(default_factory=StorageDefaults)

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


def _expand(p: str | None, base: Path) -> str | None:
    if p is None:
        return None
    q = Path(os.path.expanduser(p))
    return str(q if q.is_absolute() else (base / q).resolve())


def load_config(path: str | os.PathLike[str] | None) -> ClusterConfig:
    if path is None:
        path = os.environ.get("BRSM_CONFIG")
    if not path:
        raise UsageError("no cluster config given", hint="pass --config FILE or set BRSM_CONFIG")
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise UsageError(f"cannot read config {p}: {e.strerror}", hint="check the path given to --config") from e
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"{p}: not valid TOML: {e}", hint="fix the syntax at the line named") from e
    return parse_config(data, str(p), text)


def parse_config(data: dict[str, Any], path: str = "<config>", text: str = "") -> ClusterConfig:
    c = _Collector(path, text)
    base = Path(path).resolve().parent if path != "<config>" else Path.cwd()
    known_top = {"cluster", "ssh", "hosts", "storage", "limits"}
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

    s = data.get("ssh", {})
    if not isinstance(s, dict):
        c.err("ssh", "must be a table", key="ssh")
        s = {}
    user = s.get("user") or os.environ.get("USER") or "root"
    sshd = SshDefaults(
        user=str(user),
        port=_port(c, s.get("port", 22), "ssh.port", "port", "ssh"),
        identity=_expand(s.get("identity"), base),
        known_hosts=_expand(s.get("known_hosts"), base),
        accept_new_host_keys=_bool(c, s.get("accept_new_host_keys", False), "ssh.accept_new_host_keys",
                                   "accept_new_host_keys", "ssh"),
    )
    for k in s:
        if k not in ("user", "port", "identity", "known_hosts", "accept_new_host_keys"):
            c.err(f"ssh.{k}", "unknown key (expected user, port, identity, known_hosts, accept_new_host_keys)",
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
            ssh_port=_port(c, h.get("ssh_port", sshd.port), f"{where}.ssh_port", "ssh_port", "hosts", i),
            user=str(h.get("user", sshd.user)),
            identity=_expand(h.get("identity"), base) or sshd.identity,
            known_hosts=_expand(h.get("known_hosts"), base) or sshd.known_hosts,
            install_dir=str(h.get("install_dir", DEFAULT_INSTALL_DIR)),
            data_paths=tuple(str(d) for d in dps),
            accept_new_host_keys=_bool(c, h.get("accept_new_host_keys", sshd.accept_new_host_keys),
                                       f"{where}.accept_new_host_keys", "accept_new_host_keys", "hosts", i),
        ))

    st = data.get("storage", {})
    if not isinstance(st, dict):
        c.err("storage", "must be a table", key="storage")
        st = {}
    storage_keys = ("default", "s3_endpoint", "s3_region", "oss_endpoint", "part_size", "multipart_threshold")
    for k in st:
        if k not in storage_keys:
            c.err(f"storage.{k}", f"unknown key (expected {', '.join(storage_keys)})", key=k, section="storage")
        elif re.search(r"secret|password|key_id|access_key", k, re.I):
            c.err(f"storage.{k}", "secrets do not belong in the config; use the environment", key=k, section="storage")

    sizes = {k: _size(c, st[k], f"storage.{k}", k, "storage") if k in st else None
             for k in ("part_size", "multipart_threshold")}

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
        storage=StorageDefaults(
            default=st.get("default"), s3_endpoint=st.get("s3_endpoint"), s3_region=st.get("s3_region"),
            oss_endpoint=st.get("oss_endpoint"), **sizes,
        ),
    )
