"""The hash chain: what is hashed, and how a stored chain is checked.

Hashes are computed over the stored JSON text (not a re-encoding of parsed values), so any byte changed in a
row is caught and checking needs no JSON parsing. The material is exactly the canonical JSON of the tuple
(op_id, seq, time, type, version, data) because `data` is stored canonically.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime, timezone
from hashlib import sha256
from typing import Any

from .model import Problem

_encode_str = json.JSONEncoder(ensure_ascii=True).encode
_canonical = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode


def canonical_json(value: Any) -> str:
    """sort_keys + compact + ASCII: one byte string per value, whoever writes it."""
    return _canonical(value)


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_hash(prev_hash: str, op_id: int, seq: int, time: str, type_: str, version: int, data_json: str) -> str:
    if type(op_id) is not int or type(seq) is not int or type(version) is not int:
        raise TypeError("integer columns hold non-integers")
    material = f"{prev_hash}[{op_id},{seq},{_encode_str(time)},{_encode_str(type_)},{version},{data_json}]"
    return sha256(material.encode()).hexdigest()


def genesis_hash(op_id: int, kind: str, created: str, params_json: str, who: str, version: str, target: str) -> str:
    """Seeds the chain with the operation row, so editing who/what/when of an operation breaks event 1."""
    if type(op_id) is not int:
        raise TypeError("operation id is not an integer")
    material = (f"journal-operation:[{op_id},{_encode_str(kind)},{_encode_str(created)},{params_json},"
                f"{_encode_str(who)},{_encode_str(version)},{_encode_str(target)}]")
    return sha256(material.encode()).hexdigest()


def check_operation(op_row: tuple, events: Iterable[tuple]) -> tuple[int, list[Problem]]:
    """Walk one operation's stored events (in seq order) against its row and recorded head.

    op_row: (id, kind, created, params, who, version, target, head_seq, head_hash)
    events: (seq, time, type, version, data, prev_hash, hash) ordered by seq.
    Keeps going after a problem (re-anchoring on the stored hash) so one edit is reported once, at its seq.
    """
    op_id, kind, created, params, who, version, target, head_seq, head_hash = op_row
    problems: list[Problem] = []
    try:
        genesis: str | None = genesis_hash(op_id, kind, created, params, who, version, target)
    except (TypeError, ValueError):
        genesis = None
    expected_seq, expected_prev = 1, genesis
    last_seq, last_hash = 0, genesis
    checked = 0
    for seq, time, type_, ev_version, data, prev, h in events:
        checked += 1
        try:
            computed = event_hash(prev, op_id, seq, time, type_, ev_version, data)
        except (TypeError, ValueError, UnicodeError):
            computed = None
        if type(seq) is not int or seq < expected_seq:
            problems.append(Problem(op_id, seq if type(seq) is int else expected_seq,
                                    f"event has an impossible seq {seq!r} (expected {expected_seq}): inserted"))
        elif seq > expected_seq:
            gap = f"event {expected_seq}" if seq == expected_seq + 1 else f"events {expected_seq}..{seq - 1}"
            problems.append(Problem(op_id, expected_seq, f"{gap} missing: deleted"))
            if computed != h:
                problems.append(Problem(op_id, seq, "event content does not match its hash: edited or moved"))
        elif computed != h:
            problems.append(Problem(op_id, seq, "event content does not match its hash: edited or moved"))
        elif prev != expected_prev:
            if seq == 1:
                problems.append(Problem(op_id, 0, "operation row does not match the chain's genesis: edited"))
            else:
                problems.append(Problem(op_id, seq, "event does not link to the previous one: inserted, "
                                                    "deleted or reordered"))
        if type(seq) is int:
            expected_seq = max(expected_seq, seq + 1)
            last_seq = seq
        expected_prev = last_hash = h
    if type(head_seq) is not int or last_seq < head_seq:
        problems.append(Problem(op_id, last_seq + 1,
                                f"events {last_seq + 1}..{head_seq} missing at the end: tail truncated"))
    elif last_seq > head_seq:
        problems.append(Problem(op_id, head_seq + 1, f"events after the recorded head {head_seq} "
                                                     f"(up to {last_seq}): appended outside the journal"))
    elif last_hash != head_hash:
        if last_seq == 0:
            problems.append(Problem(op_id, 0, "operation row does not match its recorded head: edited"))
        else:
            problems.append(Problem(op_id, last_seq, "last event differs from the operation's recorded head"))
    return checked, problems
