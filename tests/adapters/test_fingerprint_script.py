"""The staged-tree fingerprint (``HostPort.fingerprint_trees`` over SSH, proof of a staged restore): its
script run by the real bash and find on a real tree (the script is what runs on the hosts)."""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from brsm.adapters import remote_scripts
from brsm.ports import TreeFingerprint
from brsm.workflows.restore import proof


def prints(*dirs: Path, fmt: int = proof.FORMAT) -> dict[str, TreeFingerprint]:
    out = subprocess.run(remote_scripts.fingerprint_argv([str(d) for d in dirs], fmt),
                         capture_output=True, text=True, check=True).stdout
    return remote_scripts.parse_fingerprints(out)


def tree(root: Path) -> Path:
    (root / "nebula" / "1" / "data").mkdir(parents=True)
    (root / "nebula" / "1" / "data" / "000009.sst").write_bytes(b"a" * 4096)
    (root / "nebula" / "1" / "data" / "CURRENT").write_bytes(b"MANIFEST-000001\n")
    return root / "nebula"


def test_a_byte_flipped_with_the_mtime_put_back_changes_the_fingerprint(tmp_path):
    d = tree(tmp_path)
    f = d / "1" / "data" / "000009.sst"
    before, old = prints(d)[str(d)], prints(d, fmt=1)[str(d)]
    st = f.stat()
    time.sleep(0.01)
    with open(f, "r+b") as fh:
        fh.write(b"b")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # size, mtime and inode as they were
    assert prints(d, fmt=1)[str(d)] == old, "what format 1 let through"
    assert prints(d)[str(d)] != before, "ctime, which utime cannot set back, is in the fingerprint"


def test_a_symlink_fifo_or_dir_added_changes_the_fingerprint(tmp_path):
    d = tree(tmp_path)
    for add in (lambda: (d / "1" / "data" / "LOCK").symlink_to("/etc/passwd"),
                lambda: os.mkfifo(d / "1" / "pipe"),
                lambda: (d / "2").mkdir()):
        before = prints(d)[str(d)]
        old = prints(d, fmt=1)[str(d)]
        add()
        assert prints(d)[str(d)] != before
        assert prints(d, fmt=1)[str(d)] == old  # what format 1 let through


def test_the_renamed_tree_keeps_its_fingerprint(tmp_path):
    """The swap renames the staged dir into place: that changes the dir's own ctime, never its
    entries', so the fingerprint at the live path equals the staged one."""
    d = tree(tmp_path / "stage")
    before = prints(d)[str(d)]
    live = tmp_path / "live"
    d.rename(live)
    assert prints(live)[str(live)] == before


def test_a_symlinked_dir_and_a_missing_one_say_so(tmp_path):
    d = tree(tmp_path / "real")
    link = tmp_path / "link"
    link.symlink_to(d)
    got = prints(link, tmp_path / "none")
    assert got == {str(link): TreeFingerprint(None, symlink=True), str(tmp_path / "none"): TreeFingerprint(None)}


def test_the_digest_is_what_journals_hold():
    """STAGED journals each tree's digest and a later process compares against it: the SHA-256 of the
    sorted listing lines joined by newlines, whatever brsm version computes it."""
    import hashlib

    listing = "1/data/000009.sst\tf\t4096\t1.5\t1.5\t77\n1/data/CURRENT\tf\t16\t1.5\t1.5\t78"
    got = remote_scripts.parse_fingerprints(f"== /d\n{listing}\n")["/d"]
    assert got.digest == hashlib.sha256(listing.encode()).hexdigest() == (
        "6274968f96130ddbfe49eb68b817b27de1b5181ab53ec436eec4d4c435dff6cd")
