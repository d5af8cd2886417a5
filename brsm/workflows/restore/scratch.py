"""The restore's scratch dirs: ``nebula_brsm_new_<ref>`` beside each storage root (the staged trees)
and ``brsm_restore_<ref>`` beside metad's data (the meta SSTs restoreMeta reads).

Their names are predictable, so one may be planted before brsm gets there: a symlink would move the
staging (and what metad ingests) outside the data path, and its fingerprint would list nothing, before
and after alike. So a scratch dir is one brsm created in this operation: made with mkdir(2) (never an
existing name, never through a link), every component above it looked at with lstat, and its identity
(device, inode) journaled; every later use looks again and refuses a dir that is not that one.

A resume after a crash between the mkdir and the journaling finds a dir with no identity journaled:
``ScratchDirMaking`` (journaled before the mkdir) says brsm was making it, and a dir the connecting
user owns and that is still empty (nothing is written into it before its identity is journaled) is
taken as that one. An operation journaled before scratch dirs were journaled at all (it has restored
files and no scratch event) takes its dirs as they are, once, if the connecting user owns them: from
then on they are checked like any other.
"""
from __future__ import annotations

import posixpath
from typing import Any

from brsm.errors import PathRefused, VerificationFailed
from brsm.workflows import common
from brsm.workflows.restore import placement
from brsm.workflows.restore.context import ports
from brsm.workflows.restore.state import RestoreContext, ScratchDirMade, ScratchDirMaking


def dirs(ctx: RestoreContext, *, staged: bool) -> list[tuple[str, str]]:
    """(host, scratch dir) of this restore: the meta restore dirs, and when staging each storage
    root's staging dir."""
    topo = ctx.data.topo
    out = list(placement.meta_restore_dirs(topo, ctx.ref))
    if staged:
        out += [(h, posixpath.join(root, placement.staging_name(ctx.ref))) for h, root in placement.storage_dirs(topo)]
    return sorted(set(out))


def verdict(made: list[int] | None, making: bool, legacy: bool, st: Any) -> str:
    """What to do with one scratch dir (pure): "make" it, "ok" (the journaled one), "adopt" it (see
    the module's doc), "remake" (the journaled one is gone: nothing in it can count), or "refuse".

    >>> from brsm.ports import DirStat
    >>> verdict(None, False, False, None), verdict([1, 7], False, False, DirStat(1, 7))
    ('make', 'ok')
    >>> verdict([1, 7], False, False, DirStat(1, 8)), verdict(None, False, False, DirStat(1, 8, empty=True))
    ('refuse', 'refuse')
    >>> verdict(None, True, False, DirStat(1, 8)), verdict(None, True, False, DirStat(1, 8, empty=False))
    ('adopt', 'refuse')
    >>> verdict(None, False, True, DirStat(1, 8, empty=False)), verdict(None, False, True, DirStat(1, 8, mine=False))
    ('adopt', 'refuse')
    >>> verdict([1, 7], False, False, None)
    'remake'
    """
    if st is None:
        return "remake" if made is not None else "make"
    if made is not None:
        return "ok" if list(st.identity) == list(made) else "refuse"
    if making and st.mine and st.empty:
        return "adopt"
    if legacy and st.mine:
        return "adopt"
    return "refuse"


def _legacy(ctx: RestoreContext) -> bool:
    """The operation was journaled before scratch dirs were: files restored, and no scratch event at
    all (this brsm journals ScratchDirMaking before it downloads a byte)."""
    if ctx.data.scratch_legacy:
        return True  # its first dirs were taken back already: so are the others
    if ctx.data.scratch or ctx.data.scratch_making:
        return False
    return bool(ctx.data.restored)  # one row looked for, not every file counted


def _refusal(ctx: RestoreContext, host: str, path: str, why: str) -> VerificationFailed:
    return VerificationFailed(
        f"{host}:{path} {why}: brsm works only in scratch dirs it created in this operation",
        hint=f"the cluster was not touched by this; look at what put it there, remove it, then `brsm resume "
             f"{ctx.op_id}` (or `brsm rollback {ctx.op_id}`)")


async def ensure(ctx: RestoreContext, where: list[tuple[str, str]]) -> None:
    """Each scratch dir made (exclusively, its identity journaled) or found to be the one made
    earlier in this operation; anything else refused before a byte is written into it."""
    p = ports(ctx)
    legacy = _legacy(ctx)  # decided once: what this call journals must not change it for the others

    async def one(item: tuple[str, str]) -> None:
        host, path = item
        key = f"{host}:{path}"
        h = p.hosts.host(host)
        st = await h.lstat_dir(path)
        made = ctx.data.scratch.get(key)
        v = verdict(made, (key in ctx.data.scratch_making), legacy, st)
        if v == "ok":
            return
        if v == "refuse":
            why = ("is not the directory brsm created (another one took its place)" if made is not None else
                   "exists, and brsm did not create it")
            raise _refusal(ctx, host, path, why)
        taken = None
        if v in ("make", "remake"):
            ctx.record(ScratchDirMaking(host, path))
            st = await h.make_dir(path)
        else:  # "adopt": after a crash right after its mkdir, or made by an older brsm
            taken = "legacy" if made is None and key not in ctx.data.scratch_making else "resumed"
        ctx.record(ScratchDirMade(host, path, st.dev, st.ino, **({"taken": taken} if taken else {})))

    await common.each_host(where, lambda item: item[0], one)  # every host at once, one dir after another


async def verify(ctx: RestoreContext, where: list[tuple[str, str]]) -> None:
    """Each scratch dir with an identity journaled is still that dir, reached through real dirs
    (a missing one is left for the caller: its own checks say what is missing)."""
    p = ports(ctx)

    async def one(item: tuple[str, str]) -> None:
        host, path = item
        made = ctx.data.scratch.get(f"{host}:{path}")
        if made is None:
            return
        st = await p.hosts.host(host).lstat_dir(path)
        if st is not None and list(st.identity) != list(made):
            raise _refusal(ctx, host, path, "is not the directory brsm created (another one took its place)")

    await common.each_host(where, lambda item: item[0], one)  # every host at once (this runs in the downtime)


async def ours(ctx: RestoreContext, host: str, path: str) -> bool:
    """May an undo remove this scratch dir? Only the one brsm made (or took back) in this operation:
    a dir planted at the name, which a step refused, is left where it is (and a link is not a dir)."""
    try:
        st = await ports(ctx).hosts.host(host).lstat_dir(path)
    except PathRefused:  # (a host that cannot be reached fails the undo: it is tried again)
        return False
    if st is None:
        return False
    key = f"{host}:{path}"
    return verdict(ctx.data.scratch.get(key), (key in ctx.data.scratch_making),
                   _legacy(ctx), st) in ("ok", "adopt")
