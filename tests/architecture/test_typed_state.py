"""Every field of every kind's state is set by exactly one handler, of one event or of one step's
completion, and no step reads a string-keyed bag of facts.

Two steps once journaled one fact name with two meanings (a restore's CHECKED ``spaces`` = {id: name},
its STARTED ``spaces`` = [names]); the fold merged step facts into one dict, the later replaced the
earlier, and a rollback removed the set-aside originals. These tests keep that class of bug out:
statically (the declarations, and the source of each handler), and on real journals (what a handler
changes is what it declares).
"""
from __future__ import annotations

import ast
import copy
import inspect
import re
import textwrap
from pathlib import Path

import pytest
from journal import Journal

from brsm.engine.state import STEP_COMPLETED, KindState, completed, completion_key, on
from brsm.workflows.backup.state import BackupState
from brsm.workflows.cleanup import CleanupState
from brsm.workflows.maintenance import GcState
from brsm.workflows.prune import PruneState
from brsm.workflows.restore.state import DowntimeBegan, RestoreState

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "journal_fixtures"
STATES = [BackupState, RestoreState, GcState, PruneState, CleanupState]  # (their Event classes too)


@pytest.mark.parametrize("cls", STATES, ids=lambda c: c.__name__)
def test_every_field_has_exactly_one_handler(cls):
    owners = cls.owners()
    assert sorted(owners) == sorted(cls.field_names()), "a field no handler sets, or a declared field that is not one"
    declared = [f for spec in cls.SPECS for f in spec.sets]
    assert len(declared) == len(set(declared))
    keys = [k for spec in cls.SPECS for k in spec.keys]
    assert len(keys) == len(set(keys)), "an event with two handlers"


def test_a_second_handler_of_a_field_is_refused_when_the_class_is_defined():
    with pytest.raises(TypeError, match="spaces is set by two handlers"):
        class Twice(KindState):  # noqa: F841 - defining it is the test
            spaces: dict = None  # type: ignore[assignment]

            @completed("CHECKED", sets=("spaces",))
            def _checked(self, f):
                self.spaces = f["spaces"]

            @completed("STARTED", sets=("spaces",))
            def _started(self, f):
                self.spaces = f["spaces"]
    with pytest.raises(TypeError, match="has two handlers"):
        class Again(KindState):  # noqa: F841
            @on("X", sets=("a",))
            def _one(self, d):
                pass

            @completed("X", sets=("b",))
            def _completion(self, d):
                pass

            @on(completion_key("X"), sets=("c",))
            def _two(self, d):
                pass


