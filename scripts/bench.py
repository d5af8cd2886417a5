"""brsm performance harness: brsm next to the tools a user would reach for instead, in one run.

usage: scripts/bench [--size 1GiB] [--hosts 3] [--files 100000] [--only-files] [--big 4GiB] [--sweep 1,2,4,8]
                     [--downtime 64MiB,1GiB,4GiB] [--only-downtime]
                     [--direct-hosts 3,6,12] [--direct-size 1GiB] [--only-direct]
                     [--incremental-size 1GiB] [--only-incremental]
                     [--scale-hosts 3,12,32] [--scale-data-paths 2] [--scale-partitions 50]
                     [--profile] [--quick] [--out bench-results] [--workdir DIR] [--keep]

It starts its own sandbox (`brsm sandbox up`), loads it, and always stops it (also on an error or
Ctrl-C). On the same checkpoint files it measures:
- brsm backup to local vs `cp -r` (disk bound) vs `scp -r`, `tar | ssh` and `rclone copy` (SFTP)
  over the same sshds; brsm backup to S3 and OSS (and rclone to the same S3 endpoint);
- brsm restore from local vs `cp -r` in the other direction;
- peak RSS of brsm (`/usr/bin/time -v`, else polling VmHWM);
- the share of wall time spent in journal appends, as brsm measures it (OperationFinished's
  journal_seconds; for an older brsm without it, an ESTIMATE: appends counted from the audit x
  per-append cost measured here on the same filesystem);
- many small files (--files N, a list allowed; --only-files for just this): a sandbox loaded with
  `sandbox load --files N`, backed up to local: wall, files/s next to `tar | ssh` of the same
  checkpoint files (and their ratio), journal share, planning time, peak RSS, manifest size, and
  the time of `brsm verify` (quick) and `brsm show` over the backup's N objects;
- scale (--scale-hosts, a list allowed): backup and restore of a sandbox with that many storage
  hosts x --scale-data-paths x --scale-partitions (small data): time, steps, memory, journal events;
- a resume after a crash half way (failpoint `file:N=crash`): its time and the bytes re-transferred;
- restore downtime (--downtime 64MiB,1GiB,4GiB; --only-downtime for just this): a staged and an
  --offline restore at each size while every metad/storaged/graphd port is polled from outside;
- the direct data path (issue 16; --direct-hosts 3,6,12, --direct-size 1GiB, --only-direct): backups to
  S3 (and OSS) through brsm and direct, restores both ways, with the bytes across brsm's sockets and the
  hosts' sshds counted by `ss`, and the CPU of brsm, the hosts and the store (scripts/bench_direct.py);
- incremental backups (issue 26; --incremental-size 1GiB, 0 = none; --only-incremental): to local (via brsm),
  S3 (direct) and OSS (via brsm), a full backup, 5 % more data, then `--incremental`: its wall time, bytes
  read from the hosts over the network and from their disks, as shares of the full backup's
  (scripts/bench_incremental.py);
- backup throughput vs --concurrency (PNG plot; matplotlib installed into .bench-plotlib/ if missing).
The baselines copy the checkpoint dirs that metad's createBackup makes (one snapshot taken for them,
dropped at the end). Every baseline runs one process per storage host, all hosts at once (brsm also
works on every host at once). Files are in the page cache for every tool (nothing drops caches).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import bench_direct
import bench_incremental

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PY = sys.executable
MiB = 1 << 20
GiB = 1 << 30
CRASH_EXIT = 86
TIME_V = "/usr/bin/time"


# ---------------------------------------------------------------------------------------- helpers
def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]i?B|B)?\s*", text, re.I)
    if not m:
        raise SystemExit(f"bad size {text!r}")
    n = float(m.group(1))
    unit = (m.group(2) or "B").lower()
    mult = {"b": 1, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "kb": 10**3, "mb": 10**6, "gb": 10**9}[unit]
    return int(n * mult)


def human(n: float) -> str:
    for unit, f in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= f:
            return f"{n / f:.1f} {unit}"
    return f"{int(n)} B"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def tree_bytes(path: Path) -> tuple[int, int]:
    """(bytes, files) under path, apparent sizes, symlinks not followed."""
    total = files = 0
    for dirpath, _dirs, names in os.walk(path):
        for n in names:
            try:
                st = os.lstat(os.path.join(dirpath, n))
            except OSError:
                continue
            total += st.st_size
            files += 1
    return total, files


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Run:
    def __init__(self, argv: list[str], rc: int, wall: float, stdout: str, stderr: str, rss_kb: int | None):
        self.argv, self.rc, self.wall, self.stdout, self.stderr, self.rss_kb = argv, rc, wall, stdout, stderr, rss_kb
        self.cpu_s: float | None = None  # machine-wide CPU seconds during the run (see machine_cpu_seconds)

    def json(self) -> Any:
        # the CLI prints one JSON document on stdout; progress lines may follow on the same stream
        text = self.stdout.strip()
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            doc, _ = json.JSONDecoder().raw_decode(text)
            return doc

    def check(self, what: str) -> "Run":
        if self.rc != 0:
            raise RuntimeError(f"{what} failed (exit {self.rc}): {' '.join(self.argv)}\n"
                               f"stdout: {self.stdout[-2000:]}\nstderr: {self.stderr[-2000:]}")
        return self


def run(argv: list[str], env: dict[str, str] | None = None, *, measure_rss: bool = False,
        cwd: str | None = None) -> Run:
    """Run argv, timing it; with measure_rss the peak RSS of the process (not of its children)."""
    rss_kb = None
    tv = None
    full = list(argv)
    if measure_rss and os.access(TIME_V, os.X_OK):
        tv = tempfile.NamedTemporaryFile(prefix="bench-time-", delete=False)
        tv.close()
        full = [TIME_V, "-v", "-o", tv.name, *argv]
    c0 = machine_cpu_seconds()
    t0 = time.perf_counter()
    p = subprocess.Popen(full, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = [0]
    stop = threading.Event()
    if measure_rss and tv is None:  # poll VmHWM of the process itself
        def poll() -> None:
            while not stop.is_set():
                try:
                    for line in Path(f"/proc/{p.pid}/status").read_text().splitlines():
                        if line.startswith("VmHWM:"):
                            peak[0] = max(peak[0], int(line.split()[1]))
                except OSError:
                    pass
                stop.wait(0.05)
        threading.Thread(target=poll, daemon=True).start()
    try:
        out, err = p.communicate()
    except BaseException:  # Ctrl-C / SIGTERM: do not leave the measured process behind
        p.kill()
        p.wait()
        raise
    wall = time.perf_counter() - t0
    cpu_s = machine_cpu_seconds() - c0
    stop.set()
    if tv is not None:
        text = Path(tv.name).read_text(errors="replace")
        os.unlink(tv.name)
        m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
        rss_kb = int(m.group(1)) if m else None
        m = re.search(r"Command exited with non-zero status (\d+)", text)
        rc = int(m.group(1)) if m else p.returncode
        if re.search(r"Command terminated by signal", text):
            rc = p.returncode
    else:
        rc = p.returncode
        rss_kb = peak[0] or None
    r = Run(argv, rc, wall, out, err, rss_kb)
    r.cpu_s = cpu_s
    return r


def machine_cpu_seconds() -> float:
    """CPU time every process on the machine has used so far (user, nice, system, irq, softirq from
    /proc/stat). The difference over a run is what the run cost the machine: the tool plus the sshds,
    sftp-servers and object stores serving it, which share the same CPUs here."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:8]]
    except (OSError, ValueError):
        return float("nan")
    return (v[0] + v[1] + v[2] + v[5] + v[6]) / os.sysconf("SC_CLK_TCK")


def parallel(cmds: list[list[str] | str], env: dict[str, str] | None = None) -> float:
    """Start every command at once (a str runs under bash -o pipefail), wait for all; wall seconds."""
    t0 = time.perf_counter()
    procs = []
    for c in cmds:
        argv = ["bash", "-o", "pipefail", "-c", c] if isinstance(c, str) else c
        procs.append((c, subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                          text=True, start_new_session=True)))
    errors = []
    try:
        done = [(c, p, p.communicate()[1]) for c, p in procs]
    except BaseException:  # Ctrl-C / SIGTERM: stop the baseline's processes too
        for _c, p in procs:  # the whole pipeline: bash and what it started (own session each)
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except OSError:
                pass
            p.wait()
        raise
    for c, p, err in done:
        if p.returncode != 0:
            errors.append(f"{c}: exit {p.returncode}: {err[-800:]}")
    wall = time.perf_counter() - t0
    if errors:
        raise RuntimeError("baseline failed: " + "\n".join(errors))
    return wall


