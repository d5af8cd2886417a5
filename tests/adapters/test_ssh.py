"""SshHosts against a real OpenSSH sshd on a random loopback address."""
from __future__ import annotations

import asyncio
import hashlib
import os
import time

import pytest

from brsm.adapters.ssh import TMP_SUFFIX, SshHost, SshHosts
from brsm.errors import BrsmError, RemoteError
from brsm.ports import HostPort, HostsPort

pytestmark = pytest.mark.sandbox


@pytest.fixture
async def host(sshd):
    hosts = SshHosts({sshd.ip: sshd.target()})
    yield hosts.host(sshd.ip)
    await hosts.close()


async def test_protocols(sshd):
    hosts = SshHosts({sshd.ip: sshd.target()})
    assert isinstance(hosts, HostsPort) and isinstance(hosts.host(sshd.ip), HostPort)
    assert hosts.host(sshd.ip) is hosts.host(sshd.ip)
    with pytest.raises(RemoteError, match="no SSH settings"):
        hosts.host("10.9.9.9")
    await hosts.close()


AWKWARD = ["plain", "with space", "it's", '"double"', "$(rm -rf /)", "`id`", "a;b|c&d", "*", "~", "",
           "new\nline", "tab\tx", "-n", "ünïcødé", "$HOME", "back\\slash"]


async def test_run_quotes_every_argument(host):
    r = await host.run(["printf", "%s\\0", *AWKWARD])
    assert r.exit_status == 0
    assert r.stdout.split("\0")[:-1] == AWKWARD


async def test_run_check_failure_names_status_and_stderr(host):
    with pytest.raises(RemoteError) as ei:
        await host.run(["sh", "-c", "for i in 1 2 3 4 5 6 7 8 9 10; do echo line$i >&2; done; exit 3"])
    msg = str(ei.value)
    assert "status 3" in msg and "line10" in msg and "line1\n" not in msg  # only the last lines
    assert ei.value.host == host.name
    r = await host.run(["sh", "-c", "echo out; echo err >&2; exit 7"], check=False)
    assert (r.exit_status, r.stdout, r.stderr) == (7, "out\n", "err\n")


async def test_run_timeout(host):
    t0 = time.monotonic()
    with pytest.raises(RemoteError, match="did not finish"):
        await host.run(["sleep", "5"], timeout=0.5)
    assert time.monotonic() - t0 < 4
    assert (await host.run(["true"])).exit_status == 0  # the connection is still usable


async def test_a_verb_that_hangs_on_the_host_ends_at_its_timeout(host, remote_dir):
    """A FIFO where a flagfile should be (or a dead mount): `cat` blocks for ever; the verb gives up at
    the timeout it was given, and a lease's look at the FIFO never opens it."""
    fifo = remote_dir / "nebula-storaged.conf"
    os.mkfifo(fifo)
    t0 = time.monotonic()
    try:
        with pytest.raises(RemoteError, match="did not finish within 0.5s"):
            await host.read_text(str(fifo), timeout=0.5)
        assert time.monotonic() - t0 < 4
        assert await host.path_kind(str(fifo), timeout=5) == "other"
    finally:
        for _ in range(20):  # the `cat` still waits on the host (a timeout ends the wait, not it): let it end
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
                break
            except OSError:  # no reader (yet, or any more)
                await asyncio.sleep(0.05)


async def test_many_concurrent_commands_share_one_connection(host):
    # OpenSSH allows 10 sessions per connection by default: more must queue, not fail
    rs = await asyncio.gather(*(host.run(["sh", "-c", f"sleep 0.2; echo {i}"]) for i in range(30)))
    assert [r.stdout.strip() for r in rs] == [str(i) for i in range(30)]


async def test_unknown_host_key_rejected(sshd):
    for kh, says, hint in ((sshd.other_known_hosts, "has CHANGED", f"ssh-keygen -R '[{sshd.ip}]:{sshd.port}'"),
                           (sshd.dir / "empty_known_hosts", "is unknown", f"ssh-keyscan -p {sshd.port} {sshd.ip}")):
        kh.touch()
        hosts = SshHosts({sshd.ip: sshd.target(known_hosts=str(kh))})
        with pytest.raises(RemoteError) as ei:
            await hosts.host(sshd.ip).run(["true"])
        assert f"host key of {sshd.ip}:{sshd.port} {says}" in str(ei.value) and "SHA256:" in str(ei.value)
        assert hint in ei.value.hint
        await hosts.close()


