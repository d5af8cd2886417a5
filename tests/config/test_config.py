import pytest

from brsm.config import load_config
from brsm.errors import UsageError

GOOD = """
[cluster]
name = "prod"
meta = ["10.0.0.1:9559", "10.0.0.2:9559"]

[ssh]
user = "nebula"
port = 2222
identity = "keys/id_ed25519"
known_hosts = "/etc/brsm/known_hosts"

[[hosts]]
address = "10.0.0.1"
ssh_host = "bastion-1"

[[hosts]]
address = "10.0.0.3"
ssh_port = 22
install_dir = "/opt/nebula"

[storage]
default = "s3://b/p"
s3_endpoint = "http://127.0.0.1:9000"
"""


def test_good_config_with_defaults_and_overrides(tmp_path):
    p = tmp_path / "cluster.toml"
    p.write_text(GOOD)
    cfg = load_config(p)
    assert cfg.meta == ("10.0.0.1:9559", "10.0.0.2:9559")
    h1 = cfg.host("10.0.0.1")
    assert (h1.ssh_host, h1.ssh_port, h1.user, h1.install_dir) == ("bastion-1", 2222, "nebula", "/usr/local/nebula")
    assert h1.identity == str(tmp_path / "keys" / "id_ed25519")  # relative to the config file
    h3 = cfg.host("10.0.0.3")
    assert (h3.ssh_port, h3.install_dir) == (22, "/opt/nebula")
    unknown = cfg.host("10.0.0.9")  # a host metad reports but the file does not list: SSH defaults
    assert (unknown.ssh_host, unknown.ssh_port, unknown.known_hosts) == ("10.0.0.9", 2222, "/etc/brsm/known_hosts")
    assert cfg.storage.default == "s3://b/p"


def test_every_problem_is_reported_with_file_line_and_path(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text('[cluster]\nmeta = ["nohostport"]\n\n[ssh]\nport = 70000\n\n[[hosts]]\nssh_port = 22\n'
                 '\n[storage]\naccess_key_secret = "x"\n')
    with pytest.raises(UsageError) as ei:
        load_config(p)
    msg = ei.value.message
    assert f"{p}:2: cluster.meta" in msg
    assert f"{p}:5: ssh.port: must be a port number" in msg
    assert "hosts[0].address: missing" in msg
    assert "storage.access_key_secret" in msg
    assert "\"x\"" not in msg  # the value is not echoed


def test_missing_and_unparsable_files(tmp_path, monkeypatch):
    monkeypatch.delenv("BRSM_CONFIG", raising=False)
    with pytest.raises(UsageError, match="no cluster config"):
        load_config(None)
    with pytest.raises(UsageError, match="cannot read config"):
        load_config(tmp_path / "nope.toml")
    p = tmp_path / "x.toml"
    p.write_text("[cluster\n")
    with pytest.raises(UsageError, match="not valid TOML"):
        load_config(p)


def test_accept_new_host_keys_is_off_unless_set_and_must_be_a_bool(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text(GOOD)
    cfg = load_config(p)
    assert not cfg.ssh.accept_new_host_keys and not any(h.accept_new_host_keys for h in cfg.hosts)
    assert not cfg.host("10.9.9.9").accept_new_host_keys
    p.write_text(GOOD.replace('known_hosts = "/etc/brsm/known_hosts"',
                              'known_hosts = "/etc/brsm/known_hosts"\naccept_new_host_keys = true')
                 .replace('install_dir = "/opt/nebula"', 'install_dir = "/opt/nebula"\naccept_new_host_keys = false'))
    cfg = load_config(p)
    assert cfg.ssh.accept_new_host_keys and cfg.host("10.9.9.9").accept_new_host_keys
    assert [h.accept_new_host_keys for h in cfg.hosts] == [True, False]  # [[hosts]] inherits or overrides
    p.write_text(GOOD.replace('port = 2222', 'port = 2222\naccept_new_host_keys = "yes"'))
    with pytest.raises(UsageError) as ei:
        load_config(p)
    assert "ssh.accept_new_host_keys: must be true or false" in ei.value.message
