"""scripts/sweep: run the whole crash-point sweep and write its part of docs/reliability.md.

The sweep's part is the top of the file, between the ``sweep:begin``/``sweep:end`` markers; every
section after it (campaigns, bad input, ...) is kept as it is. The chosen-spaces family (a
``--spaces space1`` backup restored on a sandbox of three metads, operation ``chosen-spaces``,
storage ``local-3metad``) runs on its own sandbox and writes its own section, the last of the file,
between the ``sweep-chosen-spaces`` markers: ``--only chosen-spaces`` runs that family alone.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import random
import re
import shlex
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from tests.reliability.sweep import (BACKUP_POINTS, CHOSEN, CHOSEN_STORAGE, MULTIPART_THRESHOLD, OBJECT_STORE_EXTRA,
                                     PART_SIZE, RESTORE_POINTS, ChosenSpacesSweeper, Outcome, Sweeper, cell,
                                     raft_sandbox, sweep_sandbox)

BEGIN, END = "<!-- sweep:begin (written by scripts/sweep) -->", "<!-- sweep:end -->"
CHOSEN_BEGIN = "<!-- sweep-chosen-spaces:begin (written by scripts/sweep) -->"
CHOSEN_END = "<!-- sweep-chosen-spaces:end -->"
KILL = "random kill (SIGKILL)"


def _is_kill(o: Outcome) -> bool:
    return o.point.startswith("kill@")


def table(outcomes: list[Outcome]) -> str:
    """One row per (operation, failpoint), one column per (storage, recovery); the random kills of
    an operation summed up in one row (their instants listed below the table)."""
    cols = sorted({(o.storage, o.recovery) for o in outcomes})
    rows: dict[tuple[str, str], dict] = {}
    for o in outcomes:
        point = KILL if _is_kill(o) else f"`{o.point}`"
        rows.setdefault((o.kind, point), {}).setdefault((o.storage, o.recovery), []).append(o)
    lines = ["| operation | crash point | " + " | ".join(f"{s} {r}" for s, r in cols) + " |",
             "|---|---|" + "---|" * len(cols)]
    for (kind, point), cells in rows.items():
        vals = []
        for c in cols:
            os_ = cells.get(c, [])
            if point != KILL or not os_:
                vals.append(cell(os_[0]) if os_ else "")
                continue
            bad = [o for o in os_ if not o.ok]
            na = sum(cell(o) == "n/a" for o in os_)
            vals.append(f"{len(os_) - len(bad) - na}/{len(os_)} pass" + (f", {na} n/a" if na else "")
                        + (f" **FAIL** {bad[0].point}: {bad[0].detail[:60]}" if bad else ""))
        lines.append(f"| {kind} | {point} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def counts(outcomes: list[Outcome]) -> str:
    lines = ["| operation | storage | failpoints swept | random kills | cases run | passed | failed | n/a |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    groups: dict[tuple[str, str], list[Outcome]] = {}
    for o in outcomes:
        groups.setdefault((o.kind, o.storage), []).append(o)
    tot = Counter()
    for (kind, storage), os_ in groups.items():
        c = Counter(points=len({o.point for o in os_ if not _is_kill(o)}), kills=sum(map(_is_kill, os_)),
                    cases=len(os_), failed=sum(not o.ok for o in os_), na=sum(cell(o) == "n/a" for o in os_))
        c["passed"] = c["cases"] - c["failed"] - c["na"]
        tot.update(c)
        lines.append(f"| {kind} | {storage} | {c['points']} | {c['kills']} | {c['cases']} | {c['passed']} "
                     f"| {c['failed']} | {c['na']} |")
    lines.append(f"| **all** | | {tot['points']} | {tot['kills']} | {tot['cases']} | {tot['passed']} "
                 f"| {tot['failed']} | {tot['na']} |")
    return "\n".join(lines)


def render(outcomes: list[Outcome], a: argparse.Namespace, seconds: float) -> str:
    failed = sum(not o.ok for o in outcomes)
    na = sum(cell(o) == "n/a" for o in outcomes)
    instants = {}
    for o in outcomes:
        if _is_kill(o):
            instants.setdefault((o.kind, o.storage, o.recovery), []).append(o.point[len("kill@"):])
    kills = "; ".join(f"{k} {s} {r}: {', '.join(v)}" for (k, s, r), v in instants.items())
    return f"""{BEGIN}