async def test_refused_and_auth_failures_are_clear(sshd, tmp_path):
    from tests.adapters.conftest import free_port, keygen
    port = free_port(sshd.ip)
    hosts = SshHosts({sshd.ip: sshd.target(port=port)})
    with pytest.raises(RemoteError, match=f"{sshd.ip}:{port} refused") as ei:
        await hosts.host(sshd.ip).run(["true"])
    assert "sshd" in ei.value.hint
    keygen(tmp_path / "stranger")
    hosts = SshHosts({sshd.ip: sshd.target(identity=str(tmp_path / "stranger"))})
    with pytest.raises(RemoteError, match="refused") as ei:
        await hosts.host(sshd.ip).run(["true"])
    assert "authorized_keys" in ei.value.hint
    await hosts.close()


async def test_walk_lists_files_with_awkward_names(host, remote_dir):
    names = ["a.sst", "with space.sst", "sub dir/x\ny.log", "sub dir/deeper/$(id).txt", "empty"]
    for i, n in enumerate(names):
        p = remote_dir / n
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x" * i)
    (remote_dir / "emptydir").mkdir()
    files = await host.walk(str(remote_dir))
    assert {(f.path, f.size) for f in files} == {(str(remote_dir / n), i) for i, n in enumerate(names)}
    assert [f.path for f in files] == sorted(f.path for f in files)
    with pytest.raises(RemoteError):
        await host.walk(str(remote_dir / "missing"))


async def test_read_files_never_takes_a_link_or_a_missing_file_for_the_file(host, remote_dir):
    """One tar over SSH: a symlink where a file was listed is answered as a link (never followed), and
    a tar that did not exit 0 (a file gone) is trusted for none of its files."""
    (remote_dir / "a").write_bytes(b"alpha")
    (remote_dir / "secret").write_bytes(b"not yours")
    (remote_dir / "l").symlink_to(remote_dir / "secret")
    (remote_dir / "-n x").write_bytes(b"dash")
    got = await host.read_files([str(remote_dir / "l"), str(remote_dir / "a"), str(remote_dir / "-n x")], timeout=60)
    assert got[0].data is None and "symbolic link" in got[0].problem
    assert (got[1].data, got[2].data) == (b"alpha", b"dash")
    got = await host.read_files([str(remote_dir / "a"), str(remote_dir / "gone")], timeout=60)
    assert [r.data for r in got] == [None, None] and all("tar:" in r.problem for r in got), got


async def test_walk_pages_reads_a_big_listing_page_by_page(host, remote_dir):
    names = [f"{i:05d}-" + "n" * 80 for i in range(3000)]
    for n in names:
        (remote_dir / n).write_bytes(b"")
    seen, pages = set(), 0
    async for page in host.walk_pages(str(remote_dir), page=700, timeout=30):
        assert 0 < len(page) <= 700
        seen.update(f.path for f in page)
        pages += 1
    assert seen == {str(remote_dir / n) for n in names} and pages == 5


async def read_all(host, path, **kw) -> tuple[str, int]:
    h = hashlib.sha256()
    n = 0
    async for chunk in host.open_read(path, **kw):
        h.update(chunk)
        n += len(chunk)
    return h.hexdigest(), n


@pytest.fixture(scope="module")
def big_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("big")
    out = []
    for i in range(4):
        p = d / f"big{i}.bin"
        with open(p, "wb") as fh:
            for _ in range(64):
                fh.write(os.urandom(1 << 20))
        out.append((str(p), hashlib.sha256(p.read_bytes()).hexdigest()))
    return out


async def test_read_64mib_sha256_and_throughput(host, big_files, capsys):
    path, digest = big_files[0]
    await host.run(["true"])  # connect first: measure the transfer only
    t0 = time.perf_counter()
    got, n = await read_all(host, path)
    dt = time.perf_counter() - t0
    assert (got, n) == (digest, 64 << 20)
    t0 = time.perf_counter()
    res = await asyncio.gather(*(read_all(host, p) for p, _ in big_files))
    dt4 = time.perf_counter() - t0
    assert [r[0] for r in res] == [d for _, d in big_files]
    with capsys.disabled():
        print(f"\nSFTP read 64 MiB: one file {64 / dt:.0f} MiB/s; four at once {4 * 64 / dt4:.0f} MiB/s total")


