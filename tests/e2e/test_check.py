"""Issue 17: `brsm check` runs every preflight without changing anything, one line per check, exit 0
only when all pass; with several problems at once it names each."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from brsm.sandbox import cluster
from tests.e2e.test_backup_restore import leases, snapshots

pytestmark = pytest.mark.sandbox


def _state_of_everything(env, store: Path) -> tuple:
    return (env.checksum(), snapshots(env), leases(env), sorted(p.name for p in store.rglob("*")) if store.exists() else [])


def test_check_passes_on_a_healthy_cluster_and_names_every_problem_at_once(sandbox, tmp_path):
    env = sandbox
    store = tmp_path / "b"
    store.mkdir()
    before = _state_of_everything(env, store)
    doc = env.ok("check", "--config", env.config, "--storage", f"local://{store}")
    assert doc["ok"] and all(c["ok"] for c in doc["checks"])
    names = [c["check"] for c in doc["checks"]]
    assert "metad" in names and "topology" in names and f"storage local://{store}" in names
    assert sum(n.startswith("ssh ") for n in names) == len(env.info["hosts"])
    assert sum(n.startswith("nebula.service storaged") for n in names) == 3
    assert _state_of_everything(env, store) == before, "check changed nothing"

    # three problems at once: one host's SSH closed, another's key unknown, a third's agent stopped
    storages = sorted((h for h in env.info["hosts"] if h["name"].startswith("storage")), key=lambda h: h["name"])
    closed, unknown, agentless = storages[0], storages[1], storages[2]
    kh = Path(tomllib_ssh(env)["known_hosts"])
    partial = tmp_path / "known_hosts"
    partial.write_text("".join(ln for ln in kh.read_text().splitlines(keepends=True)
                               if not ln.startswith(unknown["address"] + ",")))
    cluster.ssh_fault(str(env.root), closed["name"], "close")
    st = cluster.load_state(str(env.root))
    i = next(i for i, h in enumerate(st["hosts"]) if h["name"] == agentless["name"])
    cluster.stop_agent(st["hosts"][i])
    try:
        _until_list_cluster_fails(env)  # the agent's last heartbeat must go stale first
        p = env.brsm("check", "--config", env.config, "--known-hosts", str(partial), "--json")
        assert p.returncode == 4, p.stderr[-2000:]
        doc = json.loads(p.stdout)
        failed = {c["check"]: c for c in doc["checks"] if not c["ok"]}
        assert f"ssh {closed['address']}" in failed, failed
        assert f"ssh {unknown['address']}" in failed and "known_hosts" in json.dumps(failed[f"ssh {unknown['address']}"])
        assert "nebula-agent" in failed and agentless["address"] in failed["nebula-agent"]["detail"], failed
        assert doc["exit_code"] == 4 and not doc["ok"]
        text = env.brsm("check", "--config", env.config, "--known-hosts", str(partial))
        assert text.returncode == 4 and text.stdout.count("FAIL") >= 3 and "brsm: error:" in text.stderr
    finally:
        cluster.ssh_fault(str(env.root), closed["name"], "clear")
        st = cluster.load_state(str(env.root))
        cluster.start_agent(st, i)
        cluster.save_state(str(env.root), st)
        cluster._wait_agents(st, 30)
    assert _state_of_everything(env, store) == before
    assert env.ok("check", "--config", env.config)["ok"]


def tomllib_ssh(env) -> dict:
    import tomllib

    return tomllib.loads(Path(env.config).read_text())["ssh"]


def _until_list_cluster_fails(env, timeout: float = 30.0) -> None:
    import time

    from nebula3.meta import ttypes as meta

    from brsm.sandbox import control

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with control.MetaClient(env.meta if isinstance(env.meta, str) else env.meta[0], timeout=10.0) as c:
            if c.call("listCluster", meta.ListClusterInfoReq()).code != 0:
                return
        time.sleep(0.5)
    raise AssertionError("listCluster still answers with an agent stopped")
