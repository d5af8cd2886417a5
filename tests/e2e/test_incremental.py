"""Incremental backups by content on the sandbox (issue 26): a full backup, about 5 % of the data
written, an incremental one that sends only what the base lacks; its restore is exact after the base
was deleted. And the trap: after a restore RocksDB reuses file numbers, so files of a newer base share
names and sizes with other bytes; an incremental from that base still restores exactly."""
from __future__ import annotations

import hashlib

import pytest

from tests.e2e import manifest_files

pytestmark = pytest.mark.sandbox


def backup(env, store: list[str], *extra: str) -> dict:
    res = env.ok("start", "backup", "--config", env.config, *store, *extra)
    assert res["state"] == "CLEANED"
    return res


def restore(env, store: list[str], name: str) -> None:
    res = env.ok("start", "restore", "--yes", "--config", env.config, *store, "--name", name)
    assert res["state"] == "DONE" or res["state"] == "CLEANED", res


def prune_base(env, store: list[str], base: str) -> None:
    """prune may delete a base at any time: the backups copied from it hold their own copies."""
    res = env.ok("prune", "--config", env.config, *store, "--keep-last", "1", "--yes")
    assert base in res["deleted"], res


@pytest.mark.parametrize("where,path", [("local", "via-brsm"), ("s3", "direct"), ("s3", "via-brsm"),
                                        ("oss", "via-brsm"), ("oss", "direct")])
def test_incremental_sends_what_changed_and_restores_exactly_without_its_base(sandbox, tmp_path, where, path):
    env = sandbox
    target = tmp_path / "backups"
    store = {"local": ["--storage", f"local://{target}"], "s3": env.s3(f"inc-{path}"),
             "oss": env.oss(f"inc-{path}")}[where]
    full = backup(env, store, "--data-path", path)
    env.load(600 << 10, seed=11)  # about 5 % of the sandbox's 12 MiB
    want = env.checksum()
    inc = backup(env, store, "--data-path", path, "--incremental")
    facts = inc["facts"]
    base = full["facts"]["backup_name"]
    assert facts["base"] == base
    assert facts["files_reused"] > 0
    name = inc["facts"]["backup_name"]
    show = {b["name"]: b for b in env.ok("show", "--config", env.config, *store)["backups"]}
    assert show[name]["state"] == "complete" and show[name]["incremental_from"] == base
    assert show[base]["bytes_sent"] == show[base]["bytes"]  # a full backup sent everything it holds
    # what was read from the hosts (on either data path) is a fraction of the full backup's
    assert show[name]["bytes_sent"] < 0.4 * show[base]["bytes"], (show[name], show[base], facts)
    prune_base(env, store, base)
    v = env.ok("verify", name, "--config", env.config, *store, "--full")
    assert v["ok"] and v["hashed_files"] == v["files"], v
    env.load(300 << 10, seed=12)  # something the restore must undo
    restore(env, store, name)
    assert env.checksum() == want


def test_files_that_share_names_and_sizes_with_other_bytes_are_sent(sandbox, tmp_path):
    env = sandbox
    target = tmp_path / "backups"
    store = ["--storage", f"local://{target}"]
    older = backup(env, store)["facts"]["backup_name"]
    env.load(800 << 10, seed=21)
    newer = backup(env, store)["facts"]["backup_name"]
    restore(env, store, older)  # RocksDB numbers its next files as it did after `older`
    env.load(800 << 10, seed=22)  # other bytes, under the file numbers `newer` used
    want = env.checksum()
    inc = backup(env, store, "--incremental-from", newer)
    name = inc["facts"]["backup_name"]
    # the restore wrote every file anew: no identity is the base's, so what could match was hashed
    assert inc["facts"]["files_hashed"] > 0 and inc["facts"]["bytes_hashed"] > 0
    files = manifest_files.load(target / name)["files"]
    base = {(f["host"], f["key"].split("/", 1)[1]): f for f in manifest_files.load(target / newer)["files"]}
    clashes = [f for f in files if (b := base.get((f["host"], f["key"].split("/", 1)[1]))) is not None
               and b["size"] == f["size"] and b["sha256"] != f["sha256"]]
    assert clashes, "the trap did not happen: no file of the base shares a name and size with other bytes"
    assert all("reused_from" not in f for f in clashes)
    assert any(f.get("reused_from") == newer for f in files)  # what did not change is still reused
    for f in files:
        if f.get("reused_from"):
            assert hashlib.sha256((target / f["key"]).read_bytes()).hexdigest() == f["sha256"]
    env.load(200 << 10, seed=23)
    restore(env, store, name)
    assert env.checksum() == want
