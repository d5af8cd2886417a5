"""SSH host keys: always verified against known_hosts; first contact accepted only when asked.

The opt-out is OpenSSH's ``StrictHostKeyChecking=accept-new`` and nothing more: with
``accept_new`` a host that has **no entry** in the known_hosts file has the key it offers appended
there (after the key exchange proved the host holds its private key), with one loud warning line
naming the key's fingerprint; a host whose entry holds a **different** key is refused either way.

``HostKeyCheck`` is one connection attempt's view: ``client_factory`` hands asyncssh a client whose
``validate_host_public_key`` is asked only about keys known_hosts does not already trust; after the
connection is up, ``commit()`` writes an accepted key. ``refusal()`` says what went wrong.
"""
from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass

import asyncssh

__all__ = ["AcceptedKey", "HostKeyCheck", "known_hosts_path", "fingerprint"]

_append_lock = threading.Lock()  # one process, many hosts at once: one writer at a time (flock: others)


def known_hosts_path(configured: str | None) -> str:
    """The file brsm verifies against: the configured one, else ~/.ssh/known_hosts (never none)."""
    return os.path.expanduser(configured or "~/.ssh/known_hosts")


def fingerprint(key: asyncssh.SSHKey) -> str:
    return key.get_fingerprint("sha256")


def _host_pattern(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


def _entries_for(path: str, host: str, addr: str, port: int) -> bool:
    """Whether known_hosts says anything about this host: a key, a CA, a revocation."""
    if not os.path.exists(path):
        return False
    trusted, cas, revoked, x509, x509_revoked, *_ = asyncssh.match_known_hosts(
        path, host, addr, None if port == 22 else port)
    return bool(trusted or cas or revoked or x509 or x509_revoked)


@dataclass(frozen=True)
class AcceptedKey:
    """A key accepted on first contact: what is journaled (no secret: a public key's fingerprint)."""

    host: str
    port: int
    key_type: str
    fingerprint: str
    known_hosts: str

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def warning(self) -> str:
        return (f"brsm: WARNING: first contact with {self.host}:{self.port}: accepted its host key "
                f"{self.key_type} {self.fingerprint} and added it to {self.known_hosts} (--accept-new-host-keys); "
                "check this fingerprint against the host's own (ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub)")


class HostKeyCheck:
    def __init__(self, host: str, port: int, known_hosts: str | None, *, accept_new: bool,
                 on_accept: Callable[[AcceptedKey], None] | None = None) -> None:
        self.host = host
        self.port = port
        self.path = known_hosts_path(known_hosts)
        self.accept_new = accept_new
        self.on_accept = on_accept
        self.offered: asyncssh.SSHKey | None = None  # the key the host showed and known_hosts did not trust
        self.had_entry = False  # known_hosts names this host (with another key): a changed key
        self._pending: asyncssh.SSHKey | None = None

    # -- before and during the connection ----------------------------------------------------------
    def prepare(self) -> None:
        """With accept_new a missing known_hosts file is created (0600, its directory 0700), as ssh does."""
        if self.accept_new and not os.path.exists(self.path):
            os.makedirs(os.path.dirname(self.path) or ".", mode=0o700, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
            os.close(fd)

    def missing_file(self) -> bool:
        return not os.path.exists(self.path)

    def client_factory(self) -> Callable[[], asyncssh.SSHClient]:
        check = self

        class _Client(asyncssh.SSHClient):
            def validate_host_public_key(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
                return check._consider(host, addr, port, key)

        return _Client

    def _consider(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
        """asyncssh asks only about a key known_hosts does not trust."""
        self.offered = key
        self.had_entry = _entries_for(self.path, host, addr, port or 22) or (
            addr != host and _entries_for(self.path, addr, addr, port or 22))
        if self.had_entry or not self.accept_new:
            return False  # a changed key is refused, always; an unknown one unless asked
        self._pending = key
        return True

    # -- after ----------------------------------------------------------------------------------------
    def commit(self) -> AcceptedKey | None:
        """The connection is up (the host proved its key): append an accepted key to known_hosts."""
        key, self._pending = self._pending, None
        if key is None:
            return None
        algo, blob = key.export_public_key("openssh").decode().split()[:2]  # no comment: it is ours to add
        line = f"{_host_pattern(self.host, self.port)} {algo} {blob}\n"
        with _append_lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                if not _entries_for(self.path, self.host, self.host, self.port):  # not meanwhile by another
                    if os.fstat(fd).st_size and not _ends_with_newline(self.path):
                        line = "\n" + line
                    os.write(fd, line.encode())
                    os.fsync(fd)
            finally:
                os.close(fd)
        accepted = AcceptedKey(self.host, self.port, key.get_algorithm(), fingerprint(key), self.path)
        if self.on_accept is not None:
            self.on_accept(accepted)
        return accepted

    def trusts_only_a_ca(self) -> bool:
        """known_hosts names a certificate authority (``@cert-authority``) for this host and no key of
        its own. asyncssh then offers the host certificate key types only, so a host without a
        certificate signed by that CA has no host key type in common with brsm: the connection ends in
        the key exchange, before any key is offered (``validate_host_public_key`` is never asked)."""
        if not os.path.exists(self.path):
            return False
        trusted, cas, *_ = asyncssh.match_known_hosts(self.path, self.host, self.host,
                                                      None if self.port == 22 else self.port)
        return bool(cas) and not trusted

    def ca_refusal(self, display: str) -> tuple[str, str]:
        """(message, hint) for a connection that ended in the key exchange under a CA-only entry."""
        where = f"{self.host}:{self.port}"
        return (f"no host key of {where} can be verified: {display} trusts only a certificate authority "
                f"(@cert-authority) for it, and the host presents no host certificate signed by it (the "
                "connection ended in the key exchange)",
                f"give the host a host certificate signed by that CA (ssh-keygen -s CA_KEY -h, and HostCertificate "
                f"in its sshd_config), or trust its own key: ssh-keyscan -p {self.port} {self.host} >> {display} "
                "(compare the fingerprint with the host's own first); retrying does not help")

    def refusal(self, display: str) -> tuple[str, str]:
        """(message, hint) for a key that was not accepted; ``display`` names the known_hosts file."""
        where = f"{self.host}:{self.port}"
        offered = f"{self.offered.get_algorithm()} {fingerprint(self.offered)}" if self.offered else "its key"
        if self.had_entry:
            return (f"host key of {where} has CHANGED: it offers {offered}, {display} holds another key for it; "
                    "refused",
                    f"if the host was reinstalled, check the new key's fingerprint on the host, then replace the old "
                    f"entry: ssh-keygen -R '{_host_pattern(self.host, self.port)}' -f {display}; otherwise someone "
                    "may be in the middle (--accept-new-host-keys never accepts a changed key)")
        return (f"host key of {where} is unknown: {display} has no entry for it (it offers {offered})",
                f"if the host is genuine, add its key: ssh-keyscan -p {self.port} {self.host} >> {display} (compare "
                "the fingerprint with the host's own first), or run once with --accept-new-host-keys")


def _ends_with_newline(path: str) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"