def _assigned(fn) -> set[str]:
    """The ``self.<field>`` a handler's source assigns, mutates (``self.f[k] = …``, ``self.f.add(…)``)
    or hands on (``self.f.fold(…)``): every attribute of self it touches other than to read it whole."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    out: set[str] = set()
    for node in ast.walk(tree):
        target = None
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            for t in (node.targets if isinstance(node, ast.Assign) else [node.target]):
                while isinstance(t, (ast.Subscript, ast.Attribute)) and not (
                        isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self"):
                    t = t.value
                target = t
                if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id == "self":
                    out.add(target.attr)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            if isinstance(owner, ast.Attribute) and isinstance(owner.value, ast.Name) and owner.value.id == "self":
                out.add(owner.attr)
    return out


@pytest.mark.parametrize("cls", STATES, ids=lambda c: c.__name__)
def test_a_handler_touches_only_the_fields_it_declares(cls):
    fields = set(cls.field_names())
    for spec in cls.SPECS:
        touched = _assigned(getattr(cls, spec.name)) & fields  # (class constants such as PARAMS are no state)
        assert touched <= set(spec.sets), (spec.name, touched - set(spec.sets))
    # and nothing outside a handler assigns a field (properties and helpers only read)
    for name, member in vars(cls).items():
        if callable(member) and not hasattr(member, "__brsm_handles__") and not name.startswith("__"):
            assert not (_assigned(member) & fields), (cls.__name__, name)


def _journals() -> list[Path]:
    return sorted(FIXTURES.glob("*/journal.db"))


def test_on_real_journals_each_event_changes_only_what_its_handler_declares(tmp_path):
    """Fold every operation of the kept journals (backups, restores) field by field: an event with a
    handler changes only its declared fields, one without changes nothing."""
    by_kind = {"backup": BackupState, "restore": RestoreState, "gc": GcState, "prune": PruneState,
               "cleanup": CleanupState}
    seen: set[str] = set()
    for path in _journals():
        copy_path = tmp_path / f"{path.parent.name}.db"  # opened on a copy: the kept file stays as it was
        copy_path.write_bytes(path.read_bytes())
        j = Journal.open(copy_path)
        try:
            for op in j.operations():
                cls = by_kind[op.kind]
                st = cls()
                for e in j.events(op.id):
                    key = completion_key(e.data.get("step")) if e.type == STEP_COMPLETED else e.type
                    spec = next((s for s in cls.SPECS if key in s.keys), None)
                    before = {f: copy.deepcopy(getattr(st, f)) for f in cls.field_names()}
                    st.apply(e.type, e.data)
                    changed = {f for f in before if getattr(st, f) != before[f]}
                    allowed = set(spec.sets) if spec else set()
                    assert changed <= allowed, (path.parent.name, e.type, key, changed - allowed)
                    if spec:
                        seen.add(spec.name)
        finally:
            j.close()
    # the journals exercise the handlers that matter most (the chosen-spaces restore's among them)
    assert {"_checked", "_snapshotted", "_files", "_restored", "_preflight", "_probes", "_daemons"} <= seen


# the journal anchor's record is written by any kind: it reads the raw params dict the engine keeps
RAW_PARAMS_READERS = {"brsm/workflows/anchors.py"}


def test_no_step_reads_a_bag_of_facts():
    """Workflows read typed state (``ctx.data``, its ``params`` parsed once) and typed runtime, never
    ``ctx.facts``/``ctx.extra``/``ctx.params`` or a ``runtime[...]`` key: the merged ``facts`` is for
    display only."""
    bad = re.compile(r"\bctx\.(facts|extra)\b|\.runtime\[|\.runtime\.get\(|\bst\.extra\b")
    raw = re.compile(r"\bctx\.params\b")
    hits = [f"{rel}:{i}" for p in sorted((ROOT / "brsm" / "workflows").rglob("*.py"))
            for rel in [str(p.relative_to(ROOT))]
            for i, line in enumerate(p.read_text().splitlines(), 1)
            if bad.search(line) or (raw.search(line) and rel not in RAW_PARAMS_READERS)]
    assert hits == []


def test_typed_events_give_back_exactly_the_payload_the_journal_holds(tmp_path):
    """An Event's ``to_data`` is the JSON the journal keeps, so what a typed event records is what the
    dict-built one did: every payload of the kept journals survives ``from_data`` then ``to_data``."""
    classes = {}
    for cls in STATES:
        for fn, _with_type, event_cls in cls.HANDLERS.values():
            if event_cls is not None:
                classes[event_cls.TYPE] = event_cls
    seen = set()
    for path in _journals():
        copy_path = tmp_path / f"{path.parent.name}.db"
        copy_path.write_bytes(path.read_bytes())
        j = Journal.open(copy_path)
        try:
            for op in j.operations():
                for e in j.events(op.id):
                    if e.type in classes:
                        assert classes[e.type].from_data(e.data).to_data() == e.data, (e.type, e.data)
                        seen.add(e.type)
        finally:
            j.close()
    assert {"FileCopied", "PartUploaded", "FileRestored", "DowntimeBegan", "RestoreDaemonStarted",
            "ScratchDirMade", "ProbeWritten", "SnapshotRequested"} <= seen
    assert DowntimeBegan.from_data({"at": 1.0}).to_data() == {"at": 1.0}  # an older brsm's, without tracks_starts
