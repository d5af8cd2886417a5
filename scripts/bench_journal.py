"""Benchmark the journal: batched and single appends (durable, fsync per commit), full read, verify.

usage: scripts/bench-journal [--events 100000] [--batch 1000] [--single 2000] [--dir DIR]
"""
from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from journal import Journal  # noqa: E402


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def payload(i: int) -> dict:
    # shaped like a FileCopied fact: a path, a size and a sha256
    return {"host": "storage1", "path": f"/data/storage/nebula/1/data/{i:08d}.sst", "size": 1048576 + i,
            "sha256": f"{i:064x}"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=1_000)
    ap.add_argument("--single", type=int, default=2_000)
    ap.add_argument("--dir", default=None, help="where to put the journal (default: a temp dir under /tmp)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        j = Journal.open(Path(d) / "journal.db")  # the name brsm looks for under $BRSM_HOME
        op = j.create_operation(kind="backup", params={"bench": True}, who="bench@local", version="bench")
        with j.driver(op.id) as w:
            t0 = time.perf_counter()
            for start in range(0, args.events, args.batch):
                w.append_batch([("FileCopied", payload(i)) for i in range(start, min(start + args.batch,
                                                                                        args.events))])
            batched = time.perf_counter() - t0

        single_op = j.create_operation(kind="backup", who="bench@local", version="bench")
        with j.driver(single_op.id) as w:
            t0 = time.perf_counter()
            for i in range(args.single):
                w.append("FileCopied", payload(i))
            single = time.perf_counter() - t0

        t0 = time.perf_counter()
        n_read = sum(1 for _ in j.events(op.id))
        read = time.perf_counter() - t0
        t0 = time.perf_counter()
        report = j.verify(op.id)
        verify = time.perf_counter() - t0
        t0 = time.perf_counter()
        n_typed = j.count_events(op.id, types=["FileCopied"])
        count = time.perf_counter() - t0
        size = sum(f.stat().st_size for f in Path(d).glob("journal.db*"))
        j.close()
        audit = {}
        for fmt in ([], ["--json"]):
            import subprocess

            env = dict(os.environ, BRSM_HOME=d)
            t0 = time.perf_counter()
            p = subprocess.run([sys.executable, "-m", "brsm.cli.app", "audit", str(op.id), *fmt], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            audit[" ".join(fmt) or "text"] = (time.perf_counter() - t0, p.returncode, len(p.stdout))
            assert p.returncode == 0, p.stderr.decode()[-500:]

    assert n_read == args.events and n_typed == args.events, (n_read, n_typed)
    assert report.ok and report.checked == args.events, report.problems[:3]
    rows = [
        ("machine", f"{os.cpu_count()} CPUs ({len(os.sched_getaffinity(0))} usable), {cpu_model()}"),
        ("python / sqlite", f"{platform.python_version()} / {sqlite3.sqlite_version}, WAL, synchronous=FULL"),
        (f"batched append ({args.events:,} in batches of {args.batch:,})",
         f"{args.events / batched:,.0f} events/s  ({batched:.2f} s)"),
        (f"single append ({args.single:,}, one commit+fsync each)",
         f"{args.single / single:,.0f} events/s  ({single * 1e3 / args.single:.3f} ms each)"),
        (f"read all {args.events:,} events", f"{read:.3f} s  ({args.events / read:,.0f} events/s)"),
        (f"verify chain of {args.events:,}", f"{verify:.3f} s  ({args.events / verify:,.0f} events/s)"),
        ("count_events by type", f"{count * 1e3:.1f} ms"),
        ("journal size on disk", f"{size / 1e6:.1f} MB"),
    ] + [(f"`brsm audit` of {args.events:,} events ({k})", f"{t:.2f} s  ({n / 1e6:.1f} MB printed)")
         for k, (t, _, n) in audit.items()]
    width = max(len(k) for k, _ in rows)
    print(f"{'measure':<{width}}  result")
    print(f"{'-' * width}  {'-' * 40}")
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    target = 20_000
    rate = args.events / batched
    print(f"\nbatched target >= {target:,}/s: {'met' if rate >= target else 'NOT met'}")
    worst_audit = max(t for t, _, _ in audit.values())
    print(f"audit target < 2 s: {'met' if worst_audit < 2 else 'NOT met'}")
    sys.exit(0 if rate >= target and worst_audit < 2 else 1)


if __name__ == "__main__":
    main()
