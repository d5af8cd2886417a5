"""What an operation knows beyond its engine phase, as a typed dataclass per kind, folded from its journal.

A workflow's steps share facts (the topology the preflight found, the snapshot SNAPSHOTTED made, the
files COPIED has sent). Each is a field of the kind's state class, and each field is set by exactly
one handler: of one domain event (``@on(TYPE)``), or of one step's completion (``@completed(STEP)``,
given that step's journaled facts). Two handlers that declare the same field, or two handlers of one
event, are refused when the class is defined. So "where is ``topology`` set?" has one answer, and two
steps can no longer journal one fact name with two meanings and have the later silently replace the
earlier (a restore's rollback once looked for space dirs by the names STARTED journaled under
CHECKED's ``spaces``, which held ids, and removed the set-aside originals).

Domain events that set state are frozen dataclasses (``Event``: a stable ``TYPE`` string, and
``from_data``/``to_data`` giving exactly the JSON the journal holds); a handler of one is given the
typed event, and steps record them typed. Other events (and the preflight's open set of facts) stay
dicts. Keys an older brsm did not write default to ``ABSENT``, so every journal it wrote still folds.
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

STEP_COMPLETED = "StepCompleted"  # brsm.engine.events.STEP_COMPLETED (kept here: events imports nothing)
OPERATION_CREATED = "OperationCreated"  # brsm.engine.events.OPERATION_CREATED


class _Absent:
    """The default of an event field whose key a payload may lack: left out of ``to_data`` again."""

    def __repr__(self) -> str:
        return "ABSENT"

    def __bool__(self) -> bool:
        return False

    # one of it: a copied or pickled state still says ``is ABSENT`` (and compares equal to its original)
    def __copy__(self) -> "_Absent":
        return self

    def __deepcopy__(self, memo: Any) -> "_Absent":
        return self

    def __reduce__(self) -> str:
        return "ABSENT"


ABSENT: Any = _Absent()


@dataclass(frozen=True)
class Event:
    """A domain event: a frozen dataclass named by its stable type string (``TYPE``), whose payload is
    exactly the JSON the journal holds. ``from_data(d).to_data() == d`` for every payload brsm wrote; a
    field whose key older (or newer) writers leave out defaults to ``ABSENT`` and stays out."""

    TYPE: ClassVar[str] = ""

    @classmethod
    def from_data(cls, d: Mapping[str, Any]) -> "Event":
        return cls(**{n: d[n] for n in _field_names(cls) if n in d})

    def to_data(self) -> dict[str, Any]:
        return {f.name: v for f in dataclasses.fields(self) if (v := getattr(self, f.name)) is not ABSENT}


@functools.cache
def _field_names(cls: type) -> tuple[str, ...]:
    """An Event class's fields, looked up once (from_data runs for every file a ledger answers)."""
    return tuple(f.name for f in dataclasses.fields(cls))


def _key(event: Any) -> str:
    return event.TYPE if isinstance(event, type) and issubclass(event, Event) else event


def _event_class(event: Any) -> type[Event] | None:
    return event if isinstance(event, type) and issubclass(event, Event) else None


class Params:
    """A kind's parameters, parsed once from OperationCreated's ``params`` (the dict the CLI built,
    journaled as it is). Subclasses are frozen dataclasses with a ``from_data`` classmethod."""

    @classmethod
    def from_data(cls, d: Mapping[str, Any]) -> "Params":
        raise NotImplementedError


Handler = Callable[[Any, dict[str, Any]], None]


@dataclass(frozen=True)
class HandlerSpec:
    """What one handler answers to and which fields it alone sets."""

    keys: tuple[str, ...]  # event types, or "StepCompleted:<STEP>"
    sets: tuple[str, ...]
    name: str  # the method's name, for messages
    with_type: bool  # called as fn(self, type, payload): one handler of several events (a ledger's)
    classes: tuple[type[Event] | None, ...]  # per key: the payload is given as this Event, or None: a dict


def completion_key(step: str) -> str:
    """The dispatch key of a step's completion.

    >>> completion_key("CHECKED")
    'StepCompleted:CHECKED'
    """
    return f"{STEP_COMPLETED}:{step}"


def on(event: Any, *, sets: tuple[str, ...]) -> Callable[[Handler], Handler]:
    """Mark a state method as the handler of ``event`` (an Event class: called with one; a type string:
    with the payload dict), the only one setting ``sets``."""
    def mark(fn: Handler) -> Handler:
        fn.__brsm_handles__ = HandlerSpec((_key(event),), tuple(sets), fn.__name__, False,  # type: ignore[attr-defined]
                                          (_event_class(event),))
        return fn
    return mark


