"""Shared by the regression tests: the in-process world of property_tests/campaign_support."""
from __future__ import annotations

import pytest

from property_tests.campaign_support import World, fast_sleeps

# the storage probe journals ProbeWritten and ProbeRemoved before PreflightPassed
PROBE_EVENTS = 2


@pytest.fixture
def world():
    with fast_sleeps():
        w = World()
        yield w
        w.close()
