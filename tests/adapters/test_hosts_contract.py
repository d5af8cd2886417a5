"""One contract, two implementations: the same tests run against SshHosts (real sshd) and FakeHosts.

Every verb a workflow asks of a host is here, with the answers the workflows rely on; the SSH side
runs the adapter's real commands on the sandbox's sshd, the fake side the in-process meaning."""
from __future__ import annotations

import asyncio
import hashlib
import os
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

from brsm.adapters.ssh import TMP_SUFFIX, SshHosts
from brsm.errors import BrsmError, RemoteError
from brsm.fakes import FakeCluster, FakeHosts
from brsm.ports import DaemonProbe, HostPort, HostsPort, ProcessUnseen, RealPaths, TreeFingerprint

# Nebula's scripts/nebula.service in miniature: status always exits 0, start of a running daemon
# is an error (exit 1), stop and start return at once.
SERVICE_SCRIPT = """#!/bin/sh
d="$(dirname "$0")/../state"; mkdir -p "$d"
case "$1" in
  start) if [ -f "$d/$2" ]; then echo "[ERROR] nebula-$2 already running: 1" >&2; exit 1; fi
         touch "$d/$2"; echo "[INFO] Starting nebula-$2..."; echo "[INFO] Done";;
  restart) touch "$d/$2"; echo "[INFO] Starting nebula-$2...";;
  stop|kill) rm -f "$d/$2"; echo "[INFO] Stopping nebula-$2..."; echo "[INFO] Done";;
  status) if [ -f "$d/$2" ]; then echo "[INFO] nebula-$2(x): Running as 1, Listening on 1";
          else echo "[INFO] nebula-$2(x): Exited"; fi;;
esac
exit 0
"""


@dataclass
class Env:
    kind: str
    hosts: HostsPort
    host: HostPort
    base: str  # a fresh absolute directory on the host
    put: Callable[[str, bytes], None]
    get: Callable[[str], bytes | None]
    listdir: Callable[[str], list[str]]
    mode: Callable[[str], int]
    install_dir: str
    svc: str
    open_port: tuple[str, int]  # an address and port where something accepts connections
    hold: Callable[[str], int]  # start a process whose working directory is that dir: its pid
    link: Callable[[str, str], None] = lambda src, dst: None  # a hard link (another name of the same file)


@pytest.fixture(params=["fake", "ssh"])
async def env(request, tmp_path_factory):
    if request.param == "fake":
        c = FakeCluster(metas=1, storages=1)
        hosts = FakeHosts(c)
        name = c.meta_addrs[0].host
        m = c.machine(name)
        base = "/work area"
        m.mkdirs(base)

        def listdir(p):
            pre = m.norm(p).rstrip("/") + "/"
            return sorted({x[len(pre):].split("/")[0] for x in list(m.files) + list(m.dirs) if x.startswith(pre)})

        def hold(d):
            m.holders[d] = 4242
            return 4242

        e = Env("fake", hosts, hosts.host(name), base, lambda p, d: m.put(p, d), lambda p: m.files.get(m.norm(p)),
                listdir, lambda p: m.modes[m.norm(p)], c.install_dir, "metad", (name, c.meta_addrs[0].port), hold,
                m.link)
    else:
        sshd = request.getfixturevalue("sshd")
        d = tmp_path_factory.mktemp("contract") / "work area"
        d.mkdir()
        inst = d.parent / "install"
        (inst / "scripts").mkdir(parents=True)
        (inst / "scripts" / "nebula.service").write_text(SERVICE_SCRIPT)
        (inst / "scripts" / "nebula.service").chmod(0o755)
        hosts = SshHosts({sshd.ip: sshd.target(install_dir=str(inst))})

        def put(p, data):
            Path(p).parent.mkdir(parents=True, exist_ok=True)
            Path(p).write_bytes(data)

        def get(p):
            return Path(p).read_bytes() if Path(p).is_file() else None

        held: list[subprocess.Popen] = []

        def hold(dd):
            held.append(subprocess.Popen(["sleep", "60"], cwd=dd))
            return held[-1].pid

        e = Env("ssh", hosts, hosts.host(sshd.ip), str(d), put, get, lambda p: sorted(os.listdir(p)),
                lambda p: stat.S_IMODE(os.stat(p).st_mode), str(inst), "metad", (sshd.ip, sshd.port), hold, os.link)
    try:
        yield e
    finally:
        await e.hosts.close()
        if e.kind == "ssh":
            for proc in held:
                proc.kill()
                proc.wait()


