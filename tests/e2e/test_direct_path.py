"""Issue 16: backups on the direct data path — each host sends its own files to S3/OSS with URLs
brsm signs per part — on the sandbox's real sshd, python3 and object stores."""
from __future__ import annotations

import json
import os
import signal

import pytest

from .direct_helpers import helpers_running, no_helper_within
from .test_interrupts import SLOW, no_run_left_behind, started  # noqa: F401 - the fixture stops its runs

pytestmark = pytest.mark.sandbox


@pytest.mark.parametrize("store", ["s3", "oss"])
def test_a_direct_backup_equals_one_through_brsm_and_restores(sandbox, store):
    env = sandbox
    loc = env.s3(f"direct-{store}") if store == "s3" else env.oss(f"direct-{store}")
    before = env.checksum()
    via = env.ok("start", "backup", "--config", env.config, *loc, "--data-path", "via-brsm")
    res = env.ok("start", "backup", "--config", env.config, *loc, "--data-path", "direct")
    f = res["facts"]
    assert f["data_path"] == "direct", f.get("data_path_why")
    assert f["bytes_sent"] == 0, "no file byte crossed brsm"
    events = env.ok("audit", str(res["op_id"]))["events"]
    copied = {e["data"]["key"].split("/", 1)[1]: (e["data"]["size"], e["data"]["sha256"])
              for e in events if e["type"] == "FileCopied"}
    via_events = env.ok("audit", str(via["op_id"]))["events"]
    via_copied = {e["data"]["key"].split("/", 1)[1]: (e["data"]["size"], e["data"]["sha256"])
                  for e in via_events if e["type"] == "FileCopied"}
    # nothing was written between the two backups: the storage checkpoints are the same files, byte for
    # byte; metad's checkpoint SSTs differ per snapshot (sequence numbers), so there names and sizes
    data = lambda c: {k: v for k, v in c.items() if k.startswith("data/")}  # noqa: E731
    meta = lambda c: {k: v[0] for k, v in c.items() if k.startswith("meta/")}  # noqa: E731
    assert data(copied) and data(copied) == data(via_copied), "the same files, sizes and SHA-256 as through brsm"
    assert meta(copied) and meta(copied) == meta(via_copied)
    text = json.dumps(events)
    assert "Signature" not in text and "X-Amz-" not in text, "no signed URL in the journal"
    name = f["backup_name"]
    checked = env.ok("verify", name, "--config", env.config, *loc, "--full")  # every object re-hashed against the manifest
    assert checked["ok"] and checked["hashed_files"] == len(copied), checked
    env.load(1 << 20, seed=31)
    back = env.ok("start", "restore", "--yes", "--config", env.config, *loc, "--name", name, "--verify", "full",
                  "--data-path", "direct")
    assert back["facts"]["data_path"] == "direct", back["facts"].get("data_path_why")
    assert env.checksum() == before
    restored = [e for e in env.ok("audit", str(back["op_id"]))["events"] if e["type"] == "FileRestored"]
    assert len(restored) >= len(copied), "every file came down by its host"
    assert helpers_running(env) == []


def _s3_state(env, prefix: str) -> tuple[list[str], list[str]]:
    import boto3

    s3 = env.info["s3"]
    c = boto3.client("s3", endpoint_url=s3["endpoint"], aws_access_key_id=s3["access_key_id"],
                     aws_secret_access_key=s3["secret_access_key"], region_name="us-east-1")
    objects = [o["Key"] for o in c.list_objects_v2(Bucket=s3["bucket"], Prefix=prefix).get("Contents", [])]
    uploads = [u["Key"] for u in c.list_multipart_uploads(Bucket=s3["bucket"], Prefix=prefix).get("Uploads", [])]
    return objects, uploads


