"""Every duration in the config and in flags goes through brsm.durations: finite, in range, or one error.

TOML has ``inf`` and ``nan``; a float parse of 400 digits is ``inf`` too. Before, ``create_backup_timeout
= inf`` loaded and became a createBackup wait that never ends."""
from __future__ import annotations

import math

import pytest

from brsm.config import parse_config
from brsm.durations import DurationError, parse_duration
from brsm.errors import UsageError
from brsm.workflows.prune import parse_duration as keep_within

BASE = {"cluster": {"meta": ["127.0.0.1:9559"]}}


@pytest.mark.parametrize("text, seconds", [("90", 90), (90, 90), (1.5, 1.5), ("90s", 90), ("10m", 600),
                                           ("1h", 3600), ("30d", 30 * 86400), ("2w", 14 * 86400)])
def test_durations_that_read(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan, "inf", "nan", "9" * 400, "1e999", -5, 0, "0s",
                                 "", "soon", True, None, [], "10 parsecs", 10 ** 400], ids=lambda v: repr(v)[:24])
def test_durations_that_do_not(bad):
    with pytest.raises(DurationError):
        parse_duration(bad)


def test_zero_only_where_allowed_and_a_maximum():
    assert parse_duration("0s", allow_zero=True) == 0
    assert keep_within("730d") == 730 * 86400  # two years of retention is a real policy
    with pytest.raises(DurationError, match="at most 1d"):
        parse_duration("2d", maximum=86400)


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan, "inf", "9" * 400, 1e300, 10 ** 400], ids=lambda v: repr(v)[:24])
@pytest.mark.parametrize("key", ["create_backup_timeout", "lease_ttl"])
def test_a_config_duration_must_be_finite_and_bounded(key, value):
    with pytest.raises(UsageError) as e:
        parse_config({"cluster": {**BASE["cluster"], key: value}})
    assert f"cluster.{key}" in e.value.message


def test_a_create_backup_timeout_within_bounds_still_loads():
    assert parse_config({"cluster": {**BASE["cluster"], "create_backup_timeout": "20m"}}).create_backup_timeout == 1200


@pytest.mark.parametrize("bad", ["9" * 400, "inf", "1e999"])
def test_keep_within_is_the_same_parser(bad):
    with pytest.raises(UsageError):
        keep_within(bad)

