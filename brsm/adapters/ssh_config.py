"""OpenSSH client config (``~/.ssh/config`` or ``[ssh] config``): what it says about one host.

brsm's own settings win (a [[hosts]] entry, an [ssh] key, a flag), as OpenSSH's command line wins
over its config; what brsm leaves unset comes from the file — HostName, Port, User, IdentityFile,
ProxyJump — and then from the defaults (port 22, the local user, asyncssh's default keys). The file
is parsed by asyncssh's own OpenSSH-config reader (Host/Match blocks, first value wins, ``%h``
tokens); the jump hosts are looked up in it too, as OpenSSH does.
"""
from __future__ import annotations

import getpass
import os
from dataclasses import dataclass, replace

from asyncssh.config import SSHClientConfig

DEFAULT_CONFIG = "~/.ssh/config"
MAX_JUMPS = 8


@dataclass(frozen=True)
class Endpoint:
    """Where one SSH connection goes, every value settled."""

    host: str
    port: int
    user: str | None  # None: the local user (asyncssh's default)
    identity: str | None  # None: asyncssh's defaults (~/.ssh/id_*, the agent)

    @property
    def where(self) -> str:
        return f"{self.user + '@' if self.user else ''}{self.host}:{self.port}"


@dataclass(frozen=True)
class Route:
    """The endpoint, and the jump hosts to go through first (in order; empty: direct)."""

    target: Endpoint
    jumps: tuple[Endpoint, ...] = ()

    @property
    def where(self) -> str:
        via = f" via {' → '.join(j.where for j in self.jumps)}" if self.jumps else ""
        return self.target.where + via


def config_path(configured: str | None) -> str | None:
    """The file to read: the configured one (``""`` = none), else ``~/.ssh/config`` when it exists."""
    if configured is not None:
        return os.path.expanduser(configured) if configured else None
    default = os.path.expanduser(DEFAULT_CONFIG)
    return default if os.path.isfile(default) else None


# OpenSSH's own bound on nested Include (readconf.c, READCONF_MAX_DEPTH): a file that includes itself,
# directly or through others, is an error there, not an endless descent.
MAX_INCLUDE_DEPTH = 16


def _bounded_include(self: "_Config", option: str, args: list[str]) -> None:
    if self._include_depth >= MAX_INCLUDE_DEPTH:
        self._error(f"Include nested more than {MAX_INCLUDE_DEPTH} deep: the files include each other in a loop")
    self._include_depth += 1
    try:
        SSHClientConfig._include(self, option, args)
    finally:
        self._include_depth -= 1


class _Config(SSHClientConfig):
    """asyncssh's reader, with Include nesting bounded as OpenSSH bounds it (asyncssh recurses until
    Python's RecursionError, a traceback of thousands of lines)."""

    _include_depth = 0
    _handlers = {**SSHClientConfig._handlers, "include": ("Include", _bounded_include)}


def _lookup(path: str | None, host: str, port: int | None, user: str | None) -> SSHClientConfig | None:
    if path is None:
        return None
    try:
        return _Config.load(None, [path], False, False, False, getpass.getuser(),
                            user if user else (), host, port if port else ())
    except RecursionError as exc:  # another way to nest without end: still one line, never a traceback
        raise ValueError(f"{path}: nested too deep to read ({exc})") from None


def _endpoint(cfg: SSHClientConfig | None, host: str, port: int | None, user: str | None,
              identity: str | None) -> tuple[Endpoint, str | None]:
    if cfg is None:
        return Endpoint(host, port or 22, user, identity), None
    files = cfg.get("IdentityFile") or []
    ident = identity or (os.path.expanduser(str(files[0])) if files else None)
    jump = cfg.get("ProxyJump")
    return (Endpoint(str(cfg.get("Hostname") or host), int(port or cfg.get("Port") or 22),
                     user or (str(cfg.get("User")) if cfg.get("User") else None), ident),
            None if not jump or str(jump).lower() == "none" else str(jump))


def parse_jump(spec: str) -> tuple[str, int | None, str | None]:
    """One ProxyJump hop, ``[user@]host[:port]`` → (host, port or None, user or None).

    >>> parse_jump("bastion@10.0.0.1:2200"), parse_jump("jump")
    (('10.0.0.1', 2200, 'bastion'), ('jump', None, None))
    """
    user, _, rest = spec.rpartition("@")
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit():
        host, port = rest, ""
    return host.strip("[]"), int(port) if port else None, user or None


def route(host: str, *, port: int | None, user: str | None, identity: str | None, config: str | None) -> Route:
    """The settled route to ``host``: brsm's values where it set them, the OpenSSH config's where not.

    A jump host's own config entry gives its port, user and key (else brsm's key for the target is
    tried on it too, as a bastion usually takes the same one). Raises ValueError on a ProxyJump chain
    longer than MAX_JUMPS or one that loops."""
    path = config_path(config)
    target, jump = _endpoint(_lookup(path, host, port, user), host, port, user, identity)
    jumps: list[Endpoint] = []
    seen = {(target.host, target.port)}
    while jump:
        # "a,b": dial a, then b from a, then the target from b; a's own ProxyJump (if any) comes first
        chain, before = [], None
        for i, (h, p, u) in enumerate(parse_jump(x.strip()) for x in jump.split(",") if x.strip()):
            ep, its_jump = _endpoint(_lookup(path, h, p, u), h, p, u, None)
            before = its_jump if i == 0 else before
            chain.append(ep if ep.identity else replace(ep, identity=identity))
        for ep in chain:
            if (ep.host, ep.port) in seen or len(jumps) + len(chain) > MAX_JUMPS:
                raise ValueError(f"ProxyJump for {host} loops or is longer than {MAX_JUMPS} hops "
                                 f"({' → '.join(j.where for j in chain + jumps)})")
            seen.add((ep.host, ep.port))
        jumps[:0] = chain
        jump = before
    return Route(target, tuple(jumps))
