"""Immutable records handed to callers; frozen so a fold can never rewrite what the journal said."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Event:
    op_id: int
    seq: int
    time: str
    type: str
    version: int
    data: dict[str, Any]
    prev_hash: str
    hash: str


@dataclass(frozen=True, slots=True)
class Operation:
    id: int
    kind: str
    created: str
    params: dict[str, Any]
    who: str
    version: str
    target: str
    head_seq: int
    head_hash: str


@dataclass(frozen=True, slots=True)
class Problem:
    """seq 0 stands for the operation row itself."""

    op_id: int
    seq: int
    reason: str


@dataclass(frozen=True, slots=True)
class VerifyReport:
    ok: bool
    checked: int
    problems: list[Problem] = field(default_factory=list)
