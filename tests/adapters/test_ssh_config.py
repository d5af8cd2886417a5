"""brsm.adapters.ssh_config: what an OpenSSH client config says about a host, under brsm's own settings (issue 17)."""
from __future__ import annotations

import doctest

import pytest

from brsm.adapters import ssh_config as sc

CONFIG = """
Host 10.1.0.*
  Port 2222
  User nebula
  IdentityFile ~/keys/cluster
  ProxyJump ops@bastion.example:2200
Host bastion.example
  IdentityFile /keys/bastion
Host alias-db1
  HostName 10.1.0.7
Host chain
  ProxyJump b1,b2
Host b1
  ProxyJump b0
Host loop1
  ProxyJump loop2
Host loop2
  ProxyJump loop1
Host direct
  ProxyJump none
"""


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    p = tmp_path / "ssh_config"
    p.write_text(CONFIG)
    return str(p)


def test_the_config_supplies_what_brsm_does_not_set(cfg, tmp_path):
    r = sc.route("10.1.0.5", port=None, user=None, identity=None, config=cfg)
    assert r.target == sc.Endpoint("10.1.0.5", 2222, "nebula", f"{tmp_path}/keys/cluster")
    assert r.jumps == (sc.Endpoint("bastion.example", 2200, "ops", "/keys/bastion"),)
    assert r.where == "nebula@10.1.0.5:2222 via ops@bastion.example:2200"


def test_brsms_own_settings_win(cfg):
    r = sc.route("10.1.0.5", port=22, user="root", identity="/mine", config=cfg)
    assert r.target == sc.Endpoint("10.1.0.5", 22, "root", "/mine")
    assert len(r.jumps) == 1  # the jump host is the config's to say


def test_hostname_aliases_and_hosts_the_config_does_not_name(cfg):
    assert sc.route("alias-db1", port=None, user=None, identity=None, config=cfg).target.host == "10.1.0.7"
    plain = sc.route("10.9.9.9", port=None, user=None, identity=None, config=cfg)
    assert plain == sc.Route(sc.Endpoint("10.9.9.9", 22, None, None))
    assert sc.route("direct", port=None, user=None, identity=None, config=cfg).jumps == ()


def test_jump_chains_are_dialled_first_hop_first_and_loops_refused(cfg):
    r = sc.route("chain", port=None, user=None, identity="/k", config=cfg)
    assert [j.host for j in r.jumps] == ["b0", "b1", "b2"]
    assert all(j.identity == "/k" for j in r.jumps)  # a hop without a key of its own gets the target's
    with pytest.raises(ValueError, match="loops"):
        sc.route("loop1", port=None, user=None, identity=None, config=cfg)


def test_which_file_is_read(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert sc.config_path(None) is None  # no ~/.ssh/config
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "config").write_text("Host x\n  Port 2\n")
    assert sc.config_path(None) == str(tmp_path / ".ssh" / "config")
    assert sc.config_path("") is None  # [ssh] config = "": none
    assert sc.route("x", port=None, user=None, identity=None, config=None).target.port == 2
    assert sc.route("x", port=None, user=None, identity=None, config="").target.port == 22


def test_the_examples_in_the_docstrings_hold():
    assert doctest.testmod(sc).failed == 0


@pytest.mark.parametrize("shape", ["self", "pair"])
def test_an_include_loop_is_one_error_not_a_recursion(tmp_path, monkeypatch, shape):
    """asyncssh follows Include until Python's RecursionError (a 2,000-line traceback and a FAILED
    operation); OpenSSH stops at 16 levels. One ValueError naming the loop, which brsm.adapters.ssh turns
    into one RemoteError line."""
    monkeypatch.setenv("HOME", str(tmp_path))
    a, b = tmp_path / "a.conf", tmp_path / "b.conf"
    a.write_text(f"Include {a if shape == 'self' else b}\nHost x\n  Port 2200\n")
    b.write_text(f"Include {a}\n")
    with pytest.raises(ValueError) as e:
        sc.route("x", port=None, user=None, identity=None, config=str(a))
    assert not isinstance(e.value, RecursionError)
    assert "Include" in str(e.value) and "loop" in str(e.value)
    assert len(str(e.value).splitlines()) == 1


def test_includes_nested_within_the_bound_still_read(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    files = [tmp_path / f"c{i}.conf" for i in range(10)]
    for i, f in enumerate(files[:-1]):
        f.write_text(f"Include {files[i + 1]}\n")
    files[-1].write_text("Host deep\n  Port 2201\n")
    assert sc.route("deep", port=None, user=None, identity=None, config=str(files[0])).target.port == 2201