# Reliability: the crash-point sweep

Every case kills a real `brsm` process at one point — a failpoint (`BRSM_FAILPOINTS=point=crash`,
which ends the process with `os._exit`, no cleanup, no finally) or a SIGKILL from a timer at a random
instant — and then recovers it, each recovery on its own fresh run against the sandbox (real sshd,
real Thrift metad/storaged, moto S3, the OSS stand-in):
- **resume**: a backup finishes with the same files (keys and sizes) as an uninterrupted one and
  `brsm verify --full` passes (every object's SHA-256); a restore ends with the cluster checksum
  taken at backup time, every service up.
- **rollback**: a backup leaves no snapshot, checkpoint dir, lease, object (looked up in the bucket
  itself, not through brsm) or open multipart upload; a restore leaves the checksum the cluster had
  before it began, every service up, no set-aside dir, no lease.
After every case the cluster must hold no snapshot, lease, checkpoint dir or set-aside dir, and no
S3/OSS multipart upload may be left open under the case's prefix.

Points: every state boundary of each step (`start:` before its intent is journaled, `before:` after
the intent and before the side effect, `after:` after its completion), journal appends (`event:N`),
finished file transfers (`file:N`) and, on S3/OSS, multipart parts (`part:N`, after the N-th part
was uploaded and journaled). The sweep configures `part_size = {PART_SIZE >> 10} KiB` and
`multipart_threshold = {MULTIPART_THRESHOLD >> 10} KiB` (`[storage]` in the config) and lowers the S3/OSS
stand-ins' minimum part to match, so the sandbox's checkpoint files of 512 KiB to 1.4 MiB go up in parts
and every S3/OSS case has multipart uploads in flight; its smaller files go in groups, one put each, as
the threshold tells the backup (`groups.small_file_limit`). For each `part:N` resume the sweep also reads the
journal (`brsm audit`): the crashed run journaled exactly N parts, and the resume finished every upload
left open *in the same upload*, sending only parts not journaled before the crash (issue 4).
Random kills land uniformly in 10–90 % of the time an uninterrupted run of that operation took; a kill
that came before the run had created its operation (nothing to recover) or after it had finished is
drawn again, later or inside the time that run took, up to three times.
A restore has no failpoint inside one file's download (a file is written to a temporary name and
renamed, and is fetched again whole on resume); the random kills are what land mid-download.

Run with `scripts/sweep` (backups: {a.storages}; restores: {a.restore_storages}; {a.kills} random kills per
operation, storage and recovery). The test suite runs a short form (`tests/reliability/test_sweep_short.py`).

Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}.
Run took {seconds:.0f} s: {len(outcomes)} cases, {len(outcomes) - failed - na} passed, {failed} failed, {na} not reached.

{counts(outcomes)}

{table(outcomes)}

