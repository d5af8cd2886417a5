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
        p = env.brsm("start", "restore", "--config", env.config, "--storage", store, "--name", name)
        assert p.returncode != 0, p.stderr[-3000:]
        assert f"{link} is a symbolic link, not a directory" in p.stderr, p.stderr[-3000:]
        assert link.is_symlink() and list(elsewhere.iterdir()) == [], "nothing written through it, nor removed"
        assert env.checksum() == before, "the cluster's data is as it was"
        assert services_up(env) and cluster.status(str(env.root))["all_up"]
    finally:
        link.unlink()