@pytest.mark.parametrize("recovery", ["resume", "rollback"])
def test_a_killed_direct_backup_leaves_no_helper_and_resumes_or_rolls_back(sandbox, recovery):
    """SIGKILL brsm while the hosts are sending parts: every helper ends with its SSH channel (no host
    goes on uploading), the resume continues from the journaled parts and verifies, the rollback
    leaves no object and no open upload."""
    env = sandbox
    prefix = f"direct-kill-{recovery}"
    loc = env.s3(prefix)
    run = started(env, "start", "backup", "--config", env.config, *loc, "--data-path", "direct", *SLOW)
    run.wait_for("PartUploaded", timeout=120)
    assert helpers_running(env), "the hosts' helpers are sending"
    run.kill(signal.SIGKILL)
    run.finish()
    assert no_helper_within(env, 5), "a helper outlived brsm"
    done = env.ok(recovery, str(run.op))
    if recovery == "resume":
        name = done["facts"]["backup_name"]
        assert done["facts"]["data_path"] == "direct"
        assert env.ok("verify", name, "--config", env.config, *loc, "--full")["ok"]
        skipped = [d for t, d in run.events() if t == "PartUploaded"]
        assert skipped, "the parts stored before the kill were journaled"
    else:
        assert done["state"] == "ROLLED_BACK"
        assert _s3_state(env, prefix + "/") == ([], [])
    assert helpers_running(env) == []


@pytest.mark.parametrize("fault,why", [("no-python3", "python3 did not run the helper"),
                                       ("no-store", "cannot reach the store")])
def test_a_host_that_cannot_go_direct_is_named_auto_falls_back_and_direct_is_refused(sandbox, fault, why):
    env = sandbox
    host = next(h for h in env.info["hosts"] if "storage" in h["roles"])
    assert env.brsm("sandbox", "fault", "--dir", str(env.root), "direct", host["name"], fault).returncode == 0
    try:
        loc = env.s3(f"direct-fault-{fault}")
        p = env.brsm("start", "backup", "--config", env.config, *loc, "--data-path", "direct", "--json")
        assert p.returncode == 4, p.stdout[-2000:]
        err = json.loads(p.stdout.strip().splitlines()[-1])
        assert host["address"] in err["error"] and why in err["error"], err
        res = env.ok("start", "backup", "--config", env.config, *loc, "--data-path", "auto")
        assert res["facts"]["data_path"] == "via-brsm"
        assert host["address"] in res["facts"]["data_path_why"] and why in res["facts"]["data_path_why"]
        assert res["facts"]["bytes_sent"] > 0
        # `brsm check` names the same host, rather than "all checks passed" before a run that goes through brsm
        p = env.brsm("check", "--config", env.config, *loc, "--json")
        assert p.returncode != 0, p.stdout[-2000:]
        checks = {c["check"]: c for c in json.loads(p.stdout)["checks"]}
        bad = checks[f"direct data path {host['address']}"]
        assert not bad["ok"] and why in bad["detail"] and "through brsm" in bad["hint"], bad
        others = [c for n, c in checks.items() if n.startswith("direct data path ") and host["address"] not in n]
        assert others and all(c["ok"] for c in others), others
    finally:
        env.brsm("sandbox", "fault", "--dir", str(env.root), "direct", host["name"], "clear")
    assert helpers_running(env) == []
    doc = env.ok("check", "--config", env.config, *env.s3("direct-fault-check"))
    assert any(c["check"].startswith("direct data path ") for c in doc["checks"]) and doc["ok"], doc


def test_a_direct_restore_killed_while_staging_leaves_no_helper_and_resumes_exactly(sandbox):
    env = sandbox
    loc = env.s3("direct-restore-kill")
    before = env.checksum()
    name = env.ok("start", "backup", "--config", env.config, *loc, "--data-path", "direct")["facts"]["backup_name"]
    env.load(1 << 20, seed=33)
    run = started(env, "start", "restore", "--yes", "--config", env.config, *loc, "--name", name, "--data-path", "direct",
                  *SLOW)
    run.wait_for("FileRestored", timeout=120)
    run.kill(signal.SIGKILL)
    run.finish()
    assert no_helper_within(env, 5), "a helper outlived brsm"
    done = env.ok("resume", str(run.op))
    assert done["state"] == "CLEANED" and done["facts"]["data_path"] == "direct"
    assert env.checksum() == before