Random-kill instants (seconds after start): {kills or "none"}.
{END}
"""


def write_doc(path: Path, body: str) -> None:
    """Replace the sweep's part of the doc (the markers, or before the first ``## `` section in a
    doc written before the markers) and keep everything else."""
    old = path.read_text() if path.exists() else ""
    if BEGIN in old and END in old:
        head, rest = old.split(BEGIN, 1)
        tail = rest.split(END, 1)[1].lstrip("\n")
    else:
        head = ""
        m = re.search(r"^## ", old, re.M)
        tail = old[m.start():] if m else ""
    path.write_text(head + body + ("\n" + tail if tail else ""))


def render_chosen(outcomes: list[Outcome], a: argparse.Namespace, seconds: float, interrupted: str | None) -> str:
    failed = sum(not o.ok for o in outcomes)
    na = sum(cell(o) == "n/a" for o in outcomes)
    kills = ", ".join(o.point[len("kill@"):] + f" ({o.recovery})" for o in outcomes if _is_kill(o))
    cmd = "`scripts/sweep" + (f" --only '{a.only}'" if a.only else "") \
        + (f" --chosen-spaces-kills {a.chosen_spaces_kills}" if a.chosen_spaces_kills != 2 else "") + "`"
    if getattr(a, "runs", None):  # written from the outcome files of runs side by side
        cmd = " and ".join(f"`scripts/sweep {shlex.join(argv)}`" for argv in a.runs) + ", side by side"
    stopped = (f"\n**Stopped before the end** ({interrupted}): the counts are of the cases that ran.\n"
               if interrupted else "")
    return f"""{CHOSEN_BEGIN}
## The sweep: a restore of chosen spaces on three metads

A backup of `--spaces space1` restored on its own sandbox of three metads (the meta Raft; 3 storage
hosts, one data path, local storage). After the backup, every case first adds a tag to space1 and one
to space2 and loads new data, then runs the restore killed at one point — every restore failpoint, as
in the sweep above, and random SIGKILLs — and recovers it:
- **resume**: space1's data checksum and schema (its tags, edges and tag indexes with their ids) as
  backed up, every other space's as just before the restore, every service up, and the three metads'
  raw meta keys (spaces, parts, tags, edges, indexes, ids; read from each metad's RocksDB) equal.
- **rollback**: data checksum, schema and every metad's raw meta keys as just before the restore.
After every case the cluster holds no snapshot, lease, checkpoint, set-aside or staging dir; a case
killed before STOPPED must have left the cluster serving its data unchanged.

Run with {cmd}. Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}.
Run took {seconds:.0f} s: {len(outcomes)} cases, {len(outcomes) - failed - na} passed, {failed} failed, {na} not reached.
{stopped}
{counts(outcomes)}

{table(outcomes)}

