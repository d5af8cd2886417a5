"""nebula-br habits get "did you mean …" with the brsm command built from what was typed; a cluster named
by neither a config nor --meta is told about --meta; a missing known_hosts file is said once for all hosts,
with a hint that names no config when there is none."""
from __future__ import annotations

import asyncio

import pytest

from brsm.cli.app import main
from brsm.cli.habits import suggest, without_click_guess
from brsm.errors import PreflightFailed, RemoteError
from brsm.workflows.ssh_login import check_ssh, ssh_failure_groups


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("BRSM_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("BRSM_CONFIG", raising=False)
    return tmp_path / "home"


@pytest.mark.parametrize("argv, says", [
    ("backup full --meta 10.0.0.1:9559 --storage s3://b/p",
     "did you mean `brsm start backup --meta 10.0.0.1:9559 --storage s3://b/p`? (every brsm backup is full)"),
    ("restore full --meta m:9559 --storage local:///b --name BACKUP_2020_01_01_00_00_00",
     "did you mean `brsm start restore --meta m:9559 --storage local:///b --name BACKUP_2020_01_01_00_00_00`?"),
    ("cleanup --meta m:9559 --storage local:///b --name BACKUP_2020_01_01_00_00_00",
     "did you mean `brsm cleanup BACKUP_2020_01_01_00_00_00 --meta m:9559 --storage local:///b`?"),
    ("cleanup --name=BACKUP_2020_01_01_00_00_00 --storage local:///b",
     "did you mean `brsm cleanup BACKUP_2020_01_01_00_00_00 --storage local:///b`?"),
    ("start backup full --meta m:9559", "did you mean `brsm start backup --meta m:9559`?"),
    ("backup incr --meta m:9559", "brsm makes full backups only"),
    ("start restore --name BACKUP_2020_01_01_00_00_00 --spaces a", "there is no --spaces on restore"),
    ("show --storage s3://b/p --s3.endpoint http://minio:9000 --s3.region=default",
     "did you mean `brsm show --storage s3://b/p --s3-endpoint http://minio:9000 --s3-region=default`?"),
])
def test_a_nebula_br_command_line_gets_the_brsm_one(home, capsys, argv, says):
    assert says in suggest(argv.split())
    code = main(argv.split())
    err = capsys.readouterr().err
    assert code == 2 and f"hint: {suggest(argv.split())}" in err, err
    assert "Did you mean 'resume'" not in err and "Possible options" not in err, err


def test_keys_given_as_nebula_br_flags_are_never_repeated(home, capsys):
    argv = ["backup", "full", "--meta", "m:9559", "--storage", "s3://b/p", "--s3.access_key", "AKIAEXAMPLE",
            "--s3.secret_key=wJalrSECRET", "--s3.endpoint=http://minio:9000"]
    hint = suggest(argv)
    assert "AKIAEXAMPLE" not in hint and "wJalrSECRET" not in hint
    assert "brsm start backup --meta m:9559 --storage s3://b/p --s3-endpoint=http://minio:9000" in hint
    assert "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY" in hint
    main(argv)
    cap = capsys.readouterr()
    assert "AKIAEXAMPLE" not in cap.err + cap.out and "wJalrSECRET" not in cap.err + cap.out


def test_other_mistakes_keep_clicks_help_pointer(home, capsys):
    assert suggest(["show", "--bogus"]) is None and suggest([]) is None
    assert main(["show", "--bogus"]) == 2
    assert "see `brsm show --help`" in capsys.readouterr().err
    assert without_click_guess("No such option: --x") == "No such option: --x"


def test_no_config_and_no_meta_mentions_meta(home, capsys):
    assert main(["start", "backup", "--storage", "local:///tmp/x"]) == 2
    err = capsys.readouterr().err
    assert "no cluster config given, and no --meta" in err and "--meta HOST:PORT" in err, err


class _Hosts:
    """Every login fails the way a missing known_hosts file makes it fail (brsm.adapters.ssh)."""

    def host(self, name):
        hosts = self

        class H:
            async def check_login(self, *, timeout=30):
                raise RemoteError(f"{name}: no host key can be verified: the known_hosts file /k does not exist",
                                  host=name, hint=f"create it (ssh-keyscan -p 22 {name} >> /k), or run once with "
                                                  "--accept-new-host-keys")
        return H()


def test_a_missing_known_hosts_is_said_once_for_every_host():
    with pytest.raises(PreflightFailed) as ei:
        asyncio.run(check_ssh(_Hosts(), ["10.0.0.11", "10.0.0.101", "10.0.0.102", "10.0.0.1"]))
    e = ei.value
    assert e.message.count("does not exist") == 1, e.message
    assert e.message == ("SSH to 4 of 4 host(s) failed: 10.0.0.1, 10.0.0.101, 10.0.0.102, 10.0.0.11: no host key "
                         "can be verified: the known_hosts file /k does not exist")
    assert e.hint == ("create it (ssh-keyscan -p 22 10.0.0.1 10.0.0.101 10.0.0.102 10.0.0.11 >> /k), or run once "
                      "with --accept-new-host-keys")
    assert "config" not in e.hint


def test_different_causes_stay_apart_and_the_general_hint_names_no_missing_config():
    groups = ssh_failure_groups([("a", "login refused", None), ("b", "timed out", None), ("c", "login refused", None)])
    assert groups == [(["a", "c"], "login refused", None), (["b"], "timed out", None)]
    # a host name inside another's (10.0.0.1 in 10.0.0.11) is not taken for it
    groups = ssh_failure_groups([("10.0.0.1", "x 10.0.0.11 y", None)])
    assert groups == [(["10.0.0.1"], "x 10.0.0.11 y", None)]
