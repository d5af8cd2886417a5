"""The last event of each key, of one event type: what a per-file ledger answers (is this file done,
what was journaled for it, every file in key order), written once for every ledger.

Bound to the journal (a run, a resume, a rollback), every answer is a query on the operation's events,
indexed by the key field, and nothing per file is kept in memory. Unbound (a fold of events handed
in, as tests and property checks do), the events are folded into a dict.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Generic, TypeVar

from brsm.engine.state import Event

E = TypeVar("E", bound=Event)


class LastByKey(Generic[E]):
    def __init__(self, event_cls: type[E], field: str) -> None:
        self._cls, self._field = event_cls, field
        self._mem: dict[str, E] = {}
        self._op: int | None = None
        self._q: Any = None  # journal.keyed.Keyed of the type by the field, once bound
        self._any = False  # bound: whether the journal may hold one of the operation's (a fresh run asks nothing)

    def bind(self, journal: Any, op_id: int) -> None:
        if self._mem:
            raise ValueError("a ledger is bound to the journal before any of its events is folded")
        self._op = op_id
        self._q = journal.keyed(self._cls.TYPE, self._field)
        self._any = self._q.any(op_id)

    @property
    def bound(self) -> bool:
        return self._op is not None

    def fold(self, e: E) -> None:
        if self.bound:
            self._any = True  # already in the journal: the queries now have something to find
        else:
            self._mem[getattr(e, self._field)] = e

    def done(self, key: str) -> bool:
        if not self.bound:
            return key in self._mem
        return self._any and self._q.exists(self._op, key)

    def get(self, key: str) -> E | None:
        if not self.bound:
            return self._mem.get(key)
        e = self._q.last(self._op, key) if self._any else None
        return self._event(e.data) if e is not None else None

    def last_seq(self, key: str) -> int | None:
        """Bound: the journal seq of the key's last event (None: none). Unbound: always None."""
        if not self.bound or not self._any:
            return None
        e = self._q.last(self._op, key)
        return e.seq if e is not None else None

    def get_many(self, keys: Iterable[str]) -> dict[str, E]:
        """``get`` of many keys at once (a few hundred per query): the ones present."""
        if not self.bound:
            return {k: v for k in keys if (v := self._mem.get(k)) is not None}
        if not self._any:
            return {}
        return {k: self._event(e.data) for k, e in self._q.last_many(self._op, keys).items()}

    def __iter__(self) -> Iterator[E]:
        """In key order, streamed when bound."""
        if not self.bound:
            return iter([self._mem[k] for k in sorted(self._mem)])
        if not self._any:
            return iter(())
        return (self._event(e.data) for e in self._q.latest(self._op))

    def __len__(self) -> int:
        if not self.bound:
            return len(self._mem)
        return self._q.count(self._op) if self._any else 0

    def __bool__(self) -> bool:
        if not self.bound:
            return bool(self._mem)
        return self._any and self._q.any(self._op)

    def total(self, field: str) -> tuple[int, int]:
        """(how many keys, the sum of ``field`` over their last events), nothing per key in memory."""
        if not self.bound:
            return len(self._mem), sum(int(getattr(v, field) or 0) for v in self._mem.values())
        if not self._any:
            return 0, 0
        n, size = self._q.totals(self._op, field)
        return n, int(size)

    def describe(self, name: str) -> str:
        return f"{name}(journal operation {self._op})" if self.bound else f"{name}({len(self._mem)})"

    def _event(self, d: dict[str, Any]) -> E:
        return self._cls.from_data(d)  # type: ignore[return-value]
