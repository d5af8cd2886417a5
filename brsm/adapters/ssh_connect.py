"""Opening one SSH connection: the options brsm gives asyncssh (ciphers, keepalives, keys, the
route the OpenSSH config settled) and the host-key check around it, which never lets a connection
go unverified."""
from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncssh

from brsm.adapters import host_keys, ssh_config
from brsm.adapters.ssh_target import SshTarget
from brsm.errors import RemoteError


def _cipher_order() -> list[str]:
    from asyncssh.encryption import get_default_encryption_algs

    default = [a.decode() for a in get_default_encryption_algs()]
    first = [a for a in ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com") if a in default]
    return first + [a for a in default if a not in first]


_CIPHERS = _cipher_order()


async def open_connection(t: SshTarget, ep: ssh_config.Endpoint, tunnel: asyncssh.SSHClientConnection | None,
                          check: host_keys.HostKeyCheck, error: Callable[[BaseException], RemoteError]
                          ) -> asyncssh.SSHClientConnection:
    """One SSH connection to ``ep`` for host ``t`` (through ``tunnel`` when given), its host key
    checked by ``check``; ``error`` words what asyncssh or the OS raised while connecting."""
    kw: dict = {"port": ep.port, "connect_timeout": t.connect_timeout,
                "keepalive_interval": t.keepalive_interval, "keepalive_count_max": 4,
                "config": None}  # the route is settled: asyncssh must not re-read ~/.ssh/config
    if tunnel is not None:
        kw["tunnel"] = tunnel
    if ep.user:
        kw["username"] = ep.user
    if ep.identity:
        kw["client_keys"] = [ep.identity]
        kw["agent_path"] = None
    try:
        check.prepare()
    except OSError as exc:
        raise RemoteError(f"{t.name}: cannot create {check.path}: {exc.strerror or exc}",
                          host=t.name,
                          hint="check the known_hosts path (--known-hosts, or [ssh] known_hosts in the config)"
                          ) from exc
    if check.missing_file():
        kh = t.known_hosts or "~/.ssh/known_hosts"
        raise RemoteError(f"{t.name}: no host key can be verified: the known_hosts file {kh} does not "
                          "exist", host=t.name,
                          hint=f"create it with the hosts' keys (ssh-keyscan -p {ep.port} {ep.host} >> {kh}, "
                               "compare the fingerprints first), or run once with --accept-new-host-keys")
    kw["known_hosts"] = check.path  # always a file: `known_hosts=None` (no checking) is never passed
    kw["client_factory"] = check.client_factory()  # asked only about keys known_hosts does not trust
    # AES-GCM runs in OpenSSL (AES-NI) on both ends; asyncssh's first choice, chacha20-poly1305,
    # costs Python-side work per packet and was a third of a backup's CPU in the profile.
    kw["encryption_algs"] = _CIPHERS
    try:
        conn = await asyncssh.connect(ep.host, **kw)
    except (asyncssh.Error, OSError, asyncio.TimeoutError) as exc:
        raise error(exc) from exc
    except ValueError as exc:  # unreadable key / known_hosts file
        raise RemoteError(f"{t.name}: SSH setup for {ep.where} failed: {exc}", host=t.name,
                          hint="check the identity and known_hosts files in the config") from exc
    try:
        check.commit()  # the host proved the key it offered: an accepted first contact is written
    except OSError as exc:
        conn.abort()
        raise RemoteError(f"{t.name}: cannot add the host key of {ep.host}:{ep.port} to {check.path}: "
                          f"{exc.strerror or exc}", host=t.name,
                          hint="check that known_hosts file is writable") from exc
    return conn
