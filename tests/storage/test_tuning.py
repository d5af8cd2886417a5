"""[storage] part_size / multipart_threshold: parsed from the config and handed to the backend;
left out, the backends keep their defaults."""
import pytest

from brsm.adapters.storage.base import DEFAULT_MULTIPART_THRESHOLD, DEFAULT_PART_SIZE
from brsm.config import load_config
from brsm.errors import UsageError
from brsm.wiring import open_storage_for

BASE = """
[cluster]
meta = ["10.0.0.1:9559"]

[storage]
default = "s3://b/p"
s3_endpoint = "http://127.0.0.1:9000"
"""


def _backend(cfg):
    return open_storage_for({}, cfg).inner


def test_sizes_reach_the_backend(tmp_path, monkeypatch):
    monkeypatch.setenv("OSS_ACCESS_KEY_ID", "id")
    monkeypatch.setenv("OSS_ACCESS_KEY_SECRET", "secret")
    p = tmp_path / "c.toml"
    p.write_text(BASE + 'part_size = "256KiB"\nmultipart_threshold = 524288\noss_endpoint = "http://127.0.0.1:1"\n'
                 'min_part_size = "256KiB"\n')  # below S3's 5 MiB: only for a store that says it accepts it
    cfg = load_config(p)
    assert (cfg.storage.part_size, cfg.storage.multipart_threshold) == (256 << 10, 512 << 10)
    s3 = _backend(cfg)
    assert (s3.part_size, s3.multipart_threshold) == (256 << 10, 512 << 10)
    oss = open_storage_for({"storage": "oss://backups/p"}, cfg).inner
    assert (oss.part_size, oss.multipart_threshold) == (256 << 10, 512 << 10)


def test_defaults_unchanged_without_the_keys(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text(BASE)
    cfg = load_config(p)
    assert (cfg.storage.part_size, cfg.storage.multipart_threshold) == (None, None)
    s3 = _backend(cfg)
    assert (s3.part_size, s3.multipart_threshold) == (DEFAULT_PART_SIZE, DEFAULT_MULTIPART_THRESHOLD)


@pytest.mark.parametrize("value", ["0", '"lots"', '"5 MB"', "true", "-1", '"1.5MiB"'])
def test_bad_sizes_are_reported_with_line(tmp_path, value):
    p = tmp_path / "c.toml"
    p.write_text(BASE + f"part_size = {value}\n")
    with pytest.raises(UsageError) as ei:
        load_config(p)
    assert f"{p}:8: storage.part_size: must be a positive size" in ei.value.message
