"""The direct data path's helpers alive on a sandbox's hosts (every sandbox host is a loopback address
on this machine). The suite runs two workers and the sweep its own sandbox, so another sandbox may have
helpers of its own: a sandbox's are those whose SSH session carries its directory, which its sshd sets
(``BRSM_SANDBOX_DIR``)."""
from __future__ import annotations

import time
from pathlib import Path

HELPER_MARK = b"dies with its SSH channel"  # a phrase of the helper's source, on its command line


def helpers_running(env) -> list[int]:
    mine = f"BRSM_SANDBOX_DIR={env.root}".encode()
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes()
                if not (b"\0-c\0" in cmd[:300] and b"python" in cmd.split(b"\0", 1)[0] and HELPER_MARK in cmd):
                    continue
                if mine in (d / "environ").read_bytes().split(b"\0"):
                    out.append(int(d.name))
            except OSError:
                continue
    return out


def no_helper_within(env, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while helpers_running(env) and time.monotonic() < deadline:
        time.sleep(0.1)
    return helpers_running(env) == []
