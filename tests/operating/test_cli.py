"""The commands in-process through brsm.cli.app.main: exit codes, one JSON document, text that names problems."""
import asyncio
import json

import pytest

from brsm.cli import app as app_mod
from brsm.cli.ops_commands import register
from brsm.workflows.layout import manifest_key

from brsm.adapters.storage import open_storage

from .conftest import make_backup


def on_storage(uri, work):
    """Set up or inspect the storage outside main() (which runs its own event loop)."""
    async def go():
        st = open_storage(uri)
        try:
            return await work(st)
        finally:
            await st.close()

    return asyncio.run(go())


def backup(uri, **kw):
    return on_storage(uri, lambda st: make_backup(st, **kw))


@pytest.fixture(autouse=True)
def cli_env(monkeypatch, tmp_path):
    monkeypatch.setenv("BRSM_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("BRSM_CONFIG", raising=False)
    monkeypatch.setenv("COLUMNS", "250")  # rich tables: room for whole names
    if not any(c.name == "show" for c in app_mod.app.registered_commands):
        register(app_mod.app)  # until app.py calls register itself


def run(capsys, *args):
    code = app_mod.main(list(args))
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def run_json(capsys, *args):
    code, out, err = run(capsys, *args, "--json")
    assert len(out.strip().splitlines()) == 1, out  # exactly one document
    return code, json.loads(out)


def test_show(capsys, local_uri):
    good = backup(local_uri, age_days=3, seed=1)
    inc = backup(local_uri, age_days=2, kind="incomplete", seed=2)
    br = backup(local_uri, age_days=1, kind="nebula-br", seed=3)
    code, doc = run_json(capsys, "show", "--storage", local_uri)
    assert code == 0 and doc["storage"] == local_uri
    states = {b["name"]: (b["state"], b["made_by"], b["checksums"]) for b in doc["backups"]}
    assert states == {good.name: ("complete", "brsm", True), inc.name: ("incomplete", "unknown", False),
                      br.name: ("complete", "nebula-br", False)}
    assert doc["backups"][0]["created"].endswith("Z") and doc["backups"][0]["spaces"] == ["nba", "social"]
    code, out, _ = run(capsys, "show", "--storage", local_uri)
    assert code == 0 and good.name in out and br.name in out and "complete*" in out and "nebula-br" in out
    assert "incomplete" in out and "no checksums" in out


def test_show_empty_and_bad_uris(capsys, local_uri):
    code, out, _ = run(capsys, "show", "--storage", local_uri)
    assert code == 0 and "no backups" in out
    code, doc = run_json(capsys, "show", "--storage", "ftp://x/y")
    assert code == 2 and "s3://bucket/prefix" in doc["hint"]
    code, _, err = run(capsys, "show", "--storage", "local://relative/path")
    assert code == 2 and "hint:" in err and "local:///" in err
    code, doc = run_json(capsys, "show")
    assert code == 2 and "no storage given" in doc["error"]


def test_show_takes_the_storage_from_the_config(capsys, tmp_path, local_uri):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[cluster]\nmeta = ["127.0.0.1:9559"]\n[storage]\ndefault = "{local_uri}"\n')
    code, doc = run_json(capsys, "show", "--config", str(cfg))
    assert code == 0 and doc == {"storage": local_uri, "backups": []}


def test_verify(capsys, local_uri):
    b = backup(local_uri)
    code, doc = run_json(capsys, "verify", b.name, "--storage", local_uri)
    assert code == 0 and doc["ok"] and doc["mode"] == "quick" and doc["checked"] == len(b.files)
    code, out, _ = run(capsys, "verify", b.name, "--storage", local_uri, "--full")
    assert code == 0 and "ok" in out
    async def damage(st):
        data = bytearray(await st.get_bytes(b.key(3)))
        data[0] ^= 0xFF
        await st.put_bytes(b.key(3), bytes(data))
        await st.delete(b.key(5))

    on_storage(local_uri, damage)
    code, doc = run_json(capsys, "verify", b.name, "--storage", local_uri, "--full")
    assert code == 6 and doc["exit_code"] == 6 and not doc["ok"] and doc["error"]
    assert {(p["key"], p["problem"]) for p in doc["problems"]} == {(b.key(3), "sha256"), (b.key(5), "missing")}
    code, out, err = run(capsys, "verify", b.name, "--storage", local_uri)
    assert code == 6 and f"missing      {b.key(5)}" in out and "failed verification" in err and "hint:" in err
    code, doc = run_json(capsys, "verify", b.name, "--storage", local_uri, "--sample", "100%", "--seed", "3")
    assert code == 6 and doc["seed"] == 3 and doc["sample"] == 1.0


def test_verify_flags(capsys, local_uri):
    code, doc = run_json(capsys, "verify", "BACKUP_X", "--storage", local_uri, "--quick", "--full")
    assert code == 2 and "one of" in doc["error"]
    code, doc = run_json(capsys, "verify", "BACKUP_X", "--storage", local_uri, "--sample", "lots")
    assert code == 2
    code, doc = run_json(capsys, "verify", "BACKUP_X", "--storage", local_uri)
    assert code == 2 and "no backup named BACKUP_X" in doc["error"]


def test_prune_dry_run_then_confirm(capsys, local_uri):
    names = [backup(local_uri, age_days=a, seed=i, files_per_space=1).name for i, a in enumerate((40, 35, 20, 2))]
    inc = backup(local_uri, age_days=60, kind="incomplete", seed=9).name

    def keys():
        return {o.key for o in on_storage(local_uri, lambda st: st.list(""))}

    before = keys()
    code, doc = run_json(capsys, "prune", "--storage", local_uri, "--keep-last", "1", "--keep-within", "30d")
    assert code == 0 and doc["dry_run"] is True
    assert sorted(d["name"] for d in doc["delete"]) == sorted(names[:2])
    assert sorted(d["name"] for d in doc["kept"]) == sorted(names[2:])
    assert [d["name"] for d in doc["skipped"]] == [inc] and "gc" in doc["note"]
    assert keys() == before  # dry run: nothing deleted
    code, out, _ = run(capsys, "prune", "--storage", local_uri, "--keep-last", "1", "--keep-within", "30d")
    assert code == 0 and "would delete" in out and "add --yes" in out and "brsm gc" in out
    code, doc = run_json(capsys, "prune", "--storage", local_uri, "--keep-last", "1", "--keep-within", "30d",
                         "--confirm")
    assert code == 0 and doc["dry_run"] is False and sorted(doc["deleted"]) == sorted(names[:2])
    left = set(on_storage(local_uri, lambda st: st.list_dirs("")))
    assert left == {names[2], names[3], inc}
    assert keys() == {k for k in before if k.split("/")[0] in left}
    assert "secret" not in json.dumps(doc).lower()
    # issue 14: the deletion is a journaled operation; ops lists it, audit names every deleted backup
    op = doc["op_id"]
    code, ops = run_json(capsys, "ops")
    assert code == 0 and [(o["kind"], o["state"]) for o in ops if o["id"] == op] == [("prune", "CLEANED")]
    code, audit = run_json(capsys, "audit", str(op))
    assert code == 0
    assert sorted(e["data"]["name"] for e in audit["events"] if e["type"] == "BackupDeleted") == sorted(names[:2])


def test_a_prune_stopped_after_its_plan_is_finished_by_resume(capsys, local_uri, monkeypatch):
    names = [backup(local_uri, age_days=a, seed=i, files_per_space=1).name for i, a in enumerate((9, 8, 1))]
    monkeypatch.setenv("BRSM_FAILPOINTS", "after:SCANNED=raise")
    code, _, err = run(capsys, "prune", "--storage", local_uri, "--keep-last", "1", "--confirm")
    assert code == 5 and "failpoint after:SCANNED" in err and "brsm resume" in err, err
    assert set(on_storage(local_uri, lambda st: st.list_dirs(""))) == set(names)  # nothing deleted yet
    monkeypatch.delenv("BRSM_FAILPOINTS")
    op = max(o["id"] for o in run_json(capsys, "ops")[1])
    code, doc = run_json(capsys, "resume", str(op))
    assert code == 0 and doc["state"] == "CLEANED", doc
    assert set(on_storage(local_uri, lambda st: st.list_dirs(""))) == {names[2]}
    code, audit = run_json(capsys, "audit", str(op))
    assert sorted(e["data"]["name"] for e in audit["events"] if e["type"] == "BackupDeleted") == sorted(names[:2])


def test_prune_needs_a_policy(capsys, local_uri):
    code, doc = run_json(capsys, "prune", "--storage", local_uri)
    assert code == 2 and "--keep-last" in doc["error"]
    code, _, err = run(capsys, "prune", "--storage", local_uri, "--keep-within", "soon")
    assert code == 2 and "not a duration" in err


def test_prune_keeps_a_backup_an_unfinished_operation_uses(capsys, local_uri, tmp_path):
    from journal import Journal

    from brsm.engine import events as ev
    from brsm.home import journal_path

    old = backup(local_uri, age_days=10, seed=1, files_per_space=1).name
    backup(local_uri, age_days=1, seed=2, files_per_space=1)
    journal_path().parent.mkdir(parents=True, exist_ok=True)
    j = Journal.open(journal_path())
    try:
        op = j.create_operation(kind="restore", params={"name": old, "storage": local_uri}, who="test",
                                version="0", target=local_uri)
        with j.driver(op.id) as w:
            w.append(ev.OPERATION_CREATED, {"kind": "restore", "params": {"name": old, "storage": local_uri}})
    finally:
        j.close()
    code, doc = run_json(capsys, "prune", "--storage", local_uri, "--keep-last", "1", "--confirm")
    assert code == 0 and doc["deleted"] == []
    assert f"in use by unfinished operation {op.id}" in doc["kept"][0]["why"]


def test_config_check(capsys, tmp_path):
    good = tmp_path / "good.toml"
    good.write_text('[cluster]\nname = "prod"\nmeta = ["10.0.0.1:9559", "10.0.0.2:9559"]\n'
                    '[ssh]\nuser = "nebula"\n[[hosts]]\naddress = "10.0.0.21"\nssh_port = 2222\n'
                    '[storage]\ndefault = "s3://bucket/prefix"\n')
    code, doc = run_json(capsys, "config", "check", str(good))
    assert code == 0 and doc["ok"] and doc["meta"] == ["10.0.0.1:9559", "10.0.0.2:9559"]
    assert doc["hosts"][0] == {"address": "10.0.0.21", "ssh_host": "10.0.0.21", "ssh_port": 2222, "user": "nebula",
                               "install_dir": "/usr/local/nebula", "data_paths": []}
    code, out, _ = run(capsys, "config", "check", str(good))
    assert code == 0 and out.startswith("ok") and "10.0.0.21" in out
    bad = tmp_path / "bad.toml"
    bad.write_text('[cluster]\nmeta = ["nope"]\n[ssh]\nport = 70000\n[[hosts]]\nssh_port = 1\n')
    code, doc = run_json(capsys, "config", "check", str(bad))
    assert code == 2 and not doc["ok"] and len(doc["errors"]) == 3
    assert any(f"{bad}:2: cluster.meta" in e for e in doc["errors"])
    code, _, err = run(capsys, "config", "check", str(bad))
    assert code == 2 and "ssh.port" in err and "hint:" in err
    badtoml = tmp_path / "syntax.toml"
    badtoml.write_text("[cluster\n")
    code, doc = run_json(capsys, "config", "check", str(badtoml))
    assert code == 2 and "not valid TOML" in doc["errors"][0]
    code, doc = run_json(capsys, "config", "check", str(tmp_path / "missing.toml"))
    assert code == 2 and "cannot read" in doc["errors"][0]
    baduri = tmp_path / "uri.toml"
    baduri.write_text('[cluster]\nmeta = ["10.0.0.1:9559"]\n[storage]\ndefault = "ftp://x"\n')
    code, doc = run_json(capsys, "config", "check", str(baduri))
    assert code == 2 and "storage.default" in doc["errors"][0] and "s3://" in doc["hint"]


def test_storage_errors_surface_with_hints(capsys, local_uri, monkeypatch):
    from brsm import wiring
    from brsm.adapters.storage.memory import MemoryStorage

    b = backup(local_uri)
    on_storage(local_uri, lambda st: st.put_bytes(manifest_key(b.name), b"{}"))
    code, doc = run_json(capsys, "verify", b.name, "--storage", local_uri)
    assert code == 6 and doc["problems"][0]["problem"] == "unreadable"

    def failing(params, cfg):
        mem = MemoryStorage()
        mem.inject_fault("list_dirs", count=-1, permanent=True, message="bucket gone")
        return mem

    monkeypatch.setattr(wiring, "open_storage_for", failing)
    code, doc = run_json(capsys, "show", "--storage", local_uri)
    assert (code, doc["error"], doc["hint"]) == (5, "bucket gone", "injected by the test")
    code, _, err = run(capsys, "prune", "--storage", local_uri, "--keep-last", "3")
    assert code == 5 and "brsm: error: bucket gone" in err and "hint: injected by the test" in err


def test_verify_full_of_a_backup_whose_manifest_was_deleted_is_not_ok(capsys, local_uri):
    """Issue 13: the manifest deleted and a file changed (same size): `verify --full` said
    `ok … 0 object(s) re-hashed`, exit 0. It checked nothing: it says so and exits 6."""
    b = backup(local_uri)

    async def tamper(st):
        await st.delete(manifest_key(b.name))
        data = bytearray(await st.get_bytes(b.key(3)))
        data[0] ^= 0xFF
        await st.put_bytes(b.key(3), bytes(data))

    on_storage(local_uri, tamper)
    code, out, _ = run(capsys, "show", "--storage", local_uri)
    assert "complete*" in out and "manifest was deleted" in out and "--allow-unverified" in out
    code, out, err = run(capsys, "verify", b.name, "--storage", local_uri)  # quick: structure only, and says so
    assert code == 0 and "no checksums" in out, (out, err)
    for flags in (["--full"], ["--sample", "50%"]):
        code, out, err = run(capsys, "verify", b.name, "--storage", local_uri, *flags)
        assert code == 6 and f"{b.name}: ok" not in out, (out, err)
        assert "could not be verified" in err and "re-hashed 0 objects" in err and "--allow-unverified" in err
        code, doc = run_json(capsys, "verify", b.name, "--storage", local_uri, *flags)
        assert code == 6 and not doc["ok"] and doc["hashed_files"] == 0
        assert [p["problem"] for p in doc["problems"]] == ["unverifiable"]
