"""Measure what folding a backup of many files costs: peak RSS and time, with the per-file ledger
folded into memory (how every brsm before the journal-kept ledgers folded) and kept in the journal
(fold_journal: queried), and the cost of the per-file questions a run asks of the ledger.

usage: scripts/bench-fold [--files 200000] [--dir DIR]

Each fold runs in its own process (peak RSS is per process: ru_maxrss), on one journal made first.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BATCH = 256  # as EventBatcher journals them


def _key(i: int) -> str:
    return f"BACKUP_2026_12_07_14_00_00/data/storage{i % 3}/nebula/1/data/{i:08d}.sst"


def _payload(i: int) -> dict:
    """Shaped like a FileCopied of brsm: key, size, host, path and sha256."""
    return {"key": _key(i), "size": 4096 + i, "host": f"storage{i % 3}", "sha256": f"{i:064x}",
            "path": f"/data/storage/nebula/1/data/{i:08d}.sst"}


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def make(path: Path, files: int, *, indexed: bool) -> tuple[int, float]:
    """A journal with one backup of ``files`` FileCopied; ``indexed``: its ledger's indexes made first
    (as a run of this brsm makes them), so the appends pay for them."""
    from journal import Journal

    from brsm.engine.runner import create_operation

    j = Journal.open(path)
    if indexed:
        j.keyed("FileCopied", "key"), j.keyed("PartUploaded", "key")
    op, _ = create_operation(j, "backup", {"spaces": []})
    t0 = time.perf_counter()
    with j.driver(op) as w:
        w.append("StepStarted", {"step": "COPIED"})
        for start in range(0, files, BATCH):
            w.append_batch([("FileCopied", _payload(i)) for i in range(start, min(start + BATCH, files))])
    appended = time.perf_counter() - t0
    j.close()
    return op, appended


def measure(path: Path, op: int, how: str, files: int) -> dict:
    """In a child process: fold ``op`` ``how`` ("memory" or "journal"), then ask the ledger."""
    from journal import Journal

    from brsm.engine.fold import fold
    from brsm.workflows.backup.state import BackupState

    j = Journal.open(path)
    base = _rss_mb()
    t0 = time.perf_counter()
    if how == "memory":
        st = fold("backup", j.events(op), BackupState)
    else:
        from brsm.engine.fold import fold_journal  # (imported here: "memory" also runs on an older brsm)

        st = fold_journal("backup", j, op, BackupState)
    fold_s = time.perf_counter() - t0
    rss_fold = _rss_mb()
    files_ = st.data.files
    keys = [_key(i) for i in range(files)]
    t0 = time.perf_counter()
    hits = sum(1 for k in keys if files_.done(k))
    done_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    misses = sum(1 for i in range(files) if files_.upload(keys[i]) is not None)
    upload_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    many = sum(len(files_.get_many(keys[i:i + 500])) for i in range(0, files, 500)) if how == "journal" else hits
    many_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    n, last, ordered = 0, "", True
    for f in files_:
        ordered = ordered and f.key > last
        last, n = f.key, n + 1
    ordered = ordered or how == "memory"  # an older brsm iterated in journal order
    iter_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    length = len(files_)
    len_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    totals = files_.totals() if hasattr(files_, "totals") else (length, sum(f.size for f in files_))
    totals_s = time.perf_counter() - t0
    assert totals == (files, sum(4096 + i for i in range(files))), totals
    assert hits == files == n == length == many and misses == 0 and ordered, (hits, n, length, many, misses)
    del keys
    return {"how": how, "base_mb": base, "fold_s": fold_s, "rss_after_fold_mb": rss_fold,
            "fold_mb": rss_fold - base, "done_s": done_s, "upload_s": upload_s, "get_many_s": many_s,
            "iter_s": iter_s, "len_s": len_s, "totals_s": totals_s, "peak_mb": _rss_mb()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=200_000)
    ap.add_argument("--dir", default=None, help="where to put the journal (default: a temp dir under /tmp)")
    ap.add_argument("--child", nargs=3, metavar=("PATH", "OP", "HOW"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        path, op, how = args.child
        print(json.dumps(measure(Path(path), int(op), how, args.files)))
        return
    out, appended, size = {}, {}, {}
    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        for how in ("memory", "journal"):
            path = Path(d) / how / "journal.db"
            op, appended[how] = make(path, args.files, indexed=how == "journal")
            size[how] = sum(f.stat().st_size for f in path.parent.glob("journal.db*"))
            p = subprocess.run([sys.executable, __file__, "--files", str(args.files), "--child", str(path), str(op),
                                how], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            assert p.returncode == 0, p.stderr[-2000:]
            out[how] = json.loads(p.stdout)
    n = args.files
    print(f"{n:,} FileCopied in one operation, appended in batches of {BATCH}")
    for how in ("memory", "journal"):
        out[how]["append_s"], out[how]["size_mb"] = appended[how], size[how] / 1e6
    rows = [
        (f"append {n:,} (durable batches)", "append_s", lambda v: f"{v:.2f} s ({n / v:,.0f}/s)"),
        ("journal on disk", "size_mb", lambda v: f"{v:.1f} MB"),
        ("fold", "fold_s", lambda v: f"{v:.2f} s"),
        ("RSS the fold added", "fold_mb", lambda v: f"{v:.1f} MB"),
        ("peak RSS of the process", "peak_mb", lambda v: f"{v:.1f} MB"),
        (f"done(key) for {n:,} keys", "done_s", lambda v: f"{v:.2f} s ({v / n * 1e6:.1f} us each)"),
        (f"upload(key) for {n:,} keys", "upload_s", lambda v: f"{v:.2f} s ({v / n * 1e6:.1f} us each)"),
        (f"get_many of {n:,} keys, 500 at a time", "get_many_s", lambda v: f"{v:.2f} s"),
        ("iterate every file (key order)", "iter_s", lambda v: f"{v:.2f} s"),
        ("len()", "len_s", lambda v: f"{v * 1e3:.1f} ms"),
        ("totals() (files, bytes: what Ctrl-C reports)", "totals_s", lambda v: f"{v * 1e3:.1f} ms"),
    ]
    w = max(len(r[0]) for r in rows)
    print(f"{'':<{w}}  {'in memory (before)':>22}  {'in the journal (after)':>26}")
    for label, k, fmt in rows:
        print(f"{label:<{w}}  {fmt(out['memory'][k]):>22}  {fmt(out['journal'][k]):>26}")
    print(f"(each process's RSS before the fold: {out['memory']['base_mb']:.1f} / {out['journal']['base_mb']:.1f} MB;"
          " the per-key questions of the in-memory fold are dict lookups; get_many is the journal's only)")


if __name__ == "__main__":
    main()
