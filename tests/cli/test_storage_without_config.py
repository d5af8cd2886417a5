"""Storage without a config file: cleanup and gc take the endpoint flags (and --meta), AWS_ENDPOINT_URL
names an S3-compatible store as --s3-endpoint does, and the hint of an operation whose store did not
answer never sends the user to a `brsm resume` that would go to the same wrong place."""
from __future__ import annotations

import json
import sqlite3

import pytest

from brsm.cli.app import main
from brsm.cli.reach import reach_hint
from brsm.wiring import open_storage_for, s3_env_endpoint

BOTH = frozenset({"resume", "rollback"})


@pytest.fixture
def home(tmp_path, monkeypatch):
    h = tmp_path / "home"
    monkeypatch.setenv("BRSM_HOME", str(h))
    for k in ("BRSM_CONFIG", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    return h


def params_of(home, op_id):
    con = sqlite3.connect(home / "journal.db")
    try:
        return json.loads(con.execute("SELECT params FROM operations WHERE id = ?", (op_id,)).fetchone()[0])
    finally:
        con.close()


def test_cleanup_takes_the_endpoint_flags_and_meta(home, capsys):
    code = main(["cleanup", "--yes", "BACKUP_2020_01_01_00_00_00", "--storage", "s3://bucket/p",
                 "--s3-endpoint", "http://127.0.0.1:1", "--s3-region", "eu-west-1", "--meta", "127.0.0.1:2"])
    err = capsys.readouterr().err
    assert code not in (0, 2), err  # it ran (no "No such option"), and found no metad at --meta
    assert "127.0.0.1:2" in err
    p = params_of(home, 1)
    assert (p["s3_endpoint"], p["s3_region"], p["meta"]) == ("http://127.0.0.1:1", "eu-west-1", ["127.0.0.1:2"])
    code = main(["cleanup", "--yes", "BACKUP_2020_01_01_00_00_00", "--storage", "s3://bucket/p",
                 "--s3-endpoint", "http://127.0.0.1:1"])
    err = capsys.readouterr().err
    assert code == 5 and "http://127.0.0.1:1/bucket" in err, err  # the flag's endpoint, path-style
    # the hint: the endpoint came from a flag, journaled: a resume goes there again
    assert "http://127.0.0.1:1 (its --s3-endpoint, journaled with it)" in err and "cannot be changed" in err, err


def test_gc_takes_the_endpoint_flags(home, capsys):
    code = main(["gc", "--storage", "s3://bucket/p", "--s3-endpoint", "http://127.0.0.1:1", "--meta", "127.0.0.1:2"])
    err = capsys.readouterr().err
    assert code not in (0, 2), err
    assert params_of(home, 1)["s3_endpoint"] == "http://127.0.0.1:1"


def test_aws_endpoint_url_is_the_endpoint_when_no_flag_or_config_names_one(monkeypatch):
    assert s3_env_endpoint({}) is None
    assert s3_env_endpoint({"AWS_ENDPOINT_URL": "http://a:9000"}) == "http://a:9000"
    assert s3_env_endpoint({"AWS_ENDPOINT_URL": "http://a", "AWS_ENDPOINT_URL_S3": "http://s3"}) == "http://s3"
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://minio.internal:9000")
    st = open_storage_for({"storage": "s3://bucket/p"}, None)
    assert getattr(st, "inner", st).endpoint == "http://minio.internal:9000"  # so: path-style, as a flag gets
    st = open_storage_for({"storage": "s3://bucket/p", "s3_endpoint": "http://flag:1"}, None)
    assert getattr(st, "inner", st).endpoint == "http://flag:1"  # the flag wins


def test_no_endpoint_anywhere_the_hint_names_aws_and_the_fix_a_resume_sees(home, capsys, monkeypatch):
    """It said "is the S3 endpoint reachable?; fix the cause, then `brsm resume 1`": that resume went to
    AWS again, as nothing it reads had changed."""
    hint = reach_hint(1, {"storage": "s3://b/p"}, BOTH, config_endpoint=None, environ={})
    assert hint == ("is the S3 endpoint reachable? operation 1 uses AWS's own endpoint (no --s3-endpoint, no "
                    "[storage] s3_endpoint, no AWS_ENDPOINT_URL): if that is not your store, export "
                    "AWS_ENDPOINT_URL=URL, then `brsm resume 1` or `brsm rollback 1`")


@pytest.mark.parametrize("params, cfg_ep, env, says", [
    ({"storage": "s3://b/p", "config": "/etc/c.toml"}, "http://m:9000", {},
     "http://m:9000 ([storage] s3_endpoint of /etc/c.toml, which a resume reads again): if that is not your "
     "store, correct [storage] s3_endpoint in /etc/c.toml, then `brsm resume 4`"),
    ({"storage": "s3://b/p"}, None, {"AWS_ENDPOINT_URL": "http://e:1"},
     "http://e:1 ($AWS_ENDPOINT_URL, which a resume reads again): if that is not your store, correct "
     "$AWS_ENDPOINT_URL, then `brsm resume 4`"),
    ({"storage": "oss://b/p"}, None, {"OSS_ENDPOINT": "https://oss.example"},
     "https://oss.example ($OSS_ENDPOINT, which a resume reads again)"),
    ({"storage": "s3://b/p", "s3_endpoint": "http://wrong:1"}, None, {"AWS_ENDPOINT_URL": "http://right:1"},
     "http://wrong:1 (its --s3-endpoint, journaled with it): `brsm resume 4` or `brsm rollback 4` goes there "
     "again once it answers; if that endpoint is wrong, it cannot be changed for this operation"),
])
def test_the_hint_names_where_the_endpoint_came_from(params, cfg_ep, env, says):
    assert says in reach_hint(4, params, BOTH, config_endpoint=cfg_ep, environ=env)


def test_rolled_back_or_local_storage():
    hint = reach_hint(4, {"storage": "s3://b/p"}, frozenset(), config_endpoint=None, environ={})
    assert "resume" not in hint and hint.endswith("start again with the right --s3-endpoint (or $AWS_ENDPOINT_URL)")
    assert reach_hint(4, {"storage": "local:///x"}, BOTH, config_endpoint=None, environ={}) is None
