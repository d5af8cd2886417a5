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


def test_a_listing_built_manifest_is_held_to_the_catalogs_terms():
    """A nebula-br backup's manifest is built from a storage listing, where a key may hold ``..``: the
    restore refuses it with the catalog's check, as it refuses such a key in a brsm manifest."""
    import pytest

    from brsm.errors import VerificationFailed
    from brsm.workflows.restore.source import refuse_unsafe

    refuse_unsafe("B", _m(None, None))
    for bad, why in [({"key": "B/data/../../../etc/passwd", "size": 3}, "outside the backup"),
                     ({"key": "B/data/h:1/data0/1/data/x.sst", "size": 1 << 45}, "impossible size")]:
        with pytest.raises(VerificationFailed, match=why):
            refuse_unsafe("B", {"files": [*_m(None)["files"], bad]})
