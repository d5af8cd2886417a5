"""What went wrong on an SSH connection, in words an operator can act on.

asyncssh and the OS raise a dozen kinds of error for a handful of causes (wrong key, wrong user,
sshd down, host unreachable, disk full behind SFTP); each becomes one RemoteError naming the host
and what to check next.
"""
from __future__ import annotations

import asyncio

import asyncssh

from brsm.adapters import host_keys, ssh_config
from brsm.adapters.ssh_target import SshTarget
from brsm.errors import RemoteError


def ssh_error(target: SshTarget, ep: ssh_config.Endpoint | None, host_key: host_keys.HostKeyCheck | None,
              what: str, exc: BaseException) -> RemoteError:
    """The RemoteError for ``exc`` met while doing ``what`` on ``target`` (reached at ``ep``, what the
    OpenSSH config resolved, when known; ``host_key``: the last connection attempt's key check)."""
    name = target.name
    t = target
    if ep is not None:  # what the connection really went to (the OpenSSH config may have said)
        t = SshTarget(name=t.name, host=ep.host, port=ep.port, user=ep.user, identity=ep.identity,
                      known_hosts=t.known_hosts)
    where = t.where
    kh = t.known_hosts or "~/.ssh/known_hosts"
    if isinstance(exc, asyncssh.HostKeyNotVerifiable):
        if host_key is not None and host_key.offered is not None:
            msg, hint = host_key.refusal(kh)
            return RemoteError(msg, host=name, hint=hint)
        return RemoteError(
            f"{name}: host key of {t.host}:{t.port or 22} is not trusted ({exc.reason})", host=name,
            hint=(f"if the host is genuine, add its key: ssh-keyscan -p {t.port or 22} {t.host} >> {kh} "
                  "(compare the fingerprint with the host's own first); a changed key can also mean "
                  "the host was reinstalled or someone is in the middle"))
    if isinstance(exc, asyncssh.PermissionDenied):
        return RemoteError(
            f"{name}: SSH login to {where} refused ({exc.reason})", host=name,
            hint=(f"check the user ({t.user or 'default'}) and identity file ({t.identity or '~/.ssh/id_*'}) "
                  "and that its public key is in the user's authorized_keys on the host"))
    if isinstance(exc, ConnectionRefusedError):
        return RemoteError(f"{name}: {what}: connection to {t.host}:{t.port or 22} refused", host=name,
                           hint="is sshd running on that host, and is the SSH port right?")
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)) and not isinstance(exc, asyncssh.ProcessError):
        return RemoteError(f"{name}: {what}: timed out talking to {where}", host=name,
                           hint="is the host up and reachable (firewall, address, port)?")
    check = host_key
    if (what.startswith("connect") and isinstance(exc, (asyncssh.ConnectionLost, asyncssh.DisconnectError,
                                                        ConnectionResetError, BrokenPipeError))
            and check is not None and check.offered is None and check.trusts_only_a_ca()):
        msg, hint = check.ca_refusal(kh)  # not "dropped ... retry": no retry fixes it
        return RemoteError(f"{name}: {msg}", host=name, hint=hint)
    if isinstance(exc, (asyncssh.ConnectionLost, asyncssh.DisconnectError, asyncssh.SFTPConnectionLost,
                        asyncssh.ChannelOpenError, BrokenPipeError, ConnectionResetError)):
        return RemoteError(f"{name}: {what}: SSH connection to {where} dropped ({exc})", host=name,
                           hint="the host or its sshd went away; retry (the connection is reopened)")
    if isinstance(exc, asyncssh.SFTPFailure) and what.startswith(("write", "close", "create", "chmod")):
        # OpenSSH's sftp-server answers ENOSPC and EDQUOT with the generic SSH_FX_FAILURE: "Failure"
        return RemoteError(f"{name}: {what}: {exc.reason or 'Failure'} (the SFTP server names no cause; "
                           "for a write this is almost always a full file system or a quota reached)",
                           host=name, hint=f"check the free space and quota of that path on {name} "
                                                "(df -h, quota -s) and free some")
    if isinstance(exc, asyncssh.SFTPError):
        return RemoteError(f"{name}: {what}: {exc.reason or type(exc).__name__}", host=name)
    if isinstance(exc, OSError):
        return RemoteError(f"{name}: {what}: cannot reach {where}: {exc.strerror or exc}",
                           host=name, hint="check the host address and SSH port")
    return RemoteError(f"{name}: {what}: {type(exc).__name__}: {exc}", host=name)