def on_each(*events: Any, sets: tuple[str, ...]) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Mark a state method as the one handler of several events that together keep one ledger (files
    written and removed, a daemon issued, started, stopped): called as ``fn(self, type, event)``."""
    def mark(fn: Callable[..., None]) -> Callable[..., None]:
        fn.__brsm_handles__ = HandlerSpec(tuple(_key(e) for e in events), tuple(sets), fn.__name__, True,  # type: ignore[attr-defined]
                                          tuple(_event_class(e) for e in events))
        return fn
    return mark


def completed(step: str, *, sets: tuple[str, ...]) -> Callable[[Handler], Handler]:
    """Mark a state method as the handler of ``step``'s journaled facts (its StepCompleted)."""
    return on(completion_key(step), sets=sets)


class Ledger:
    """A state field kept in the journal, not in memory: a per-file ledger (files copied, restored) whose
    events (``TYPES``) the fold of a journal does not read. Bound to the journal (``bind``), it answers by
    queries, so what a fold holds does not grow with the files; unbound (a fold of events handed in, as
    tests do), it folds them into memory as before. ``fold`` is called for every such event either way:
    bound, the event is already in the journal (the runner appends before it folds)."""

    TYPES: ClassVar[tuple[str, ...]] = ()

    def bind(self, journal: Any, op_id: int) -> None:
        raise NotImplementedError


@dataclass
class KindState:
    """The base of every kind's state. A kind without domain state folds into this one (it has none)."""

    HANDLERS: ClassVar[dict[str, tuple[Callable[..., None], bool, type[Event] | None]]] = {}
    SPECS: ClassVar[tuple[HandlerSpec, ...]] = ()
    PARAMS: ClassVar[type[Params] | None] = None  # the kind's parameters class; None: none parsed

    params: Any = None  # PARAMS parsed from OperationCreated (None before it, or without PARAMS)

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        specs: list[HandlerSpec] = []
        handlers: dict[str, tuple[Callable[..., None], bool, type[Event] | None]] = {}
        owner: dict[str, str] = {}
        for name in dir(cls):
            fn = getattr(cls, name, None)
            spec = getattr(fn, "__brsm_handles__", None)
            if spec is None:
                continue
            for key, event_cls in zip(spec.keys, spec.classes):
                if key in handlers:
                    raise TypeError(f"{cls.__name__}: {key} has two handlers ({handlers[key][0].__name__}, {name})")
                handlers[key] = (fn, spec.with_type, event_cls)
            for f in spec.sets:
                if f in owner:
                    raise TypeError(f"{cls.__name__}.{f} is set by two handlers ({owner[f]}, {name})")
                owner[f] = name
            specs.append(spec)
        cls.HANDLERS, cls.SPECS = handlers, tuple(specs)

    @on(OPERATION_CREATED, sets=("params",))
    def _created(self, d: dict[str, Any]) -> None:
        if self.PARAMS is not None:
            self.params = self.PARAMS.from_data(d.get("params") or {})

    def apply(self, type_: str, data: Mapping[str, Any]) -> None:
        """Fold one journaled event (its type and JSON payload) into this state."""
        if type_ == STEP_COMPLETED:
            key, payload = completion_key(str(data.get("step"))), data.get("facts") or {}
        else:
            key, payload = type_, data
        found = self.HANDLERS.get(key)
        if found is None:
            return
        fn, with_type, event_cls = found
        arg = event_cls.from_data(payload) if event_cls is not None else dict(payload)
        if with_type:
            fn(self, type_, arg)
        else:
            fn(self, arg)

    def left_effects(self) -> bool:
        """Whether an effect outside any step is journaled as still in place (a storage probe the
        preflight wrote and has not removed): such an operation failed, it was not refused."""
        return False

    @classmethod
    def ledger_types(cls) -> tuple[str, ...]:
        """The event types the kind's ledgers answer from the journal (a fold of the journal skips them)."""
        return tuple(t for f in dataclasses.fields(cls) if isinstance(f.default_factory, type)
                     and issubclass(f.default_factory, Ledger) for t in f.default_factory.TYPES)

    def bind_ledgers(self, journal: Any, op_id: int) -> None:
        """Answer the ledgers from operation ``op_id`` of ``journal`` (before any of their events is folded)."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Ledger):
                value.bind(journal, op_id)

    @classmethod
    def owners(cls) -> dict[str, str]:
        """field -> the handler that sets it (for tests and for a reader's question)."""
        return {f: s.name for s in cls.SPECS for f in s.sets}

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]
