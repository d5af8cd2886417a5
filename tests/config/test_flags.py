"""Issue 17: the cluster named by nebula-br-style flags, with or without a config file; the order is
defaults < file < flags, and a [[hosts]] line's own settings stay the most specific."""
from __future__ import annotations

import pytest

from brsm.config import load_cluster
from brsm.errors import UsageError

FILE = '''[cluster]
name = "prod"
meta = ["10.0.0.1:9559"]
[ssh]
user = "nebula"
port = 2222
[[hosts]]
address = "10.0.0.21"
user = "special"
install_dir = "/opt/nebula"
'''


def test_flags_alone_make_a_config():
    cfg = load_cluster(None, {"meta": ["10.0.0.1:9559", "10.0.0.2:9559"], "ssh_user": "ops", "ssh_port": 2200})
    assert cfg.meta == ("10.0.0.1:9559", "10.0.0.2:9559") and cfg.ssh.user == "ops" and cfg.ssh.port == 2200
    assert cfg.host("10.0.0.9").user == "ops" and cfg.configured_install_dir("10.0.0.9") is None


def test_flags_override_the_file_but_not_a_hosts_own_line(tmp_path, monkeypatch):
    monkeypatch.delenv("BRSM_CONFIG", raising=False)
    f = tmp_path / "c.toml"
    f.write_text(FILE)
    key = tmp_path / "id"
    key.write_text("k")
    monkeypatch.chdir(tmp_path)
    cfg = load_cluster(str(f), {"meta": ["10.0.0.5:9559"], "ssh_user": "ops", "ssh_key": "id"})
    assert cfg.name == "prod" and cfg.meta == ("10.0.0.5:9559",)
    assert cfg.ssh.user == "ops" and cfg.ssh.port == 2222  # the file's port, the flag's user
    assert cfg.ssh.identity == str(key)  # a flag's relative path is relative to where it was typed
    assert cfg.host("10.0.0.21").user == "special"  # the host's own line wins
    assert cfg.host("10.0.0.22").user == "ops"
    assert cfg.configured_install_dir("10.0.0.21") == "/opt/nebula"


def test_without_meta_and_without_a_file_one_clear_line(monkeypatch):
    monkeypatch.delenv("BRSM_CONFIG", raising=False)
    with pytest.raises(UsageError, match="--meta is needed without a config file"):
        load_cluster(None, {"ssh_user": "ops"})


def test_a_bad_flag_value_is_reported_like_a_config_error():
    with pytest.raises(UsageError, match="cluster.meta"):
        load_cluster(None, {"meta": ["not-an-address"]})