def j(*parts: str) -> str:
    return "/".join(parts)


async def test_protocols(env):
    assert isinstance(env.hosts, HostsPort) and isinstance(env.host, HostPort)
    with pytest.raises(RemoteError):
        env.hosts.host("10.255.255.1")


AWKWARD = ["plain", "with space", "it's", '"q"', "$(rm -rf /)", "`id`", "a;b|c&d", "*", "new\nline", "ü"]


async def test_check_login(env):
    await env.host.check_login(timeout=30)


async def test_awkward_names_reach_the_host_as_they_are(env):
    """Every argument is quoted: a name with spaces, quotes, a `$(...)` or a newline is that name."""
    for n in AWKWARD:
        env.put(j(env.base, "awk", n), n.encode())
    paths = [j(env.base, "awk", n) for n in AWKWARD]
    assert [await env.host.read_text(p) for p in paths] == AWKWARD
    # a name holding a newline is left out below: the commands answer one line per name, and no data
    # file Nebula writes is named so
    lines = [(p, n) for p, n in zip(paths, AWKWARD) if "\n" not in n]
    got = await env.host.hash_files([p for p, _ in lines])
    assert got == {p: hashlib.sha256(n.encode()).hexdigest() for p, n in lines}
    env.put(j(env.base, "awk2", "it's $(x) a;b"), b"")
    env.put(j(env.base, "awk2", "other"), b"")
    assert await env.host.list_named(j(env.base, "awk2"), ["it's $(x)*"]) == [j(env.base, "awk2", "it's $(x) a;b")]


async def test_read_text(env):
    env.put(j(env.base, "t.conf"), b"--a=1\n")
    assert await env.host.read_text(j(env.base, "t.conf")) == "--a=1\n"
    assert await env.host.read_text(j(env.base, "missing")) is None


async def test_process_argv(env):
    """A running process's arguments as it was started; a pid that runs nothing is unseen, never an
    empty command line (brsm would read that as "no flags given")."""
    if env.kind == "ssh":
        pid, want = env.hold(env.base), ("sleep", "60")
    else:
        m = env.hosts.c.machine(env.host.name)
        pid = m.pids[env.svc]
        want = (f"{m.install_dir}/bin/nebula-{env.svc}", f"--flagfile={m.install_dir}/etc/nebula-{env.svc}.conf")
    assert await env.host.process_argv(pid) == want
    gone = await env.host.process_argv(2 ** 22 + 7)  # above Linux's largest pid_max
    assert isinstance(gone, ProcessUnseen) and "cmdline" in gone.why


async def test_path_kind_looks_at_the_name_itself(env):
    env.put(j(env.base, "k", "f"), b"x")
    assert await env.host.path_kind(j(env.base, "k", "f"), timeout=30) == "file"
    assert await env.host.path_kind(j(env.base, "k"), timeout=30) == "other"
    assert await env.host.path_kind(j(env.base, "k", "none"), timeout=30) == "none"
    with pytest.raises(RemoteError, match="could not look at .*Not a directory"):  # a failed look, not "none"
        await env.host.path_kind(j(env.base, "k", "f", "below"), timeout=30)


async def test_claim_dir_is_a_lock(env):
    d = j(env.base, "lock dir")
    assert await env.host.claim_dir(d, timeout=30)
    assert not await env.host.claim_dir(d, timeout=30)  # it exists: someone else's claim
    assert not await env.host.claim_dir(j(env.base, "no", "parent"), timeout=30)
    await env.host.makedirs(d)  # makedirs of an existing dir is fine


async def test_clock(env):
    assert abs(await env.host.clock(timeout=30) - time.time()) < 60


async def test_device_ids_and_real_paths(env):
    a, b = j(env.base, "dv", "a"), j(env.base, "dv", "b")
    await env.host.makedirs(a)
    await env.host.makedirs(b)
    ids = await env.host.device_ids([a, b])
    assert ids is not None and len(ids) == 2 and ids[0] == ids[1]
    assert await env.host.device_ids([a, j(env.base, "dv", "missing")]) is None
    assert await env.host.real_paths([a + "/", b]) == RealPaths((a, b))
    missing = await env.host.real_paths([a, j(env.base, "dv", "missing")])
    assert missing.paths is None and "missing" in missing.problem