def parse_time(ts: str) -> float:
    from datetime import datetime
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


# ------------------------------------------------------------------------------------------ bench
class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = Path(tempfile.mkdtemp(prefix="brsm-bench-", dir=args.workdir))
        self.home = self.work / "home"
        self.home.mkdir()
        self.env = dict(os.environ, BRSM_HOME=str(self.home))
        self.env.pop("BRSM_FAILPOINTS", None)
        self.sandboxes: list[Path] = []
        self.results: dict[str, Any] = {"rows": {}, "notes": []}
        self.rows = self.results["rows"]
        self.notes: list[str] = self.results["notes"]
        self.python, self.log, self.machine_cpu_seconds = PY, log, machine_cpu_seconds  # for bench_direct

    # -- brsm and the sandbox
    def brsm(self, *argv: str, env: dict[str, str] | None = None, rss: bool = False) -> Run:
        # cwd is the work dir, not the repo: PYTHONPATH=<another checkout> then decides which brsm runs
        return run([PY, "-m", "brsm.cli.app", *argv], env or self.env, measure_rss=rss, cwd=str(self.work))

    def up(self, name: str, storage_hosts: int, data_paths: int = 1) -> dict[str, Any]:
        d = self.work / name
        self.sandboxes.append(d)
        r = self.brsm("sandbox", "up", "--dir", str(d), "--storage-hosts", str(storage_hosts),
                      "--data-paths", str(data_paths), "--timeout", "120", "--json").check("sandbox up")
        info = r.json()
        info["dir"] = str(d)
        creds = {}
        for line in Path(info["credentials"]).read_text().splitlines():
            m = re.match(r"\s*export\s+(\w+)=(.*)$", line)
            if m:
                creds[m.group(1)] = m.group(2).strip().strip("'\"")
        info["env"] = dict(self.env, **creds)
        log(f"sandbox {name} up in {r.wall:.1f}s ({storage_hosts} storage hosts x {data_paths} data paths)")
        return info

    def load(self, sb: dict[str, Any], size: int | None, *extra: str) -> Run:
        argv = ["sandbox", "load", "--dir", sb["dir"], *extra]
        if size is not None:
            argv += ["--size", f"{max(1, size // MiB)}MiB"]
        r = self.brsm(*argv).check("load")
        log(r.stdout.strip() or r.stderr.strip())
        return r

    def down(self, d: Path) -> None:
        if d in self.sandboxes:
            self.sandboxes.remove(d)
        r = self.brsm("sandbox", "down", "--dir", str(d), "--purge")
        if r.rc != 0:
            log(f"sandbox down {d}: exit {r.rc}: {r.stderr[-500:]}")

    def cleanup(self) -> None:
        for d in list(self.sandboxes):
            self.down(d)
        if not self.args.keep:
            shutil.rmtree(self.work, ignore_errors=True)

    # -- audit
    def audit(self, op_id: int) -> dict[str, Any]:
        a = self.brsm("audit", str(op_id), "--json").check("audit").json()
        events = a["events"]
        steps: dict[str, float] = {}
        started: dict[str, float] = {}
        counts: dict[str, int] = {}
        for e in events:
            counts[e["type"]] = counts.get(e["type"], 0) + 1
            step = (e.get("data") or {}).get("step")
            if e["type"] == "StepStarted":
                started[step] = parse_time(e["time"])
            elif e["type"] == "StepCompleted" and step in started:
                steps[step] = steps.get(step, 0.0) + parse_time(e["time"]) - started[step]
        return {"events": events, "steps": steps, "counts": counts,
                "first": parse_time(events[0]["time"]), "last": parse_time(events[-1]["time"])}

    def last_op(self) -> int:
        return int(self.brsm("ops", "--json").check("ops").json()[0]["id"])

    def backup(self, sb: dict[str, Any], storage: str, *extra: str, env: dict[str, str] | None = None,
               rss: bool = True) -> tuple[Run, dict[str, Any], dict[str, Any]]:
        os.sync()
        r = self.brsm("start", "backup", "--config", str(Path(sb["dir"]) / "cluster.toml"), "--storage", storage,
                      "--json", *extra, env=env or sb["env"], rss=rss).check(f"backup to {storage}")
        doc = r.json()
        return r, doc.get("facts", doc), self.audit(int(doc["op_id"]))

    def row(self, key: str, label: str, seconds: float, nbytes: int, **extra: Any) -> dict[str, Any]:
        rec = {"label": label, "seconds": round(seconds, 3), "bytes": nbytes,
               "mib_s": round(nbytes / MiB / seconds, 1) if seconds > 0 else None, **extra}
        self.rows[key] = rec
        log(f"{label}: {seconds:.2f}s, {rec['mib_s']} MiB/s"
            + (f", peak RSS {extra['rss_mb']} MB" if extra.get("rss_mb") else ""))
        return rec

    # -- the snapshot the baselines copy
    def snapshot(self, sb: dict[str, Any]) -> tuple[str, dict[str, list[str]]]:
        from nebula3.meta import ttypes as meta

        from brsm.sandbox import control
        with control.MetaClient(sb["meta"], timeout=600) as c:
            bm = control.check(c.createBackup(meta.CreateBackupReq()), "createBackup").meta
        dirs: dict[str, list[str]] = {}
        for sbi in bm.space_backups.values():
            for hb in sbi.host_backups:
                host = hb.host.host.decode() if isinstance(hb.host.host, bytes) else hb.host.host
                for cp in hb.checkpoints:
                    for li in cp.parts.values():
                        # a part may carry no checkpoint_path: the checkpoint dir is then the data_path
                        # field, as brsm reads it (brsm.adapters.meta_codec.created_backup)
                        p = li.checkpoint_path or cp.data_path
                        if p is None:
                            continue
                        p = p.decode() if isinstance(p, bytes) else p
                        if p not in dirs.setdefault(host, []):
                            dirs[host].append(p)
        name = bm.backup_name.decode() if isinstance(bm.backup_name, bytes) else bm.backup_name
        return name, dirs

    def drop_snapshot(self, sb: dict[str, Any], name: str) -> None:
        from nebula3.meta import ttypes as meta

        from brsm.sandbox import control
        try:
            with control.MetaClient(sb["meta"], timeout=600) as c:
                c.dropSnapshot(meta.DropSnapshotReq(names=[name.encode()]))
        except Exception as exc:  # noqa: BLE001
            log(f"dropSnapshot {name}: {exc}")

    # -- phases
    def baselines(self, sb: dict[str, Any], dirs: dict[str, list[str]]) -> int:
        a = self.args
        nbytes = sum(tree_bytes(Path(p))[0] for ps in dirs.values() for p in ps)
        nfiles = sum(tree_bytes(Path(p))[1] for ps in dirs.values() for p in ps)
        self.results["checkpoint"] = {"bytes": nbytes, "files": nfiles, "hosts": len(dirs)}
        log(f"checkpoint files for the baselines: {nfiles} files, {human(nbytes)} on {len(dirs)} hosts")
        ssh = sb["ssh"]
        sshopts = (f"-i {ssh['identity']} -o UserKnownHostsFile={ssh['known_hosts']} -o StrictHostKeyChecking=yes "
                   f"-o BatchMode=yes -o LogLevel=ERROR")
        dst = self.work / "dst"

        def fresh() -> Path:
            # same start for every tool: no dirty pages from the previous one waiting for writeback
            shutil.rmtree(dst, ignore_errors=True)
            dst.mkdir()
            os.sync()
            return dst

        # warm-up: read every checkpoint file once, so every tool (brsm too) reads from the page cache
        for ps in dirs.values():
            for p in ps:
                subprocess.run(["bash", "-c", f"find {p} -type f -exec cat {{}} + > /dev/null"])

        def per_host(make: Any) -> list[str]:
            cmds = []
            for host, paths in sorted(dirs.items()):
                hd = dst / host
                hd.mkdir()
                cmds.append(" && ".join(make(host, i, p, hd) for i, p in enumerate(paths)))
            return cmds

        def measure(key: str, label: str, make: Any, env: dict[str, str] | None = None,
                    after: Any = None) -> None:
            """Median of --repeat runs (each from a fresh, synced destination); every run kept in the JSON."""
            runs = []
            for _ in range(max(1, a.repeat)):
                fresh()
                c0 = machine_cpu_seconds()
                wall = parallel(make(), env)
                runs.append((wall, machine_cpu_seconds() - c0))
                if after:
                    after()
            runs.sort()
            wall, cpu = runs[len(runs) // 2]
            self.row(key, label, wall, nbytes, runs=[round(t, 3) for t, _ in runs], cpu_s=round(cpu, 2))

        measure("cp", "cp -r (local disk)", lambda: per_host(lambda h, i, p, hd: f"cp -r {p} {hd}/{i}"))
        measure("cp_sync", "cp -r + fsync each file", lambda: per_host(
            lambda h, i, p, hd: f"cp -r {p} {hd}/{i} && find {hd}/{i} -type f -exec sync {{}} +"))
        measure("scp", "scp -r (OpenSSH)", lambda: per_host(
            lambda h, i, p, hd: f"scp -q -r {sshopts} -P {ssh['port']} {ssh['user']}@{h}:{p} {hd}/{i}"))
        measure("tar_ssh", "tar | ssh", lambda: per_host(
            lambda h, i, p, hd: f"mkdir -p {hd}/{i} && ssh {sshopts} -p {ssh['port']} "
                                f"{ssh['user']}@{h} tar -C {p} -cf - . | tar -C {hd}/{i} -xf -"))
        rclone = shutil.which("rclone")
        if rclone is None and not a.no_rclone:
            self.install_rclone()
            rclone = shutil.which("rclone")
        if rclone and not a.no_rclone:
            renv = dict(sb["env"], RCLONE_CONFIG="/dev/null", RCLONE_SFTP_USER=ssh["user"],
                        RCLONE_SFTP_PORT=str(ssh["port"]), RCLONE_SFTP_KEY_FILE=ssh["identity"],
                        RCLONE_SFTP_KNOWN_HOSTS_FILE=ssh["known_hosts"])
            renv.pop("AWS_CA_BUNDLE", None)  # rclone's S3 SDK refuses a custom CA bundle on a plain-http endpoint
            try:
                measure("rclone_sftp", "rclone copy (SFTP -> local)", lambda: per_host(
                    lambda h, i, p, hd: f"rclone copy --transfers 4 :sftp,host={h}:{p} {hd}/{i}"), renv)
            except RuntimeError as exc:
                self.notes.append(f"rclone SFTP -> local failed, column skipped: {str(exc)[:300]}")
            s3 = sb["s3"]
            renv.update(RCLONE_S3_PROVIDER="Other", RCLONE_S3_ENDPOINT=s3["endpoint"],
                        RCLONE_S3_ACCESS_KEY_ID=s3["access_key_id"], RCLONE_S3_SECRET_ACCESS_KEY=s3["secret_access_key"],
                        RCLONE_S3_REGION=s3.get("region") or "us-east-1")

            def purge() -> None:  # free moto's memory (it keeps S3 objects in RAM)
                subprocess.run(["rclone", "purge", f":s3:{s3['bucket']}/rclone"], env=renv,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                measure("rclone_s3", "rclone copy (SFTP -> sandbox S3)", lambda: [
                    " && ".join(f"rclone copy --transfers 4 :sftp,host={h}:{p} :s3:{s3['bucket']}/rclone/{h}/{i}"
                                for i, p in enumerate(ps)) for h, ps in sorted(dirs.items())], renv, after=purge)
            except RuntimeError as exc:
                self.notes.append(f"rclone SFTP -> S3 failed, column skipped: {str(exc)[:300]}")
        else:
            self.notes.append("rclone columns skipped (--no-rclone)" if a.no_rclone
                              else "rclone not available: its columns are skipped")
        shutil.rmtree(dst, ignore_errors=True)
        return nbytes

    def install_rclone(self) -> None:
        if os.getuid() != 0 or not shutil.which("apt-get"):
            return
        log("installing rclone from Debian (apt-get install -y rclone, 300 s at most)")
        try:
            subprocess.run(["apt-get", "install", "-y", "-qq", "rclone"], env=dict(os.environ,
                           DEBIAN_FRONTEND="noninteractive"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           timeout=300)
        except (subprocess.TimeoutExpired, OSError):
            pass

    def brsm_backup_local(self, sb: dict[str, Any]) -> tuple[str, Path, dict[str, Any], dict[str, Any]]:
        store = self.work / "store-local"
        r, facts, au = self.backup(sb, f"local://{store}")
        nbytes = int(facts["total_bytes"])
        rss_mb = round(r.rss_kb / 1000, 1) if r.rss_kb else None
        self.row("brsm_local", "brsm backup -> local (whole command)", r.wall, nbytes, rss_mb=rss_mb, cpu_s=r.cpu_s,
                 files=facts["total_files"], steps=au["steps"])
        self.row("brsm_local_copy", "brsm backup -> local (COPIED step only)", au["steps"].get("COPIED", 0), nbytes)
        self.results["backup_local"] = {"facts": {k: facts[k] for k in ("backup_name", "total_bytes", "total_files")},
                                        "steps": au["steps"], "events": au["counts"], "wall": r.wall,
                                        "rss_kb": r.rss_kb}
        self.journal_share(r.wall, au)
        return facts["backup_name"], store, facts, au

    def restore_local(self, sb: dict[str, Any], name: str, store: Path, nbytes: int) -> None:
        os.sync()
        r = self.brsm("start", "restore", "--yes", "--config", str(Path(sb["dir"]) / "cluster.toml"), "--storage",
                      f"local://{store}", "--name", name, "--json", env=sb["env"], rss=True).check("restore")
        doc = r.json()
        au = self.audit(int(doc["op_id"]))
        rss_mb = round(r.rss_kb / 1000, 1) if r.rss_kb else None
        self.row("brsm_restore", "brsm restore <- local (whole command)", r.wall, nbytes, rss_mb=rss_mb, cpu_s=r.cpu_s,
                 steps=au["steps"])
        # the download: STAGED (while the cluster serves; with its re-hash) or, offline, DOWNLOADED
        self.row("brsm_restore_dl", "brsm restore <- local (STAGED+DOWNLOADED)",
                 au["steps"].get("STAGED", 0) + au["steps"].get("DOWNLOADED", 0), nbytes)
        # cp -r the other way: the backup's files back onto a data disk, one cp per top-level entry
        dst = self.work / "restore-dst"
        shutil.rmtree(dst, ignore_errors=True)
        dst.mkdir()
        src = store / name
        times = []
        for _ in range(max(1, self.args.repeat)):
            shutil.rmtree(dst, ignore_errors=True)
            dst.mkdir()
            os.sync()
            times.append(parallel([f"cp -r {e} {dst}/" for e in sorted(src.iterdir())]))
        times.sort()
        self.row("cp_back", "cp -r backup -> data dir", times[len(times) // 2], tree_bytes(src)[0],
                 runs=[round(t, 3) for t in times])
        shutil.rmtree(dst, ignore_errors=True)

    def object_stores(self, sb: dict[str, Any]) -> None:
        for kind in ("s3", "oss"):
            st = sb[kind]
            extra = ["--s3-endpoint", st["endpoint"]] if kind == "s3" else ["--oss-endpoint", st["endpoint"]]
            r, facts, au = self.backup(sb, f"{kind}://{st['bucket']}/bench", *extra)
            nbytes = int(facts["total_bytes"])
            rss_mb = round(r.rss_kb / 1000, 1) if r.rss_kb else None
            self.row(f"brsm_{kind}", f"brsm backup -> sandbox {kind.upper()} (whole command)", r.wall, nbytes,
                     rss_mb=rss_mb, cpu_s=r.cpu_s, steps=au["steps"])
            self.row(f"brsm_{kind}_copy", f"brsm backup -> sandbox {kind.upper()} (COPIED step only)",
                     au["steps"].get("COPIED", 0), nbytes)
            # free the store (moto keeps S3 objects in memory)
            self.brsm("cleanup", "--yes", facts["backup_name"], "--storage", f"{kind}://{st['bucket']}/bench", "--config",
                      str(Path(sb["dir"]) / "cluster.toml"), env=sb["env"])

    def resume(self, sb: dict[str, Any], total_files: int, total_bytes: int) -> None:
        n = max(1, total_files // 2)
        store = self.work / "store-resume"
        env = dict(sb["env"], BRSM_FAILPOINTS=f"file:{n}=crash")
        r = self.brsm("start", "backup", "--config", str(Path(sb["dir"]) / "cluster.toml"), "--storage",
                      f"local://{store}", "--json", env=env)
        if r.rc != CRASH_EXIT:
            raise RuntimeError(f"backup with failpoint file:{n}=crash exited {r.rc}, not {CRASH_EXIT}: {r.stderr[-800:]}")
        on_disk, _ = tree_bytes(store)  # finished files + temp files of the transfers cut short
        op = self.last_op()
        r2 = self.brsm("resume", str(op), "--json", env=sb["env"], rss=True).check("resume")
        au = self.audit(op)
        resume_at = next(i for i, e in enumerate(au["events"]) if e["type"] == "ResumeStarted")
        sizes = lambda evs: sum(int((e.get("data") or {}).get("size", 0)) for e in evs if e["type"] == "FileCopied")  # noqa: E731
        before, after = sizes(au["events"][:resume_at]), sizes(au["events"][resume_at:])
        copied = next((e["data"]["facts"] for e in au["events"][resume_at:]
                       if e["type"] == "StepCompleted" and e["data"].get("step") == "COPIED"), {})
        # bytes moved in all = bytes written before the crash (on disk, incl. partial temp files) + bytes the
        # resume read from the hosts (COPIED's bytes_sent: a resumed file counts only from where it went on;
        # older brsm without that fact: the resumed files' full sizes); anything above the backup's size was
        # moved twice
        sent = int(copied.get("bytes_sent", after))
        retransferred = max(0, on_disk + sent - total_bytes)
        self.results["resume"] = {
            "crash_after_files": n, "crash_exit": r.rc, "crash_wall": round(r.wall, 2),
            "resume_wall": round(r2.wall, 2), "resume_rss_kb": r2.rss_kb,
            "bytes_on_disk_after_crash": on_disk, "journaled_before_crash": before, "copied_by_resume": after,
            "sent_by_resume": sent,
            "skipped_on_resume": copied.get("skipped_on_resume"), "total_bytes": total_bytes,
            "retransferred_bytes": retransferred, "retransferred_share": round(retransferred / total_bytes, 4),
            "steps": au["steps"]}
        log(f"resume: crash after {n} files ({r.wall:.1f}s), resume {r2.wall:.1f}s, journaled before crash "
            f"{human(before)}, resume copied {human(after)} (read {human(sent)} from the hosts), re-transferred {human(retransferred)} "
            f"({100 * retransferred / total_bytes:.1f}%)")
        shutil.rmtree(store, ignore_errors=True)

    def sweep(self, sb: dict[str, Any], levels: list[int]) -> None:
        pts = []
        for c in levels:
            store = self.work / f"store-c{c}"
            r, facts, au = self.backup(sb, f"local://{store}", "--concurrency", str(c), "--per-host", str(c))
            nbytes = int(facts["total_bytes"])
            cp = au["steps"].get("COPIED", 0)
            pts.append({"concurrency": c, "wall": round(r.wall, 3), "copy_seconds": round(cp, 3),
                        "mib_s_wall": round(nbytes / MiB / r.wall, 1), "mib_s_copy": round(nbytes / MiB / cp, 1) if cp else None,
                        "rss_kb": r.rss_kb})
            log(f"concurrency {c}: {r.wall:.2f}s whole, {cp:.2f}s copying ({pts[-1]['mib_s_copy']} MiB/s)")
            shutil.rmtree(store, ignore_errors=True)
        self.results["sweep"] = pts
        self.plot(pts)

    def plot(self, pts: list[dict[str, Any]]) -> None:
        # matplotlib (and numpy with it) goes into a directory of its own, not into the venv brsm runs
        # from: sqlite-utils imports numpy whenever it can, which cost every brsm command ~0.2 s.
        plotlib = ROOT / ".bench-plotlib"
        sys.path.insert(0, str(plotlib))
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            log(f"matplotlib missing: pip install --target {plotlib} matplotlib")
            subprocess.run([PY, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--target",
                            str(plotlib), "matplotlib"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            self.notes.append("matplotlib could not be installed: no plot; the sweep data is in the JSON")
            return
        fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
        xs = [p["concurrency"] for p in pts]
        ax.plot(xs, [p["mib_s_copy"] or 0 for p in pts], "o-", label="brsm backup -> local, COPIED step")
        ax.plot(xs, [p["mib_s_wall"] for p in pts], "s--", label="brsm backup -> local, whole command")
        for key, style in (("cp", ":"), ("scp", "-."), ("tar_ssh", ":")):
            if key in self.rows:
                ax.axhline(self.rows[key]["mib_s"], linestyle=style, color="grey")
                ax.annotate(self.rows[key]["label"], (xs[0], self.rows[key]["mib_s"]), fontsize=7, color="grey",
                            xytext=(2, 2), textcoords="offset points")
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.set_xlabel("--concurrency (and --per-host)")
        ax.set_ylabel("MiB/s")
        ax.set_ylim(bottom=0)
        ax.set_title(f"brsm backup throughput, {human(self.args.size_b)} over {self.args.hosts} hosts, "
                     f"{os.cpu_count()} CPUs", fontsize=9)
        ax.legend(fontsize=7, loc="lower right")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        out = self.out / "concurrency.png"
        fig.savefig(out)
        self.results["plot"] = str(out)
        log(f"plot: {out}")

    def journal_share(self, wall: float, au: dict[str, Any], key: str = "journal") -> dict[str, Any]:
        """brsm's own measurement (OperationFinished: journal_seconds, journal_appends, journal_events: the
        wall time of its driver's append calls); for a brsm without it, the ESTIMATE below."""
        fin = next((e.get("data") or {} for e in reversed(au["events"]) if e["type"] == "OperationFinished"), {})
        if "journal_seconds" in fin:
            js = float(fin["journal_seconds"])
            rec = {"kind": "measured", "seconds": round(js, 4), "appends": fin.get("journal_appends"),
                   "events": fin.get("journal_events"), "wall": round(wall, 3), "share": round(js / wall, 4)}
            self.results[key] = rec
            log(f"journal (measured by brsm): {js * 1000:.0f} ms in {rec['appends']} appends ({rec['events']} events) "
                f"= {100 * js / wall:.2f}% of {wall:.1f}s")
            return rec
        return self.journal_estimate(wall, au, key)

    def journal_estimate(self, wall: float, au: dict[str, Any], key: str = "journal") -> dict[str, Any]:
        """ESTIMATE: (single appends x cost of one) + (FileCopied batches x cost of a 256-event batch)."""
        from journal import Journal
        counts = au["counts"]
        files = counts.get("FileCopied", 0) + counts.get("PartUploaded", 0)
        singles = sum(counts.values()) - files
        batches = math.ceil(files / 256)
        with tempfile.TemporaryDirectory(dir=self.home) as d:
            j = Journal.open(Path(d) / "journal.db")
            op = j.create_operation(kind="backup", params={}, who="bench@local", version="bench")
            with j.driver(op.id) as w:
                t0 = time.perf_counter()
                for i in range(100):
                    w.append("StepStarted", {"step": f"S{i}"})
                t_single = (time.perf_counter() - t0) / 100
                payload = {"host": "127.0.0.1", "path": "/data/storage/nebula/1/checkpoints/B/data/000123.sst",
                           "size": 67108864, "sha256": "0" * 64}
                t0 = time.perf_counter()
                for _ in range(10):
                    w.append_batch([("FileCopied", dict(payload)) for _ in range(256)])
                t_batch = (time.perf_counter() - t0) / 10
            j.close()
        est = singles * t_single + batches * t_batch
        rec = {"single_appends": singles, "file_events": files, "batches": batches,
               "t_single_ms": round(t_single * 1000, 3), "t_batch256_ms": round(t_batch * 1000, 3),
               "seconds": round(est, 4), "wall": round(wall, 3), "share": round(est / wall, 4), "kind": "estimate"}
        self.results[key] = rec
        log(f"journal (estimate): {singles} single appends x {t_single * 1000:.2f} ms + {batches} batches x "
            f"{t_batch * 1000:.2f} ms = {est * 1000:.0f} ms = {100 * est / wall:.2f}% of {wall:.1f}s")
        return rec

    def profile(self, sb: dict[str, Any]) -> None:
        spy = Path(PY).parent / "py-spy"
        if not spy.exists():
            spy = Path(shutil.which("py-spy") or "/nonexistent")
        if not spy.exists():
            self.notes.append("py-spy not installed in the venv: no profile (pip install py-spy)")
            return
        store = self.work / "store-profile"
        raw = self.out / "profile-backup.txt"
        svg = self.out / "profile-backup.svg"
        argv = [PY, "-m", "brsm.cli.app", "start", "backup", "--config", str(Path(sb["dir"]) / "cluster.toml"),
                "--storage", f"local://{store}", "--json"]
        for fmt, out in (("raw", raw), ("flamegraph", svg)):
            p = run([str(spy), "record", "--rate", "200", "--subprocesses", "--format", fmt, "-o", str(out), "--",
                     *argv], sb["env"], cwd=str(self.work))
            shutil.rmtree(store, ignore_errors=True)
            if p.rc != 0 or not out.exists():
                self.notes.append(f"py-spy record failed (exit {p.rc}): {p.stderr[-300:]}")
                return
        self.results["profile"] = {"raw": str(raw), "svg": str(svg), **summarize_profile(raw)}

    def big(self, size: int) -> None:
        sb = self.up("sb-big", self.args.hosts)
        try:
            self.load(sb, size)
            store = self.work / "store-big"
            r, facts, au = self.backup(sb, f"local://{store}")
            rss_mb = round(r.rss_kb / 1000, 1) if r.rss_kb else None
            self.row("brsm_local_big", f"brsm backup -> local at {human(size)} (whole command)", r.wall,
                     int(facts["total_bytes"]), rss_mb=rss_mb, cpu_s=r.cpu_s, files=facts["total_files"], steps=au["steps"])
            shutil.rmtree(store, ignore_errors=True)
        finally:
            self.down(Path(sb["dir"]))

    @staticmethod
    def event_times(au: dict[str, Any]) -> dict[str, float]:
        """Seconds from the operation's first event to: preflight passed, COPIED started, files planned, first
        file copied (a file's FileCopied is journaled when it finished, in a batch: an upper bound)."""
        t0 = au["first"]
        out: dict[str, float] = {}
        for e in au["events"]:
            t, d = e["type"], e.get("data") or {}
            key = {"PreflightPassed": "preflight", "FilesPlanned": "planned", "FileCopied": "first_copied",
                   "FileRestored": "first_restored"}.get(t)
            if t == "StepStarted" and d.get("step") in ("COPIED", "DOWNLOADED"):
                key = "copy_started"
            if key and key not in out:
                out[key] = parse_time(e["time"]) - t0
        return out

    def checksum(self, sb: dict[str, Any]) -> dict[str, str]:
        return self.brsm("sandbox", "checksum", "--dir", sb["dir"], "--json").check("checksum").json()["spaces"]

    def scale(self, hosts: int, data_paths: int, partitions: int, size: int) -> None:
        sb = self.up(f"sb-scale-{hosts}", hosts, data_paths)
        try:
            self.load(sb, size, "--partitions", str(partitions))
            before = self.checksum(sb)
            store = self.work / f"store-scale-{hosts}"
            r, facts, au = self.backup(sb, f"local://{store}")
            name = facts["backup_name"]
            manifest = store / facts["manifest"] if facts.get("manifest") else None
            rr = self.brsm("start", "restore", "--yes", "--config", str(Path(sb["dir"]) / "cluster.toml"), "--storage",
                           f"local://{store}", "--name", name, "--json", env=sb["env"], rss=True).check("restore")
            rau = self.audit(int(rr.json()["op_id"]))
            same = self.checksum(sb) == before
            bt = self.event_times(au)
            rec = {
                "storage_hosts": hosts, "data_paths": data_paths, "partitions": partitions, "load": size,
                "backup": {"wall": round(r.wall, 2), "rss_kb": r.rss_kb, "bytes": facts["total_bytes"],
                           "files": facts["total_files"], "steps": {k: round(v, 2) for k, v in au["steps"].items()},
                           "preflight": round(bt.get("preflight", 0), 2),
                           "planning": round(bt["planned"] - bt["copy_started"], 2) if "planned" in bt else None,
                           "events": sum(au["counts"].values()),
                           "journal": self.journal_share(r.wall, au, key=f"journal_scale_{hosts}")},
                "restore": {"wall": round(rr.wall, 2), "rss_kb": rr.rss_kb,
                            "steps": {k: round(v, 2) for k, v in rau["steps"].items()},
                            "events": sum(rau["counts"].values()), "checksum_equal": same},
                "manifest_bytes": manifest_size(manifest)}
            self.results.setdefault("scale", []).append(rec)
            if not same:
                self.notes.append(f"scale {hosts} hosts: the sandbox checksum after the restore differs from before")
            log(f"scale ({hosts} storage hosts x {data_paths} paths x {partitions} parts): backup {r.wall:.1f}s "
                f"RSS {fmt_mb(r.rss_kb)}, restore {rr.wall:.1f}s RSS {fmt_mb(rr.rss_kb)}, data equal: {same}")
            shutil.rmtree(store, ignore_errors=True)
        finally:
            self.down(Path(sb["dir"]))

    def tar_ssh_seconds(self, sb: dict[str, Any], dirs: dict[str, list[str]]) -> float:
        """`tar | ssh` of the checkpoint dirs into a fresh local dir, one pipeline per host, all hosts at
        once (as the baselines' "tar | ssh" row): the wall seconds."""
        ssh = sb["ssh"]
        sshopts = (f"-i {ssh['identity']} -o UserKnownHostsFile={ssh['known_hosts']} -o StrictHostKeyChecking=yes "
                   f"-o BatchMode=yes -o LogLevel=ERROR")
        dst = self.work / "dst-tar"
        shutil.rmtree(dst, ignore_errors=True)
        dst.mkdir()
        for ps in dirs.values():  # the same start as brsm's: every file in the page cache
            for p in ps:
                subprocess.run(["bash", "-c", f"find {p} -type f -exec cat {{}} + > /dev/null"])
        os.sync()
        cmds = []
        for host, paths in sorted(dirs.items()):
            (dst / host).mkdir()
            cmds.append(" && ".join(f"mkdir -p {dst}/{host}/{i} && ssh {sshopts} -p {ssh['port']} {ssh['user']}@{host} "
                                    f"tar -C {p} -cf - . | tar -C {dst}/{host}/{i} -xf -" for i, p in enumerate(paths)))
        try:
            return parallel(cmds)
        finally:
            shutil.rmtree(dst, ignore_errors=True)

    def many_files(self, n: int) -> None:
        """A backup of n small files (sandbox load --files n) to local next to `tar | ssh` of the same
        checkpoint files (files/s and their ratio, peak RSS), plus verify/show over its objects."""
        sb = self.up(f"sb-files-{n}", self.args.hosts)
        try:
            lr = self.load(sb, None, "--files", str(n), "--json")
            loaded = lr.json()
            snap, dirs = self.snapshot(sb)
            try:
                tar_files = sum(tree_bytes(Path(p))[1] for ps in dirs.values() for p in ps)
                tar_wall = self.tar_ssh_seconds(sb, dirs)
            finally:
                self.drop_snapshot(sb, snap)
            store = self.work / f"store-files-{n}"
            r, facts, au = self.backup(sb, f"local://{store}")
            name = facts["backup_name"]
            bt = self.event_times(au)
            planning = bt["planned"] - bt["copy_started"] if "planned" in bt else None
            first = bt["first_copied"] - bt["copy_started"] if "first_copied" in bt else None
            manifest = store / facts["manifest"] if facts.get("manifest") else None
            j = self.journal_share(r.wall, au, key=f"journal_files_{n}")
            cfg = str(Path(sb["dir"]) / "cluster.toml")
            v = self.brsm("verify", name, "--storage", f"local://{store}", "--json", rss=True).check("verify")
            sh = self.brsm("show", "--storage", f"local://{store}", "--json", rss=True).check("show")
            vdoc = v.json()
            rec = {"files_requested": n, "loaded": loaded.get("files"), "load_seconds": loaded.get("seconds"),
                   "files": facts["total_files"], "bytes": facts["total_bytes"], "wall": round(r.wall, 2),
                   "files_per_s": round(facts["total_files"] / r.wall, 1), "rss_kb": r.rss_kb,
                   "steps": {k: round(vv, 2) for k, vv in au["steps"].items()},
                   "copy_files_per_s": round(facts["total_files"] / au["steps"]["COPIED"], 1)
                   if au["steps"].get("COPIED") else None,
                   "planning": round(planning, 2) if planning is not None else None,
                   "first_file_copied": round(first, 2) if first is not None else None,
                   "journal": j, "events": sum(au["counts"].values()),
                   "manifest_bytes": manifest_size(manifest),
                   "verify": {"wall": round(v.wall, 2), "rss_kb": v.rss_kb, "ok": vdoc.get("ok"),
                              "checked": vdoc.get("checked")},
                   "show": {"wall": round(sh.wall, 2), "rss_kb": sh.rss_kb}, "config": cfg,
                   "tar_ssh": {"files": tar_files, "wall": round(tar_wall, 2),
                               "files_per_s": round(tar_files / tar_wall, 1) if tar_wall > 0 else None}}
            rec["vs_tar_ssh"] = (round(rec["files_per_s"] / rec["tar_ssh"]["files_per_s"], 3)
                                 if rec["tar_ssh"]["files_per_s"] else None)
            self.results.setdefault("files", []).append(rec)
            log(f"{facts['total_files']} small files: brsm {rec['files_per_s']} files/s vs tar | ssh "
                f"{rec['tar_ssh']['files_per_s']} files/s ({tar_files} files in {tar_wall:.1f}s): ratio "
                f"{rec['vs_tar_ssh']}, peak RSS {fmt_mb(r.rss_kb)}")
            log(f"{facts['total_files']} small files: backup {r.wall:.1f}s ({rec['files_per_s']} files/s), planning "
                f"{rec['planning']}s, journal {100 * j['share']:.2f}% ({j['kind']}), RSS {fmt_mb(r.rss_kb)}, manifest "
                f"{rec['manifest_bytes']} B; verify {v.wall:.1f}s, show {sh.wall:.1f}s")
            shutil.rmtree(store, ignore_errors=True)
        finally:
            self.down(Path(sb["dir"]))

    # -- issue 15: downtime of a staged restore vs an offline one, measured from outside
    def downtime(self, size: int) -> None:
        """A sandbox loaded with ``size``, backed up to local, then restored twice while a thread polls
        every metad/storaged/graphd port every 50 ms (tests/e2e/downtime.py): staged (the default) and
        --offline. Reports the longest stretch any port was closed, brsm's own figure, and the wall."""
        from tests.e2e.downtime import PortWatch, service_addrs

        sb = self.up(f"downtime-{size // MiB}m", self.args.hosts)
        try:
            self.load(sb, size)
            cfg = str(Path(sb["dir"]) / "cluster.toml")
            store = self.work / f"store-downtime-{size // MiB}m"
            _r, facts, _au = self.backup(sb, f"local://{store}")
            out: dict[str, Any] = {"size": size, "bytes": int(facts["total_bytes"]), "files": int(facts["total_files"])}
            for mode, extra in (("staged", ()), ("offline", ("--offline",))):
                self.load(sb, 16 * MiB)  # the cluster moves on: the restore changes it back
                os.sync()
                with PortWatch(service_addrs(sb["dir"])) as watch:
                    time.sleep(0.3)
                    r = self.brsm("start", "restore", "--yes", "--config", cfg, "--storage", f"local://{store}", "--name",
                                  facts["backup_name"], "--json", *extra, env=sb["env"]).check(f"restore ({mode})")
                    time.sleep(0.3)
                doc = r.json()
                out[mode] = {"outside_s": round(watch.longest(), 2), "windows": len(watch.windows()),
                             "reported_s": doc["facts"].get("downtime_seconds"), "wall_s": round(r.wall, 2),
                             "mode": doc["facts"].get("mode")}
                log(f"downtime at {human(size)} ({mode}): {out[mode]}")
            self.results.setdefault("downtime", []).append(out)
        finally:
            shutil.rmtree(self.work / f"store-downtime-{size // MiB}m", ignore_errors=True)
            self.down(Path(sb["dir"]))

    # -- the whole run
    def main(self) -> int:
        a = self.args
        self.out = Path(a.out).resolve()
        self.out.mkdir(parents=True, exist_ok=True)
        t_start = time.perf_counter()
        self.results["machine"] = {"nproc": os.cpu_count(), "cpu": cpu_model(), "python": platform.python_version(),
                                   "kernel": platform.release(), "mem_gib": round(os.sysconf("SC_PAGE_SIZE") *
                                                                                  os.sysconf("SC_PHYS_PAGES") / (1 << 30), 1)}
        self.results["machine"]["loadavg_start"] = loadavg()
        self.results["params"] = {"size": a.size_b, "hosts": a.hosts, "big": a.big_b, "sweep": a.sweep_levels,
                                  "files": a.files_list, "scale_hosts": a.scale_list,
                                  "scale_data_paths": a.scale_data_paths, "scale_partitions": a.scale_partitions,
                                  "incremental_size": a.incremental_size_b,
                                  "quick": a.quick, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        try:
            head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                  text=True).stdout.strip()
            dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no", "brsm",
                                    "journal"], capture_output=True, text=True).stdout.strip()
        except OSError:
            head, dirty = "?", ""
        brsm_from = subprocess.run([PY, "-c", "import brsm; print(brsm.__file__)"], env=self.env, cwd=str(self.work),
                                   capture_output=True, text=True).stdout.strip()
        self.results["params"]["brsm_from"] = brsm_from
        if brsm_from.startswith(str(ROOT) + "/"):
            self.results["params"]["commit"] = head + ("+uncommitted changes" if dirty else "")
        else:
            self.results["params"]["commit"] = f"not this checkout (repo HEAD {head})"
        if a.only_files:
            for n in a.files_list:
                self.many_files(n)
            self.results["machine"]["loadavg_end"] = loadavg()
            self.results["seconds"] = round(time.perf_counter() - t_start, 1)
            self.report()
            return 0
        for size in [] if a.only_direct or a.only_incremental else a.downtime_list:
            self.downtime(size)
        if a.direct_list and not a.only_incremental:
            bench_direct.run_direct(self, a.direct_list, a.direct_size_b)
        if a.incremental_size_b and not (a.only_downtime or a.only_direct):
            bench_incremental.run_incremental(self, a.incremental_size_b, bench_incremental.STORES)
        if a.only_downtime or a.only_direct or a.only_incremental:
            self.results["machine"]["loadavg_end"] = loadavg()
            self.results["seconds"] = round(time.perf_counter() - t_start, 1)
            self.report()
            return 0
        sb = self.up("sb", a.hosts)
        self.load(sb, a.size_b)
        snap, dirs = self.snapshot(sb)
        try:
            self.baselines(sb, dirs)
        finally:
            self.drop_snapshot(sb, snap)
        name, store, facts, _ = self.brsm_backup_local(sb)
        self.restore_local(sb, name, store, int(facts["total_bytes"]))
        shutil.rmtree(store, ignore_errors=True)
        if not a.no_objects:
            self.object_stores(sb)
        self.resume(sb, int(facts["total_files"]), int(facts["total_bytes"]))
        if a.sweep_levels:
            self.sweep(sb, a.sweep_levels)
        else:
            self.notes.append("no concurrency sweep in this run")
        if a.profile:
            self.profile(sb)
        self.down(Path(sb["dir"]))
        if a.big_b:
            self.big(a.big_b)
        else:
            self.notes.append("peak RSS measured at the main size only (no --big run)")
        for n in a.files_list:
            self.many_files(n)
        if not a.files_list:
            self.notes.append("no many-small-files run (--files 0)")
        for h in a.scale_list:
            self.scale(h, a.scale_data_paths, a.scale_partitions, a.scale_size_b)
        self.results["machine"]["loadavg_end"] = loadavg()
        self.results["seconds"] = round(time.perf_counter() - t_start, 1)
        self.report()
        return 0

    def report(self) -> None:
        R, res = self.rows, self.results
        m = res["machine"]
        lines = [f"machine: {m['nproc']} CPUs ({m['cpu']}), {m['mem_gib']} GiB RAM, Linux {m['kernel']}, "
                 f"Python {m['python']}; brsm {res['params'].get('commit', '?')} ({res['params'].get('brsm_from')})",
                 f"load average at start / end: {m.get('loadavg_start')} / {m.get('loadavg_end')} (other jobs share "
                 f"these CPUs when it is above 0)",
                 (f"data: {human(res['checkpoint']['bytes'])} in {res['checkpoint']['files']} checkpoint files on "
                  f"{res['checkpoint']['hosts']} storage hosts (+ meta SSTs for brsm); files in the page cache"
                  if "checkpoint" in res else "data: only the sandboxes of --only-downtime / --only-direct / "
                  "--only-incremental (sizes below)"),
                 ""]
        bases = [k for k in ("cp", "scp", "tar_ssh", "rclone_sftp") if k in R]
        head = (f"{'what':<46} {'s':>7} {'MiB/s':>7} {'RSS MB':>7} {'CPU s/GiB':>9} "
                + " ".join(f"{'/' + k:>10}" for k in bases))
        lines += [head, "-" * len(head)]
        for k, rec in R.items():
            ratios = " ".join(f"{(rec['mib_s'] or 0) / R[b]['mib_s']:>10.2f}" for b in bases)
            rss = f"{rec['rss_mb']:>7}" if rec.get("rss_mb") else f"{'':>7}"
            cpu = rec.get("cpu_s")
            cpu_gib = f"{cpu / (rec['bytes'] / GiB):>9.2f}" if cpu and cpu == cpu and rec.get("bytes") else f"{'':>9}"
            lines.append(f"{rec['label']:<46} {rec['seconds']:>7.2f} {rec['mib_s'] or 0:>7.1f} {rss} {cpu_gib} {ratios}")
        lines.append("(ratios = MiB/s of the row / MiB/s of the baseline in the column header; CPU s/GiB = CPU time "
                     "of every process on the machine during the row, the sshds, sftp-servers and stores serving it "
                     "included, per GiB moved: with N CPUs no tool can run faster than N / that many GiB/s)")
        if "journal" in res:
            j = res["journal"]
            if j["kind"] == "measured":
                lines.append(f"journal appends (MEASURED by brsm): {j['seconds'] * 1000:.0f} ms in {j['appends']} appends "
                             f"({j['events']} events) = {100 * j['share']:.2f}% of the backup's {j['wall']} s")
            else:
                lines.append(f"journal appends (ESTIMATE): {j['single_appends']} single x {j['t_single_ms']} ms + "
                             f"{j['batches']} batches x {j['t_batch256_ms']} ms = {j['seconds'] * 1000:.0f} ms "
                             f"= {100 * j['share']:.2f}% of the backup's {j['wall']} s")
        if "resume" in res:
            r = res["resume"]
            lines.append(f"resume after a crash at file {r['crash_after_files']}: resume {r['resume_wall']} s; "
                         f"re-transferred {human(r['retransferred_bytes'])} = {100 * r['retransferred_share']:.1f}% "
                         f"of {human(r['total_bytes'])} (skipped_on_resume={r['skipped_on_resume']})")
        if "sweep" in res:
            lines.append("concurrency: " + ", ".join(f"{p['concurrency']}: {p['mib_s_copy']} MiB/s copying / "
                                                     f"{p['mib_s_wall']} whole" for p in res["sweep"]))
        for f in res.get("files", []):
            j = f["journal"]
            lines.append(f"small files: {f['files']} files ({human(f['bytes'])}) on {res['params']['hosts']} hosts: backup "
                         f"{f['wall']} s = {f['files_per_s']} files/s (copy step {f['steps'].get('COPIED')} s), planning "
                         f"{f['planning']} s (first file copied at {f['first_file_copied']} s), journal "
                         f"{j['seconds']} s = {100 * j['share']:.2f}% ({j['kind']}; {j.get('appends', j.get('batches'))} "
                         f"appends), RSS {fmt_mb(f['rss_kb'])}, manifest {f['manifest_bytes']} B; verify --quick "
                         f"{f['verify']['wall']} s (RSS {fmt_mb(f['verify']['rss_kb'])}), show {f['show']['wall']} s "
                         f"(RSS {fmt_mb(f['show']['rss_kb'])})")
        if res.get("scale"):
            lines.append("scale (backup to local, then restore; steps in s):")
            lines.append(f"  {'hosts':>5} {'paths':>5} {'parts':>5} {'files':>6} {'backup':>7} {'preflt':>6} {'plan':>5} "
                         f"{'copy':>6} {'RSS MB':>6} {'events':>6} {'manif B':>8} | {'restore':>7} {'stop':>5} "
                         f"{'downl':>5} {'start':>5} {'clean':>5} {'RSS MB':>6} same")
            for x in res["scale"]:
                b, r = x["backup"], x["restore"]
                lines.append(f"  {x['storage_hosts']:>5} {x['data_paths']:>5} {x['partitions']:>5} {b['files']:>6} "
                             f"{b['wall']:>7} {b['preflight']:>6} {b['planning'] if b['planning'] is not None else '?':>5} "
                             f"{b['steps'].get('COPIED', 0):>6} {fmt_mb(b['rss_kb']).split()[0]:>6} {b['events']:>6} "
                             f"{x['manifest_bytes'] or '?':>8} | {r['wall']:>7} {r['steps'].get('STOPPED', 0):>5} "
                             f"{r['steps'].get('DOWNLOADED', 0):>5} {r['steps'].get('STARTED', 0):>5} "
                             f"{r['steps'].get('CLEANED', 0):>5} {fmt_mb(r['rss_kb']).split()[0]:>6} "
                             f"{'yes' if r.get('checksum_equal') else 'NO'}")
        if "profile" in res:
            lines.append("profile (py-spy, backup -> local; shares of the busy samples), top self frames:")
            for fr, share in res["profile"]["top_self"][:8]:
                lines.append(f"  {100 * share:5.1f}%  {fr}")
            lines.append("top inclusive functions:")
            for fr, share in res["profile"]["top_inclusive"][:10]:
                lines.append(f"  {100 * share:5.1f}%  {fr}")
        lines.append("")
        targets = []

        def target(name: str, value: float | None, limit: float, op: str, unit: str = "") -> None:
            if value is None:
                targets.append({"target": name, "value": None, "met": None})
                lines.append(f"  {'n/a':<8} {name}")
                return
            ok = value >= limit if op == ">=" else value < limit
            targets.append({"target": name, "value": round(value, 3), "limit": limit, "met": ok})
            lines.append(f"  {'met' if ok else 'NOT met':<8} {name}: {value:.2f}{unit} (target {op} {limit}{unit})")

        ratio = lambda a, b: (R[a]["mib_s"] / R[b]["mib_s"]) if a in R and b in R and R[b]["mib_s"] else None  # noqa: E731
        lines.append("targets (judged on the whole command's wall time; the copy-step ratio is shown alongside):")
        target("backup to local >= 0.85 x cp -r", ratio("brsm_local", "cp"), 0.85, ">=")
        target("  (COPIED step only) backup to local >= 0.85 x cp -r", ratio("brsm_local_copy", "cp"), 0.85, ">=")
        target("backup to local >= 1.2 x scp -r", ratio("brsm_local", "scp"), 1.2, ">=")
        target("  (COPIED step only) backup to local >= 1.2 x scp -r", ratio("brsm_local_copy", "scp"), 1.2, ">=")
        target("restore from local >= 0.85 x cp -r", ratio("brsm_restore", "cp_back"), 0.85, ">=")
        target("  (STAGED+DOWNLOADED steps) restore >= 0.85 x cp -r", ratio("brsm_restore_dl", "cp_back"), 0.85, ">=")
        target("backup to S3 >= 1.0 x rclone to the same endpoint", ratio("brsm_s3", "rclone_s3"), 1.0, ">=")
        target("  (COPIED step only) backup to S3 >= 1.0 x rclone", ratio("brsm_s3_copy", "rclone_s3"), 1.0, ">=")
        for k in ("brsm_local", "brsm_local_big", "brsm_s3", "brsm_oss", "brsm_restore"):
            if k in R and R[k].get("rss_mb"):
                target(f"peak RSS < 250 MB ({R[k]['label']})", R[k]["rss_mb"], 250, "<", " MB")
        if "resume" in res:
            target("resume after a kill at 50% re-transfers < 2% of the bytes",
                   100 * res["resume"]["retransferred_share"], 2.0, "<", " %")
        for f in res.get("files", []):
            target(f"journal writes < 3% of wall time, backup of {f['files']} small files ({f['journal']['kind']})",
                   100 * f["journal"]["share"], 3.0, "<", " %")
            target(f"planning {f['files']} files (COPIED start -> FilesPlanned) < 5 s", f["planning"], 5.0, "<", " s")
            target(f"backup of {f['files']} small files: brsm files/s >= 0.5 x tar | ssh of the same tree",
                   f.get("vs_tar_ssh"), 0.5, ">=")
            target(f"peak RSS < 250 MB (backup of {f['files']} small files)",
                   round(f["rss_kb"] / 1000, 1) if f.get("rss_kb") else None, 250, "<", " MB")
            target(f"listing the backup's {f['files']} objects (brsm verify --quick) < 5 s", f["verify"]["wall"], 5.0,
                   "<", " s")
            target(f"listing the backup's {f['files']} objects (brsm show) < 5 s", f["show"]["wall"], 5.0, "<", " s")
        dts = res.get("downtime", [])
        if dts:
            lines.append("restore downtime, measured from outside (longest stretch in which any metad/storaged/graphd "
                         "port refused a connection, polled every 50 ms) | brsm's figure | whole restore:")
            for d in dts:
                lines.append(f"  {human(d['bytes']):>10} ({d['files']} files): "
                             + "; ".join(f"{m} {d[m]['outside_s']:.2f} s | {d[m]['reported_s']} s | {d[m]['wall_s']:.1f} s"
                                         for m in ("staged", "offline")))
            for d in dts:
                target(f"staged restore of {human(d['bytes'])}: cluster down < 10 s (from outside)",
                       d["staged"]["outside_s"], 10.0, "<", " s")
            if len(dts) > 1:
                by = sorted(dts, key=lambda d: d["bytes"])
                target(f"staged downtime does not grow with the data: largest / smallest "
                       f"({human(by[-1]['bytes'])} / {human(by[0]['bytes'])})",
                       by[-1]["staged"]["outside_s"] / max(by[0]["staged"]["outside_s"], 0.01), 1.5, "<")
        lines += bench_direct.report_lines(res.get("direct", []))
        for r in res.get("direct", []):
            if r["mode"] == "direct":
                target(f"{r['op']} on {r['hosts']} hosts via {r['store'].upper()}, direct: bytes across brsm's sockets "
                       f"< 5 % of the bytes moved", r["brsm_socket_pct"], 5.0, "<", " %")
                target(f"{r['op']} on {r['hosts']} hosts via {r['store'].upper()}, direct: bytes across the hosts' "
                       f"sshds < 5 % of the bytes moved", r["sshd_socket_pct"], 5.0, "<", " %")
        lines += bench_incremental.report_lines(res.get("incremental", []))
        for r in res.get("incremental", []):
            where = f"{r['store']} ({r['mode']}, {human(r['size'])} + {human(r['added'])})"
            target(f"incremental backup to {where}: wall time < 30 % of the full backup's",
                   None if r["wall_ratio"] is None else 100 * r["wall_ratio"], 30.0, "<", " %")
            target(f"incremental backup to {where}: bytes read from the hosts' disks (sent + hashed, brsm's counts) "
                   f"< 30 % of the full backup's", None if r["disk_ratio"] is None else 100 * r["disk_ratio"], 30.0,
                   "<", " %")
        for n in self.notes:
            lines.append(f"note: {n}")
        res["targets"] = targets
        text = "\n".join(lines)
        print(text)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        (self.out / f"bench-{stamp}.json").write_text(json.dumps(res, indent=1, default=str))
        (self.out / f"bench-{stamp}.txt").write_text(text + "\n")
        (self.out / "latest.json").write_text(json.dumps(res, indent=1, default=str))
        print(f"\nwrote {self.out / f'bench-{stamp}.json'}" + (f" and {res['plot']}" if "plot" in res else ""))


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def manifest_size(header: Path | None) -> int | None:
    """Bytes of a backup's manifest: its header, and (format 2) its file list beside it."""
    if header is None or not header.exists():
        return None
    files = header.with_name("brsm-manifest-files.jsonl")
    return header.stat().st_size + (files.stat().st_size if files.exists() else 0)


def fmt_mb(kb: int | None) -> str:
    return f"{kb / 1000:.0f} MB" if kb else "?"


def summarize_profile(raw: Path) -> dict[str, Any]:
    """py-spy raw (collapsed) stacks -> top self frames and top inclusive brsm/asyncssh/journal functions, as
    shares of the busy samples (idle worker threads waiting for work and the loop's select() left out)."""
    self_c: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = idle = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        c = int(n)
        total += c
        frames = [f for f in stack.split(";") if f and not f.startswith("process ")]
        if not frames:
            continue
        leaf = frames[-1]
        if "(threading.py" in leaf or "thread.py:81)" in leaf or "select" in leaf.split(" (")[0]:
            idle += c
            continue
        short = re.sub(r"\((?:[^()]*/)?([^/()]+/[^/()]+:\d+)\)", r"(\1)", leaf)
        self_c[short] = self_c.get(short, 0) + c
        for f in {re.sub(r":\d+\)", ")", x) for x in frames}:
            if any(k in f for k in ("brsm/", "journal/", "asyncssh/", "hashlib", "cryptography/")) \
                    and "brsm/cli/" not in f:
                incl[f] = incl.get(f, 0) + c
    busy = max(1, total - idle)
    top = lambda d: [(k, round(v / busy, 4)) for k, v in sorted(d.items(), key=lambda kv: -kv[1])[:20]]  # noqa: E731
    return {"samples": total, "idle_samples": idle, "top_self": top(self_c), "top_inclusive": top(incl)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="1GiB", help="data loaded into the sandbox (default 1GiB)")
    ap.add_argument("--hosts", type=int, default=3, help="storage hosts (default 3)")
    ap.add_argument("--big", default=None, help="also measure peak RSS at this size on a second sandbox, e.g. 4GiB")
    ap.add_argument("--sweep", default="1,2,4,8", help="--concurrency levels for the plot ('' = none)")
    ap.add_argument("--files", default="100000", help="small files of the many-files run, a list allowed "
                    "(e.g. 10000,100000; 0 = none; default 100000)")
    ap.add_argument("--scale-hosts", default="3,12,32", help="storage hosts of the scale runs, a list allowed "
                    "(0 = none; default 3,12,32)")
    ap.add_argument("--scale-data-paths", type=int, default=2)
    ap.add_argument("--scale-partitions", type=int, default=50, help="partitions per space in the scale runs")
    ap.add_argument("--scale-size", default="256MiB")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each baseline; the median is reported (default 3)")
    ap.add_argument("--profile", action="store_true", help="py-spy record one backup to local")
    ap.add_argument("--no-objects", action="store_true", help="skip the S3/OSS backups")
    ap.add_argument("--no-rclone", action="store_true", help="skip the rclone columns")
    ap.add_argument("--quick", action="store_true", help="smoke test: 128MiB, 2,000 small files, no --big, no sweep, "
                    "no scale run")
    ap.add_argument("--out", default=str(ROOT / "bench-results"))
    ap.add_argument("--workdir", default=None, help="parent of the temp work dir (default: system temp)")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (sandboxes are stopped anyway)")
    ap.add_argument("--downtime", default="64MiB,1GiB,4GiB", help="sizes at which the downtime of a staged and "
                    "an offline restore is measured from outside ('' = none)")
    ap.add_argument("--only-downtime", action="store_true", help="only the downtime measurements")
    ap.add_argument("--direct-hosts", default="3,6,12", help="storage hosts of the direct-path runs, a list ('' = none)")
    ap.add_argument("--direct-size", default="1GiB", help="data loaded for the direct-path runs (default 1GiB)")
    ap.add_argument("--only-direct", action="store_true", help="only the direct-path measurements")
    ap.add_argument("--incremental-size", default="1GiB", help="data loaded for the incremental-backup runs "
                    "(default 1GiB; --quick 128MiB; 0 = none); 5 %% more is loaded before the incremental backups")
    ap.add_argument("--only-incremental", action="store_true", help="only the incremental-backup measurements")
    ap.add_argument("--only-files", action="store_true", help="only the many-small-files run(s) (--files): brsm "
                    "next to `tar | ssh` of the same tree")
    a = ap.parse_args()
    if a.quick:
        a.size, a.big, a.sweep, a.scale_hosts, a.repeat = "128MiB", None, "", "0", 1
        if a.files == ap.get_default("files"):
            a.files = "2000"
    a.files_list = [int(x) for x in str(a.files).split(",") if x.strip() and int(x) > 0]
    a.scale_list = [int(x) for x in str(a.scale_hosts).split(",") if x.strip() and int(x) > 0]
    a.size_b = parse_size(a.size)
    a.big_b = parse_size(a.big) if a.big else None
    a.scale_size_b = parse_size(a.scale_size)
    a.sweep_levels = [int(x) for x in a.sweep.split(",") if x.strip()]
    if a.quick and a.downtime == ap.get_default("downtime"):
        a.downtime = "64MiB"
    a.downtime_list = [parse_size(x) for x in str(a.downtime).split(",") if x.strip()]
    if a.quick and a.direct_hosts == ap.get_default("direct_hosts"):
        a.direct_hosts, a.direct_size = "3", "128MiB"
    a.direct_list = [int(x) for x in str(a.direct_hosts).split(",") if x.strip() and int(x) > 0]
    a.direct_size_b = parse_size(a.direct_size)
    if a.quick and a.incremental_size == ap.get_default("incremental_size"):
        a.incremental_size = "128MiB"
    a.incremental_size_b = parse_size(a.incremental_size)

    def on_term(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    bench = Bench(a)
    try:
        return bench.main()
    except KeyboardInterrupt:
        log("interrupted: stopping the sandboxes")
        return 130
    finally:
        # a second Ctrl-C must not skip the teardown
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        bench.cleanup()


if __name__ == "__main__":
    sys.exit(main())
