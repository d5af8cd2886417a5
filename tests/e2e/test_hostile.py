"""Hostile and bad input: tampered manifests cannot write outside the backup; secrets never leak; a
resume never follows an edited config to another storage (issue 13)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.e2e import manifest_files
from tests.e2e.test_backup_restore import aside_dirs, leases

pytestmark = pytest.mark.sandbox


@pytest.mark.parametrize("evil", ["{name}/data/{h}/data0/1/../../../../../../tmp/brsm-pwned",
                                  "/etc/brsm-pwned", "{name}/../other/x"])
def test_manifest_keys_outside_the_backup_are_refused(sandbox, tmp_path, evil):
    env = sandbox
    target = tmp_path / "b"
    name = env.ok("start", "backup", "--config", env.config, "--storage", f"local://{target}")["facts"]["backup_name"]
    m = manifest_files.load(target / name)
    h = m["files"][0]["key"].split("/")[2]
    m["files"].append({"key": evil.format(name=name, h=h), "size": 1, "sha256": "0" * 64, "host": "x", "path": "/x"})
    manifest_files.save(target / name, m)
    before = env.checksum()
    p = env.brsm("start", "restore", "--yes", "--config", env.config, "--storage", f"local://{target}", "--name", name)
    assert p.returncode == 6 and "outside the backup" in p.stderr, p.stderr[-600:]
    assert not Path("/tmp/brsm-pwned").exists() and not Path("/etc/brsm-pwned").exists()
    assert env.checksum() == before and aside_dirs(env) == [] and leases(env) == []


def test_no_secret_in_journal_output_or_files(sandbox, tmp_path):
    """The round trip with the stores' real credentials: scan everything brsm printed and wrote."""
    env = sandbox
    secrets = [env.info["oss"]["access_key_secret"], env.info["s3"]["secret_access_key"]]
    printed = []
    for store in (env.oss("canary"), env.s3("canary")):
        p = env.brsm("start", "backup", "--config", env.config, *store, "--json")
        assert p.returncode == 0, p.stderr[-600:]
        printed += [p.stdout, p.stderr]
        name = json.loads(p.stdout)["facts"]["backup_name"]
        p = env.brsm("start", "restore", "--yes", "--config", env.config, *store, "--name", name)
        printed += [p.stdout, p.stderr]
        assert p.returncode == 0
    # and a failing one: wrong secret in the environment, the error must not echo it
    env.env["OSS_ACCESS_KEY_SECRET"], good = "canary-" + "s3cr3t-value-XYZ", env.env["OSS_ACCESS_KEY_SECRET"]
    try:
        p = env.brsm("start", "backup", "--config", env.config, *env.oss("canary2"))
        assert p.returncode == 4
        printed += [p.stdout, p.stderr]
        secrets.append("canary-s3cr3t-value-XYZ")
    finally:
        env.env["OSS_ACCESS_KEY_SECRET"] = good
    # credentials typed into a parameter, in every form and through every command that creates an
    # operation: refused before anything is journaled (issue 13: the URI, and the error naming it, used
    # to reach the OperationFailed event, brsm.log and `brsm ops`)
    canary = "canary-" + "Uri5ecret-Q7"
    forms = [f"s3://KEYID:{canary}@{env.info['s3']['bucket']}/x", f"https://{canary}@host/x",
             f"s3://b/x?secret={canary}", f"oss://b/x?access_key_secret={canary}",
             f"s3://b/x?X-Amz-Signature={canary}", f"oss://b/x?Expires=1&Signature={canary}", f"s3://b/x?sig={canary}"]
    for i, uri in enumerate(forms):
        for argv in (["start", "backup", "--config", env.config, "--storage", uri],
                     ["start", "restore", "--yes", "--config", env.config, "--storage", uri, "--name", "BACKUP_1"],
                     ["cleanup", "--yes", "BACKUP_1", "--storage", uri], ["gc", "--config", env.config, "--storage", uri],
                     ["start", "backup", "--config", env.config, *env.s3("canary3"), "--s3-endpoint", uri]):
            p = env.brsm(*argv, *(["--json"] if i % 2 else []))
            assert p.returncode == 2 and "carries a credential" in p.stdout + p.stderr, p.stderr[-600:]
            printed += [p.stdout, p.stderr]
    secrets.append(canary)
    ops = json.loads(env.brsm("ops", "--json").stdout)
    assert all(canary not in json.dumps(o) for o in ops)
    for cmd in (["ops"], ["ops", "--json"], *(["audit", str(o["id"]), *j] for o in ops for j in ([], ["--json"]))):
        printed.append(env.brsm(*cmd).stdout)
    home = Path(env.env["BRSM_HOME"])
    blobs = [f.read_bytes() for f in home.rglob("*") if f.is_file()]
    assert blobs, "brsm wrote its journal"
    for s in secrets:
        assert all(s not in t for t in printed), "a secret was printed"
        assert all(s.encode() not in b for b in blobs), "a secret was written to BRSM_HOME"
    journal = home / "journal.db"
    assert oct(journal.stat().st_mode & 0o777) == "0o600"
    assert (home / "logs" / "brsm.log").exists()  # scanned above with the rest of BRSM_HOME


