"""Reading and trusting the backup a restore brings back: its manifest and ``.meta``, or, for a
nebula-br backup without a manifest, a manifest built from its ``.meta`` and listing (sizes only).

A manifest is data from storage, not trusted code: sizes are bounded before it is read, its keys
must stay inside the backup, and its ``.meta`` must be the one it names.
"""
from __future__ import annotations

import difflib
import hashlib
from collections.abc import AsyncIterator
from typing import Any

from brsm.errors import ObjectNotFound, OperationFailed, PreflightFailed, VerificationFailed
from brsm.workflows import catalog, listing
from brsm.workflows import manifest as manifests
from brsm.workflows.layout import MANIFEST, MANIFEST_FILES, in_progress_key, manifest_key, meta_file_key
from brsm.workflows.restore.context import TAMPERED, cluster_down, ports
from brsm.workflows.restore.state import ManifestHeaderJournaled, ManifestJournaled, RestoreContext


async def _read_checked(ctx: RestoreContext, key: str, what: str, limit: int) -> bytes:
    """A manifest or ``.meta``: refused unread when its size is absurd (a hostile or garbage file)."""
    st = ports(ctx).storage
    big = catalog.too_big(what, (await st.stat(key)).size, limit)
    if big:
        raise VerificationFailed(f"backup {ctx.data.params.name}: {big}", hint=TAMPERED)
    return await st.get_bytes(key)


def closest(name: str, names: list[str]) -> list[str]:
    """The backup names nearest a mistyped one (a digit off in the timestamp, a case slip).

    >>> closest("BACKUP_2026_11_24_15_23_35", ["BACKUP_2026_11_24_15_23_34", "BACKUP_2025_01_01_00_00_00"])
    ['BACKUP_2026_11_24_15_23_34']
    """
    return difflib.get_close_matches(name, names, n=3, cutoff=0.8)


async def _refuse_absent(ctx: RestoreContext, name: str) -> None:
    """No object at all under ``<name>/``: there is no such backup (not an incomplete one)."""
    st = ports(ctx).storage
    if await listing.any_object(st, f"{name}/"):
        return
    names = [d.rstrip("/") for d in await st.list_dirs("")]
    near = closest(name, names)
    raise PreflightFailed(f"no backup named {name} in {st.uri}" + (f" (closest: {', '.join(near)})" if near else ""),
                          hint=f"see `brsm show --storage {st.uri}` for the backups there")


async def manifest(ctx: RestoreContext) -> dict[str, Any]:
    """The backup's manifest: the one CHECKED verified and journaled (``RestoreManifestJournaled`` with
    its files for format 1, ``RestoreManifestHeaderJournaled`` with its file list's tally for format 2),
    its header never read from storage again once it is; before that (preflight, CHECKED, or a restore
    journaled by an older brsm) read and checked from storage. Its files: ``files``."""
    cached = ctx.runtime.manifest
    if cached is None and ctx.data.manifest is not None:
        cached = ctx.runtime.manifest = ctx.data.manifest
    if cached is None:
        name = ctx.data.params.name
        try:
            raw = await _read_checked(ctx, manifest_key(name), MANIFEST, catalog.MAX_MANIFEST_BYTES)
        except ObjectNotFound as e:
            cached = await _nebula_br_manifest(ctx, name)
            if cached is None:
                await _refuse_absent(ctx, name)
                raise PreflightFailed(
                    f"backup {name} has no {MANIFEST} (nor a nebula-br {name}.meta) in {ports(ctx).storage.uri}: "
                    "it is incomplete", hint=f"see `brsm show --storage {ports(ctx).storage.uri}` for complete "
                                             "backups") from e
        else:
            try:
                cached = manifests.parse_header(raw, name)
            except manifests.NewerFormat as e:
                raise PreflightFailed(f"backup {name}: {e}", hint="restore it with the brsm that wrote it, or a "
                                      "newer one (see `brsm --version`)") from e
            except ValueError as e:
                raise VerificationFailed(f"backup {name}: {e}", hint=TAMPERED) from e
            await _check_meta(ctx, cached)
        ctx.runtime.manifest = cached
    return cached


