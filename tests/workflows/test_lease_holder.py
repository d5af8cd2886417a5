"""The lease's holder.json is validated field by field, and every look at a lease is bounded in time:
a hostile or broken holder is reported as an invalid lease (with how to clear it), never a traceback,
never a lease that can never go stale, never a hang."""
from __future__ import annotations

import asyncio
import json
import socket
import time

import pytest

from brsm.errors import InvalidLease, LockHeld, RemoteError
from brsm.fakes.cluster import FakeCluster
from brsm.fakes.hosts import FakeHosts
from brsm.workflows import lease as lease_mod
from brsm.workflows.lease import Lease, read_holder
from brsm.workflows.lease_holder import LeaseInfo, holder_problem, is_stale

GOOD = {"op_id": 7, "kind": "backup", "who": "eve@elsewhere", "machine": "elsewhere", "pid": 4242,
        "expires": 1.0e9, "ref": "abc123def456-7"}


def _one_host():
    c = FakeCluster(metas=1, storages=1)
    hosts = FakeHosts(c)
    name = c.meta_addrs[0].host
    return c, c.machines[name], hosts.host(name), f"{c.install_dir}/brsm.lease"


async def _plant(h, path, body: bytes):
    await h.claim_dir(path, timeout=5)

    async def one():
        yield body
    await h.write_file(f"{path}/holder.json", one())


@pytest.mark.parametrize("change,word", [
    ({"expires": "soon"}, "expires"), ({"expires": None}, "expires"), ({"expires": float("nan")}, "expires"),
    ({"ref": 7}, "ref"), ({"ref": "x y"}, "ref"), ({"pid": 0}, "pid"), ({"pid": -1}, "pid"),
    ({"pid": True}, "pid"), ({"pid": "12"}, "pid"), ({"op_id": "7"}, "op_id"), ({"op_id": 0}, "op_id"),
    ({"who": ["a"]}, "who"), ({"machine": ""}, "machine"), ({"home": 3}, "home"),
    ({"who": "eve\x1b[2J@x"}, "who"), ({"home": "/a\nb"}, "home"),
])
def test_every_field_is_checked(change, word):
    assert word in holder_problem({**GOOD, **change})


def test_a_holder_written_by_an_older_brsm_is_still_valid():
    old = {k: v for k, v in GOOD.items() if k != "ref"}  # no ref, no home
    assert holder_problem(old) is None
    assert holder_problem({**GOOD, "unknown_newer_key": 1}) is None


def test_pid_zero_or_negative_is_never_a_live_process():
    """kill(0, 0) and kill(-1, 0) succeed (they signal groups): such a holder must not stay alive."""
    info = LeaseInfo(7, "backup", "a@b", socket.gethostname(), 0, time.time() - 10)
    assert is_stale(info)
    assert is_stale(LeaseInfo(7, "backup", "a@b", socket.gethostname(), -1, time.time() - 10))


@pytest.mark.parametrize("body,says", [
    (json.dumps({**GOOD, "expires": 1e300}).encode(), "days ahead"),
    (json.dumps({**GOOD, "expires": "tomorrow"}).encode(), "expires is 'tomorrow'"),
    (json.dumps({**GOOD, "ref": 12}).encode(), "ref is 12"),
    (json.dumps({**GOOD, "pid": -1}).encode(), "pid is -1"),
    (b"\x00not json", "not JSON"),
    (b"[1, 2]", "not an object"),
])
async def test_an_invalid_holder_is_reported_with_how_to_clear_it(body, says):
    c, m, h, path = _one_host()
    await _plant(h, path, body)
    ours = Lease([(h, path)], op_id=1, ref="j-1", kind="backup", who="a@b")
    with pytest.raises(InvalidLease) as e:
        await ours.acquire()
    assert says in e.value.message and "is invalid" in e.value.message and e.value.exit_code == 3
    assert f"rm -r {path}" in e.value.hint and "brsm gc" in e.value.hint
    assert m.exists(f"{path}/holder.json"), "an invalid lease is never removed by a run"
    # the release of a run that never held it leaves it alone, without failing
    await ours.release()
    assert m.exists(f"{path}/holder.json")


