"""Where one cluster host's SSH endpoint is, as the config and flags name it."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SshTarget:
    """How to reach one cluster host over SSH. ``name`` is the host's service address (host part)."""

    name: str
    host: str
    port: int | None = None  # None: the OpenSSH config's Port for this host, else 22
    user: str | None = None
    identity: str | None = None  # private key file; None = asyncssh defaults (~/.ssh/id_*, agent)
    known_hosts: str | None = None  # None = ~/.ssh/known_hosts (never "accept anything")
    accept_new_host_keys: bool = False  # first contact: add the key of a host known_hosts does not name
    install_dir: str = "/usr/local/nebula"
    connect_timeout: float = 20.0
    keepalive_interval: float = 15.0
    # OpenSSH client config: None = ~/.ssh/config when it exists, "" = none (brsm.adapters.ssh_config)
    ssh_config: str | None = None

    @property
    def where(self) -> str:
        who = f"{self.user}@" if self.user else ""
        return f"{who}{self.host}:{self.port or 22}"