def test_store_errors_during_a_direct_backup_are_retried_with_new_urls(sandbox):
    """Once the hosts are sending, the store answers 503 to the next PUTs: each failed part is asked
    for again (a fresh URL) and the backup completes with every object whole."""
    env = sandbox
    loc = env.s3("direct-503")
    run = started(env, "start", "backup", "--config", env.config, *loc, "--data-path", "direct", "--json", *SLOW)
    run.wait_for("PartUploaded", timeout=120)
    assert env.brsm("sandbox", "fault", "--dir", str(env.root), "store", "s3", "--error", "503", "--count", "4",
                    "--methods", "PUT").returncode == 0
    try:
        p = run.finish(timeout=300)
    finally:
        shown = env.brsm("sandbox", "fault", "--dir", str(env.root), "show", "--json").stdout
        env.brsm("sandbox", "fault", "--dir", str(env.root), "store", "s3", "--clear")
    assert p.returncode == 0, p.stderr[-2000:]
    assert json.loads(shown)["stores"]["s3"]["counters"]["errors_injected"] == 4, "the hosts met the 503s"
    res = json.loads(p.stdout.strip().splitlines()[-1])
    assert res["facts"]["data_path"] == "direct"
    assert env.ok("verify", res["facts"]["backup_name"], "--config", env.config, *loc, "--full")["ok"]


def _fault(env, *args: str) -> None:
    p = env.brsm("sandbox", "fault", "--dir", str(env.root), *args)
    assert p.returncode == 0, p.stderr[-1000:]


def _counters(env, store: str) -> dict:
    shown = env.brsm("sandbox", "fault", "--dir", str(env.root), "show", "--json").stdout
    return json.loads(shown)["stores"][store]["counters"]


@pytest.mark.parametrize("store", ["s3", "oss"])
def test_urls_that_expire_in_flight_are_signed_again(sandbox, store):
    """Issue 16's "a URL that expires": once the hosts are sending, the store judges the next presigned
    requests an hour late, and its own expiry check refuses them (403 "Request has expired"): each
    part is asked for again with a fresh URL and the backup completes, every object whole."""
    env = sandbox
    loc = env.s3("direct-late") if store == "s3" else env.oss("direct-late")
    run = started(env, "start", "backup", "--config", env.config, *loc, "--data-path", "direct", "--json", *SLOW)
    run.wait_for("PartUploaded", timeout=120)
    _fault(env, "store", store, "--late", "3600", "--count", "3")
    try:
        p = run.finish(timeout=300)
        late = _counters(env, store)["late_requests"]
    finally:
        _fault(env, "store", store, "--clear")
    assert p.returncode == 0, p.stderr[-2000:]
    assert late == 3, "the hosts used URLs the store took for expired"
    res = json.loads(p.stdout.strip().splitlines()[-1])
    assert res["facts"]["data_path"] == "direct"
    assert env.ok("verify", res["facts"]["backup_name"], "--config", env.config, *loc, "--full")["ok"]


