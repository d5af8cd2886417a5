"""Hypothesis profiles for the property tests.

"ci" (the default) keeps the whole property_tests directory well under 90 s; "campaign" runs
thousands of examples per machine: ``pytest property_tests --hypothesis-profile=campaign`` or
``BRSM_CAMPAIGN=1 pytest property_tests``. ``BRSM_CAMPAIGN_EXAMPLES`` overrides its count.
"""
from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                                      HealthCheck.data_too_large])

settings.register_profile("ci", max_examples=50, stateful_step_count=30, **_common)
settings.register_profile("campaign", max_examples=int(os.environ.get("BRSM_CAMPAIGN_EXAMPLES", "3000")),
                          stateful_step_count=40, **_common)
settings.load_profile("campaign" if os.environ.get("BRSM_CAMPAIGN") else "ci")
