"""Issue 16: backups on the direct data path — each host sends its own files to S3/OSS with URLs
brsm signs per part — on the sandbox's real sshd, python3 and object stores."""
from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.sandbox


@pytest.mark.parametrize("store", ["s3", "oss"])
def test_a_direct_backup_equals_one_through_brsm_and_restores(sandbox, store):
    env = sandbox
    loc = env.s3(f"direct-{store}") if store == "s3" else env.oss(f"direct-{store}")
    before = env.checksum()
    via = env.ok("start", "backup", "--config", env.config, *loc)
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
    env.ok("start", "restore", "--config", env.config, *loc, "--name", name, "--verify", "full")
    assert env.checksum() == before
