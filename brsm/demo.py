"""`scripts/demo`: the whole story on one machine, as a user would type it.

Starts a sandbox cluster, loads data, backs it up (to a local directory by default; ``--storage s3``
or ``--storage oss`` use the sandbox's endpoints), shows the backup, overwrites the cluster's data,
restores the backup and proves the restore exact with the sandbox's checksum, then prints a summary
with times and throughput and stops the sandbox. Every step is a real `brsm` command in a
subprocess, printed before it runs as the user would type it (``brsm …``), so a newcomer can copy
them. The sandbox is brought down however the demo ends: an error, Ctrl-C, SIGTERM, or a reader that
stops reading (``scripts/demo | head``), which would otherwise leave a dozen servers running.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path


class ReaderGone(Exception):
    """stdout's reader went away (``scripts/demo | head``): stop the demo, then bring the sandbox down."""


def say(text: str = "") -> None:
    try:
        print(text, flush=True)
    except BrokenPipeError:
        _reader_gone()
        raise ReaderGone() from None


def _reader_gone() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def brsm_argv() -> list[str]:
    """The venv's ``brsm`` entry point (what the user types after ``source .venv/bin/activate``)."""
    exe = Path(sys.executable).parent / "brsm"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "brsm.cli.app"]


def sh(args: list[str], env: dict[str, str], *, capture: bool = False, echo: bool = False) -> str:
    """Run one brsm command, shown as ``$ brsm …``. ``capture`` keeps stdout for the demo (``echo``
    also shows it); stderr (progress, notes, errors) always goes to the user's terminal."""
    shown = ["brsm", *args[len(brsm_argv()):]] if args[:len(brsm_argv())] == brsm_argv() else args
    say(f"\n$ {shlex.join(shown)}")
    p = subprocess.run(args, env=env, text=True, stdout=subprocess.PIPE if capture else None)
    if capture and echo and p.stdout:
        say(p.stdout.rstrip("\n"))
    if p.returncode != 0:
        print(f"demo: `{shlex.join(shown)}` exited {p.returncode}", file=sys.stderr)
        raise SystemExit(p.returncode)
    return p.stdout if capture else ""


def _stop_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dir", default=str(Path.cwd() / "sandbox-demo"), help="sandbox directory")
    ap.add_argument("--size", default="64MiB", help="data to load")
    ap.add_argument("--storage", default="local",
                    help="local, s3, oss (the sandbox's endpoints) or a full storage URI")
    ap.add_argument("--keep", action="store_true", help="leave the sandbox running at the end")
    return ap.parse_args()


def _summary(a: argparse.Namespace, d: Path, home: Path, storage: str, name: str, nbytes: int,
             backup_s: float, restore_s: float, before: dict, t0: float) -> None:
    mib = nbytes / 2**20
    say("\nsummary")
    say(f"  storage   {storage}")
    say(f"  backup    {name}: {mib:.1f} MiB in {backup_s:.1f} s ({mib / backup_s:.0f} MiB/s, whole operation)")
    say(f"  restore   {mib:.1f} MiB in {restore_s:.1f} s ({mib / restore_s:.0f} MiB/s, incl. stopping and starting services)")
    say(f"  checksum  equal before backup and after restore for {', '.join(sorted(before.get('spaces', before)))}")
    say(f"  total     {time.monotonic() - t0:.1f} s")
    say(f"  journal   {home / 'journal.db'} (BRSM_HOME={home}; `brsm ops` and `brsm audit ID` read it)")
    say(f"  backups   {storage}" + (" (inside the sandbox's store)" if a.storage in ("s3", "oss") else ""))
    say(f"  clean up  rm -rf {shlex.quote(str(d))}   (the sandbox, its journal and its backups)")


def main() -> int:
    a = _args()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _stop_on_signal)
    d = Path(a.dir).resolve()
    home = d / "brsm-home"
    env = dict(os.environ, BRSM_HOME=str(home))
    brsm = brsm_argv()
    say(f"(`brsm` below is {brsm[0]}; `source .venv/bin/activate` puts it on your PATH)")
    t0 = time.monotonic()
    up = json.loads(sh([*brsm, "sandbox", "up", "--dir", str(d), "--json"], env, capture=True))
    try:
        for k, v in (("AWS_ACCESS_KEY_ID", up["s3"]["access_key_id"]), ("AWS_SECRET_ACCESS_KEY", up["s3"]["secret_access_key"]),
                     ("OSS_ACCESS_KEY_ID", up["oss"]["access_key_id"]), ("OSS_ACCESS_KEY_SECRET", up["oss"]["access_key_secret"])):
            env[k] = v
        say(f"(sandbox credentials exported from {d / 'credentials.env'}; `source` it to run the commands yourself)")
        cfg = str(d / "cluster.toml")
        storage = {"local": f"local://{d / 'backups'}", "s3": f"s3://{up['s3']['bucket']}/demo",
                   "oss": f"oss://{up['oss']['bucket']}/demo"}.get(a.storage, a.storage)
        sh([*brsm, "sandbox", "load", "--dir", str(d), "--size", a.size], env)
        before = json.loads(sh([*brsm, "sandbox", "checksum", "--dir", str(d), "--json"], env, capture=True))
        say(json.dumps(before, indent=1))
        t = time.monotonic()
        done = sh([*brsm, "start", "backup", "--config", cfg, "--storage", storage], env, capture=True, echo=True)
        backup_s = time.monotonic() - t
        m = re.search(r"finished \(CLEANED\): (\S+)", done)
        if not m:
            print(f"demo: the backup did not name what it made:\n{done}", file=sys.stderr)
            return 1
        name = m.group(1)
        sh([*brsm, "show", "--config", cfg, "--storage", storage], env)
        listed = json.loads(sh([*brsm, "show", "--config", cfg, "--storage", storage, "--json"], env, capture=True))
        made = next(b for b in listed["backups"] if b["name"] == name)
        nbytes = int(made.get("bytes") or 0)
        say(f"backup {name}: {made.get('files')} files, {nbytes / 2**20:.1f} MiB in {backup_s:.1f} s")
        say("\nnow damaging the cluster: overwriting part of its data")
        sh([*brsm, "sandbox", "load", "--dir", str(d), "--size", "16MiB", "--seed", "666"], env)
        changed = json.loads(sh([*brsm, "sandbox", "checksum", "--dir", str(d), "--json"], env, capture=True))
        assert changed != before, "loading more data should have changed the checksum"
        say("data changed after the backup; now restoring it")
        t = time.monotonic()
        sh([*brsm, "start", "restore", "--yes", "--config", cfg, "--storage", storage, "--name", name], env)
        restore_s = time.monotonic() - t
        after = json.loads(sh([*brsm, "sandbox", "checksum", "--dir", str(d), "--json"], env, capture=True))
        if after != before:
            print(f"demo: FAILED: checksum after restore {after} != before {before}", file=sys.stderr)
            return 6
        say("restore is exact: every space's checksum equals the one taken before the backup")
        sh([*brsm, "ops"], env)
        sh([*brsm, "journal", "verify"], env)
        _summary(a, d, home, storage, name, nbytes, backup_s, restore_s, before, t0)
        return 0
    except ReaderGone:
        return 141
    finally:
        if not a.keep:
            try:
                sh([*brsm, "sandbox", "down", "--dir", str(d)], env)
            except ReaderGone:  # the reader left: still bring everything down, silently
                subprocess.run([*brsm, "sandbox", "down", "--dir", str(d)], env=env, stdout=subprocess.DEVNULL)


if __name__ == "__main__":
    sys.exit(main())