async def test_list_named(env):
    root = j(env.base, "ln")
    for n in ("nebula_brsm_old_j-1", "nebula_brsm_new_j-2", "nebula"):
        await env.host.makedirs(j(root, n))
    env.put(j(root, "nebula_brsm_old_file"), b"x")
    env.put(j(root, "nebula", "nebula_brsm_old_deep"), b"x")  # only the entries directly in root
    want = [j(root, "nebula_brsm_new_j-2"), j(root, "nebula_brsm_old_j-1")]
    pats = ["nebula_brsm_old_*", "nebula_brsm_new_*"]
    assert sorted(await env.host.list_named(root, pats, dirs_only=True)) == want
    assert sorted(await env.host.list_named(root, pats)) == sorted(want + [j(root, "nebula_brsm_old_file")])
    assert await env.host.list_named(j(env.base, "missing"), pats) == []


async def test_hash_files(env):
    env.put(j(env.base, "h", "a"), b"abc")
    env.put(j(env.base, "h", "e"), b"")
    got = await env.host.hash_files([j(env.base, "h", "a"), j(env.base, "h", "e"), j(env.base, "h", "none")])
    assert got == {j(env.base, "h", "a"): hashlib.sha256(b"abc").hexdigest(),
                   j(env.base, "h", "e"): hashlib.sha256(b"").hexdigest()}
    assert await env.host.hash_files([]) == {}


@pytest.mark.parametrize("fmt", [1, 2])
async def test_fingerprint_trees(env, fmt):
    """A write, an added or removed file changes a tree's fingerprint; a rename of the tree does not;
    ``ingest`` (restoreMeta's copies) is left out; a missing dir has none."""
    d = j(env.base, f"fp{fmt}", "tree")
    env.put(j(d, "1", "data", "a.sst"), b"a" * 100)
    env.put(j(d, "1", "wal", "b.wal"), b"b")
    missing = j(env.base, f"fp{fmt}", "none")

    async def fp(x: str) -> TreeFingerprint:
        got = await env.host.fingerprint_trees([x, missing], fmt=fmt)
        assert got[missing] == TreeFingerprint(None)
        return got[x]

    first = await fp(d)
    assert first.digest is not None and not first.symlink and first == await fp(d)
    env.put(j(d, "ingest", "c.sst"), b"c")
    assert await fp(d) == first
    moved = j(env.base, f"fp{fmt}", "moved")
    await env.host.rename(d, moved)
    assert await fp(moved) == first
    env.put(j(moved, "1", "data", "new.sst"), b"n")
    assert await fp(moved) != first
    await env.host.remove_tree(j(moved, "1", "data", "new.sst"))
    time.sleep(0.01)
    env.put(j(moved, "1", "wal", "b.wal"), b"c")  # same size, other bytes
    assert await fp(moved) != first


async def test_check_daemons(env):
    """The status text of each daemon asked about, whether its port accepts connections, and the
    processes using the dirs, in one look."""
    h, inst, svc = env.host, env.install_dir, env.svc
    addr, port = env.open_port
    d = j(env.base, "used")
    await h.makedirs(d)
    await h.service("stop", svc, install_dir=inst)
    seen = await h.check_daemons([DaemonProbe(svc, inst, addr, port)], [d])
    assert set(seen.daemons) == {svc} and seen.dir_users == ()
    for _ in range(5):  # stop returns before the daemon exits: a later look says so
        seen = await h.check_daemons([DaemonProbe(svc, inst, addr, port)], [d])
        if "Exited" in seen.daemons[svc].status_text:
            break
    assert f"nebula-{svc}(" in seen.daemons[svc].status_text and "Exited" in seen.daemons[svc].status_text
    pid = env.hold(d)
    if env.kind == "ssh":
        time.sleep(0.2)
    seen = await h.check_daemons([DaemonProbe(svc, inst, addr, 1)], [d, j(env.base, "other")])
    assert seen.daemons[svc].port_open is False and seen.dir_users == (pid,)
    await h.service("start", svc, install_dir=inst)
    for _ in range(5):
        seen = await h.check_daemons([DaemonProbe(svc, inst, addr, port)], [])
        if seen.daemons[svc].port_open and "Running" in seen.daemons[svc].status_text:
            break
    assert seen.daemons[svc].port_open and "Running" in seen.daemons[svc].status_text


