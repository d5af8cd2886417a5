"""Timing of up + load 200 MiB + down on the default topology (1 meta + 3 storage hosts).

Opt-in (it writes 200 MiB): BRSM_SANDBOX_TIMING=1 pytest -s tests/sandbox_cluster/test_timing.py
The figures are recorded in docs/sandbox.md.
"""
from __future__ import annotations

import os
import time

import pytest

from .conftest import brsm, brsm_json, start_sandbox, stop_sandbox

pytestmark = [pytest.mark.sandbox, pytest.mark.slow,
              pytest.mark.skipif(os.environ.get("BRSM_SANDBOX_TIMING") != "1",
                                 reason="timing run: set BRSM_SANDBOX_TIMING=1")]


def test_up_load_200mib_down(tmp_path):
    t0 = time.monotonic()
    sb = start_sandbox(tmp_path / "timing")
    t_up = time.monotonic() - t0
    try:
        t1 = time.monotonic()
        rep = brsm_json("sandbox", "load", "--dir", sb.dir, "--size", "200MiB", "--spaces", "2")
        t_load = time.monotonic() - t1
        t2 = time.monotonic()
        brsm_json("sandbox", "checksum", "--dir", sb.dir)
        t_sum = time.monotonic() - t2
    finally:
        t3 = time.monotonic()
        stop_sandbox(sb)
        t_down = time.monotonic() - t3
    print(f"\nTIMING up {t_up:.2f}s, load 200MiB {t_load:.2f}s ({200 / t_load:.0f} MiB/s, "
          f"load itself {rep['seconds']}s), checksum {t_sum:.2f}s, down {t_down:.2f}s, "
          f"total {time.monotonic() - t0:.2f}s")
