"""The crash-point sweep: kill a real brsm process (SIGKILL-equivalent, via failpoints, or a timer),
then check that `resume` finishes exactly and that `rollback` restores exactly.

Used by the short form in the test suite and by `scripts/sweep` (every point, every storage, random
instants), which writes the table in docs/reliability.md.

The sweep's sandbox and config use small multipart parts (``PART_SIZE`` above
``MULTIPART_THRESHOLD``), so the sandbox's 0.3–1.4 MiB checkpoint files go to S3/OSS in 3–6 parts
each while the smaller ones go in one request: the ``part:N`` points are inside real multipart
uploads, and every other S3/OSS case has multipart uploads in flight too.
"""
from __future__ import annotations

import contextlib
import json
import random
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from brsm.engine.definitions import BACKUP, RESTORE
from brsm.failpoints import CRASH_EXIT

PART_SIZE = 256 << 10
MULTIPART_THRESHOLD = 512 << 10
DATA_SIZE = 12 << 20


def boundary_points(kind) -> list[str]:
    return [f"{w}:{s}" for s in kind.steps for w in ("start", "before", "after")]


BACKUP_POINTS = boundary_points(BACKUP) + ["file:1", "file:3", "event:4", "event:12"]
# file:N land in STAGED (the staged download, the cluster serving); swap:1 after the first staged tree
# was renamed into place, the others still staged; started:1 inside STARTED once storaged and graphd
# were started on the restored data (a random kill found a resume from there re-proving that data)
RESTORE_POINTS = boundary_points(RESTORE) + ["file:1", "file:3", "event:5", "event:14", "swap:1", "started:1"]
# inside multipart uploads (S3/OSS backups): the first part, a second one, one well into the copy
OBJECT_STORE_EXTRA = ["part:1", "part:2", "part:9"]
NOT_REACHED = "not reached"


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


@contextlib.contextmanager
def sweep_sandbox(base: Path) -> Iterator:
    """A sandbox whose S3/OSS stand-ins accept parts of ``PART_SIZE``, loaded with ``DATA_SIZE``;
    every process it started is stopped on exit."""
    from brsm.sandbox import cluster
    from tests.e2e.conftest import Env

    root = base / "sandbox"
    state, _ = cluster.up(str(root), meta_hosts=1, storage_hosts=3, data_paths=2, min_part_size=PART_SIZE)
    try:
        env = Env(root, cluster.summary(state), base / "home")
        env.load(DATA_SIZE, seed=1)
        yield env
    finally:
        cluster.down(str(root))


