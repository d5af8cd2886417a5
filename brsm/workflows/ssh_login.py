"""Every host logged in to over SSH at once, before anything is read or changed on any of them.

A run that would fail on its third host should fail before it touches the first, and say every
host that cannot be reached, not only the first: one line per cause, the hosts it holds named
together (a missing known_hosts file, a wrong key or user is usually one cause for all of them).
"""
from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable

from brsm.errors import BrsmError, PreflightFailed
from brsm.ports import HostsPort


async def check_ssh(hosts: HostsPort, names: Iterable[str]) -> None:
    """Log in to every host at once; report every failing host, one line each."""
    names = sorted(set(names))

    async def one(name: str) -> tuple[str, str | None] | None:
        try:
            await hosts.host(name).check_login(timeout=30)
            return None
        except BrsmError as e:
            msg = e.message[len(name) + 2:] if e.message.startswith(f"{name}: ") else e.message
            return f"{name}: {msg}", e.hint

    failed = [(n, p) for n, p in zip(names, await asyncio.gather(*(one(n) for n in names))) if p]
    if failed:
        groups = ssh_failure_groups([(n, m[len(n) + 2:] if m.startswith(f"{n}: ") else m, h)
                                     for n, (m, h) in failed])
        if len(groups) == 1:  # one cause (a missing known_hosts file, a wrong key): said once, for every host
            (hosts_, msg, hint), = groups
            text = f"{', '.join(hosts_)}: {msg}" if len(failed) > 1 else f"{hosts_[0]}: {msg}"
        else:
            text = "; ".join(f"{', '.join(hs)}: {m}" + (f" ({h})" if h else "") for hs, m, h in groups)
            hint = ("check the SSH settings (--ssh-user, --ssh-key, --ssh-port, --known-hosts, or the config's [ssh] "
                    "and [[hosts]]) and that the host keys are in known_hosts")
        raise PreflightFailed(f"SSH to {len(failed)} of {len(names)} host(s) failed: {text}", hint=hint)


def ssh_failure_groups(failures: list[tuple[str, str, str | None]]) -> list[tuple[list[str], str, str | None]]:
    """Per-host SSH failures (host, message, hint) grouped by cause: messages and hints equal once each
    host's name is taken out. A group's hint names all its hosts where one host's hint named that one
    (``ssh-keyscan -p 22 h1 h2 h3 >> known_hosts``: ssh-keyscan takes several).

    >>> ssh_failure_groups([("a", "no known_hosts", "ssh-keyscan a >> kh"), ("b", "no known_hosts", "ssh-keyscan b >> kh")])
    [(['a', 'b'], 'no known_hosts', 'ssh-keyscan a b >> kh')]
    """
    groups: dict[tuple[str, str | None], list[str]] = {}
    for host, msg, hint in failures:
        mark = re.compile(rf"(?<![\w.-]){re.escape(host)}(?![\w.-])")
        key = (mark.sub("\0", msg), mark.sub("\0", hint) if hint else hint)
        groups.setdefault(key, []).append(host)
    return [(hosts, msg.replace("\0", " ".join(hosts)), hint.replace("\0", " ".join(hosts)) if hint else hint)
            for (msg, hint), hosts in groups.items()]