Random-kill instants (seconds after start): {kills or "none"}.
{CHOSEN_END}
"""


def write_chosen_doc(path: Path, body: str) -> None:
    """Replace the chosen-spaces section (between its markers) or append it at the end."""
    old = path.read_text() if path.exists() else ""
    if CHOSEN_BEGIN in old and CHOSEN_END in old:
        head, rest = old.split(CHOSEN_BEGIN, 1)
        path.write_text(head + body.rstrip("\n") + rest.split(CHOSEN_END, 1)[1])
    else:
        path.write_text(old.rstrip("\n") + "\n\n" + body)


def multipart_sends(storage: str) -> bool:
    """Whether a backup to ``storage`` sends a file in parts (where the part: points fire): not on local
    storage, and not in an incremental backup through brsm, which sends the sweep's small files whole
    and copies every big one from its base (nothing changes between them); on the direct path every
    file goes in parts.

    >>> [multipart_sends(s) for s in ("local", "s3", "s3-direct", "oss+inc", "s3-direct+inc", "local+inc")]
    [False, True, True, False, True, False]
    """
    kind, inc, _ = storage.partition("+")
    return not kind.startswith("local") and (not inc or kind.endswith("-direct"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--storages", default="local,s3,oss,s3-direct,oss-direct",
                    help="backup sweeps: which storages (X-direct: store X on the direct data path)")
    ap.add_argument("--restore-storages", default="local,s3,oss,s3-direct,oss-direct",
                    help="restore sweeps: which storages")
    ap.add_argument("--kills", type=int, default=4, help="random-instant kills per operation, storage and recovery")
    ap.add_argument("--only", help="regex on 'operation storage point' (e.g. 'backup s3 part:'): run those cases only; "
                    f"'{CHOSEN}' runs the family 'a restore of chosen spaces on three metads' alone "
                    f"(operation {CHOSEN}, storage {CHOSEN_STORAGE}, its own sandbox)")
    ap.add_argument("--chosen-spaces-kills", type=int, default=2,
                    help=f"random-instant kills per recovery in the {CHOSEN} family")
    ap.add_argument("--outcomes", help="also append every case's outcome to this file (JSON lines)")
    ap.add_argument("--from-outcomes", help="run nothing: write the doc from these outcome files (comma-separated; "
                    "runs of parts of the sweep side by side, each with --outcomes)")
    ap.add_argument("--out", default="docs/reliability.md", help="doc to update ('-' for none)")
    a = ap.parse_args()

    def on_term(signum: int, _frame) -> None:  # SIGTERM/SIGHUP: unwind, so the sandbox is stopped
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    only = re.compile(a.only) if a.only else None
    rng = random.Random(20261124)
    outcomes: list[Outcome] = []
    t0 = time.monotonic()

    def want(kind: str, storage: str, point: str) -> bool:
        return only is None or bool(only.search(f"{kind} {storage} {point}"))

    def record(o: Outcome) -> None:
        outcomes.append(o)
        if a.outcomes:
            with open(a.outcomes, "a") as f:
                f.write(json.dumps({"outcome": dataclasses.asdict(o), "at": time.time()}) + "\n")
        print(f"{'pass' if o.ok else 'FAIL'}  {o.kind:<7} {o.storage:<5} {o.point:<22} {o.recovery:<8} {o.detail}",
              flush=True)
        if not o.ok:
            sw.reset()

    def run(kind: str, storage: str, point: str, recovery: str, case) -> None:
        """One case; an exception in the driver is that case's failure, not the end of the sweep."""
        try:
            record(case())
        except Exception as e:  # noqa: BLE001
            record(Outcome(kind, storage, point, recovery, False, f"sweep driver: {type(e).__name__}: {e}"[:400]))

    def killed(case, secs: float) -> Outcome:
        """A kill at a random instant inside the run; a kill that came before the run created its
        operation or after it had finished is drawn again (later, or inside the time that run took),
        up to 3 times, and is recorded as not reached if it never lands."""
        lo, hi = 0.1 * secs, 0.9 * secs
        delay = rng.uniform(lo, hi)
        for _ in range(3):
            sw.last_run_seconds = sw.kill_timing = None
            o = case(delay)
            if cell(o) != "n/a":
                break
            if sw.kill_timing == "early":  # before the run created its operation: later
                lo, hi = delay, max(hi, 1.5 * delay)
            else:  # after the run's work was done: earlier, inside the time it took
                hi = sw.last_run_seconds or delay
                lo = min(lo, 0.5 * hi)
            delay = rng.uniform(lo, hi)
        return o

    def sweep(kind: str, storage: str, points: list[str], prepare, case, n_kills: int | None = None) -> None:
        """Every failpoint of one operation on one storage, then the random kills, each recovered
        both ways. ``prepare()`` gives (what the cases compare against, seconds of an uninterrupted
        run); ``case(ref, point, recovery, delay)`` runs one case (``point`` None: a timed kill)."""
        points = [p for p in points if want(kind, storage, p)]
        kills = (a.kills if n_kills is None else n_kills) if want(kind, storage, "kill") else 0
        if not points and not kills:
            return
        try:
            ref, secs = prepare()
        except Exception as e:  # noqa: BLE001
            record(Outcome(kind, storage, "uninterrupted run", "-", False, f"{type(e).__name__}: {e}"[:400]))
            return
        print(f"{kind} {'to' if kind == 'backup' else 'from'} {storage}: {secs:.2f} s uninterrupted", flush=True)
        for point in points:
            for recovery in ("resume", "rollback"):
                run(kind, storage, point, recovery, lambda: case(ref, point, recovery, None))
        for _ in range(kills):
            for recovery in ("resume", "rollback"):
                run(kind, storage, "kill@?", recovery,
                    lambda: killed(lambda delay: case(ref, None, recovery, delay), secs))

    def restore_reference(storage: str):
        loc, name, backed, secs = sw.backed_up(storage)
        return (loc, name, backed), secs

    storages = [s for s in a.storages.split(",") if s]
    restore_storages = [s for s in a.restore_storages.split(",") if s]
    main_wanted = any(want("backup", s, p) for s in storages for p in [*BACKUP_POINTS, *OBJECT_STORE_EXTRA, "kill"]) \
        or any(want("restore", s, p) for s in restore_storages for p in [*RESTORE_POINTS, "kill"])
    chosen_wanted = any(want(CHOSEN, CHOSEN_STORAGE, p) for p in [*RESTORE_POINTS, "kill"])
    interrupted = None
    chosen_t0 = None
    if a.outcomes:
        with open(a.outcomes, "a") as f:
            f.write(json.dumps({"started": time.time(), "argv": sys.argv[1:]}) + "\n")
    if a.from_outcomes:
        rows = [json.loads(line) for f in a.from_outcomes.split(",") for line in open(f) if line.strip()]
        outcomes += [Outcome(**r["outcome"]) for r in rows if "outcome" in r]
        a.runs = [[x for i, x in enumerate(r["argv"]) if x not in ("--outcomes", "--out")
                   and (i == 0 or r["argv"][i - 1] not in ("--outcomes", "--out"))] for r in rows if "started" in r]
        main_wanted = chosen_wanted = False
        # the wall time from the first run's start to the last case's end
        t0 -= max(r.get("at", 0) for r in rows) - min(r["started"] for r in rows if "started" in r)
        chosen_t0 = t0
    try:
        if main_wanted:
            with tempfile.TemporaryDirectory() as d, sweep_sandbox(Path(d)) as env:
                sw = Sweeper(env, Path(d) / "work")
                for storage in storages:
                    sweep("backup", storage, BACKUP_POINTS + (OBJECT_STORE_EXTRA if multipart_sends(storage) else []),
                          lambda: sw.reference_backup(storage),
                          lambda ref, point, recovery, delay: sw.backup_case(storage, point, recovery, ref, delay=delay))
                for storage in restore_storages:
                    sweep("restore", storage, RESTORE_POINTS, lambda: restore_reference(storage),
                          lambda ref, point, recovery, delay: sw.restore_case(*ref, point, recovery, storage, delay=delay))
        if chosen_wanted:
            chosen_t0 = time.monotonic()
            with tempfile.TemporaryDirectory() as d, raft_sandbox(Path(d)) as env:
                sw = ChosenSpacesSweeper(env, Path(d) / "work")
                sweep(CHOSEN, CHOSEN_STORAGE, RESTORE_POINTS, sw.chosen_backed_up,
                      lambda ref, point, recovery, delay: sw.chosen_case(*ref, point, recovery, delay=delay),
                      n_kills=a.chosen_spaces_kills)
    except KeyboardInterrupt as e:  # SIGTERM/SIGHUP: the sandbox is down; write what ran, marked so
        interrupted = f"stopped by {e}"
    seconds = time.monotonic() - t0
    failed = [o for o in outcomes if not o.ok]
    main_outcomes = [o for o in outcomes if o.kind != CHOSEN]
    # in the restore's order (runs side by side each wrote a part of the points)
    chosen_outcomes = sorted((o for o in outcomes if o.kind == CHOSEN),
                             key=lambda o: RESTORE_POINTS.index(o.point) if o.point in RESTORE_POINTS else len(RESTORE_POINTS))
    if a.out != "-" and main_outcomes and not interrupted:
        write_doc(Path(a.out), render(main_outcomes, a, seconds))
    if a.out != "-" and chosen_outcomes:
        write_chosen_doc(Path(a.out), render_chosen(chosen_outcomes, a, time.monotonic() - (chosen_t0 or t0), interrupted))
    print(f"\n{len(outcomes)} cases, {len(failed)} failed, {seconds:.0f} s"
          + (f"; written to {a.out}" if a.out != "-" else ""))
    for o in failed:
        print(f"FAIL  {o.kind} {o.storage} {o.point} {o.recovery}: {o.detail}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