async def test_a_non_regular_holder_is_never_opened():
    """A directory (or FIFO: SFTP's open of one blocks the host's sftp-server) in holder.json's place."""
    c, m, h, path = _one_host()
    m.mkdirs(f"{path}/holder.json")
    with pytest.raises(InvalidLease, match="not a regular file"):
        await read_holder(h, path)


def _hang(monkeypatch, h, *verbs: str) -> None:
    """A dead NFS mount under the metad root: each of ``verbs`` hangs until the timeout it is given
    (then fails as the SSH adapter does), for ever without one; an SFTP read hangs for ever."""
    def hung(verb):
        async def call(*args, timeout=None, **kw):
            try:
                await asyncio.wait_for(asyncio.sleep(3600), timeout)
            except asyncio.TimeoutError:
                raise RemoteError(f"{h.name}: `{verb}` did not finish within {timeout}s", host=h.name) from None
        return call

    async def hung_read(path, **kw):
        await asyncio.sleep(3600)
        yield b""

    for v in verbs:
        monkeypatch.setattr(h, v, hung(v))
    monkeypatch.setattr(h, "open_read", hung_read)


async def test_a_host_that_does_not_answer_fails_within_the_timeout(monkeypatch):
    """A dead NFS mount under the metad root: every look hangs. The lease gives up as a RemoteError."""
    c, m, h, path = _one_host()
    monkeypatch.setattr(lease_mod, "REMOTE_TIMEOUT", 0.3)
    _hang(monkeypatch, h, "path_kind")
    t0 = time.monotonic()
    with pytest.raises(RemoteError):
        await asyncio.wait_for(read_holder(h, path), 10)  # (without the bound: a TimeoutError here)
    assert time.monotonic() - t0 < 5


async def test_the_lock_hint_names_where_the_holders_journal_is():
    c, m, h, path = _one_host()
    theirs = Lease([(h, path)], op_id=1, ref="db53aa00ffee-1", kind="backup", who="alice@ops1",
                   home="/home/alice/.brsm")
    await theirs.acquire()
    await theirs.stop_refresh()
    ours = Lease([(h, path)], op_id=1, ref="0123456789ab-1", kind="backup", who="bob@ops2")
    with pytest.raises(LockHeld) as e:
        await ours.acquire()
    assert "alice@ops1:/home/alice/.brsm" in e.value.message
    assert "BRSM_HOME=/home/alice/.brsm" in e.value.hint and "brsm resume 1" in e.value.hint
    await theirs.release()


async def test_the_release_a_rollback_makes_is_bounded_too(monkeypatch):
    """SIGTERM starts a rollback, whose undo of LOCKED releases the lease: on a hung mount that look is
    bounded as well (a RemoteError the rollback reports), never a second hang."""
    c, m, h, path = _one_host()
    lease = Lease([(h, path)], op_id=1, ref="j-1", kind="backup", who="a@b")
    await lease.acquire()
    await lease.stop_refresh()
    monkeypatch.setattr(lease_mod, "REMOTE_TIMEOUT", 0.3)
    _hang(monkeypatch, h, "path_kind", "claim_dir", "remove_tree")  # every look hangs, the SFTP read too
    t0 = time.monotonic()
    with pytest.raises(RemoteError):
        await asyncio.wait_for(lease.release(), 10)  # (without the bounds: a TimeoutError here)
    assert time.monotonic() - t0 < 5


async def test_a_failed_look_at_the_lease_never_reads_as_no_lease():
    """Found by the direct backup campaign: a `test -f` that failed once (exit 1, as `test` says "false")
    read as "not a regular file" and the release left this run's own lease behind, while the rollback
    said ROLLED_BACK. A look that fails for any reason but "No such file" now raises, and the next
    release removes the lease."""
    c, m, h, path = _one_host()
    ours = Lease([(h, path)], op_id=1, ref="j-1", kind="backup", who="a@b")
    await ours.acquire()
    c.faults.add("verb_fail", h.name, 1, verb="path_kind")
    with pytest.raises(RemoteError, match="could not look at"):
        await ours.release()
    assert m.exists(f"{path}/holder.json")
    await ours.release()
    assert not m.exists(path)