class Sweeper:
    """Drives one sandbox env (tests/e2e/conftest.Env) through crash points."""

    def __init__(self, env, workdir: Path) -> None:
        self.env = env
        self.workdir = workdir
        self.n = 0
        self.last_run_seconds: float | None = None  # how long the last run that beat its kill took
        self.kill_timing: str | None = None  # "early" / "late" when the last timed kill missed the operation
        self.bases: dict[str, str] = {}  # an incremental case's storage URI -> its base backup
        workdir.mkdir(parents=True, exist_ok=True)
        # the sandbox's config plus the sweep's multipart tuning ([storage] is its last table)
        text = Path(env.config).read_text()
        tables = [line.strip() for line in text.splitlines() if line.startswith("[")]
        assert tables[-1] == "[storage]", f"expected [storage] last in the sandbox config, not {tables[-1]}"
        self.config = str(workdir / "sweep-cluster.toml")
        Path(self.config).write_text(text.rstrip() + f"\npart_size = {PART_SIZE}\n"
                                     f"multipart_threshold = {MULTIPART_THRESHOLD}\n"
                                     f"min_part_size = {PART_SIZE}\n")  # the stand-ins' lowered minimum

    def storage(self, kind: str) -> list[str]:
        """The storage arguments of a case; "s3-direct"/"oss-direct": that store on the direct data path
        (issue 16: the hosts move the bytes, brsm signs and journals), "s3"/"oss": through brsm (named,
        since the default, auto, would go direct on the sandbox). "X+inc": an incremental backup (issue
        26) on X, whose base, a full backup, is made there first, uninterrupted."""
        self.n += 1
        kind, plus, _ = kind.partition("+")
        store, _, path = kind.partition("-")
        if store == "local":
            loc = ["--storage", f"local://{self.workdir / f'b{self.n}'}"]
        else:
            loc = self.env.s3(f"sweep{self.n}") if store == "s3" else self.env.oss(f"sweep{self.n}")
            loc = loc + ["--data-path", "direct" if path == "direct" else "via-brsm"]
        if plus:
            self.bases[loc[1]] = self.env.ok(*self.backup_args(loc))["facts"]["backup_name"]
            loc = loc + ["--incremental"]
        return loc

    def _base_problems(self, loc: list[str]) -> list[str]:
        """An incremental case's base must come out of every crash and recovery whole: a rollback deletes
        only the incremental's own keys (a local copy is a hard link: the base's bytes too stay)."""
        base = self.bases.get(loc[1])
        if base is None:
            return []
        p = self.env.brsm("verify", base, *loc[:2], "--full", "--config", self.config, "--json")
        if p.returncode != 0:
            return [f"the base {base} is no longer whole: {p.stdout[-300:]}"]
        return []

    def _last_op(self) -> int:
        ops = self.env.ok("ops", "--limit", "1")
        return ops[0]["id"] if ops else 0

    def _op_after_crash(self, before: int, delay: float | None) -> tuple[int | None, str]:
        """The operation the killed run created, or (None, why) when there is none to recover: the
        kill came before the run created it, or after it had finished (the timer only hit the exit)."""
        ops = self.env.ok("ops", "--limit", "1")
        if not ops or ops[0]["id"] == before:
            self.kill_timing = "early"
            return None, (f"{NOT_REACHED}: killed before it created its operation" if delay is not None
                          else "no operation was created before the crash")
        if delay is not None and ops[0].get("finished"):
            self.kill_timing = "late"
            return None, f"{NOT_REACHED}: the operation had finished before the kill"
        return ops[0]["id"], ""

    def reset(self) -> None:
        """After a failed case: end what it left open (rollback, or resume once rollback is refused in
        the final step), then remove what is left (brsm gc, then any lease dir), so one failure does not
        fail every case after it (a resume that stopped with the cluster down did, once)."""
        from tests.e2e.test_backup_restore import leases

        ops = json.loads(self.env.brsm("ops", "--limit", "1", "--json").stdout or "[]")
        if isinstance(ops, list) and ops and not ops[0].get("finished"):
            op = str(ops[0]["id"])
            if self.env.brsm("rollback", op, "--json").returncode == 2:
                self.env.brsm("resume", op, "--json")
        self.env.brsm("gc", "--config", self.config, "--confirm", "--grace", "0s", "--json")
        for path in leases(self.env):
            shutil.rmtree(path, ignore_errors=True)

    def _crash(self, args: list[str], point: str | None, delay: float | None = None) -> tuple[bool, str]:
        """Run brsm killed at ``point`` (failpoint) or after ``delay`` s (SIGKILL). True if it died."""
        if point:
            p = self.env.brsm(*args, failpoints=f"{point}=crash")
            if p.returncode == CRASH_EXIT:
                return True, ""
            return False, f"exit {p.returncode} instead of a crash: {p.stderr[-300:]}"
        from tests.e2e.conftest import BRSM

        t0 = time.monotonic()
        proc = subprocess.Popen([*BRSM, *args], env=self.env.env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            try:
                proc.wait(timeout=delay or 0)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return True, ""
            self.last_run_seconds, self.kill_timing = time.monotonic() - t0, "late"
            return False, f"{NOT_REACHED}: finished before the kill (exit {proc.returncode} after {self.last_run_seconds:.2f} s)"
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    # -- backup ------------------------------------------------------------------------------------
    def backup_args(self, loc: list[str]) -> list[str]:
        return ["start", "backup", "--config", self.config, *loc]

    def reference_backup(self, storage: str) -> tuple[dict, float]:
        """The manifest of an uninterrupted backup, and how long it took."""
        loc = self.storage(storage)
        t0 = time.monotonic()
        res = self.env.ok(*self.backup_args(loc))
        return self._manifest(loc, res["facts"]["backup_name"]), time.monotonic() - t0

    def _manifest(self, loc: list[str], name: str) -> dict:
        p = self.env.brsm("verify", name, *loc[:2], "--full", "--config", self.config, "--json")
        assert p.returncode == 0, f"verify --full failed: {p.stdout[-500:]} {p.stderr[-500:]}"
        uri = loc[1]
        if uri.startswith("local://"):
            from tests.e2e import manifest_files
            return manifest_files.load(Path(uri[len("local://"):]) / name)
        show = self.env.ok("show", *loc[:2], "--config", self.config)
        entry = next(b for b in show["backups"] if b["name"] == name)
        return {"backup_name": name, "files": entry.get("manifest", {}).get("files", [])} if "manifest" in entry \
            else {"backup_name": name, "files": [{"key": k, "size": v} for k, v in entry.get("objects", {}).items()
                                                 if "/data/" in k or "/meta/" in k]}

    def backup_case(self, storage: str, point: str | None, recovery: str, reference: dict,
                    delay: float | None = None) -> Outcome:
        loc = self.storage(storage)
        label = point or f"kill@{delay:.2f}s"
        try:
            return self._backup_case(storage, loc, point, label, recovery, reference, delay)
        finally:
            # nothing of a case may survive into the next one (the check above already failed it)
            self._abort_uploads(loc)

    def _backup_case(self, storage, loc, point, label, recovery, reference, delay) -> Outcome:
        def out(ok: bool, detail: str = "") -> Outcome:
            return Outcome("backup", storage, label, recovery, ok, detail)

        before = self._last_op()
        died, why = self._crash(self.backup_args(loc), point, delay)
        if not died:
            # a failpoint that never fired is a failure (the sweep's data reaches every listed point);
            # a timer that came too late is recorded as not reached
            return out(delay is not None and why.startswith(NOT_REACHED), why or "no crash")
        op, why = self._op_after_crash(before, delay)
        if op is None:
            return out(delay is not None, why)
        open_at_crash = {self._rel(loc, k): uid for k, uid in self._open_uploads(loc)}
        p = self.env.brsm(recovery, str(op), "--json")
        if recovery == "rollback" and p.returncode == 2 and "final step" in p.stdout + p.stderr:
            p = self.env.brsm("resume", str(op), "--json")
            if p.returncode != 0 or json.loads(p.stdout)["state"] != "CLEANED":
                return out(False, f"resume after refusal: {p.stdout[-300:]}")
            problems = self._cluster_problems() + self._upload_problems(loc)
            return out(not problems, "; ".join(problems) or "rollback refused in CLEANED; resumed")
        if recovery == "rollback" and p.returncode == 2 and "nothing to roll back" in p.stdout + p.stderr:
            return out(True, "finished before the crash: nothing to undo")
        if p.returncode != 0:
            return out(False, f"{recovery} exit {p.returncode}: {p.stdout[-400:]}")
        res = json.loads(p.stdout)
        problems = self._cluster_problems() + self._upload_problems(loc) + self._base_problems(loc)
        detail = ""
        if recovery == "resume":
            if res["state"] != "CLEANED":
                problems.append(f"state {res['state']}")
            else:
                got = self._manifest(loc, res["facts"]["backup_name"])
                if _key_shape(got) != _key_shape(reference):
                    problems.append("manifest differs from an uninterrupted backup's")
            if point and point.startswith("part:"):
                found, detail = self._continued_uploads(op, int(point.split(":")[1]), open_at_crash)
                problems += found
        else:
            if res["state"] != "ROLLED_BACK":
                problems.append(f"state {res['state']}")
            left = self._objects(loc)
            if left:
                problems.append(f"{len(left)} object(s) left, e.g. {left[0]}")
        return out(not problems, "; ".join(problems) or detail)

    def _continued_uploads(self, op: int, n: int, open_at_crash: dict[str, str]) -> tuple[list[str], str]:
        """After a crash at part:N and a resume: the crashed run journaled exactly N parts, and every
        upload left open in the bucket with journaled parts was finished by the resume *in that
        upload*, sending none of its journaled parts again (issue 4: a resume continues from the
        last completed part). Uploads completed before the crash (their FileCopied not yet
        journaled) are uploaded again whole, which is correct: there is nothing left to continue."""
        events = self.env.ok("audit", str(op))["events"]
        cut = next((i for i, e in enumerate(events) if e["type"] == "ResumeStarted"), None)
        if cut is None:
            return ["no ResumeStarted in the journal"], ""
        before, after = events[:cut], events[cut:]
        sent = [e["data"] for e in before if e["type"] == "PartUploaded"]
        problems = []
        if len(sent) != n:
            problems.append(f"the crashed run journaled {len(sent)} parts, not {n}")
        journaled: dict[str, set[int]] = {}
        for d in sent:
            if open_at_crash.get(d["key"]) == d["upload_id"]:
                journaled.setdefault(d["key"], set()).add(d["n"])
        copied_after = {e["data"]["key"] for e in after if e["type"] == "FileCopied"}
        new_parts = 0
        for key, done in journaled.items():
            uid = open_at_crash[key]
            again = [e["data"] for e in after if e["type"] == "PartUploaded" and e["data"]["key"] == key]
            if key not in copied_after:
                problems.append(f"{key}: not copied by the resume")
            if any(d["upload_id"] != uid for d in again):
                problems.append(f"{key}: the resume started a new upload instead of continuing {uid}")
            resent = sorted(done & {d["n"] for d in again})
            if resent:
                problems.append(f"{key}: the resume sent journaled part(s) {resent} again")
            new_parts += len(again)
        if not journaled:
            problems.append("no upload with journaled parts was open at the crash")
        return problems, (f"resume finished {len(journaled)} open upload(s) in place: "
                          f"{sum(map(len, journaled.values()))} journaled part(s) kept, {new_parts} sent")

    def _objects(self, loc: list[str]) -> list[str]:
        uri = loc[1]
        if uri.startswith("local://"):
            root = Path(uri[len("local://"):])
            base = self.bases.get(uri)
            return [str(p) for p in root.rglob("*") if p.is_file()
                    and not (base and p.is_relative_to(root / base))] if root.exists() else []
        base = self.bases.get(uri)
        show = self.env.ok("show", *loc[:2], "--config", self.config)
        return [b["name"] for b in show["backups"] if b["name"] != base] + [
            k for k in self._raw_keys(loc) if not (base and self._rel(loc, k).startswith(base + "/"))]

    # -- object stores, looked at directly (not through brsm) ---------------------------------------
    def _s3(self):
        import boto3

        s3 = self.env.info["s3"]
        return boto3.client("s3", endpoint_url=s3["endpoint"], aws_access_key_id=s3["access_key_id"],
                            aws_secret_access_key=s3["secret_access_key"], region_name="us-east-1")

    def _oss(self):
        import oss2

        o = self.env.info["oss"]
        return oss2.Bucket(oss2.Auth(o["access_key_id"], o["access_key_secret"]), o["endpoint"], o["bucket"])

    @staticmethod
    def _prefix(loc: list[str]) -> str:
        return loc[1].split("://", 1)[1].split("/", 1)[1].rstrip("/") + "/"

    def _rel(self, loc: list[str], key: str) -> str:
        return key[len(self._prefix(loc)):]

    def _raw_keys(self, loc: list[str]) -> list[str]:
        """Every object under the case's prefix, brsm's or not."""
        uri = loc[1]
        if uri.startswith("local://"):
            return []
        prefix = self._prefix(loc)
        if uri.startswith("s3://"):
            pages = self._s3().get_paginator("list_objects_v2").paginate(Bucket=self.env.info["s3"]["bucket"],
                                                                        Prefix=prefix)
            return [o["Key"] for page in pages for o in page.get("Contents", [])]
        import oss2

        return [o.key for o in oss2.ObjectIterator(self._oss(), prefix=prefix)]

    def _open_uploads(self, loc: list[str]) -> list[tuple[str, str]]:
        uri = loc[1]
        if uri.startswith("s3://"):
            r = self._s3().list_multipart_uploads(Bucket=self.env.info["s3"]["bucket"], Prefix=self._prefix(loc))
            return [(u["Key"], u["UploadId"]) for u in r.get("Uploads", [])]
        if uri.startswith("oss://"):
            r = self._oss().list_multipart_uploads(prefix=self._prefix(loc))
            return [(u.key, u.upload_id) for u in r.upload_list]
        return []

    def _upload_problems(self, loc: list[str]) -> list[str]:
        left = self._open_uploads(loc)
        return [f"{len(left)} multipart upload(s) left open, e.g. {left[0][0]}"] if left else []

    def _abort_uploads(self, loc: list[str]) -> None:
        for key, uid in self._open_uploads(loc):
            if loc[1].startswith("s3://"):
                self._s3().abort_multipart_upload(Bucket=self.env.info["s3"]["bucket"], Key=key, UploadId=uid)
            else:
                self._oss().abort_multipart_upload(key, uid)

    # -- the cluster -------------------------------------------------------------------------------
    def _cluster_problems(self) -> list[str]:
        from tests.e2e.direct_helpers import helpers_running, no_helper_within
        from tests.e2e.test_backup_restore import aside_dirs, checkpoint_dirs, leases, snapshots

        out = []
        if not no_helper_within(self.env, 5):  # issue 16: no helper outlives the run that started it
            out.append(f"direct-path helper(s) left on the hosts: pids {helpers_running(self.env)}")
        if snapshots(self.env):
            out.append(f"snapshots left: {snapshots(self.env)}")
        if leases(self.env):
            out.append("lease left")
        if checkpoint_dirs(self.env):
            out.append("checkpoint dirs left")
        if aside_dirs(self.env):
            out.append("set-aside dirs left")
        staging = [p for h in self.env.info["hosts"] for dp in h["data_paths"] for p in Path(dp).glob("nebula_brsm_new_*")]
        if staging:
            out.append("staging dirs left")
        return out

    def _untouched_while_staging(self, op: int, current: dict) -> list[str]:
        """Issue 15: a restore killed before it stopped anything left the cluster serving, its data as
        it was — checked at the crash, before any recovery runs."""
        events = self.env.ok("audit", str(op))["events"]
        if any(e["type"] == "StepStarted" and e["data"].get("step") == "STOPPED" for e in events):
            return []
        out = [f"killed before STOPPED but down: {', '.join(d)}" for d in [self._services_down()] if d]
        try:
            if self.env.checksum() != current:
                out.append("killed before STOPPED but the data changed")
        except Exception as e:  # noqa: BLE001 - a cluster that does not answer is the failure
            out.append(f"killed before STOPPED but the cluster does not answer: {e}")
        return out

    def _services_down(self) -> list[str]:
        from brsm.sandbox import cluster

        st = cluster.status(str(self.env.root))
        return [f"{h['name']} {svc}" for h in st["hosts"] for svc, s in h["services"].items() if not s["up"]]

    # -- restore -----------------------------------------------------------------------------------
    def restore_args(self, loc: list[str], name: str) -> list[str]:
        return ["start", "restore", "--yes", "--config", self.config, *loc, "--name", name]

    def backed_up(self, storage: str, *, timed: bool = True) -> tuple[list[str], str, dict, float]:
        """A backup to restore from: (storage args, name, the cluster's checksum at backup time,
        seconds an uninterrupted restore of it takes — checked to end with that checksum; 0 when
        not ``timed``)."""
        loc = self.storage(storage)
        backed = self.env.checksum()
        name = self.env.ok(*self.backup_args(loc))["facts"]["backup_name"]
        if not timed:
            return loc, name, backed, 0.0
        self.env.load(1 << 20, seed=random.randrange(1 << 30))
        t0 = time.monotonic()
        self.env.ok(*self.restore_args(loc, name))
        seconds = time.monotonic() - t0
        assert self.env.checksum() == backed, "an uninterrupted restore did not bring back the backup's data"
        return loc, name, backed, seconds

    def restore_case(self, loc: list[str], name: str, backed: dict, point: str | None, recovery: str,
                     storage: str, delay: float | None = None) -> Outcome:
        self.env.load(1 << 20, seed=random.randrange(1 << 30))
        current = self.env.checksum()
        label = point or f"kill@{delay:.2f}s"
        before = self._last_op()
        died, why = self._crash(self.restore_args(loc, name), point, delay)
        if not died:
            return Outcome("restore", storage, label, recovery, delay is not None and why.startswith(NOT_REACHED),
                           why or "no crash")
        op, why = self._op_after_crash(before, delay)
        if op is None:
            return Outcome("restore", storage, label, recovery, delay is not None, why)
        serving = self._untouched_while_staging(op, current)
        p = self.env.brsm(recovery, str(op), "--json")
        note = ""
        if recovery == "rollback" and p.returncode == 2 and "final step" in p.stdout + p.stderr:
            p = self.env.brsm("resume", str(op), "--json")  # refused in CLEANED: finishing is the way out
            finished, note = p.returncode == 0, "rollback refused in CLEANED; resumed"
        else:
            finished = recovery == "rollback" and p.returncode == 2 and "nothing to roll back" in p.stdout + p.stderr
            note = "finished before the crash: nothing to undo" if finished else ""
        if p.returncode != 0 and not finished:
            return Outcome("restore", storage, label, recovery, False, f"{recovery} exit {p.returncode}: {p.stdout[-400:]}")
        problems = serving + self._cluster_problems()
        down = self._services_down()
        if down:
            problems.append(f"services down: {', '.join(down)}")
        try:
            got = self.env.checksum()
        except Exception as e:  # noqa: BLE001 - a cluster that does not answer is the failure
            return Outcome("restore", storage, label, recovery, False, f"cluster does not answer: {e}")
        want = backed if (recovery == "resume" or finished) else current
        if got != want:
            problems.append("checksum differs from " + ("the backup's" if want is backed else "the pre-restore one"))
        return Outcome("restore", storage, label, recovery, not problems, "; ".join(problems) or note)


def cell(o: Outcome | None) -> str:
    if o is None:
        return ""
    if o.ok and o.detail.startswith(NOT_REACHED):
        return "n/a"
    return "pass" if o.ok else f"**FAIL** {o.detail[:80]}"



# -- a restore of chosen spaces on three metads ------------------------------------------------------
# Its own sandbox (meta_hosts=3, the meta Raft): META_RESTORED ingests brsm's one SST of the chosen
# spaces' keys on every metad, so a kill can leave some metads ingested and others not.
CHOSEN = "chosen-spaces"
CHOSEN_STORAGE = "local-3metad"
CHOSEN_SPACE = "space1"


@contextlib.contextmanager
def raft_sandbox(base: Path) -> Iterator:
    """Three metads, three storage hosts, 4 MiB of data; every process it started is stopped on exit."""
    from brsm.sandbox import cluster
    from tests.e2e.conftest import Env

    root = base / "sandbox-3metad"
    state, _ = cluster.up(str(root), meta_hosts=3, storage_hosts=3, data_paths=1)
    try:
        env = Env(root, cluster.summary(state), base / "home-3metad")
        env.load(4 << 20, seed=3)
        yield env
    finally:
        cluster.down(str(root))


def schema(env) -> dict[str, tuple]:
    """Every space's tags, edges and tag indexes (name and id), as metad answers."""
    from nebula3.meta import ttypes as meta

    from brsm.sandbox import control

    out = {}
    with control.MetaClient(env.meta, timeout=30) as c:
        for s in control.check(c.listSpaces(meta.ListSpacesReq()), "listSpaces").spaces:
            sid = s.id.get_space_id()
            out[s.name.decode()] = (
                sid,
                sorted((t.tag_name, t.tag_id) for t in c.listTags(meta.ListTagsReq(space_id=sid)).tags or []),
                sorted((e.edge_name, e.edge_type) for e in c.listEdges(meta.ListEdgesReq(space_id=sid)).edges or []),
                sorted((i.index_name, i.index_id)
                       for i in c.listTagIndexes(meta.ListTagIndexesReq(space_id=sid)).items or []))
    return out


class ChosenSpacesSweeper(Sweeper):
    """A ``--spaces space1`` backup restored on three metads, killed and recovered. After a resume:
    space1's data and schema as backed up, every other space's as it was just before the restore,
    every metad holding the same meta keys; after a rollback: data, schema and every metad's meta
    keys as they were just before the restore."""

    def _changes(self) -> None:
        """What happens after the backup: a tag in the chosen space and one in another, newer data."""
        from tests.e2e.test_chosen_spaces_raft import create_tag

        self.n += 1
        create_tag(self.env, CHOSEN_SPACE, f"late_{self.n}")
        create_tag(self.env, "space2", f"kept_{self.n}")
        self.env.load(1 << 20, seed=random.randrange(1 << 30))

    def _state(self) -> tuple[dict, dict, dict]:
        """(data checksum, schema, the meta keys every metad agrees on) once storaged and graphd have
        found the meta leader."""
        from tests.e2e.test_chosen_spaces_raft import all_metads_agree

        deadline = time.monotonic() + 60
        while True:
            try:
                data = self.env.checksum()
                break
            except Exception:  # noqa: BLE001 - a storaged not yet registered with a new leader
                if time.monotonic() > deadline:
                    raise
                time.sleep(1.0)
        return data, schema(self.env), all_metads_agree(self.env)

    def chosen_backed_up(self) -> tuple[tuple[list[str], str, dict], float]:
        """A backup of space1, changes after it, and an uninterrupted restore of it (checked, timed)."""
        from tests.e2e.test_chosen_spaces_raft import all_metads_agree, wait_checksum

        loc = self.storage("local")
        data, sch, _ = self._state()
        backed = (data[CHOSEN_SPACE], sch[CHOSEN_SPACE])
        name = self.env.ok(*self.backup_args(loc), "--spaces", CHOSEN_SPACE)["facts"]["backup_name"]
        self._changes()
        before_data, before_schema, _ = self._state()
        t0 = time.monotonic()
        self.env.ok(*self.restore_args(loc, name))
        seconds = time.monotonic() - t0
        want = dict(before_data, **{CHOSEN_SPACE: backed[0]})
        assert wait_checksum(self.env, want) == want, "an uninterrupted restore of space1 did not end as expected"
        assert schema(self.env) == dict(before_schema, **{CHOSEN_SPACE: backed[1]}), "schema after an uninterrupted restore"
        all_metads_agree(self.env)
        return (loc, name, {"data": backed[0], "schema": backed[1]}), seconds

    def chosen_case(self, loc: list[str], name: str, backed: dict, point: str | None, recovery: str,
                    delay: float | None = None) -> Outcome:
        from tests.e2e.test_chosen_spaces_raft import all_metads_agree, wait_checksum

        def out(ok: bool, detail: str = "") -> Outcome:
            return Outcome(CHOSEN, CHOSEN_STORAGE, point or f"kill@{delay:.2f}s", recovery, ok, detail)

        self._changes()
        current, current_schema, current_rows = self._state()
        before = self._last_op()
        died, why = self._crash(self.restore_args(loc, name), point, delay)
        if not died:
            return out(delay is not None and why.startswith(NOT_REACHED), why or "no crash")
        op, why = self._op_after_crash(before, delay)
        if op is None:
            return out(delay is not None, why)
        serving = self._untouched_while_staging(op, current)
        p = self.env.brsm(recovery, str(op), "--json")
        note = ""
        if recovery == "rollback" and p.returncode == 2 and "final step" in p.stdout + p.stderr:
            p = self.env.brsm("resume", str(op), "--json")  # refused in CLEANED: finishing is the way out
            finished, note = p.returncode == 0, "rollback refused in CLEANED; resumed"
        else:
            finished = recovery == "rollback" and p.returncode == 2 and "nothing to roll back" in p.stdout + p.stderr
            note = "finished before the crash: nothing to undo" if finished else ""
        if p.returncode != 0 and not finished:
            return out(False, f"{recovery} exit {p.returncode}: {p.stdout[-400:]} {p.stderr[-300:]}")
        problems = serving + self._cluster_problems()
        down = self._services_down()
        if down:
            problems.append(f"services down: {', '.join(down)}")
        restored = recovery == "resume" or finished
        want = dict(current, **{CHOSEN_SPACE: backed["data"]}) if restored else current
        want_schema = dict(current_schema, **{CHOSEN_SPACE: backed["schema"]}) if restored else current_schema
        try:
            got = wait_checksum(self.env, want)
            got_schema = schema(self.env)
        except Exception as e:  # noqa: BLE001 - a cluster that does not answer is the failure
            return out(False, f"cluster does not answer: {e}")
        what = "the backup's (space1) and the pre-restore one (others)" if restored else "the pre-restore one"
        if got != want:
            problems.append(f"data checksum differs from {what}: "
                            f"{sorted(k for k in set(got) | set(want) if got.get(k) != want.get(k))}")
        if got_schema != want_schema:
            problems.append(f"schema differs from {what}: "
                            f"{sorted(k for k in set(got_schema) | set(want_schema) if got_schema.get(k) != want_schema.get(k))}")
        try:
            rows = all_metads_agree(self.env)
        except AssertionError as e:
            problems.append(str(e)[:300])
        else:
            if not restored and rows != current_rows:
                diff = sorted(set(rows.items()) ^ set(current_rows.items()))
                problems.append(f"meta keys differ from the pre-restore ones: {len(diff)}, e.g. {diff[0][0]!r}")
        return out(not problems, "; ".join(problems) or note)
