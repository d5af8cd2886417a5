"""Property: any sequence of appends and batches reads back exactly as written (secrets redacted, as
journal.redact says: the cheap test that skips most events must never skip one it would change) and verifies."""
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from journal import Journal
from journal.redact import redact

json_scalar = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                        st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))
json_value = st.recursive(json_scalar, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=12)
event = st.tuples(st.text(min_size=1, max_size=16), st.dictionaries(st.text(max_size=10), json_value, max_size=5),
                  st.integers(min_value=1, max_value=5))
step = st.one_of(st.tuples(st.just("one"), event), st.tuples(st.just("batch"), st.lists(event, max_size=20)))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(st.lists(step, max_size=8), min_size=1, max_size=3))
def test_appends_read_back_equal_and_verify(ops):
    with tempfile.TemporaryDirectory() as d:
        j = Journal.open(Path(d) / "j.db")
        written = {}
        for steps in ops:
            op = j.create_operation(kind="backup", who="w", version="v")
            written[op.id] = []
            with j.driver(op.id) as w:
                for kind, payload in steps:
                    if kind == "one":
                        type_, data, version = payload
                        written[op.id].append(w.append(type_, data, version=version))
                    else:
                        written[op.id].extend(w.append_batch(payload))
                    expected = [(t, redact(d), v) for t, d, v in ([payload] if kind == "one" else payload)]
                    got = written[op.id][-len(expected):] if expected else []
                    assert [(e.type, e.data, e.version) for e in got] == expected
        for op_id, evs in written.items():
            assert list(j.events(op_id)) == evs
            assert [e.seq for e in evs] == list(range(1, len(evs) + 1))
            assert j.count_events(op_id) == len(evs)
            types = {e.type for e in evs[::2]}
            assert list(j.events(op_id, types=types)) == [e for e in evs if e.type in types]
        report = j.verify()
        assert report.ok and report.checked == sum(len(v) for v in written.values())
        j.close()