async def files(ctx: RestoreContext) -> AsyncIterator[dict[str, Any]]:
    """Every file of the backup, in key order, one at a time: from the journaled or read list (format 1,
    a nebula-br backup's), or streamed from ``brsm-manifest-files.jsonl`` and checked line by line and
    against the tally its verified header holds (format 2). A list changed or gone since is refused."""
    m = await manifest(ctx)
    name = ctx.data.params.name
    try:
        async for f in manifests.files(ports(ctx).storage, name, m):
            yield f
    except ValueError as e:
        raise VerificationFailed(f"backup {name}: {e}", hint=TAMPERED) from e
    except ObjectNotFound as e:
        # a backup deleted under the restore is gone, not damaged (exit 5, as a data file gone is); where
        # the cluster may be down, the error gets the hint that names what brings it back up
        then = "" if cluster_down(ctx) else f": `brsm rollback {ctx.op_id}`, then restore another backup"
        raise OperationFailed(f"backup {name}: its {MANIFEST_FILES} is gone from {ports(ctx).storage.uri}",
                              hint=f"the backup was deleted while it was restored{then}") from e


JOURNALED_KEYS = ("backup_name", "tool", "all_spaces", "spaces", "meta_files", "topology")


def for_journal(m: dict[str, Any]) -> dict[str, Any]:
    """What the steps after CHECKED read of a verified manifest, to journal: its spaces, meta files,
    topology, and each file's key, size and SHA-256 (not the host and path it was copied from); for
    format 2, its file list's tally (``file_list``) instead of the files: small whatever the backup.

    >>> for_journal({"backup_name": "B", "op_ref": "x", "files": [{"key": "B/k", "size": 1, "sha256": None, "host": "h"}]})
    {'backup_name': 'B', 'files': [{'key': 'B/k', 'size': 1, 'sha256': None}]}
    """
    out = {k: m[k] for k in JOURNALED_KEYS if k in m}
    if "file_list" in m:
        out["format"], out["file_list"] = m["format"], dict(m["file_list"])
        return out
    out["files"] = [{"key": f["key"], "size": f["size"], "sha256": f.get("sha256")} for f in m.get("files", [])]
    return out


def journaled(m: dict[str, Any]) -> ManifestJournaled | ManifestHeaderJournaled:
    """The event that journals ``m`` (for_journal): the header alone when its files are streamed."""
    j = for_journal(m)
    return ManifestHeaderJournaled(j) if "file_list" in j else ManifestJournaled(j)


async def _check_meta(ctx: RestoreContext, m: dict[str, Any]) -> None:
    """brsm restores from the manifest, but a backup whose ``.meta`` is gone, unreadable or changed
    is damaged (nebula-br could not restore it) and `brsm verify` says so: restore refuses it too."""
    p, name = ports(ctx), ctx.data.params.name
    try:
        raw = await _read_checked(ctx, meta_file_key(name), f"{name}.meta", catalog.MAX_META_BYTES)
    except ObjectNotFound as e:
        raise VerificationFailed(f"backup {name}: {name}.meta is missing", hint=TAMPERED) from e
    changed = catalog.meta_hash_problem(m, hashlib.sha256(raw).hexdigest(), name)
    if changed:
        raise VerificationFailed(f"backup {name}: {changed}", hint=TAMPERED)
    if p.decode_meta is not None:
        try:
            facts = p.decode_meta(raw)
        except ValueError as e:
            raise VerificationFailed(f"backup {name}: {name}.meta is unreadable: {e}", hint=TAMPERED) from e
        if facts.name != name:
            raise VerificationFailed(f"backup {name}: {name}.meta names backup {facts.name!r}", hint=TAMPERED)


