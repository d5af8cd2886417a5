"""Several sandboxes side by side: each gets its own 127.k.0.0/24, started at the same time."""
from __future__ import annotations

import concurrent.futures as cf

import pytest

from brsm.sandbox.hosts import pids_mentioning

from .conftest import brsm, brsm_json, start_sandbox, stop_sandbox

pytestmark = pytest.mark.sandbox


def test_two_sandboxes_at_once(tmp_path):
    roots = [tmp_path / "a", tmp_path / "b"]
    sbs = []
    try:
        with cf.ThreadPoolExecutor(2) as ex:
            futs = [ex.submit(start_sandbox, r, "--storage-hosts", "1") for r in roots]
            for f in futs:
                sbs.append(f.result())
        ks = {sb.info["hosts"][0]["address"].split(".")[1] for sb in sbs}
        assert len(ks) == 2, "both sandboxes got the same address range"
        for sb in sbs:
            assert brsm_json("sandbox", "status", "--dir", sb.dir)["all_up"] is True
            assert sb.ssh("storage1", "true").returncode == 0
        # stopping one leaves the other running
        stop_sandbox(sbs[0])
        assert brsm_json("sandbox", "status", "--dir", sbs[1].dir)["all_up"] is True
    finally:
        for sb in sbs:
            stop_sandbox(sb)
        for r in roots:
            brsm("sandbox", "down", "--dir", str(r), check=False)
            assert pids_mentioning(str(r)) == []


def test_down_purge(tmp_path):
    root = tmp_path / "p"
    sb = start_sandbox(root, "--storage-hosts", "1")
    rep = brsm_json("sandbox", "down", "--dir", sb.dir, "--purge")
    assert rep.get("purged") is True
    assert not root.exists()
    assert pids_mentioning(sb.dir) == []
    r = brsm("sandbox", "status", "--dir", sb.dir, check=False)
    assert r.returncode == 2 and "no sandbox" in r.stderr
