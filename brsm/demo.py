"""`scripts/demo`: the whole story on one machine, as a user would type it.

Starts a sandbox cluster, loads data, backs it up (to a local directory by default; ``--storage s3``
or ``--storage oss`` use the sandbox's endpoints), shows the backup, overwrites the cluster's data,
restores the backup and proves the restore exact with the sandbox's checksum, then prints a summary
with times and throughput and stops the sandbox. Every step is a real `brsm` command in a
subprocess, printed before it runs, so a newcomer can copy them.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path


def sh(args: list[str], env: dict[str, str], *, capture: bool = False) -> str:
    print(f"\n$ {shlex.join(args)}", flush=True)
    p = subprocess.run(args, env=env, text=True, stdout=subprocess.PIPE if capture else None)
    if p.returncode != 0:
        print(f"demo: `{shlex.join(args)}` exited {p.returncode}", file=sys.stderr)
        raise SystemExit(p.returncode)
    return p.stdout if capture else ""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dir", default=str(Path.cwd() / "sandbox-demo"), help="sandbox directory")
    ap.add_argument("--size", default="64MiB", help="data to load")
    ap.add_argument("--storage", default="local",
                    help="local, s3, oss (the sandbox's endpoints) or a full storage URI")
    ap.add_argument("--keep", action="store_true", help="leave the sandbox running at the end")
    a = ap.parse_args()
    d = Path(a.dir).resolve()
    env = dict(os.environ, BRSM_HOME=str(d / "brsm-home"))
    brsm = [sys.executable, "-m", "brsm.cli.app"]
    t0 = time.monotonic()
    up = json.loads(sh([*brsm, "sandbox", "up", "--dir", str(d), "--json"], env, capture=True))
    try:
        for k, v in (("AWS_ACCESS_KEY_ID", up["s3"]["access_key_id"]), ("AWS_SECRET_ACCESS_KEY", up["s3"]["secret_access_key"]),
                     ("OSS_ACCESS_KEY_ID", up["oss"]["access_key_id"]), ("OSS_ACCESS_KEY_SECRET", up["oss"]["access_key_secret"])):
            env[k] = v
        print(f"(sandbox credentials exported from {d / 'credentials.env'})")
        cfg = str(d / "cluster.toml")
        storage = {"local": f"local://{d / 'backups'}", "s3": f"s3://{up['s3']['bucket']}/demo",
                   "oss": f"oss://{up['oss']['bucket']}/demo"}.get(a.storage, a.storage)
        sh([*brsm, "sandbox", "load", "--dir", str(d), "--size", a.size], env)
        before = json.loads(sh([*brsm, "sandbox", "checksum", "--dir", str(d), "--json"], env, capture=True))
        print(json.dumps(before, indent=1))
        t = time.monotonic()
        res = json.loads(sh([*brsm, "start", "backup", "--config", cfg, "--storage", storage, "--json"], env, capture=True))
        backup_s = time.monotonic() - t
        name = res["facts"]["backup_name"]
        nbytes = res["facts"].get("total_bytes") or 0
        print(f"backup {name}: {res['facts'].get('total_files')} files, {nbytes / 2**20:.1f} MiB in {backup_s:.1f} s")
        sh([*brsm, "show", "--config", cfg, "--storage", storage], env)
        print("\nnow damaging the cluster: overwriting part of its data")
        sh([*brsm, "sandbox", "load", "--dir", str(d), "--size", "16MiB", "--seed", "666"], env)
        changed = json.loads(sh([*brsm, "sandbox", "checksum", "--dir", str(d), "--json"], env, capture=True))
        assert changed != before, "loading more data should have changed the checksum"
        print("data changed after the backup; now restoring it")
        t = time.monotonic()
        sh([*brsm, "start", "restore", "--config", cfg, "--storage", storage, "--name", name], env)
        restore_s = time.monotonic() - t
        after = json.loads(sh([*brsm, "sandbox", "checksum", "--dir", str(d), "--json"], env, capture=True))
        if after != before:
            print(f"demo: FAILED: checksum after restore {after} != before {before}", file=sys.stderr)
            return 6
        print("restore is exact: every space's checksum equals the one taken before the backup")
        sh([*brsm, "ops"], env)
        sh([*brsm, "journal", "verify"], env)
        mib = nbytes / 2**20
        print("\nsummary")
        print(f"  storage   {storage}")
        print(f"  backup    {name}: {mib:.1f} MiB in {backup_s:.1f} s ({mib / backup_s:.0f} MiB/s, whole operation)")
        print(f"  restore   {mib:.1f} MiB in {restore_s:.1f} s ({mib / restore_s:.0f} MiB/s, incl. stopping and starting services)")
        print(f"  checksum  equal before backup and after restore for {', '.join(sorted(before.get('spaces', before)))}")
        print(f"  total     {time.monotonic() - t0:.1f} s")
        return 0
    finally:
        if not a.keep:
            sh([*brsm, "sandbox", "down", "--dir", str(d)], env)


if __name__ == "__main__":
    sys.exit(main())
