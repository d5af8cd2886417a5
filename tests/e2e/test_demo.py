"""scripts/demo's job, as a newcomer runs it: it must finish and prove the restore exact."""
import subprocess
import sys

import pytest

pytestmark = pytest.mark.sandbox


@pytest.mark.parametrize("storage", ["local", "oss"])
def test_demo_runs_green(tmp_path, storage):
    p = subprocess.run([sys.executable, "-m", "brsm.demo", "--dir", str(tmp_path / "demo"), "--size", "8MiB",
                        "--storage", storage], capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "restore is exact" in p.stdout and "summary" in p.stdout
    assert "down: stopped" in p.stdout