async def test_read_offset_and_small_blocks(host, remote_dir):
    data = os.urandom(3 * 65536 + 17)
    (remote_dir / "f").write_bytes(data)
    chunks = [c async for c in host.open_read(str(remote_dir / "f"), offset=1000, block_size=65536)]
    assert b"".join(chunks) == data[1000:]
    assert all(len(c) == 65536 for c in chunks[:-1])
    (remote_dir / "e").write_bytes(b"")
    assert [c async for c in host.open_read(str(remote_dir / "e"))] == []
    with pytest.raises(RemoteError):
        async for _ in host.open_read(str(remote_dir / "missing")):
            pass


async def gen(parts, fail_after=None):
    for i, p in enumerate(parts):
        if fail_after is not None and i == fail_after:
            raise BrsmError("source broke")
        yield p


async def test_write_file_atomic(host, remote_dir):
    dest = remote_dir / "new dir" / "out.sst"
    parts = [os.urandom(700_000) for _ in range(9)]
    n = await host.write_file(str(dest), gen(parts), mode=0o600)
    assert n == sum(map(len, parts)) and dest.read_bytes() == b"".join(parts)
    assert dest.stat().st_mode & 0o777 == 0o600
    assert not (remote_dir / "new dir" / ("out.sst" + TMP_SUFFIX)).exists()
    # a stream failing midway: the old file stays as it was, no temp file remains
    with pytest.raises(BrsmError, match="source broke"):
        await host.write_file(str(dest), gen([b"new"] * 5, fail_after=3))
    assert dest.read_bytes() == b"".join(parts)
    fresh = remote_dir / "fresh.sst"
    with pytest.raises(BrsmError, match="source broke"):
        await host.write_file(str(fresh), gen([b"x" * 100_000] * 5, fail_after=2))
    assert not fresh.exists() and sorted(os.listdir(remote_dir)) == ["new dir"]
    assert os.listdir(remote_dir / "new dir") == ["out.sst"]


async def test_write_file_never_writes_through_a_symlink_at_the_temp_name(host, remote_dir):
    """A symlink planted at ``<file>.brsm-tmp`` once made a restore write the backup's bytes into its
    target and chmod it: now the temp file is created exclusively, the link is refused and left, and
    its target keeps its bytes and mode."""
    victim = remote_dir / "victim"
    victim.write_bytes(b"precious")
    victim.chmod(0o600)
    dest = remote_dir / "d" / "out.sst"
    dest.parent.mkdir()
    (remote_dir / "d" / ("out.sst" + TMP_SUFFIX)).symlink_to(victim)
    with pytest.raises(RemoteError, match="refusing to write .*symbolic link brsm did not create"):
        await host.write_file(str(dest), gen([b"backup bytes"]), mode=0o644)
    assert victim.read_bytes() == b"precious" and victim.stat().st_mode & 0o777 == 0o600
    assert (remote_dir / "d" / ("out.sst" + TMP_SUFFIX)).is_symlink() and not dest.exists()
    # a dangling link (its target does not exist yet) is not followed into creating the target either
    (remote_dir / "d" / ("two" + TMP_SUFFIX)).symlink_to(remote_dir / "created-through-link")
    with pytest.raises(RemoteError, match="refusing"):
        await host.write_file(str(remote_dir / "d" / "two"), gen([b"x"]))
    assert not (remote_dir / "created-through-link").exists()


async def test_exists_rename_makedirs_remove_tree(host, remote_dir):
    d = remote_dir / "a b" / "c"
    await host.makedirs(str(d))
    await host.makedirs(str(d))  # twice is fine
    assert d.is_dir() and await host.exists(str(d)) and not await host.exists(str(remote_dir / "nope"))
    (d / "f").write_text("x")
    await host.rename(str(remote_dir / "a b"), str(remote_dir / "moved"))
    assert (remote_dir / "moved" / "c" / "f").read_text() == "x"
    for bad in ("/", "", "relative/path", "/tmp/..", "//"):
        with pytest.raises(RemoteError, match="refusing"):
            await host.remove_tree(bad)
    await host.remove_tree(str(remote_dir / "moved"))
    assert not (remote_dir / "moved").exists()
    await host.remove_tree(str(remote_dir / "moved"))  # missing is fine


async def test_free_bytes(host, remote_dir):
    st = os.statvfs(remote_dir)
    free = await host.free_bytes(str(remote_dir))
    assert abs(free - st.f_bavail * st.f_frsize) < 64 << 20


