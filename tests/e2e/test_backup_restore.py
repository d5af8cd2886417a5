"""Backup and restore end to end on the sandbox: real sshd, real meta protocol, real RocksDB, S3, OSS."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from brsm.adapters.meta_codec import decode_backup_meta, text
from brsm.sandbox.control import MetaClient
from tests.e2e import manifest_files
from tests.e2e.conftest import BRSM

pytestmark = pytest.mark.sandbox


def snapshots(env) -> list[str]:
    from nebula3.meta import ttypes as mt

    with MetaClient(env.meta) as c:
        return [text(s.name) for s in (c.listSnapshots(mt.ListSnapshotsReq()).snapshots or [])]


def leases(env) -> list[str]:
    out = []
    for h in env.info["hosts"]:
        p = Path(h["install_dir"]) / "brsm.lease"
        if p.exists():
            out.append(str(p))
    return out


def aside_dirs(env) -> list[str]:
    return [str(p) for h in env.info["hosts"] for dp in h["data_paths"] for p in Path(dp).glob("nebula_brsm_old_*")]


def test_backup_to_local_then_restore_exactly(sandbox, tmp_path):
    env = sandbox
    before = env.checksum()
    target = tmp_path / "backups"
    prom = tmp_path / "brsm.prom"  # issue 17: what cron's node_exporter textfile collector would read
    res = env.ok("--metrics-file", str(prom), "start", "backup", "--config", env.config, "--storage",
                 f"local://{target}")
    assert res["state"] == "CLEANED"
    name = res["facts"]["backup_name"]
    root = target / name
    manifest = manifest_files.load(root)
    assert (root / "brsm-manifest-files.jsonl").exists()  # format 2: the file list apart, one JSON line a file
    from prometheus_client.parser import text_string_to_metric_families

    def metric(name_, **labels):
        fams = {f.name: f.samples for f in text_string_to_metric_families(prom.read_text())}
        (v,) = [s.value for s in fams[name_] if all(s.labels.get(k) == w for k, w in labels.items())]
        return v
    assert metric("brsm_last_files", kind="backup", cluster="sandbox") == len(manifest["files"])
    assert metric("brsm_last_bytes", kind="backup", cluster="sandbox") == sum(f["size"] for f in manifest["files"])
    assert manifest["backup_name"] == name and manifest["files"]
    for f in manifest["files"]:
        assert (target / f["key"]).stat().st_size == f["size"]
    # nebula-br layout: .meta decodes, meta SSTs by base name, data per host and data path index
    bm = decode_backup_meta((root / f"{name}.meta").read_bytes())
    assert text(bm.backup_name) == name
    assert sorted(p.name for p in (root / "meta").iterdir()) == sorted(text(f) for f in bm.meta_files)
    assert all("/" not in text(f) for f in bm.meta_files)  # base names, as nebula-br writes them
    hosts = sorted(p.name for p in (root / "data").iterdir())
    assert len(hosts) == 3 and all(":" in h for h in hosts)
    assert {p.name for p in (root / "data" / hosts[0]).iterdir()} <= {"data0", "data1"}
    # the cluster is left as found: no snapshot, no lease
    assert name not in snapshots(env) and leases(env) == []
    ops = env.ok("ops")
    assert ops[0]["state"] == "CLEANED" and ops[0]["kind"] == "backup"
    assert env.ok("journal", "verify")["ok"]

    env.load(4 << 20, seed=2)
    changed = env.checksum()
    assert changed != before
    res = env.ok("--metrics-file", str(prom), "start", "restore", "--yes", "--config", env.config, "--storage",
                 f"local://{target}", "--name", name)
    assert res["state"] == "CLEANED"
    assert env.checksum() == before
    assert aside_dirs(env) == [] and leases(env) == []
    downtime = metric("brsm_last_restore_downtime_seconds", cluster="sandbox")
    assert 0 < downtime < metric("brsm_last_duration_seconds", kind="restore", cluster="sandbox")
    assert metric("brsm_last_success_timestamp_seconds", kind="backup", cluster="sandbox") > 0  # still there


@pytest.mark.parametrize("store", ["s3", "oss"])
def test_backup_to_object_store_and_restore(sandbox, store):
    env = sandbox
    loc = env.s3(f"e2e-{store}") if store == "s3" else env.oss(f"e2e-{store}")
    before = env.checksum()
    res = env.ok("start", "backup", "--config", env.config, *loc)
    name = res["facts"]["backup_name"]
    assert res["facts"]["total_files"] > 0
    env.load(2 << 20, seed=3)
    assert env.checksum() != before
    env.ok("start", "restore", "--yes", "--config", env.config, *loc, "--name", name, "--verify", "full")
    assert env.checksum() == before


# Crashes at every state boundary: tests/reliability (short form here, scripts/sweep for all).


def checkpoint_dirs(env) -> list[str]:
    return [str(p) for h in env.info["hosts"] for dp in h["data_paths"] for p in Path(dp).glob("**/checkpoints/BACKUP_*")]


@pytest.mark.parametrize("store", ["local", "s3", "oss"])
def test_backup_of_one_space_restores_only_that_space(sandbox, tmp_path, store):
    env = sandbox
    loc = {"local": ["--storage", f"local://{tmp_path / 'b'}"], "s3": env.s3("partial"), "oss": env.oss("partial")}[store]
    before = env.checksum()
    res = env.ok("start", "backup", "--config", env.config, *loc, "--spaces", "space1")
    name = res["facts"]["backup_name"]
    assert sorted(res["facts"]["spaces"].values()) == ["space1"] and res["facts"]["all_spaces"] is False
    assert checkpoint_dirs(env) == [] and snapshots(env) == []
    # every object matches the manifest's SHA-256
    v = env.ok("verify", name, *loc, "--full", "--config", env.config)
    assert v.get("ok", True) and not v.get("problems")
    env.load(3 << 20, seed=11)
    newer = env.checksum()
    assert newer["space1"] != before["space1"] and newer["space2"] != before["space2"]
    done = env.ok("start", "restore", "--yes", "--config", env.config, *loc, "--name", name)
    assert done["facts"]["mode"] == "staged"  # issue 15: only space1's files were staged, then swapped in
    after = env.checksum()
    assert after["space1"] == before["space1"], "the restored space is exactly as backed up"
    assert after["space2"] == newer["space2"], "the other space keeps its newer data"
    assert aside_dirs(env) == [] and leases(env) == []


def test_bad_restores_stop_before_touching_the_cluster(sandbox, tmp_path):
    env = sandbox
    target = tmp_path / "b"
    name = env.ok("start", "backup", "--config", env.config, "--storage", f"local://{target}")["facts"]["backup_name"]
    current = env.checksum()
    manifest = target / name / "brsm-manifest.json"
    m = manifest_files.load(target / name)
    victim = target / max(m["files"], key=lambda f: f["size"])["key"]
    # 1. a file whose hash does not match (same size), with --verify full
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    p = env.brsm("start", "restore", "--yes", "--config", env.config, "--storage", f"local://{target}", "--name", name,
                 "--verify", "full")
    assert p.returncode == 6 and "SHA-256" in p.stderr, p.stderr[-800:]
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    # 2. a tampered manifest (a size that no longer matches the object)
    m["files"][0]["size"] += 1
    manifest_files.save(target / name, m)
    p = env.brsm("start", "restore", "--yes", "--config", env.config, "--storage", f"local://{target}", "--name", name)
    assert p.returncode == 6 and "damaged" in p.stderr, p.stderr[-800:]
    # 3. a missing manifest and .meta (a backup that never finished)
    manifest.unlink()
    (target / name / f"{name}.meta").unlink()
    p = env.brsm("start", "restore", "--yes", "--config", env.config, "--storage", f"local://{target}", "--name", name)
    assert p.returncode == 4 and "incomplete" in p.stderr, p.stderr[-800:]
    # nothing was stopped or moved: same data, services up, no set-aside dirs, no lease
    assert env.checksum() == current
    assert aside_dirs(env) == [] and leases(env) == []
    ops = env.ok("ops")
    assert [o["state"] for o in ops[:3]] == ["REFUSED", "REFUSED", "REFUSED"]  # each refused before any effect


def test_nebula_br_layout_backup_is_listed_and_restored(sandbox, tmp_path):
    """A backup in nebula-br's layout with no brsm manifest: the same tree and `.meta` nebula-br
    writes (brsm's own, with the manifest taken away), listed by `show` and restored (by size)."""
    env = sandbox
    target = tmp_path / "nbr"
    backed = env.checksum()
    name = env.ok("start", "backup", "--config", env.config, "--storage", f"local://{target}")["facts"]["backup_name"]
    (target / name / "brsm-manifest.json").unlink()
    (target / name / "brsm-manifest-files.jsonl").unlink()
    assert sorted(p.name for p in (target / name).iterdir()) == sorted([f"{name}.meta", "data", "meta"])
    shown = env.ok("show", "--storage", f"local://{target}")["backups"]
    entry = next(b for b in shown if b["name"] == name)
    assert entry["made_by"] == "nebula-br" and entry["state"] == "complete"
    env.load(2 << 20, seed=31)
    assert env.checksum() != backed
    p = env.brsm("start", "restore", "--yes", "--config", env.config, "--storage", f"local://{target}", "--name", name)
    assert p.returncode == 6 and "--allow-unverified" in p.stderr, p.stderr[-800:]  # no checksums: asked for
    res = env.ok("start", "restore", "--yes", "--config", env.config, "--storage", f"local://{target}", "--name", name,
                 "--allow-unverified")
    assert res["state"] == "CLEANED"
    assert env.checksum() == backed


def test_backup_and_restore_by_nebula_br_style_flags_alone(sandbox, tmp_path):
    """Issue 17: no config file at all, the cluster named as nebula-br users name it (--meta, plus the
    SSH flags); the restore finds nebula.service under each daemon's own root (metad reports it) since
    no config names an install dir. Round trip exact; a resume or audit needs no flags again."""
    import tomllib

    env = sandbox
    cfg = tomllib.loads(Path(env.config).read_text())
    ssh = cfg["ssh"]
    flags = ["--meta", ",".join(cfg["cluster"]["meta"]), "--ssh-user", ssh["user"], "--ssh-key", ssh["identity"],
             "--ssh-port", str(ssh["port"]), "--known-hosts", ssh["known_hosts"]]
    assert not any(h.get("ssh_port", ssh["port"]) != ssh["port"] for h in cfg.get("hosts", []))
    e = dict(env.env)
    e.pop("BRSM_CONFIG", None)
    before = env.checksum()
    store = f"local://{tmp_path / 'b'}"
    p = subprocess.run([*BRSM, "start", "backup", "--storage", store, *flags, "--json"], env=e, capture_output=True,
                       text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr[-2000:]
    name = json.loads(p.stdout)["facts"]["backup_name"]
    env.load(1 << 20, seed=21)
    assert env.checksum() != before
    p = subprocess.run([*BRSM, "start", "restore", "--yes", "--storage", store, "--name", name, *flags, "--json"], env=e,
                       capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr[-2000:]
    assert env.checksum() == before and aside_dirs(env) == [] and leases(env) == []
    # without --meta and without a config: one clear line
    p = subprocess.run([*BRSM, "start", "backup", "--storage", store, "--ssh-user", "root"], env=e,
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert p.returncode == 2 and "--meta is needed without a config file" in p.stderr, p.stderr[-1500:]