def test_a_store_that_takes_every_url_for_expired_is_named_and_auto_goes_through_brsm(sandbox):
    """brsm's clock far behind the store's: every presigned URL is expired on arrival. The preflight's
    signed probe finds it; auto names it and takes the path through brsm (whose requests are signed in
    a header and are not affected); --data-path direct refuses with exit 4."""
    env = sandbox
    loc = env.s3("direct-expired")
    _fault(env, "store", "s3", "--late", "3600", "--count", "-1")
    try:
        p = env.brsm("start", "backup", "--config", env.config, *loc, "--data-path", "direct", "--json")
        assert p.returncode == 4, p.stdout[-2000:]
        assert "AccessDenied" in json.loads(p.stdout.strip().splitlines()[-1])["error"]
        res = env.ok("start", "backup", "--config", env.config, *loc, "--data-path", "auto")
    finally:
        _fault(env, "store", "s3", "--clear")
    assert res["facts"]["data_path"] == "via-brsm" and "AccessDenied" in res["facts"]["data_path_why"]
    assert helpers_running(env) == []


def test_a_helper_killed_on_its_host_is_replaced_and_the_backup_completes(sandbox):
    """SIGKILL one host's helper mid-file (an OOM killer, an operator's pkill): brsm sees its channel
    end, starts a new one, and the file resumes from its journaled parts; the backup verifies."""
    env = sandbox
    loc = env.s3("direct-helper-kill")
    run = started(env, "start", "backup", "--config", env.config, *loc, "--data-path", "direct", "--json", *SLOW)
    run.wait_for("PartUploaded", timeout=120)
    victims = helpers_running(env)
    assert victims
    os.kill(victims[0], signal.SIGKILL)
    p = run.finish(timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    res = json.loads(p.stdout.strip().splitlines()[-1])
    assert res["facts"]["data_path"] == "direct"
    assert env.ok("verify", res["facts"]["backup_name"], "--config", env.config, *loc, "--full")["ok"]
    assert victims[0] not in helpers_running(env)


def test_sigterm_during_a_direct_backup_rolls_back_and_stops_every_helper_at_once(sandbox):
    """SIGTERM while the hosts are sending: brsm gives the files up, ends each helper's input without
    "exit" (so none finishes its part after brsm let it go), rolls back, and exits 143; no object, no
    open upload and no helper are left."""
    env = sandbox
    prefix = "direct-sigterm"
    loc = env.s3(prefix)
    run = started(env, "start", "backup", "--config", env.config, *loc, "--data-path", "direct", *SLOW)
    run.wait_for("PartUploaded", timeout=120)
    run.kill(signal.SIGTERM)
    p = run.finish(timeout=60)
    assert p.returncode == 143, p.stderr[-2000:]
    assert "interrupted by SIGTERM during COPIED, and rolled back" in p.stderr, p.stderr[-2000:]
    assert no_helper_within(env, 5), "a helper outlived the run"
    assert _s3_state(env, prefix + "/") == ([], [])


@pytest.mark.parametrize("point", ["event:3", "event:4"])
def test_a_run_killed_while_probing_the_hosts_rolls_back_its_probe_uploads(sandbox, point):
    """Found by the sweep (backup s3-direct event:4 rollback): brsm killed in the preflight, after it had
    journaled and opened the hosts' probe uploads. `brsm rollback` took the operation for one that "never
    took effect" (no step begun) and closed it without the storage, leaving the probe uploads open in the
    bucket. A journaled, unremoved probe now sends the rollback the full way, which aborts them."""
    env = sandbox
    prefix = f"direct-probe-kill-{point.replace(':', '')}"
    loc = env.s3(prefix)
    ops = env.ok("ops", "--limit", "1")
    before = ops[0]["id"] if ops else 0
    p = env.brsm("start", "backup", "--config", env.config, *loc, "--data-path", "direct", failpoints=f"{point}=crash")
    assert p.returncode != 0
    op = env.ok("ops", "--limit", "1")[0]["id"]
    assert op > before
    events = env.ok("audit", str(op))["events"]
    assert any(e["type"] == "ProbeWritten" and e["data"].get("upload") for e in events), [e["type"] for e in events]
    done = env.ok("rollback", str(op))
    assert done["state"] == "ROLLED_BACK"
    assert _s3_state(env, prefix + "/") == ([], []), "no probe object, no open probe upload"
    assert no_helper_within(env, 5)