def test_files_holding_secrets_are_private_from_their_first_byte(sandbox):
    """sandbox.json holds the stores' keys (it was 0644); BRSM_HOME brsm creates is 0700 (it was 0755)."""
    env = sandbox
    for f in ("sandbox.json", "credentials.env"):
        assert oct((env.root / f).stat().st_mode & 0o777) == "0o600", f
    assert not list(env.root.glob("sandbox.json.tmp*"))
    home = Path(env.env["BRSM_HOME"]) / "fresh"
    env.env["BRSM_HOME"], old = str(home), env.env["BRSM_HOME"]
    try:
        assert env.brsm("ops").returncode == 0
    finally:
        env.env["BRSM_HOME"] = old
    assert oct(home.stat().st_mode & 0o777) == "0o700"


def test_a_resume_continues_on_the_storage_it_started_with(sandbox, tmp_path):
    """Storage from the config's [storage] default, a crash, the config edited to name another storage:
    the resume used to write a whole backup to the new one and leave the first incomplete."""
    env = sandbox
    first, second = tmp_path / "first", tmp_path / "second"
    cfg = tmp_path / "cluster.toml"
    text = Path(env.config).read_text()
    assert re.search(r"(?m)^default = ", text)

    def name_default(d: Path) -> None:
        cfg.write_text(re.sub(r"(?m)^default = .*$", f'default = "local://{d}"', text))

    name_default(first)
    p = env.brsm("start", "backup", "--config", str(cfg), failpoints="after:COPIED=crash")
    assert p.returncode == 86, p.stderr[-600:]
    op = env.ok("ops", "--limit", "1")[0]
    assert op["kind"] == "backup" and op["target"] == f"local://{first}"  # it was "" (taken from the config)
    name_default(second)
    for mode in ("resume", "rollback"):
        p = env.brsm(mode, str(op["id"]), "--storage", f"local://{second}")
        assert p.returncode == 2, p.stderr[-600:]
        assert f"it was started on local://{first}" in p.stderr and p.stderr.count("brsm: error:") == 1
    p = env.brsm("resume", str(op["id"]))
    assert p.returncode == 0, p.stderr[-600:]
    assert f"continues on local://{first}" in p.stdout
    events = env.ok("audit", str(op["id"]))["events"]
    name = next(e["data"]["facts"]["backup_name"] for e in events
                if e["type"] == "StepCompleted" and e["data"]["step"] == "SNAPSHOTTED")
    assert (first / name / "brsm-manifest.json").exists() and not second.exists()
    env.ok("verify", name, "--storage", f"local://{first}", "--full")
    assert leases(env) == [] and aside_dirs(env) == []
