"""Issue 13, the adversary's classes that need a running cluster: services started behind brsm's back
during a restore, operation ids that collide across journals, gc and a live lease, and backups that
carry no checksums. Each test fails on the old behaviour (main at dad4952) and passes now."""
from __future__ import annotations

import json
from pathlib import Path

from brsm.sandbox import control

from .test_backup_restore import aside_dirs, leases


def services_up(env) -> bool:
    from nebula3.meta import ttypes as meta
    with control.MetaClient(env.meta) as c:
        hosts = c.call("listHosts", meta.ListHostsReq(type=meta.ListHostType.STORAGE)).hosts
    return bool(hosts) and all(h.status == meta.HostStatus.ONLINE for h in hosts)


# -- 5. a backup without checksums --------------------------------------------------------------------------
def test_a_backup_whose_manifest_was_deleted_and_a_file_changed_is_neither_ok_nor_restored(sandbox, tmp_path):
    """The manifest deleted and one SST changed, same size: `show` said `complete* nebula-br`, `verify
    --full` said ok (0 re-hashed) and the restore finished rc 0 with wrong data. Now verify exits 6
    saying it could re-hash nothing, and the restore is refused (exit 6) before anything is stopped."""
    env = sandbox
    store = tmp_path / "b"
    name = env.ok("start", "backup", "--config", env.config, "--storage", f"local://{store}")["facts"]["backup_name"]
    (store / name / "brsm-manifest.json").unlink()
    sst = max((p for p in (store / name / "data").rglob("*.sst")), key=lambda p: p.stat().st_size)
    data = bytearray(sst.read_bytes())
    data[len(data) // 2] ^= 0xFF
    sst.write_bytes(bytes(data))
    p = env.brsm("verify", name, "--storage", f"local://{store}", "--full")
    assert p.returncode == 6 and f"{name}: ok" not in p.stdout, (p.stdout, p.stderr)
    assert "re-hashed 0 objects" in p.stderr and "no checksums" in p.stdout
    before = env.checksum()
    p = env.brsm("start", "restore", "--config", env.config, "--storage", f"local://{store}", "--name", name)
    assert p.returncode == 6, (p.returncode, p.stderr[-2000:])
    assert "has no checksums" in p.stderr and "--allow-unverified" in p.stderr
    assert env.checksum() == before and services_up(env)
    assert aside_dirs(env) == [] and leases(env) == []
