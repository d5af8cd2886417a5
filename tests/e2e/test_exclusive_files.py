"""Names planted where brsm would create its own (issue 23: a second adversarial operator): a symlink at a
restore's scratch dir. The restore refuses before writing a byte, the link and its target stay as they
were, the cluster keeps serving with its data as it was. Each test fails on the old behaviour (the
scratch dir was taken as it was and the restore exited 0)."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from brsm.sandbox import cluster

from .test_adversary import services_up

pytestmark = pytest.mark.sandbox


def next_ref(env) -> str:
    """The ref the next operation gets: ``<journal id>-<op id>`` (predictable, hence the attack)."""
    con = sqlite3.connect(Path(env.env["BRSM_HOME"]) / "journal.db")
    try:
        jid = con.execute("SELECT value FROM journal_info WHERE key = 'journal_id'").fetchone()[0]
    finally:
        con.close()
    return f"{jid}-{max(int(o['id']) for o in env.ok('ops')) + 1}"


@pytest.mark.parametrize("where", ["meta restore dir", "storage staging dir"])
def test_a_symlink_planted_at_a_scratch_dir_is_refused_and_left(sandbox, tmp_path, where):
    env = sandbox
    store = f"local://{tmp_path / 'b'}"
    name = env.ok("start", "backup", "--config", env.config, "--storage", store)["facts"]["backup_name"]
    env.load(1 << 20, seed=31)  # the cluster moves on: a restore would change it
    before = env.checksum()
    ref = next_ref(env)
    role, prefix = ("meta", "brsm_restore_") if where == "meta restore dir" else ("storage", "nebula_brsm_new_")
    host = next(h for h in env.info["hosts"] if role in h["roles"])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    link = Path(host["data_paths"][0]) / f"{prefix}{ref}"
    link.symlink_to(elsewhere)
    try:
        p = env.brsm("start", "restore", "--yes", "--config", env.config, "--storage", store, "--name", name)
        assert p.returncode != 0, p.stderr[-3000:]
        assert f"{link} is a symbolic link, not a directory" in p.stderr, p.stderr[-3000:]
        assert link.is_symlink() and list(elsewhere.iterdir()) == [], "nothing written through it, nor removed"
        assert env.checksum() == before, "the cluster's data is as it was"
        assert services_up(env) and cluster.status(str(env.root))["all_up"]
    finally:
        link.unlink()


def live_files(env) -> list[tuple[dict, str, str]]:
    """(host, data path, path below its nebula/) of every file of the storage hosts' live data."""
    out = []
    for h in env.info["hosts"]:
        if "storage" not in h["roles"]:
            continue
        for dp in h["data_paths"]:
            base = Path(dp) / "nebula"
            out += [(h, dp, str(p.relative_to(base))) for p in base.rglob("*") if p.is_file()]
    return out


@pytest.mark.parametrize("data_path", ["via-brsm", "direct"])
def test_a_symlink_at_a_temp_name_is_never_written_through(sandbox, tmp_path, data_path):
    """A restore killed after its first file; a symlink planted at the temp name (``<file>.brsm-tmp``) of
    every file it has still to stage; the resume refuses to write through any of them (SFTP create
    with O_EXCL; the helper's O_EXCL|O_NOFOLLOW): their target keeps its bytes and mode, the cluster
    serves its data as it was. Before, the backup's bytes went into the target (chmod 0644), exit 0."""
    env = sandbox
    loc = ["--storage", f"local://{tmp_path / 'b'}"] if data_path == "via-brsm" else env.s3(f"tmp-link-{tmp_path.name}")
    name = env.ok("start", "backup", "--config", env.config, *loc, "--data-path", data_path)["facts"]["backup_name"]
    files = live_files(env)  # the backup's files are the live ones of this moment (its checkpoint)
    env.load(1 << 20, seed=34)
    before = env.checksum()
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    victim.chmod(0o600)
    ref = next_ref(env)
    p = env.brsm("start", "restore", "--yes", "--config", env.config, *loc, "--name", name, "--data-path", data_path,
                 "--concurrency", "1", failpoints="file:1=crash")
    assert p.returncode == 86, p.stderr[-3000:]
    op = ref.rsplit("-", 1)[1]
    links = []
    for h, dp, rel in files:
        staged = Path(dp) / f"nebula_brsm_new_{ref}" / "nebula" / rel
        if staged.exists():
            continue  # staged before the kill
        staged.parent.mkdir(parents=True, exist_ok=True)
        link = staged.parent / (staged.name + ".brsm-tmp")
        if not link.is_symlink():
            link.symlink_to(victim)
            links.append(link)
    assert links
    p = env.brsm("resume", op)
    assert p.returncode != 0, p.stderr[-3000:]
    assert "brsm did not create is in the way" in p.stderr, p.stderr[-3000:]
    assert victim.read_bytes() == b"precious" and victim.stat().st_mode & 0o777 == 0o600
    st = env.ok("ops")[0]["state"]
    if st != "ROLLED_BACK":
        assert env.ok("rollback", op)["state"] == "ROLLED_BACK"
    assert victim.read_bytes() == b"precious", "the rollback removed the links, not what they point at"
    assert env.checksum() == before
    assert services_up(env) and cluster.status(str(env.root))["all_up"]
