"""The unfinished operations a command names first: which ones, and the words (pure, on a real journal)."""
from __future__ import annotations

import doctest
from types import SimpleNamespace

import pytest
from journal import Journal

from brsm.cli import unfinished
from brsm.cli.unfinished import unfinished_on
from brsm.engine import events as ev


@pytest.fixture
def journal(tmp_path):
    j = Journal.open(tmp_path / "journal.db")
    yield j
    j.close()


def test_doctests():
    assert doctest.testmod(unfinished).failed == 0


def _op(j, kind: str, config: str, events: list[tuple[str, dict]]) -> int:
    op = j.create_operation(kind=kind, params={"config": config}, who="a@b", version="t", target="x")
    with j.driver(op.id) as w:
        w.append(ev.OPERATION_CREATED, {"kind": kind, "params": {"config": config}})
        for t, d in events:
            w.append(t, d)
    return op.id


def _steps(*names: str, pending: str | None = None) -> list[tuple[str, dict]]:
    out = []
    for n in names:
        out += [(ev.STEP_STARTED, {"step": n}), (ev.STEP_COMPLETED, {"step": n, "facts": {}})]
    if pending:
        out.append((ev.STEP_STARTED, {"step": pending}))
    return out


def loader(path: str):
    return SimpleNamespace(meta={"/c/a.toml": ["m1:9559"], "/c/b.toml": ["m1:9559"], "/c/other.toml": ["m9:9559"]}[path])


def test_a_restore_that_left_the_cluster_down_is_named_with_the_rollback(journal):
    down = _op(journal, "restore", "/c/a.toml", _steps("CHECKED", "STAGED", "STOPPED", pending="SET_ASIDE"))
    lines = unfinished_on(journal, "/c/a.toml", loader=loader)
    assert len(lines) == 1 and lines[0].startswith(f"operation {down} (restore) unfinished at SET_ASIDE since ")
    assert lines[0].endswith(f"the cluster is down; `brsm rollback {down}` brings it back")
    # the same cluster under another config file (a common metad), not another cluster
    assert unfinished_on(journal, "/c/b.toml", loader=loader) == lines
    assert unfinished_on(journal, "/c/other.toml", loader=loader) == []
    # resuming that very operation does not name it
    assert unfinished_on(journal, "/c/a.toml", exclude=down, loader=loader) == []


def test_what_holds_nothing_is_not_named(journal):
    _op(journal, "backup", "/c/a.toml", [(ev.OPERATION_FAILED, {"step": "PREFLIGHT", "error": "x"})])  # old-style
    _op(journal, "backup", "/c/a.toml", [(ev.OPERATION_REFUSED, {"step": "PREFLIGHT", "error": "x"})])
    _op(journal, "backup", "/c/a.toml", _steps("LOCKED", "SNAPSHOTTED", "COPIED", "UPLOADED", "CLEANED"))
    assert unfinished_on(journal, "/c/a.toml", loader=loader) == []
    held = _op(journal, "backup", "/c/a.toml", _steps("LOCKED", pending="SNAPSHOTTED"))
    (line,) = unfinished_on(journal, "/c/a.toml", loader=loader)
    assert line.startswith(f"operation {held} (backup) unfinished at SNAPSHOTTED")
    assert line.endswith(f"it may hold the cluster lease and a snapshot; `brsm resume {held}` or `brsm rollback {held}`")


def test_a_restore_in_its_final_step_is_finished_by_resume(journal):
    op = _op(journal, "restore", "/c/a.toml",
             _steps("CHECKED", "STAGED", "STOPPED", "SET_ASIDE", "DOWNLOADED", "META_RESTORED", pending="STARTED"))
    (line,) = unfinished_on(journal, "/c/a.toml", loader=loader)
    assert "the cluster is down" in line and f"`brsm rollback {op}`" in line
    op2 = _op(journal, "restore", "/c/b.toml",
              _steps("CHECKED", "STAGED", "STOPPED", "SET_ASIDE", "DOWNLOADED", "META_RESTORED", "STARTED",
                     pending="CLEANED"))
    (line2,) = [ln for ln in unfinished_on(journal, "/c/b.toml", loader=loader) if f"operation {op2} " in ln]
    assert "cluster is down" not in line2, "started again: the cluster is up"
    assert line2.endswith(f"it may hold the cluster lease; `brsm resume {op2}`")  # its final step began
