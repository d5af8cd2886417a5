"""The most common disaster: a space dropped (or dropped and re-created) after its backup, then the
backup restored. Every restore must pass its checks, end with the backed-up data exact and the
cluster up, for a backup of all spaces and of chosen spaces alike."""
from __future__ import annotations

import pytest
from nebula3.meta import ttypes as mt

from brsm.sandbox.control import MetaClient, check
from tests.e2e.test_backup_restore import aside_dirs, leases

pytestmark = pytest.mark.sandbox


def space_ids(env) -> dict[str, int]:
    with MetaClient(env.meta) as c:
        return {s.name.decode(): s.id.get_space_id() for s in c.listSpaces(mt.ListSpacesReq()).spaces or []}


def drop_space(env, name: str) -> None:
    with MetaClient(env.meta) as c:
        check(c.dropSpace(mt.DropSpaceReq(space_name=name.encode(), if_exists=False)), f"dropSpace {name}")
    assert name not in space_ids(env)


def restore(env, loc, name):
    return env.ok("start", "restore", "--config", env.config, *loc, "--name", name)


def test_drop_a_space_then_restore_a_full_backup(sandbox, tmp_path):
    env = sandbox
    loc = ["--storage", f"local://{tmp_path / 'b'}"]
    before, ids = env.checksum(), space_ids(env)
    name = env.ok("start", "backup", "--config", env.config, *loc)["facts"]["backup_name"]
    drop_space(env, "space1")
    restore(env, loc, name)
    assert env.checksum() == before and space_ids(env) == ids
    assert aside_dirs(env) == [] and leases(env) == []


def test_drop_a_space_then_restore_a_backup_of_that_space(sandbox, tmp_path):
    env = sandbox
    loc = ["--storage", f"local://{tmp_path / 'b'}"]
    before, ids = env.checksum(), space_ids(env)
    name = env.ok("start", "backup", "--config", env.config, *loc, "--spaces", "space1")["facts"]["backup_name"]
    drop_space(env, "space1")
    others = env.checksum()
    res = restore(env, loc, name)
    assert res["facts"]["all_spaces"] is False
    after = env.checksum()
    assert after["space1"] == before["space1"] and space_ids(env) == ids
    assert after["space2"] == others["space2"]
    assert aside_dirs(env) == [] and leases(env) == []


def test_recreate_a_space_then_restore_a_full_backup(sandbox, tmp_path):
    env = sandbox
    loc = ["--storage", f"local://{tmp_path / 'b'}"]
    before, ids = env.checksum(), space_ids(env)
    name = env.ok("start", "backup", "--config", env.config, *loc)["facts"]["backup_name"]
    drop_space(env, "space1")
    env.load(1 << 20, seed=21)  # re-creates space1 (another id) and writes into both spaces
    assert space_ids(env)["space1"] != ids["space1"]
    restore(env, loc, name)
    assert env.checksum() == before and space_ids(env) == ids
    assert aside_dirs(env) == [] and leases(env) == []


def test_recreate_a_space_then_restore_a_backup_of_that_space(sandbox, tmp_path):
    env = sandbox
    loc = ["--storage", f"local://{tmp_path / 'b'}"]
    before, ids = env.checksum(), space_ids(env)
    name = env.ok("start", "backup", "--config", env.config, *loc, "--spaces", "space1")["facts"]["backup_name"]
    drop_space(env, "space1")
    env.load(1 << 20, seed=22)
    recreated = space_ids(env)["space1"]
    assert recreated != ids["space1"]
    newer = env.checksum()
    res = restore(env, loc, name)
    assert res["facts"]["replaced_spaces"] == {str(recreated): "space1"}
    after = env.checksum()
    assert after["space1"] == before["space1"] and space_ids(env) == ids
    assert after["space2"] == newer["space2"], "the other space keeps its newer data"
    assert aside_dirs(env) == [] and leases(env) == []
