"""scripts/sweep: run the whole crash-point sweep and write docs/reliability.md."""
from __future__ import annotations

import argparse
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

from brsm.sandbox import cluster
from tests.e2e.conftest import Env
from tests.reliability.sweep import BACKUP_POINTS, OBJECT_STORE_EXTRA, RESTORE_POINTS, Sweeper, table


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--storages", default="local,s3,oss")
    ap.add_argument("--kills", type=int, default=10, help="random-instant kills per operation kind")
    ap.add_argument("--restore-storages", default="local", help="restore sweeps are slow: which storages")
    ap.add_argument("--out", default="docs/reliability.md")
    a = ap.parse_args()
    rng = random.Random(20261124)
    outcomes = []
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as d:
        root = Path(d) / "sandbox"
        state, _ = cluster.up(str(root), meta_hosts=1, storage_hosts=3, data_paths=2)
        try:
            env = Env(root, cluster.summary(state), Path(d) / "home")
            env.load(12 << 20, seed=1)
            sw = Sweeper(env, Path(d) / "work")

            def record(o):
                outcomes.append(o)
                print(f"{'pass' if o.ok else 'FAIL'}  {o.kind:<7} {o.storage:<5} {o.point:<22} {o.recovery:<8} {o.detail}",
                      flush=True)

            for storage in a.storages.split(","):
                ref = sw.reference_backup(storage)
                points = BACKUP_POINTS + (OBJECT_STORE_EXTRA if storage != "local" else [])
                for point in points:
                    for recovery in ("resume", "rollback"):
                        record(sw.backup_case(storage, point, recovery, ref))
                for _ in range(a.kills):
                    for recovery in ("resume", "rollback"):
                        record(sw.backup_case(storage, None, recovery, ref, delay=rng.uniform(0.3, 2.5)))
            for storage in a.restore_storages.split(","):
                loc = sw.storage(storage)
                backed = env.checksum()
                name = env.ok("start", "backup", "--config", env.config, *loc)["facts"]["backup_name"]
                for point in RESTORE_POINTS:
                    for recovery in ("resume", "rollback"):
                        record(sw.restore_case(loc, name, backed, point, recovery, storage))
                for _ in range(a.kills):
                    for recovery in ("resume", "rollback"):
                        record(sw.restore_case(loc, name, backed, None, recovery, storage,
                                               delay=rng.uniform(0.5, 5.0)))
        finally:
            cluster.down(str(root))
    failed = [o for o in outcomes if not o.ok]
    doc = f"""# Reliability: the crash-point sweep

Every row kills a real `brsm` process at that point — a failpoint (`BRSM_FAILPOINTS=point=crash`,
which ends the process with `os._exit`, no cleanup) or `kill@Ns`, a SIGKILL after N seconds — and
then recovers it, each recovery on its own fresh run:
- **resume**: the backup finishes with the same files (keys and sizes) as an uninterrupted one and
  `brsm verify --full` passes; the restore ends with the checksum taken at backup time.
- **rollback**: no snapshot, checkpoint dir, lease or object is left; a restore's cluster has the
  checksum it had before the restore began, services up, no set-aside dir left.
After every case the cluster must hold no snapshot, lease, checkpoint dir or set-aside dir.

Run with `scripts/sweep` ({a.storages} for backups, {a.restore_storages} for restores, {a.kills} random
kills per kind and recovery). The test suite runs a short form (`tests/reliability/test_sweep_short.py`).

Machine: {platform.machine()}, {__import__('os').cpu_count()} cores, Python {platform.python_version()}.
Run took {time.monotonic() - t0:.0f} s: {len(outcomes)} cases, {len(failed)} failed.

{table(outcomes)}
"""
    Path(a.out).write_text(doc)
    print(f"\n{len(outcomes)} cases, {len(failed)} failed; table written to {a.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
