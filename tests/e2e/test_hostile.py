"""Hostile and bad input: tampered manifests cannot write outside the backup; secrets never leak."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.test_backup_restore import aside_dirs, leases

pytestmark = pytest.mark.sandbox


@pytest.mark.parametrize("evil", ["{name}/data/{h}/data0/1/../../../../../../tmp/brsm-pwned",
                                  "/etc/brsm-pwned", "{name}/../other/x"])
def test_manifest_keys_outside_the_backup_are_refused(sandbox, tmp_path, evil):
    env = sandbox
    target = tmp_path / "b"
    name = env.ok("start", "backup", "--config", env.config, "--storage", f"local://{target}")["facts"]["backup_name"]
    mpath = target / name / "brsm-manifest.json"
    m = json.loads(mpath.read_text())
    h = m["files"][0]["key"].split("/")[2]
    m["files"].append({"key": evil.format(name=name, h=h), "size": 1, "sha256": "0" * 64, "host": "x", "path": "/x"})
    mpath.write_text(json.dumps(m))
    before = env.checksum()
    p = env.brsm("start", "restore", "--config", env.config, "--storage", f"local://{target}", "--name", name)
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
        p = env.brsm("start", "restore", "--config", env.config, *store, "--name", name)
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
    for cmd in (["ops", "--json"], ["audit", "1"], ["audit", "1", "--json"]):
        printed.append(env.brsm(*cmd).stdout)
    home = Path(env.env["BRSM_HOME"])
    blobs = [f.read_bytes() for f in home.rglob("*") if f.is_file()]
    assert blobs, "brsm wrote its journal"
    for s in secrets:
        assert all(s not in t for t in printed), "a secret was printed"
        assert all(s.encode() not in b for b in blobs), "a secret was written to BRSM_HOME"
    journal = home / "journal.db"
    assert oct(journal.stat().st_mode & 0o777) == "0o600"
