"""`brsm sandbox up --nebula-version`: the release every daemon plays, taken from the command line."""
from __future__ import annotations

import pytest
from nebula3.meta import ttypes as meta

from brsm.sandbox import control
from brsm.sandbox.hosts import pids_mentioning

from .conftest import brsm, start_sandbox, stop_sandbox

pytestmark = pytest.mark.sandbox


def test_a_release_the_stand_ins_do_not_play_is_refused_before_anything_starts(tmp_path):
    root = tmp_path / "x"
    r = brsm("sandbox", "up", "--dir", str(root), "--nebula-version", "2.6", check=False)
    assert r.returncode == 2 and "--nebula-version '2.6'" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert pids_mentioning(str(root)) == [] and not (root / "sandbox.json").exists()


def test_up_with_a_release_reports_it_everywhere(tmp_path):
    sb = start_sandbox(tmp_path / "v", "--storage-hosts", "1", "--nebula-version", "3.2")
    try:
        assert sb.info["nebula_version"] == "3.2.0"
        with control.MetaClient(sb.info["meta"]) as c:
            for t in (meta.ListHostType.META, meta.ListHostType.STORAGE):
                assert {h.version.decode() for h in c.call("listHosts", meta.ListHostsReq(type=t)).hosts} == {"3.2.0"}
        conf = (tmp_path / "v" / "hosts" / "storage1" / "install" / "etc" / "nebula-storaged.conf").read_text()
        assert "--sandbox_nebula_version=3.2.0" in conf.splitlines()
    finally:
        stop_sandbox(sb)