async def test_copy_tree_and_copy_into(env):
    src = j(env.base, "cp", "src")
    env.put(j(src, "a", "x.sst"), b"x")
    env.put(j(src, "y"), b"yy")
    await env.host.copy_tree(src, j(env.base, "cp", "dst"))
    assert env.get(j(env.base, "cp", "dst", "a", "x.sst")) == b"x" and env.get(j(env.base, "cp", "dst", "y")) == b"yy"
    assert env.get(j(src, "y")) == b"yy"
    with pytest.raises(RemoteError):
        await env.host.copy_tree(j(env.base, "cp", "missing"), j(env.base, "cp", "dst2"))
    into = j(env.base, "cp", "into")
    await env.host.makedirs(into)
    await env.host.copy_into([j(src, "y"), j(src, "a", "x.sst")], into)
    assert env.listdir(into) == ["x.sst", "y"] and env.get(j(into, "y")) == b"yy"
    with pytest.raises(RemoteError):
        await env.host.copy_into([j(src, "missing")], into)


async def test_walk(env):
    names = {"a.sst": b"1", "sp ace/b.sst": b"22", "sp ace/deep/new\nline": b"333", "e": b""}
    for n, d in names.items():
        env.put(j(env.base, "t", n), d)
    await env.host.makedirs(j(env.base, "t", "empty dir"))
    files = await env.host.walk(j(env.base, "t"))
    assert [(f.path, f.size) for f in files] == sorted((j(env.base, "t", n), len(d)) for n, d in names.items())
    with pytest.raises(RemoteError):
        await env.host.walk(j(env.base, "missing"))


async def test_walk_pages_lists_what_walk_lists_in_pages(env):
    names = {f"f{i:03d}": bytes(i % 7) for i in range(25)} | {"sp ace/deep/new\nline": b"333", "ü/it's": b"4"}
    for n, d in names.items():
        env.put(j(env.base, "p", n), d)
    await env.host.makedirs(j(env.base, "p", "empty dir"))
    pages = [pg async for pg in env.host.walk_pages(j(env.base, "p"), page=10, timeout=30)]
    assert [len(pg) for pg in pages] == [10, 10, 7]
    want = sorted((j(env.base, "p", n), len(d)) for n, d in names.items())
    assert sorted((f.path, f.size) for pg in pages for f in pg) == want
    assert [(f.path, f.size) for f in await env.host.walk(j(env.base, "p"))] == want
    tally = await env.host.count_files(j(env.base, "p"), timeout=30)
    assert (tally.files, tally.bytes) == (len(names), sum(len(d) for d in names.values()))
    with pytest.raises(RemoteError):
        async for _ in env.host.walk_pages(j(env.base, "missing"), timeout=30):
            pass
    with pytest.raises(RemoteError):
        await env.host.count_files(j(env.base, "missing"), timeout=30)


async def test_walk_pages_says_each_files_identity(env):
    """The identity the incremental backup's hash cache rests on (brsm.workflows.backup.reuse): the
    same file under two names (a checkpoint's hard link) is one identity, stable from walk to walk; a
    file written again is another, whether it kept its inode or got a new one."""
    from brsm.ports import BaseFile
    from brsm.workflows.backup.reuse import same_file

    for n in ("a", "b", "c"):
        env.put(j(env.base, "i", n), n.encode() * 100)
    env.link(j(env.base, "i", "a"), j(env.base, "i", "a-linked"))

    async def idents():
        return {f.path.rsplit("/", 1)[1]: f for pg in [pg async for pg in env.host.walk_pages(j(env.base, "i"))]
                for f in pg}

    first = await idents()
    assert all(f.ident is not None for f in first.values())
    assert first["a"].ident == first["a-linked"].ident
    assert len({(f.ident.dev, f.ident.ino) for f in first.values()}) == 3
    was = {n: BaseFile("k", f.size, "0" * 64, "h", f.ident) for n, f in first.items()}
    again = await idents()
    assert all(same_file(was[n], f.size, f.ident) for n, f in again.items())
    await asyncio.sleep(0.02)
    env.put(j(env.base, "i", "b"), b"B" * 100)  # same size, other bytes, written in place (ssh) or anew (fake)
    after = await idents()
    assert not same_file(was["b"], after["b"].size, after["b"].ident)
    assert same_file(was["c"], after["c"].size, after["c"].ident)


