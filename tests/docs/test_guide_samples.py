"""The console samples of docs/user-guide.md are what brsm prints: every marked block is run as written on
one sandbox (scripts/guide_samples.py) and compared with the guide after the same normalisation, so a
change of output that was not regenerated into the guide fails here."""
from __future__ import annotations

import datetime as dt
import importlib.util
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

pytest.importorskip("brsm.sandbox.cli", reason="the [sandbox] extra is not installed")

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "user-guide.md"


def _gen():
    spec = importlib.util.spec_from_file_location("guide_samples", ROOT / "scripts" / "guide_samples.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["guide_samples"] = mod
    spec.loader.exec_module(mod)
    return mod


gs = _gen()


# -- the pure parts ------------------------------------------------------------------------------------


def test_samples_are_found_with_their_commands_and_groups():
    text = ("intro\n<!-- sample: a -->\n```console\n$ brsm one\nout\n\nstill out\n\n$ brsm two  # note\nmore\n```\n"
            "<!-- /sample -->\n```console\n$ brsm unmarked\n```\n")
    (s,) = gs.samples(text)
    assert s.name == "a"
    assert s.script() == ["brsm one", None, "brsm two  # note"]
    body = gs.render_block(s.script(), ["new 1\n", "new 2\nnew 3\n"])
    assert body == "$ brsm one\nnew 1\n\n$ brsm two  # note\nnew 2\nnew 3\n"
    out = gs.rewrite(text, {"a": body})
    assert "new 3" in out and "$ brsm unmarked" in out and "more" not in out


def test_display_maps_a_run_to_the_guides_values_and_back_into_commands():
    n = gs.Normaliser("/tmp/gx7", user_host="alice@ci-42", journal_ids=("0123456789ab",),
                      guide_names=["BACKUP_2026_11_24_15_23_30"])
    out = n.display(
        "/tmp/gx7/sb/cluster.toml 127.211.0.101 http://127.211.0.2:51234 http://127.211.0.3:51235\n"
        " BACKUP_2025_01_02_03_04_05  2025-01-02 03:04  by alice@ci-42 journal 0123456789ab\n"
        "2025-01-02T03:04:15.123456Z 03:05:00\n"
        " 1  local:///tmp/gx7/backups  alice@ci-42\n")
    # times keep their distances, shifted by whole minutes; a padded table cell keeps its column
    assert out == ("/tmp/sb/cluster.toml 127.79.0.101 http://127.79.0.2:46211 http://127.79.0.3:42331\n"
                   " BACKUP_2026_11_24_15_23_05  2026-11-24 15:23  by root@vm journal 11a5a154b44f\n"
                   "2026-11-24T15:23:15.123456Z 15:24:00\n"
                   " 1  local:///tmp/backups      root@vm\n")
    cmd = "brsm verify BACKUP_2026_11_24_15_23_30 --storage local:///tmp/backups --dir /tmp/sb"
    assert n.command(cmd) == ("brsm verify BACKUP_2025_01_02_03_04_05 --storage local:///tmp/gx7/backups "
                              "--dir /tmp/gx7/sb")
    assert n.shown_command(cmd) == "brsm verify BACKUP_2026_11_24_15_23_05 --storage local:///tmp/backups --dir /tmp/sb"


def test_backup_names_are_taken_from_outputs_in_order():
    text = ("<!-- sample: a -->\n```console\n$ brsm x --name BACKUP_2026_01_01_00_00_09\nBACKUP_2026_01_01_00_00_05\n"
            "BACKUP_2026_01_01_00_00_09 BACKUP_2026_01_01_00_00_05\n```\n<!-- /sample -->\n")
    assert gs.backup_names(text) == ["BACKUP_2026_01_01_00_00_05", "BACKUP_2026_01_01_00_00_09"]


def test_comparable_ignores_what_a_slower_run_changes_and_nothing_else():
    a = " 1   backup  CLEANED  2026-11-24 15:23:30  15:23:34  BACKUP_2026_11_24_15_23_30  61   94.9 MiB\n"
    b = " 1   backup  CLEANED  2026-11-24 15:23:31  15:23:39  BACKUP_2026_11_24_15_23_31  62  101.0 MiB\n"
    assert gs.comparable(a) == gs.comparable(b)
    assert gs.comparable(a) != gs.comparable(a.replace("CLEANED", "FAILED"))
    assert gs.comparable("sandbox up in 1.7s") == gs.comparable("sandbox up in 12.25s")
    cut = '     1  2026-11-24T15:23:17.720472Z  OperationCreated   kind=backup params={"config":"/tmp/sb/cluster.toml",'
    assert gs.comparable(cut + '"hosts":["/tmp/gx1/sb/hosts/...') == gs.comparable(cut + '"hosts":["/tmp/gx2/sb/hos...')
    slow = "a\nbrsm: waiting on metad at 127.79.0.11:9559: createBackup has not answered for 5 s\nb"
    assert gs.comparable(slow) == gs.comparable("a\nb")
    # equal checksums stay equal, different ones stay different (a restore that changed data shows)
    h1, h2 = "a" * 64, "b" * 64
    assert gs.comparable(f"{h1}\n{h1}") != gs.comparable(f"{h1}\n{h2}")


# -- the guide against a real run ----------------------------------------------------------------------


@pytest.mark.sandbox
def test_guide_samples_are_what_brsm_prints_now():
    text = GUIDE.read_text()
    names = [s.name for s in gs.samples(text)]
    assert {"quickstart", "check", "maintenance", "journal"} <= set(names), names
    # a short dir, as the generator's: a long temporary path would make brsm's tables wrap
    tmp = Path(tempfile.mkdtemp(prefix="g", dir="/tmp"))
    try:
        bodies = gs.run_samples(text, tmp, brsm_bin=str(Path(sys.executable).parent / "brsm"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for s in gs.samples(text):
        assert gs.comparable(s.body) == gs.comparable(bodies[s.name]), (
            f"docs/user-guide.md sample {s.name!r} is not what brsm prints now; run scripts/gen-guide-samples.\n"
            f"--- now:\n{bodies[s.name]}")
    quick = bodies["quickstart"]
    # the quick start's point: the restore brought the data back as it was before the change
    sums = [ln for ln in quick.splitlines() if ln.startswith("space1 ")]
    assert len(sums) == 2 and sums[0] == sums[1], quick
    assert "restore finished (CLEANED)" in quick and "brsm: error" not in "".join(bodies.values())


# -- what the guide quotes by hand, against the code that prints or uses it ----------------------------


def test_the_guides_ssh_keyscan_appends_to_the_file_brsm_reads():
    from brsm.adapters.host_keys import known_hosts_path

    text = GUIDE.read_text()
    # the instruction (a command line of its own), not the hint quoted from a run with [ssh] known_hosts set
    targets = re.findall(r"^\s*ssh-keyscan [^\n>]*>> (\S+)", text, flags=re.M)
    assert targets, "the guide shows how to add a host key"
    for t in targets:
        assert os.path.expanduser(t) == known_hosts_path(None), t


def test_the_guides_lock_message_is_the_one_brsm_prints():
    from brsm.workflows.lease_holder import LeaseInfo

    until = dt.datetime(2026, 11, 24, 15, 25, 43, tzinfo=dt.timezone.utc).timestamp()
    holder = LeaseInfo(op_id=12, kind="backup", who="root@vm", machine="vm", pid=6615, expires=until,
                       ref="5e0c3f1a9b2d-12", home="/var/lib/brsm")
    text = GUIDE.read_text()
    assert f"brsm: error: cluster is locked by {holder.describe()}\nhint: {holder.where_to_continue()}\n" in text


def test_the_guides_scratch_dir_names_are_the_ones_a_restore_makes():
    from brsm.engine.step_context import op_ref
    from brsm.workflows.restore import placement

    text = GUIDE.read_text()
    ref = op_ref("3f9a0c12be47", 19)
    made = {"nebula_brsm_new": placement.staging_name(ref), "nebula_brsm_old": placement.aside_name(ref),
            "brsm_restore": placement.meta_restore_dir("/m", ref).rsplit("/", 1)[1]}
    shown = re.findall(r"\b(nebula_brsm_new|nebula_brsm_old|brsm_restore)_(<[^`)]*?>)(?=[`)/ ])", text)
    assert {k for k, _ in shown} == set(made), shown
    for kind, placeholder in shown:
        assert placeholder == "<journal id>-<op>", (kind, placeholder)
        assert made[kind] == f"{kind}_{ref}"