async def _nebula_br_manifest(ctx: RestoreContext, name: str) -> dict[str, Any] | None:
    """A manifest built from a nebula-br backup's ``.meta`` and its listing. It has no checksums:
    files are checked by size only (the journal and the output say so)."""
    p = ports(ctx)
    if p.decode_meta is None:
        return None
    own = await catalog.own_objects(p.storage, name)
    if f"{name}/{name}.meta" not in own or in_progress_key(name) in own:
        return None
    try:
        facts = p.decode_meta(await p.storage.get_bytes(f"{name}/{name}.meta"))
    except ValueError as e:
        raise VerificationFailed(f"backup {name}: {name}.meta is unreadable: {e}", hint="restore another backup") from e
    # a nebula-br backup's files are held (and journaled) whole, as a format-1 manifest's: streamed
    # from the listing of its two trees, nothing else of it kept
    files = [{"key": o.key, "size": o.size, "sha256": None} for sub in ("data", "meta")
             async for o in p.storage.iter_objects(f"{name}/{sub}/")]
    storage = []
    for h in facts.storage_hosts:
        addr = str(h)
        idx = {int(k.split("/")[3][4:]) for k in (f["key"] for f in files)
               if k.startswith(f"{name}/data/{addr}/") and k.split("/")[3][4:].isdigit()}
        n = max(len({dp for _sid, dp, _c in facts.checkpoints.get(addr, ())}), (max(idx) + 1) if idx else 1)
        storage.append({"addr": addr, "host": h.host, "data_paths": [f"data{i}" for i in range(n)]})
    p.progress.note(f"{name} is a nebula-br backup without checksums: files are checked by size only")
    return {"backup_name": name, "tool": "nebula-br", "all_spaces": facts.all_spaces,
            "spaces": {str(k): v for k, v in facts.spaces.items()}, "meta_files": list(facts.meta_files),
            "topology": {"storage": storage}, "files": files}


# -- checksums -------------------------------------------------------------------------------
UNVERIFIED_HINT = ("restore a backup with a brsm-manifest.json (see `brsm show`: `complete`, not `complete*`); "
                   "only if you trust this one as it is, add --allow-unverified")


def has_checksums(m: dict[str, Any]) -> bool:
    """Every file of the manifest carries a SHA-256 (a brsm manifest does: format 2's reader refuses a
    line without one; one built from a nebula-br ``.meta`` has none)."""
    return "file_list" in m or all(f.get("sha256") for f in m["files"])


def unverified_refusal(name: str, m: dict[str, Any], allowed: bool) -> str | None:
    """Why a restore of ``m`` must not go on without ``--allow-unverified`` (None when it may).

    >>> unverified_refusal("BACKUP_1", {"files": [{"key": "k", "size": 1, "sha256": None}]}, False)[:49]
    'backup BACKUP_1 has no checksums (no brsm-manifes'
    """
    if allowed or has_checksums(m):
        return None
    return (f"backup {name} has no checksums (no {MANIFEST}: made by nebula-br, or a brsm backup whose manifest "
            f"was deleted): its {manifests.file_count(m)} file(s) could be checked by size only, so changed bytes would "
            "be restored unnoticed; refused")


def refuse_unsafe(name: str, m: dict[str, Any]) -> None:
    """A manifest is data from storage, not trusted code (catalog.unsafe_entry): no download may land
    outside its data path, nor plan an impossible size. A brsm manifest passed this when it was parsed;
    one built from a nebula-br listing is checked here, on the same terms."""
    for f in m.get("files", []):
        unsafe = catalog.unsafe_entry(name, f)
        if unsafe == catalog.OUTSIDE:
            raise VerificationFailed(f"backup {name}: manifest names a file outside the backup: {f.get('key', '')!r}",
                                     hint="the manifest was tampered with; restore another backup")
        if unsafe:
            raise VerificationFailed(f"backup {name}: manifest claims an impossible size for {f.get('key', '')!r}",
                                     hint="the manifest was tampered with; restore another backup")