async def test_walk_pages_stopped_early_leaves_the_host_usable(env):
    for i in range(50):
        env.put(j(env.base, "q", f"{i:02d}"), b"x")
    for _ in range(12):  # more than a connection has sessions: a listing closed early holds none
        pages = env.host.walk_pages(j(env.base, "q"), page=5, timeout=30)
        assert len(await asyncio.wait_for(pages.__anext__(), 20)) == 5
        await pages.aclose()
    assert (await asyncio.wait_for(env.host.count_files(j(env.base, "q"), timeout=30), 20)).files == 50


async def test_read_files_answers_each_path_in_order(env):
    files = {"a": b"alpha", "sp ace": b"", "new\nline": b"n" * 3000, "ü": bytes(range(256)), "$(id)": b"id",
             "a;b|c&d": b"x", "-n": b"dash", "x" * 200: b"long"}
    for n, d in files.items():
        env.put(j(env.base, "rf", n), d)
    asked = [j(env.base, "rf", n) for n in ["ü", "a", "new\nline", "sp ace", "$(id)", "a;b|c&d", "-n", "x" * 200]]
    got = await env.host.read_files(asked, timeout=60)
    assert [(r.path, r.data) for r in got] == [(p, files[p.rsplit("/", 1)[1]]) for p in asked]
    assert await env.host.read_files([], timeout=60) == []
    await env.host.makedirs(j(env.base, "rf", "d"))
    got = await env.host.read_files([j(env.base, "rf", "a"), j(env.base, "rf", "d"), j(env.base, "rf", "gone")],
                                    timeout=60)
    assert [r.path for r in got] == [j(env.base, "rf", "a"), j(env.base, "rf", "d"), j(env.base, "rf", "gone")]
    # a path that is not a regular file, or is missing, is never answered with bytes
    assert got[1].data is None and got[1].problem and got[2].data is None and got[2].problem


async def test_open_read(env):
    data = bytes(range(256)) * 1000 + b"tail"
    p = j(env.base, "r", "f i l e")
    env.put(p, data)
    assert b"".join([c async for c in env.host.open_read(p)]) == data
    chunks = [c async for c in env.host.open_read(p, offset=1000, block_size=4096)]
    assert b"".join(chunks) == data[1000:] and all(len(c) == 4096 for c in chunks[:-1])
    env.put(j(env.base, "r", "empty"), b"")
    assert [c async for c in env.host.open_read(j(env.base, "r", "empty"))] == []
    with pytest.raises(RemoteError):
        async for _ in env.host.open_read(j(env.base, "r", "missing")):
            pass


async def gen(parts, fail_at=None):
    for i, p in enumerate(parts):
        if i == fail_at:
            raise BrsmError("source broke")
        yield p


async def test_write_file_is_atomic(env):
    dest = j(env.base, "w", "sub", "out.sst")
    parts = [bytes([i]) * 300_000 for i in range(5)]
    assert await env.host.write_file(dest, gen(parts), mode=0o600) == 1_500_000
    assert env.get(dest) == b"".join(parts) and env.mode(dest) == 0o600
    assert env.listdir(j(env.base, "w", "sub")) == ["out.sst"]
    with pytest.raises(BrsmError, match="source broke"):
        await env.host.write_file(dest, gen(parts, fail_at=3))
    assert env.get(dest) == b"".join(parts)
    assert env.listdir(j(env.base, "w", "sub")) == ["out.sst"]
    fresh = j(env.base, "w", "fresh")
    with pytest.raises(BrsmError):
        await env.host.write_file(fresh, gen(parts, fail_at=1))
    assert env.get(fresh) is None and env.get(fresh + TMP_SUFFIX) is None
    assert await env.host.write_file(j(env.base, "w", "zero"), gen([])) == 0
    assert env.get(j(env.base, "w", "zero")) == b""


