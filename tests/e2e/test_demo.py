"""scripts/demo's job, as a newcomer runs it: it must finish and prove the restore exact, show the
commands as the user would type them, and never leave its sandbox running behind it."""
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.sandbox


def _sandbox_processes(d: Path) -> list[str]:
    p = subprocess.run(["pgrep", "-af", str(d)], capture_output=True, text=True)
    return [ln for ln in p.stdout.splitlines() if "pgrep" not in ln and "brsm.demo" not in ln]


@pytest.mark.parametrize("storage", ["local", "oss"])
def test_demo_runs_green(tmp_path, storage):
    p = subprocess.run([sys.executable, "-m", "brsm.demo", "--dir", str(tmp_path / "demo"), "--size", "8MiB",
                        "--storage", storage], capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "restore is exact" in p.stdout and "summary" in p.stdout
    assert "down: stopped" in p.stdout
    shown = [ln for ln in p.stdout.splitlines() if ln.startswith("$ ")]
    assert shown and all(ln.startswith("$ brsm ") for ln in shown), shown
    assert "brsm.cli.app" not in p.stdout
    assert '{"progress"' not in p.stdout + p.stderr, "raw JSON progress lines reached the user"
    assert f"{tmp_path / 'demo' / 'brsm-home' / 'journal.db'}" in p.stdout
    assert "rm -rf" in p.stdout


def test_demo_piped_into_head_brings_its_sandbox_down(tmp_path):
    d = tmp_path / "demo"
    demo = subprocess.Popen([sys.executable, "-m", "brsm.demo", "--dir", str(d), "--size", "4MiB"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        # `| head -5`: read a few lines, then close the pipe while the sandbox is up
        deadline = time.monotonic() + 120
        lines = 0
        while lines < 5 and time.monotonic() < deadline:
            if demo.stdout.readline():
                lines += 1
        while not (d / "sandbox.json").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        demo.stdout.close()
        demo.wait(timeout=240)
    finally:
        if demo.poll() is None:
            demo.kill()
            subprocess.run([sys.executable, "-m", "brsm.cli.app", "sandbox", "down", "--dir", str(d)],
                           capture_output=True, timeout=120)
    assert demo.returncode != 0
    assert _sandbox_processes(d) == [], "the demo left its sandbox running after its reader went away"
