"""Config files an adversarial operator hands brsm (issue 13): not a file at all, unknown keys in any
section, multipart sizes the stores refuse. Each is one UsageError (exit 2) at load time, at once."""
from __future__ import annotations

import os
import threading
import time

import pytest

from brsm.config import load_config, parse_config
from brsm.errors import UsageError
from brsm.wiring import open_storage_for

BASE = '[cluster]\nmeta = ["10.0.0.1:9559"]\n'


def _load_within(path, seconds: float = 5.0):
    """load_config in a thread: a hang (reading a FIFO or /dev/zero) fails the test instead of blocking it."""
    box: dict = {}

    def go():
        try:
            box["cfg"] = load_config(path)
        except BaseException as e:  # noqa: BLE001 - handed to the test
            box["err"] = e

    t = threading.Thread(target=go, daemon=True)
    t0 = time.monotonic()
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"load_config({path}) still running after {seconds} s"
    return box, time.monotonic() - t0


@pytest.mark.parametrize("what", ["dev_zero", "fifo", "directory", "dev_null"])
def test_a_config_that_is_not_a_regular_file_is_refused_at_once(tmp_path, what):
    path = {"dev_zero": "/dev/zero", "dev_null": "/dev/null", "directory": str(tmp_path)}.get(what)
    if what == "fifo":
        path = str(tmp_path / "c.toml")
        os.mkfifo(path)
    box, took = _load_within(path)
    err = box.get("err")
    assert isinstance(err, UsageError), box
    assert "not a file" in err.message and path in err.message and took < 2
    assert err.exit_code == 2


def test_a_huge_or_binary_config_is_refused(tmp_path):
    big = tmp_path / "big.toml"
    with open(big, "wb") as f:
        f.truncate(2 << 20)  # sparse: 2 MiB of zeros
    with pytest.raises(UsageError, match="too large"):
        load_config(big)
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"\xff\xfe[cluster]")
    with pytest.raises(UsageError, match="not UTF-8"):  # was a UnicodeDecodeError traceback, exit 1
        load_config(binary)


@pytest.mark.parametrize("section, text, where", [
    ("cluster", BASE + 'nmae = "prod"\n', "cluster.nmae"),
    ("ssh", BASE + '[ssh]\nusr = "x"\n', "ssh.usr"),
    ("hosts", BASE + '[[hosts]]\naddress = "h"\nssh_prot = 2\n', "hosts[0].ssh_prot"),
    ("storage", BASE + '[storage]\ndefualt = "s3://b/p"\n', "storage.defualt"),
    ("limits", BASE + '[limits]\nconcurrency = 4\n', "limits.concurrency"),
    ("metrics", BASE + '[metrics]\nfiel = "/tmp/x.prom"\n', "metrics.fiel"),
    ("top", BASE + '[clutser]\nname = "x"\n', "clutser"),
])
def test_unknown_keys_are_errors_in_every_section(tmp_path, section, text, where):
    p = tmp_path / "c.toml"
    p.write_text(text)
    with pytest.raises(UsageError) as ei:
        load_config(p)
    assert f": {where}: unknown" in ei.value.message, ei.value.message


@pytest.mark.parametrize("key", ["identity", "known_hosts"])
def test_ssh_files_that_are_devices_or_fifos_are_refused(tmp_path, key):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for section, path in (("[ssh]", "/dev/zero"), ("[ssh]", "/dev/null"), ('[[hosts]]\naddress = "h"', str(fifo))):
        p = tmp_path / "c.toml"
        p.write_text(BASE + f'{section}\n{key} = "{path}"\n')
        with pytest.raises(UsageError, match=f"{key}: {path} is a"):
            load_config(p)


SIZES = {  # tag: (storage lines, problem or None)
    "1KiB_no_default": ('part_size = "1KiB"', "below the smallest part S3 or OSS accept of 100 KiB"),
    "4MiB_s3": ('default = "s3://b/p"\npart_size = "4MiB"', "below S3's minimum part of 5 MiB"),
    "99KiB_oss": ('default = "oss://b/p"\npart_size = "99KiB"', "below OSS's minimum part of 100 KiB"),
    "100KiB_oss": ('default = "oss://b/p"\npart_size = "100KiB"', None),
    "5MiB_s3": ('default = "s3://b/p"\npart_size = "5MiB"', None),
    "6GiB_part": ('part_size = "6GiB"', "above the largest part S3 and OSS accept (5 GiB)"),
    "6GiB_threshold": ('multipart_threshold = "6GiB"', "above the largest single upload S3 and OSS accept"),
    "lowered_minimum": ('default = "s3://b/p"\npart_size = "256KiB"\nmin_part_size = "256KiB"', None),
    "below_lowered": ('default = "s3://b/p"\npart_size = "128KiB"\nmin_part_size = "256KiB"',
                      "below storage.min_part_size of 256 KiB"),
    "local_default": ('default = "local:///b"\npart_size = "1KiB"', None),
}


@pytest.mark.parametrize("tag", list(SIZES))
def test_part_sizes_are_checked_against_the_stores_at_load_time(tmp_path, tag):
    lines, problem = SIZES[tag]
    p = tmp_path / "c.toml"
    p.write_text(BASE + "[storage]\n" + lines + "\n")
    if problem is None:
        load_config(p)
        return
    with pytest.raises(UsageError) as ei:
        load_config(p)
    assert problem in ei.value.message and f"{p}:" in ei.value.message


def test_both_size_problems_are_reported_together(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text(BASE + '[storage]\ndefault = "s3://b/p"\npart_size = "4MiB"\nmultipart_threshold = "6GiB"\n')
    with pytest.raises(UsageError) as ei:
        load_config(p)
    assert ei.value.message.startswith("2 problem(s)")


def test_a_part_size_fit_for_the_default_store_is_checked_again_for_the_store_a_run_opens(tmp_path):
    """The config names OSS (100 KiB is fine there); --storage s3://… would fail at the first part."""
    p = tmp_path / "c.toml"
    p.write_text(BASE + '[storage]\ndefault = "oss://b/p"\npart_size = "200KiB"\noss_endpoint = "http://127.0.0.1:1"\n')
    cfg = load_config(p)
    with pytest.raises(UsageError, match="below S3's minimum part of 5 MiB") as ei:
        open_storage_for({"storage": "s3://other/p"}, cfg)
    assert ei.value.exit_code == 2
    open_storage_for({"storage": "local:///tmp/x"}, cfg)  # local storage has no parts


def test_metrics_file_is_a_path_relative_to_the_config(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text(BASE + '[metrics]\nfile = "textfile/brsm.prom"\n')
    assert load_config(p).metrics_file == str(tmp_path / "textfile" / "brsm.prom")
    p.write_text(BASE + '[metrics]\nfile = 7\n')
    with pytest.raises(UsageError, match="metrics.file: must be a file path"):
        load_config(p)


@pytest.mark.parametrize("key", ["s3_endpoint", "oss_endpoint"])
def test_an_endpoint_in_the_config_with_a_fragment_or_control_characters_is_a_config_error(key):
    for bad in ("http://127.0.0.1:9000#x", "http://h\x1b:9000", "http://h:9000/?a=b"):
        with pytest.raises(UsageError) as e:
            parse_config({"cluster": {"meta": ["127.0.0.1:9559"]}, "storage": {key: bad}})
        assert f"storage.{key}" in e.value.message
    ok = parse_config({"cluster": {"meta": ["127.0.0.1:9559"]}, "storage": {key: "http://127.0.0.1:9000"}})
    assert getattr(ok.storage, key) == "http://127.0.0.1:9000"