async def test_service_runs_nebula_service(sshd, remote_dir):
    inst = remote_dir / "install"
    (inst / "scripts").mkdir(parents=True)
    script = inst / "scripts" / "nebula.service"
    script.write_text('#!/bin/sh\necho "$1 $2"\n[ "$1" = status ] && exit 3\nexit 0\n')
    script.chmod(0o755)
    hosts = SshHosts({sshd.ip: sshd.target(install_dir=str(inst))})
    h = hosts.host(sshd.ip)
    assert (await h.service("start", "metad", install_dir=str(inst))).stdout == "start metad\n"
    st = await h.service("status", "storaged", install_dir=str(inst))
    assert st.exit_status == 3 and st.stdout == "status storaged\n"
    await hosts.close()


async def test_dropped_connection_is_a_remote_error_and_reconnects(sshd, host, big_files):
    path, digest = big_files[0]
    await host.run(["true"])
    got = 0
    killed = 0
    with pytest.raises(RemoteError) as ei:
        async for chunk in host.open_read(path):
            got += len(chunk)
            if got >= 4 << 20 and not killed:
                killed = sshd.kill_sessions()
                assert killed >= 1
    assert "dropped" in str(ei.value) or "connection" in str(ei.value).lower()
    assert got < 64 << 20
    # the next call opens a new connection
    assert (await read_all(host, path))[0] == digest
    sshd.kill_sessions()
    await asyncio.sleep(0.2)
    assert (await host.run(["echo", "back"])).stdout == "back\n"


async def test_default_known_hosts_is_verified_too(sshd, tmp_path, monkeypatch):
    """known_hosts=None means ~/.ssh/known_hosts, never "accept anything"."""
    monkeypatch.setenv("HOME", str(tmp_path))
    hosts = SshHosts({sshd.ip: sshd.target(known_hosts=None)})
    with pytest.raises(RemoteError) as ei:
        await hosts.host(sshd.ip).run(["true"])
    assert "host key" in str(ei.value) and "~/.ssh/known_hosts" in ei.value.hint
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "known_hosts").write_text(sshd.known_hosts.read_text())
    hosts = SshHosts({sshd.ip: sshd.target(known_hosts=None)})
    assert (await hosts.host(sshd.ip).run(["echo", "ok"])).stdout == "ok\n"
    await hosts.close()


def test_a_generic_sftp_failure_on_a_write_names_a_full_disk():
    """sftp-server reports ENOSPC as SSH_FX_FAILURE, "Failure": the error said only "write …: Failure"."""
    import asyncssh

    from brsm.adapters.ssh import SshHost, SshTarget

    h = SshHost(SshTarget(name="10.0.0.7", host="10.0.0.7"))
    e = h._error("write /data/nebula/x.sst.brsm-tmp", asyncssh.SFTPFailure("Failure"))
    assert "full file system" in e.message and "df -h" in e.hint
    other = h._error("stat /data/x", asyncssh.SFTPFailure("Failure"))  # not a write: as before
    assert "full" not in other.message


async def test_lstat_dir_and_make_dir_refuse_a_symlink_at_or_above_the_dir(host, remote_dir):
    """A scratch dir planted as a symlink (or reached through one the connecting user could have made)
    is refused; mkdir never creates through a link at the name."""
    elsewhere = remote_dir / "elsewhere"
    elsewhere.mkdir()
    (remote_dir / "brsm_restore_1").symlink_to(elsewhere)
    with pytest.raises(RemoteError, match="symbolic link, not a directory"):
        await host.lstat_dir(str(remote_dir / "brsm_restore_1"))
    with pytest.raises(RemoteError, match="symbolic link, not a directory"):
        await host.make_dir(str(remote_dir / "brsm_restore_1"))
    (remote_dir / "via").symlink_to(elsewhere)
    if os.getuid() != 0:  # a link above it the connecting user could have made (root's own links are trusted)
        with pytest.raises(RemoteError, match="via is a symbolic link not owned by root"):
            await host.make_dir(str(remote_dir / "via" / "nebula_brsm_new_1"))
        assert list(elsewhere.iterdir()) == []
    else:  # a data path that is root's own link (a deployment variant) works
        made = await host.make_dir(str(remote_dir / "via" / "nebula_brsm_new_1"))
        assert (elsewhere / "nebula_brsm_new_1").is_dir() and made.empty
        (elsewhere / "nebula_brsm_new_1").rmdir()
    assert list(elsewhere.iterdir()) == []
    st = os.lstat(remote_dir)
    got = await host.lstat_dir(str(remote_dir))
    assert got.identity == (st.st_dev, st.st_ino)
