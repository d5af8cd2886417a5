import subprocess
import sys
from pathlib import Path

import pytest

from journal import Journal

HELPER = Path(__file__).with_name("helper_proc.py")


@pytest.fixture
def jpath(tmp_path):
    return tmp_path / "state" / "journal.db"


@pytest.fixture
def journal(jpath):
    j = Journal.open(jpath)
    yield j
    j.close()


@pytest.fixture
def new_op(journal):
    def make(kind="backup", **params):
        return journal.create_operation(kind=kind, params=params, who="tester@host", version="0.1.0",
                                        target="local:///backups")
    return make


class Helpers:
    """Starts helper_proc.py subprocesses and guarantees they are gone after the test."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def start(self, jpath: Path, op_id: int, *args: str) -> subprocess.Popen:
        p = subprocess.Popen([sys.executable, str(HELPER), str(jpath), str(op_id), *args],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.procs.append(p)
        return p

    @staticmethod
    def wait_for(p: subprocess.Popen, word: str) -> list[str]:
        line = p.stdout.readline()
        if not line.startswith(word):
            p.kill()
            raise AssertionError(f"helper said {line!r}, stderr: {p.stderr.read()}")
        return line.split()

    def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=10)
            for f in (p.stdout, p.stderr):
                if f:
                    f.close()


@pytest.fixture
def helpers():
    h = Helpers()
    yield h
    h.stop_all()