async def test_write_file_refuses_a_temp_name_it_did_not_create(env):
    """Something other than a regular file at the temp name (here a directory) is refused and left as
    it is; a stale regular temp file (an interrupted write's) is replaced."""
    dest = j(env.base, "t", "out.sst")
    env.put(j(dest + TMP_SUFFIX, "inner"), b"keep")
    with pytest.raises(RemoteError, match="refusing to write .*directory brsm did not create"):
        await env.host.write_file(dest, gen([b"x" * 10]))
    assert env.get(j(dest + TMP_SUFFIX, "inner")) == b"keep" and env.get(dest) is None
    stale = j(env.base, "t", "two.sst")
    env.put(stale + TMP_SUFFIX, b"stale bytes")
    assert await env.host.write_file(stale, gen([b"new"])) == 3
    assert env.get(stale) == b"new" and env.get(stale + TMP_SUFFIX) is None


async def test_exists_rename_makedirs(env):
    d = j(env.base, "m", "a b", "c")
    await env.host.makedirs(d)
    await env.host.makedirs(d)
    assert await env.host.exists(d) and not await env.host.exists(j(env.base, "m", "zz"))
    env.put(j(d, "f"), b"x")
    await env.host.rename(j(env.base, "m", "a b"), j(env.base, "m", "moved"))
    assert env.get(j(env.base, "m", "moved", "c", "f")) == b"x"
    assert not await env.host.exists(j(env.base, "m", "a b"))
    env.put(j(env.base, "m", "g"), b"new")
    env.put(j(env.base, "m", "h"), b"old")
    await env.host.rename(j(env.base, "m", "g"), j(env.base, "m", "h"))  # replaces a file
    assert env.get(j(env.base, "m", "h")) == b"new"
    with pytest.raises(RemoteError):
        await env.host.rename(j(env.base, "m", "missing"), j(env.base, "m", "x"))


async def test_remove_tree(env):
    env.put(j(env.base, "rm", "x", "y"), b"1")
    for bad in ("/", "", "relative", "/a/..", "//"):
        with pytest.raises(RemoteError, match="refusing"):
            await env.host.remove_tree(bad)
    await env.host.remove_tree(j(env.base, "rm", "x"))
    assert env.listdir(j(env.base, "rm")) == []
    await env.host.remove_tree(j(env.base, "rm", "x"))


async def test_free_bytes(env):
    free = await env.host.free_bytes(env.base)
    assert isinstance(free, int) and free > 0


async def _status_until(h, svc, inst, word):
    for _ in range(5):  # stop and start return before the daemon exits or runs
        st = await h.service("status", svc, install_dir=inst)
        assert st.exit_status == 0  # whatever the daemon does: only the text tells
        if word in st.stdout:
            return st
    raise AssertionError(f"status never said {word}: {st.stdout!r}")


async def test_service(env):
    """service() runs nebula.service and hands back what it said, never raising on its exit status."""
    h, inst, svc = env.host, env.install_dir, env.svc
    r = await h.service("stop", svc, install_dir=inst)
    assert r.exit_status == 0 and f"Stopping nebula-{svc}" in r.stdout
    await _status_until(h, svc, inst, "Exited")
    r = await h.service("start", svc, install_dir=inst)
    assert r.exit_status == 0
    await _status_until(h, svc, inst, "Running")
    r = await h.service("start", svc, install_dir=inst)  # not raised: the caller reads it
    assert r.exit_status == 1 and f"nebula-{svc} already running" in r.stderr
    with pytest.raises(ValueError):
        await h.service("explode", svc, install_dir=inst)


async def test_make_dir_is_exclusive_and_lstat_dir_tells_identity(env):
    d = j(env.base, "scratch")
    assert await env.host.lstat_dir(d) is None
    made = await env.host.make_dir(d)
    again = await env.host.lstat_dir(d)
    assert again is not None and again.identity == made.identity and again.mine and again.empty
    with pytest.raises(RemoteError, match="cannot create"):
        await env.host.make_dir(d)  # never an existing name
    env.put(j(d, "f"), b"x")
    assert not (await env.host.lstat_dir(d)).empty
    await env.host.rename(d, j(env.base, "moved"))
    await env.host.make_dir(d)
    assert (await env.host.lstat_dir(d)).identity != made.identity  # another dir at the name: told apart
    assert (await env.host.lstat_dir(j(env.base, "moved"))).identity == made.identity  # a rename keeps it
    env.put(j(env.base, "file"), b"x")
    with pytest.raises(RemoteError, match="refusing .*not a directory"):
        await env.host.lstat_dir(j(env.base, "file", "below"))
    with pytest.raises(RemoteError, match="No such file or directory"):
        await env.host.make_dir(j(env.base, "no", "parent"))
