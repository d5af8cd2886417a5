"""STOPPED and SET_ASIDE: the cluster's downtime begins, and the live data goes aside.

Nothing of the cluster's original data is deleted before the restored cluster has started and
answered: it is renamed aside (same filesystem, no copy, no extra space), with every storaged's and
graphd's ``cluster.id``, and only CLEANED removes it. Rollback renames it back.
"""
from __future__ import annotations

import posixpath
import time
from typing import Any

from brsm.concurrency import gather_bounded
from brsm.errors import OperationFailed
from brsm.workflows import common
from brsm.workflows.restore import control, placement
from brsm.workflows.restore.context import ports, root_of, set_aside_spaces
from brsm.workflows.restore.state import DowntimeBegan, RestoreContext


async def stopped(ctx: RestoreContext) -> dict[str, Any]:
    roles = control.hosts_by_role(ctx)
    if ctx.data.downtime_began is None:
        # tracks_starts: from here on this operation journals the pid of every daemon it starts
        ctx.record(DowntimeBegan(at=time.time(), tracks_starts=True))
    # all three at once, each waited for until its process is gone and its port closed (nebula.service
    # `stop all` does not order them either: a storaged or graphd that loses metad first only logs it)
    await gather_bounded(3, lambda svc: control.stop(ctx, svc), ["graphd", "storaged", "metad"])
    return {"stopped": roles}


async def undo_stopped(ctx: RestoreContext) -> None:
    await control.start_all(ctx)
    control.downtime_ended(ctx, "rolled back")


async def _one(data: bytes):
    yield data


async def _set_aside_cluster_ids(ctx: RestoreContext) -> list[dict[str, str]]:
    p = ports(ctx)

    async def one(c: placement.ClusterIdFile) -> dict[str, str]:
        h = p.hosts.host(c.host)
        if await h.exists(c.aside):
            state = "moved"  # by an earlier attempt
        elif await h.exists(c.absent_marker):
            state = "absent"
        elif await h.exists(c.live):
            await h.rename(c.live, c.aside)
            state = "moved"
        else:
            await h.write_file(c.absent_marker, _one(b"there was no cluster.id here before the restore\n"))
            state = "absent"
        return {"host": c.host, "path": c.live, "aside": c.aside if state == "moved" else c.absent_marker,
                "state": state}

    files = placement.cluster_id_files(ctx.data.topo, root_of(ctx), ctx.ref)
    return await common.each_host(files, lambda c: c.host, one)


async def _put_back_cluster_ids(ctx: RestoreContext) -> None:
    """Each root as before SET_ASIDE: the original file back, or none if there was none. Repeatable."""
    p = ports(ctx)
    for c in placement.cluster_id_files(ctx.data.topo, root_of(ctx), ctx.ref):
        h = p.hosts.host(c.host)
        if await h.exists(c.aside):
            if await h.exists(c.live):
                await h.remove_tree(c.live)  # written by the restored cluster
            await h.rename(c.aside, c.live)
        elif await h.exists(c.absent_marker):
            if await h.exists(c.live):
                await h.remove_tree(c.live)
            await h.remove_tree(c.absent_marker)


async def set_aside(ctx: RestoreContext) -> dict[str, Any]:
    p = ports(ctx)
    await control.ensure_down(ctx, "SET_ASIDE")

    async def one(move: tuple[str, str, str, str]) -> str | None:
        host, src, dst, mode = move
        h = p.hosts.host(host)
        if await h.exists(dst):
            return None  # done by an earlier attempt
        await h.makedirs(posixpath.dirname(dst))
        if not await h.exists(src):
            await h.makedirs(dst)  # nothing there: remember that, so rollback leaves nothing either
            await h.write_file(posixpath.join(dst, placement.ABSENT), _one(b"absent"))
        elif mode == "move":
            await h.rename(src, dst)
        else:
            tmp = dst + ".brsm-tmp"
            if await h.exists(tmp):
                await h.remove_tree(tmp)  # a copy cut short by a crash
            await h.copy_tree(src, tmp)
            await h.rename(tmp, dst)
        return f"{host}:{src}"

    moves = placement.moves(ctx.data.topo, ctx.ref, set_aside_spaces(ctx))
    done = [d for d in await common.each_host(moves, lambda m: m[0], one) if d]
    cluster_ids = await _set_aside_cluster_ids(ctx)
    return {"set_aside": done, "aside_name": placement.aside_name(ctx.ref), "cluster_ids": cluster_ids}


async def undo_set_aside(ctx: RestoreContext) -> None:
    p = ports(ctx)
    await control.ensure_down(ctx, "putting the original data back (undo of SET_ASIDE)")
    for host, src, dst, _mode in placement.moves(ctx.data.topo, ctx.ref, set_aside_spaces(ctx)):
        h = p.hosts.host(host)
        if not await h.exists(dst):
            continue  # already moved back (or never moved)
        if await h.exists(src):
            await h.remove_tree(src)  # restored data only: the original is safe in dst
        if await h.exists(posixpath.join(dst, placement.ABSENT)):
            await h.remove_tree(dst)
        else:
            await h.rename(dst, src)
    for host, dp in placement.data_dirs(ctx.data.topo):  # the (now empty) parents of a chosen-spaces set-aside
        d = posixpath.join(dp, placement.aside_name(ctx.ref))
        h = p.hosts.host(host)
        if await h.exists(d):
            # only an empty one goes: a file still in it is original data this undo did not put back
            left = await h.walk(d)
            if left:
                raise OperationFailed(
                    f"{host}:{d} still holds {len(left)} file(s) (e.g. {left[0].path}) after the original data "
                    "was put back: that is set-aside data this rollback did not move back; brsm deletes none of it",
                    hint=f"move what is there back under {posixpath.join(dp, 'nebula')} by hand (the cluster is "
                         f"down), then `brsm rollback {ctx.op_id}` again")
            await h.remove_tree(d)
    await _put_back_cluster_ids(ctx)
