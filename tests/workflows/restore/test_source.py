"""Pure decisions of the restore that issue 13's adversary reached (tested directly)."""
from __future__ import annotations

from brsm.workflows.restore import has_checksums, unverified_refusal


def _m(*sha):
    return {"files": [{"key": f"B/data/h:1/data0/1/data/{i}.sst", "size": 3, "sha256": s} for i, s in enumerate(sha)]}


def test_a_backup_without_checksums_needs_the_flag():
    assert has_checksums(_m("a" * 64, "b" * 64)) and unverified_refusal("B", _m("a" * 64), False) is None
    why = unverified_refusal("BACKUP_1", _m(None, None), False)
    assert why and "no checksums" in why and "2 file(s)" in why and "manifest was deleted" in why
    assert unverified_refusal("BACKUP_1", _m(None), True) is None
    assert not has_checksums(_m("a" * 64, None))  # one file without a hash is a backup without checksums
