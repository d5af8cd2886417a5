"""The guide's install steps and nightly recipes, run as written: the systemd unit's Exec lines the way
systemd runs them (no shell, its default PATH, Environment= and EnvironmentFile=), the cron line the way
cron runs it (``/bin/sh -c`` with cron's bare environment). Only the absolute paths are moved under a
temporary dir, so a recipe that works here works on a host, and a guide that drifts fails this test."""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import running_sandbox

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "user-guide.md"
SYSTEMD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CRON_PATH = "/usr/bin:/bin"

pytestmark = pytest.mark.sandbox


def code_blocks(text: str) -> list[str]:
    return re.findall(r"^```[a-z]*\n(.*?)^```", text, flags=re.S | re.M)


def block_with(text: str, needle: str) -> str:
    found = [b for b in code_blocks(text) if needle in b]
    assert len(found) == 1, f"the guide should hold exactly one code block with {needle!r}, found {len(found)}"
    return found[0]


def install_block(text: str) -> list[str]:
    return [ln for ln in block_with(text, "/opt/brsm/bin/pip install").splitlines() if ln.strip()]


def systemd_service(text: str) -> list[tuple[str, str]]:
    """The [Service] section of brsm-backup.service as (key, value) pairs, in order."""
    block = block_with(text, "brsm-backup.service")
    unit = block.split("# /etc/systemd/system/brsm-backup.timer")[0]
    pairs = []
    for line in unit.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            k, v = line.split("=", 1)
            pairs.append((k.strip(), v.strip()))
    return pairs


def cron_command(text: str) -> str:
    line = block_with(text, "30 2 * * *").strip()
    assert "%" not in line, "cron turns % into a newline: the cron line must not hold one"
    return line.split(None, 5)[5]


def environment_file(path: Path) -> dict[str, str]:
    """systemd's EnvironmentFile= reading of plain KEY=value lines (comments and blanks skipped)."""
    env = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";")):
            k, v = line.split("=", 1)
            env[k.strip()] = v.strip()
    return env


class Moved:
    """The recipe's absolute paths, each moved under ``tmp``."""

    def __init__(self, tmp: Path) -> None:
        self.map = {"/etc/brsm": tmp / "etc-brsm", "/usr/local/bin/brsm": tmp / "usr-local-bin" / "brsm",
                    "/var/lib/brsm": tmp / "var-lib-brsm", "/opt/brsm": tmp / "opt-brsm",
                    "/var/lib/node_exporter/textfile": tmp / "textfile", "/path/to/brsm-checkout": ROOT}
        for k, v in self.map.items():
            if k not in ("/usr/local/bin/brsm", "/path/to/brsm-checkout", "/opt/brsm", "/var/lib/brsm"):
                v.mkdir(parents=True, exist_ok=True)
        (tmp / "usr-local-bin").mkdir(exist_ok=True)

    def __call__(self, s: str) -> str:
        for k in sorted(self.map, key=len, reverse=True):
            s = s.replace(k, str(self.map[k]))
        return s


def bare_env(**extra: str) -> dict[str, str]:
    env = {"HOME": os.environ.get("HOME", "/root"), "LOGNAME": "root", "SHELL": "/bin/sh", "LANG": "C.UTF-8"}
    for k in ("PIP_FIND_LINKS", "PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "PIP_DEFAULT_TIMEOUT"):
        if k in os.environ:  # how this machine reaches the package index, not brsm's environment
            env[k] = os.environ[k]
    env.update(extra)
    return env


def test_the_recipe_blocks_say_what_the_test_relies_on():
    text = GUIDE.read_text()
    service = dict(systemd_service(text))
    assert service["ExecStart"].startswith("/usr/local/bin/brsm start backup")
    assert "BRSM_HOME=" in " ".join(v for k, v in systemd_service(text) if k == "Environment")
    cron = cron_command(text)
    assert "BRSM_HOME=" in cron and "set -a" in cron
    assert not re.search(r"(^|[;&|]\s*)brsm ", cron), "cron's PATH has no brsm: call it by its full path"


def test_the_install_and_nightly_recipes_run_as_written(tmp_path):
    text = GUIDE.read_text()
    moved = Moved(tmp_path)
    for line in install_block(text):
        p = subprocess.run(["/bin/sh", "-c", moved(line)], env=bare_env(PATH=SYSTEMD_PATH), capture_output=True,
                           text=True, timeout=900)
        assert p.returncode == 0, f"install step {line!r} failed:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}"
    brsm = moved("/usr/local/bin/brsm")
    assert os.access(brsm, os.X_OK)

    with running_sandbox(tmp_path / "sb", tmp_path / "unused-home", load=2 << 20) as sb:
        etc = moved.map["/etc/brsm"]
        (etc / "prod.toml").write_text(Path(sb.config).read_text())
        creds = etc / "credentials.env"
        creds.write_text("# written as the guide says: plain KEY=value\n" + "".join(
            f"{k}={sb.env[k]}\n" for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "OSS_ACCESS_KEY_ID",
                                           "OSS_ACCESS_KEY_SECRET")))
        creds.chmod(0o600)

        # systemd: Environment= and EnvironmentFile= make the environment; each Exec line is split, not shelled
        env = bare_env(PATH=SYSTEMD_PATH)
        execs = []
        for k, v in systemd_service(text):
            if k == "Environment":
                name, val = moved(v).split("=", 1)
                env[name] = val
            elif k == "EnvironmentFile":
                env.update(environment_file(Path(moved(v))))
            elif k in ("ExecStart", "ExecStartPost"):
                execs.append(shlex.split(moved(v)))
        for argv in execs:
            p = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
            assert p.returncode == 0, f"{argv} -> {p.returncode}\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}"

        # cron: /bin/sh -c with cron's bare environment
        p = subprocess.run(["/bin/sh", "-c", moved(cron_command(text))], env=bare_env(PATH=CRON_PATH),
                           capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
        assert p.returncode == 0, f"cron line -> {p.returncode}\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}"
        assert p.stdout == "" and p.stderr == "", "a healthy nightly run mails nothing from cron"

        home = moved.map["/var/lib/brsm"]
        assert (home / "journal.db").exists(), "BRSM_HOME from the recipe was not used"
        ops = subprocess.run([brsm, "ops", "--json"], env=bare_env(PATH=CRON_PATH, BRSM_HOME=str(home)),
                             capture_output=True, text=True, timeout=120)
        assert ops.returncode == 0, ops.stderr
        done = [(r["kind"], r["state"]) for r in json.loads(ops.stdout)]
        assert done.count(("backup", "CLEANED")) == 2, done
        assert done.count(("prune", "CLEANED")) == 2, done
        metrics = (moved.map["/var/lib/node_exporter/textfile"] / "brsm.prom").read_text()
        for kind in ("backup", "prune"):
            assert re.search(rf'brsm_last_success_timestamp_seconds\{{[^}}]*kind="{kind}"', metrics), metrics
