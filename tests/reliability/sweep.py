"""The crash-point sweep: kill a real brsm process (SIGKILL-equivalent, via failpoints, or a timer),
then check that `resume` finishes exactly and that `rollback` restores exactly.

Used by the short form in the test suite and by `scripts/sweep` (every point, every storage, random
instants), which writes the table in docs/reliability.md.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from brsm.engine.definitions import BACKUP, RESTORE
from brsm.failpoints import CRASH_EXIT


def boundary_points(kind) -> list[str]:
    return [f"{w}:{s}" for s in kind.steps for w in ("start", "before", "after")]


BACKUP_POINTS = boundary_points(BACKUP) + ["file:1", "file:3", "event:4", "event:12"]
RESTORE_POINTS = boundary_points(RESTORE) + ["file:1", "file:3", "event:5", "event:14"]
OBJECT_STORE_EXTRA = ["part:1"]


@dataclass
class Outcome:
    kind: str
    storage: str
    point: str
    recovery: str
    ok: bool
    detail: str = ""


def _key_shape(manifest: dict) -> list[tuple[str, int]]:
    name = manifest["backup_name"]
    return sorted((f["key"].replace(name, "NAME"), f["size"]) for f in manifest["files"])


class Sweeper:
    """Drives one sandbox env (tests/e2e/conftest.Env) through crash points."""

    def __init__(self, env, workdir: Path) -> None:
        self.env = env
        self.workdir = workdir
        self.n = 0

    def storage(self, kind: str) -> list[str]:
        self.n += 1
        if kind == "local":
            return ["--storage", f"local://{self.workdir / f'b{self.n}'}"]
        return self.env.s3(f"sweep{self.n}") if kind == "s3" else self.env.oss(f"sweep{self.n}")

    def _last_op(self) -> int:
        return self.env.ok("ops", "--limit", "1")[0]["id"]

    def _crash(self, args: list[str], point: str | None, delay: float | None = None) -> tuple[bool, str]:
        """Run brsm killed at ``point`` (failpoint) or after ``delay`` s (SIGKILL). True if it died."""
        if point:
            p = self.env.brsm(*args, failpoints=f"{point}=crash")
            if p.returncode == CRASH_EXIT:
                return True, ""
            return False, f"exit {p.returncode} instead of a crash: {p.stderr[-300:]}"
        proc = subprocess.Popen([*__import__("tests.e2e.conftest", fromlist=["BRSM"]).BRSM, *args],
                                env=self.env.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay or 0)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True, ""
        return False, "finished before the kill"

    # -- backup ------------------------------------------------------------------------------------
    def reference_backup(self, storage: str) -> dict:
        loc = self.storage(storage)
        res = self.env.ok("start", "backup", "--config", self.env.config, *loc)
        return self._manifest(loc, res["facts"]["backup_name"])

    def _manifest(self, loc: list[str], name: str) -> dict:
        p = self.env.brsm("verify", name, *loc, "--full", "--config", self.env.config, "--json")
        assert p.returncode == 0, f"verify --full failed: {p.stdout[-500:]} {p.stderr[-500:]}"
        uri = loc[1]
        if uri.startswith("local://"):
            return json.loads((Path(uri[len("local://"):]) / name / "brsm-manifest.json").read_text())
        show = self.env.ok("show", *loc, "--config", self.env.config)
        entry = next(b for b in show["backups"] if b["name"] == name)
        return {"backup_name": name, "files": entry.get("manifest", {}).get("files", [])} if "manifest" in entry \
            else {"backup_name": name, "files": [{"key": k, "size": v} for k, v in entry.get("objects", {}).items()
                                                 if "/data/" in k or "/meta/" in k]}

    def backup_case(self, storage: str, point: str | None, recovery: str, reference: dict,
                    delay: float | None = None) -> Outcome:
        loc = self.storage(storage)
        died, why = self._crash(["start", "backup", "--config", self.env.config, *loc], point, delay)
        label = point or f"kill@{delay:.2f}s"
        if not died and point and point.startswith("part:") and why.startswith("exit 0"):
            # No file reached the multipart threshold at this data size: the point does not exist here.
            return Outcome("backup", storage, label, recovery, True, "not reached (no multipart upload)")
        if not died:
            return Outcome("backup", storage, label, recovery, delay is not None, why or "no crash")
        op = self._last_op()
        p = self.env.brsm(recovery, str(op), "--json")
        if recovery == "rollback" and p.returncode == 2 and "final step" in p.stdout + p.stderr:
            recovery_done = "rollback refused in CLEANED; resumed"
            p = self.env.brsm("resume", str(op), "--json")
            if p.returncode != 0 or json.loads(p.stdout)["state"] != "CLEANED":
                return Outcome("backup", storage, label, recovery, False, f"resume after refusal: {p.stdout[-300:]}")
            problems = self._cluster_problems()
            return Outcome("backup", storage, label, recovery, not problems, "; ".join(problems) or recovery_done)
        if recovery == "rollback" and p.returncode == 2 and "nothing to roll back" in p.stdout + p.stderr:
            return Outcome("backup", storage, label, recovery, True, "finished before the crash: nothing to undo")
        if p.returncode != 0:
            return Outcome("backup", storage, label, recovery, False, f"{recovery} exit {p.returncode}: {p.stdout[-400:]}")
        res = json.loads(p.stdout)
        problems = self._cluster_problems()
        if recovery == "resume":
            if res["state"] != "CLEANED":
                problems.append(f"state {res['state']}")
            else:
                got = self._manifest(loc, res["facts"]["backup_name"])
                if _key_shape(got) != _key_shape(reference):
                    problems.append("manifest differs from an uninterrupted backup's")
        else:
            if res["state"] != "ROLLED_BACK":
                problems.append(f"state {res['state']}")
            left = self._objects(loc)
            if left:
                problems.append(f"{len(left)} object(s) left, e.g. {left[0]}")
        return Outcome("backup", storage, label, recovery, not problems, "; ".join(problems))

    def _objects(self, loc: list[str]) -> list[str]:
        uri = loc[1]
        if uri.startswith("local://"):
            root = Path(uri[len("local://"):])
            return [str(p) for p in root.rglob("*") if p.is_file()] if root.exists() else []
        show = self.env.ok("show", *loc, "--config", self.env.config)
        return [b["name"] for b in show["backups"]]

    def _cluster_problems(self) -> list[str]:
        from tests.e2e.test_backup_restore import aside_dirs, checkpoint_dirs, leases, snapshots

        out = []
        if snapshots(self.env):
            out.append(f"snapshots left: {snapshots(self.env)}")
        if leases(self.env):
            out.append("lease left")
        if checkpoint_dirs(self.env):
            out.append("checkpoint dirs left")
        if aside_dirs(self.env):
            out.append("set-aside dirs left")
        return out

    # -- restore -----------------------------------------------------------------------------------
    def restore_case(self, loc: list[str], name: str, backed: dict, point: str | None, recovery: str,
                     storage: str, delay: float | None = None) -> Outcome:
        self.env.load(1 << 20, seed=random.randrange(1 << 30))
        current = self.env.checksum()
        label = point or f"kill@{delay:.2f}s"
        died, why = self._crash(["start", "restore", "--config", self.env.config, *loc, "--name", name], point, delay)
        if not died:
            return Outcome("restore", storage, label, recovery, delay is not None, why or "no crash")
        op = self._last_op()
        p = self.env.brsm(recovery, str(op), "--json")
        if recovery == "rollback" and p.returncode == 2 and "final step" in p.stdout + p.stderr:
            p = self.env.brsm("resume", str(op), "--json")  # refused in CLEANED: finishing is the way out
            recovery = "rollback"
            finished = p.returncode == 0
        else:
            finished = recovery == "rollback" and p.returncode == 2 and "nothing to roll back" in p.stdout + p.stderr
        if p.returncode != 0 and not finished:
            return Outcome("restore", storage, label, recovery, False, f"{recovery} exit {p.returncode}: {p.stdout[-400:]}")
        problems = self._cluster_problems()
        try:
            got = self.env.checksum()
        except Exception as e:  # noqa: BLE001 - a cluster that does not answer is the failure
            return Outcome("restore", storage, label, recovery, False, f"cluster does not answer: {e}")
        want = backed if (recovery == "resume" or finished) else current
        if got != want:
            problems.append("checksum differs from " + ("the backup's" if want is backed else "the pre-restore one"))
        return Outcome("restore", storage, label, recovery, not problems,
                       "; ".join(problems) or ("finished before the crash" if finished else ""))


def table(outcomes: list[Outcome]) -> str:
    """Markdown: one row per (kind, point), one column per (storage, recovery)."""
    cols = sorted({(o.storage, o.recovery) for o in outcomes})
    rows: dict[tuple[str, str], dict] = {}
    for o in outcomes:
        rows.setdefault((o.kind, o.point), {})[(o.storage, o.recovery)] = o
    head = "| operation | crash point | " + " | ".join(f"{s} {r}" for s, r in cols) + " |"
    sep = "|---|---|" + "---|" * len(cols)
    lines = [head, sep]
    for (kind, point), cells in rows.items():
        vals = []
        for c in cols:
            o = cells.get(c)
            vals.append("" if o is None else ("n/a" if o.ok and o.detail.startswith("not reached") else
                                              "pass" if o.ok else f"**FAIL** {o.detail[:80]}"))
        lines.append(f"| {kind} | `{point}` | " + " | ".join(vals) + " |")
    return "\n".join(lines)
