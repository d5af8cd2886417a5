"""The journal's anchors in a storage: where they are written, and finding them again.

An anchor (``StepContext.journal_anchor``: every operation's head seq and chain hash at one moment) is
kept where the journal's owner cannot quietly rewrite it together with the journal: in the storage. A
backup carries one in its manifest (``journal_anchor``); a restore writes a small record under
``brsm-journal-anchors/<journal id>/``, a top-level name that is not ``BACKUP*``, so listing, gc, prune,
cleanup and nebula-br's ``br show`` never take it for a backup. ``brsm journal verify --against``
reads them all back and checks the journal against each.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

from brsm.concurrency import gather_bounded
from brsm.engine.runner import StepContext
from brsm.errors import BrsmError, ObjectNotFound, StorageError
from brsm.ports import Storage
from brsm.workflows.layout import MANIFEST, manifest_key

ANCHORS_DIR = "brsm-journal-anchors"
RECORD_KIND = "brsm-journal-anchor"
JOURNAL_ANCHORED = "JournalAnchored"
JOURNAL_ANCHOR_NOT_WRITTEN = "JournalAnchorNotWritten"
MAX_ANCHOR_BYTES = 64 << 20  # far above any real one (about 30 bytes per operation); more is garbage


def anchor_key(journal_id: str, kind: str, op_id: int) -> str:
    """``brsm-journal-anchors/3f9a0c12be47/restore-7.json``: one per operation, rewritten (newer, so
    covering more) when the step that writes it runs again."""
    return f"{ANCHORS_DIR}/{journal_id}/{kind}-{int(op_id)}.json"


def anchor_record(ctx: StepContext, kind: str, anchor: dict[str, Any]) -> dict[str, Any]:
    return {"kind": RECORD_KIND, "format": 1, "operation": kind, "op_id": ctx.op_id, "op_ref": ctx.ref,
            "backup_name": ctx.params.get("name"), "written": time.time(), "journal_anchor": anchor}


async def write_anchor(ctx: StepContext, storage: Storage, kind: str) -> None:
    """Keep the journal's anchor now in ``storage``. Best effort: the operation's work is done and a
    storage that refuses writes (read-only credentials for a restore) must not fail it; what happened is
    journaled either way, and a refusal is shown."""
    anchor = ctx.journal_anchor()
    if anchor is None:
        return
    key = anchor_key(anchor["journal_id"], kind, ctx.op_id)
    try:
        await storage.put_bytes(key, json.dumps(anchor_record(ctx, kind, anchor), sort_keys=True).encode())
    except BrsmError as e:
        ctx.record(JOURNAL_ANCHOR_NOT_WRITTEN, {"key": key, "error": e.message})
        ctx.ports.progress.note(f"the journal's anchor was not written to {key}: {e.message} "
                                "(the restore is done; `brsm journal verify --against` will not see this one)")
        return
    ctx.record(JOURNAL_ANCHORED, {"key": key, "operations": len(anchor["heads"])})


@dataclass(frozen=True)
class FoundAnchor:
    """One anchor found in a storage: where (``source``), whose (``journal_id``), and the anchor as
    stored, or why it could not be read (then ``journal_id`` is the one its place names, if any)."""

    source: str
    journal_id: str | None
    anchor: dict[str, Any] | None
    error: str | None = None


async def _read_json(storage: Storage, key: str, size: int | None) -> Any:
    if size is not None and size > MAX_ANCHOR_BYTES:
        raise ValueError(f"{size} bytes, larger than any anchor")
    return json.loads(await storage.get_bytes(key))


def _why(e: Exception) -> str:
    """What makes a stored anchor unreadable. A storage failure that may pass (after the retries) is
    not that: it is raised, so a flaky store never reads as a damaged anchor."""
    if isinstance(e, StorageError) and not e.permanent:
        raise e
    return e.message if isinstance(e, BrsmError) else str(e)


async def find_anchors(storage: Storage, *, concurrency: int = 8) -> list[FoundAnchor]:
    """Every journal anchor in ``storage``: those in the manifests of the top-level ``BACKUP*``
    backups, then the records under ``brsm-journal-anchors/``. A manifest without one (an older
    brsm's; nebula-br's backups have none) is left out. A record that cannot be read is returned with
    its error: an anchor someone damaged is reported, never skipped."""

    async def manifest(name: str) -> FoundAnchor | None:
        key = manifest_key(name)
        try:
            m = await _read_json(storage, key, None)
        except ObjectNotFound:
            return None  # no manifest: not a finished brsm backup, nothing anchored
        except (ValueError, BrsmError) as e:
            return FoundAnchor(key, None, None, f"{MANIFEST} unreadable: {_why(e)}")
        a = m.get("journal_anchor") if isinstance(m, dict) else None
        if a is None:
            return None
        jid = a.get("journal_id") if isinstance(a, dict) else None
        if not isinstance(jid, str):
            return FoundAnchor(key, None, None, "its journal_anchor names no journal")
        return FoundAnchor(key, jid, a)

    async def record(key: str, size: int) -> FoundAnchor | None:
        parts = key.split("/")
        place = parts[1] if len(parts) == 3 else None
        try:
            rec = await _read_json(storage, key, size)
        except ObjectNotFound:
            return None  # removed while we listed
        except (ValueError, BrsmError) as e:
            return FoundAnchor(key, place, None, f"unreadable: {_why(e)}")
        a = rec.get("journal_anchor") if isinstance(rec, dict) else None
        if not isinstance(a, dict) or a.get("journal_id") != place:
            return FoundAnchor(key, place, None, "not an anchor record of the journal its place names")
        return FoundAnchor(key, place, a)

    names = sorted(d.rstrip("/") for d in await storage.list_dirs("") if d.startswith("BACKUP"))
    objs = sorted(await storage.list(f"{ANCHORS_DIR}/"), key=lambda o: o.key)
    reads = [partial(manifest, n) for n in names] + [partial(record, o.key, o.size) for o in objs]
    found = await gather_bounded(concurrency, lambda read: read(), reads)
    return [f for f in found if f is not None]
