"""First contact with --accept-new-host-keys (OpenSSH's accept-new), against a real sshd: refused by
default; accepted with the flag, written to known_hosts (0600) and reported with its fingerprint;
a changed key refused even with the flag."""
from __future__ import annotations

import os
import stat
import subprocess

import pytest

from brsm.adapters.ssh import SshHosts
from brsm.errors import RemoteError


def fingerprint_of(pub_file) -> str:
    out = subprocess.run(["ssh-keygen", "-lf", str(pub_file)], check=True, capture_output=True, text=True).stdout
    return out.split()[1]


async def test_first_contact_is_refused_by_default(sshd, tmp_path):
    kh = tmp_path / "known_hosts"
    kh.write_text("")
    hosts = SshHosts({sshd.ip: sshd.target(known_hosts=str(kh))})
    with pytest.raises(RemoteError, match="is unknown") as ei:
        await hosts.host(sshd.ip).run(["true"])
    assert "--accept-new-host-keys" in ei.value.hint
    assert kh.read_text() == "" and hosts.take_accepted_host_keys() == []
    await hosts.close()


async def test_first_contact_is_accepted_with_the_flag_and_written(sshd, tmp_path):
    kh = tmp_path / "ssh" / "known_hosts"  # neither the file nor its directory exist yet
    seen = []
    hosts = SshHosts({sshd.ip: sshd.target(known_hosts=str(kh), accept_new_host_keys=True)},
                     on_host_key_accepted=seen.append)
    assert (await hosts.host(sshd.ip).run(["echo", "hi"])).stdout == "hi\n"
    await hosts.close()
    want = fingerprint_of(sshd.dir / "host_key.pub")
    assert [(k.host, k.port, k.fingerprint) for k in seen] == [(sshd.ip, sshd.port, want)]
    assert hosts.take_accepted_host_keys() == [seen[0].to_dict()] and hosts.take_accepted_host_keys() == []
    assert want in seen[0].warning() and "WARNING" in seen[0].warning()
    line = kh.read_text()
    host_pub = (sshd.dir / "host_key.pub").read_text().split()
    assert line == f"[{sshd.ip}]:{sshd.port} {host_pub[0]} {host_pub[1]}\n"
    assert stat.S_IMODE(kh.stat().st_mode) == 0o600
    # the next connection verifies against what was written, with or without the flag: nothing new
    for flag in (False, True):
        again = SshHosts({sshd.ip: sshd.target(known_hosts=str(kh), accept_new_host_keys=flag)})
        assert (await again.host(sshd.ip).run(["true"])).exit_status == 0
        assert again.take_accepted_host_keys() == []
        await again.close()
    assert kh.read_text() == line


async def test_a_changed_key_is_refused_even_with_the_flag(sshd, tmp_path):
    kh = tmp_path / "known_hosts"
    kh.write_text(sshd.other_known_hosts.read_text())  # this host, another key
    before = kh.read_bytes()
    hosts = SshHosts({sshd.ip: sshd.target(known_hosts=str(kh), accept_new_host_keys=True)})
    with pytest.raises(RemoteError, match="has CHANGED") as ei:
        await hosts.host(sshd.ip).run(["true"])
    assert fingerprint_of(sshd.dir / "host_key.pub") in str(ei.value)
    assert "never accepts a changed key" in ei.value.hint
    assert kh.read_bytes() == before and hosts.take_accepted_host_keys() == []
    await hosts.close()


async def test_a_missing_known_hosts_file_is_named(sshd, tmp_path):
    hosts = SshHosts({sshd.ip: sshd.target(known_hosts=str(tmp_path / "nope"))})
    with pytest.raises(RemoteError, match="does not exist") as ei:
        await hosts.host(sshd.ip).run(["true"])
    assert "--accept-new-host-keys" in ei.value.hint and not os.path.exists(tmp_path / "nope")
    await hosts.close()


async def test_a_known_hosts_that_trusts_only_a_certificate_authority_is_named_not_a_dropped_connection(sshd, tmp_path):
    """known_hosts with only `@cert-authority` for the host: asyncssh then offers certificate host key
    types only, the host (no certificate) has none, and the key exchange fails. That was reported as
    "SSH connection … dropped …; retry", which no retry fixes."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "ca")], check=True)
    ca = (tmp_path / "ca.pub").read_text().split()
    kh = tmp_path / "known_hosts"
    kh.write_text(f"@cert-authority [{sshd.ip}]:{sshd.port} {ca[0]} {ca[1]}\n")
    hosts = SshHosts({sshd.ip: sshd.target(known_hosts=str(kh))})
    with pytest.raises(RemoteError) as ei:
        await hosts.host(sshd.ip).run(["true"])
    text = f"{ei.value} {ei.value.hint}"
    assert "dropped" not in text and "retry (the connection is reopened)" not in text, text
    assert "@cert-authority" in text and "certificate" in str(ei.value)
    assert "ssh-keyscan" in ei.value.hint  # the other way out: trust the host's own key
    await hosts.close()
