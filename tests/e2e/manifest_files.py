"""A brsm backup's manifest in a ``local://`` storage, as the tests read and edit it: the header
``brsm-manifest.json`` and (format 2) its file list ``brsm-manifest-files.jsonl``, seen together as one
dict with a ``files`` list, as format 1 held them. ``save`` writes the list back with the header's tally
recomputed, so an edit reaches the reader's per-file checks instead of only its tally check."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from brsm.workflows.layout import MANIFEST, MANIFEST_FILES
from brsm.workflows.manifest import file_line


def replace(p: Path, data: bytes) -> None:
    """Never write in place: a backup copied with hard links shares its files."""
    if p.exists():
        p.unlink()
    p.write_bytes(data)


def load(d: Path) -> dict:
    """The manifest of the backup in ``d``, its files in ``files`` whatever its format."""
    m = json.loads((d / MANIFEST).read_text())
    if "file_list" in m:
        m["files"] = [json.loads(x) for x in (d / MANIFEST_FILES).read_text().splitlines()]
    return m


def save(d: Path, m: dict) -> None:
    """Write ``m`` (as ``load`` gives it) back in its format, lines in the order of ``m["files"]``."""
    m = dict(m)
    if "file_list" not in m:
        replace(d / MANIFEST, json.dumps(m).encode())
        return
    files = m.pop("files")
    raw = b"".join(file_line(f) for f in files)
    replace(d / MANIFEST_FILES, raw)
    m["file_list"] = {"key": f"{m['backup_name']}/{MANIFEST_FILES}", "count": len(files), "bytes": len(raw),
                      "sha256": hashlib.sha256(raw).hexdigest(), "total_bytes": sum(f["size"] for f in files)}
    replace(d / MANIFEST, json.dumps(m).encode())
