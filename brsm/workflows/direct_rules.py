"""The direct data path's decisions, pure and tested directly: which path a run takes, what a
helper's greeting and a refused part call for, and whether what the store holds is what a host
claimed. brsm.workflows.direct does the talking; nothing here does I/O.
"""
from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

DIRECT, VIA_BRSM, AUTO = "direct", "via-brsm", "auto"
MIN_PYTHON = (3, 6)


@dataclass(frozen=True)
class Choice:
    mode: str  # DIRECT or VIA_BRSM
    why: str


def decide(asked: str, signs_urls: bool, refusals: Sequence[str]) -> Choice:
    """The data path for a run (pure): ``refusals`` are "host: why" for hosts that cannot go direct.

    >>> decide("auto", True, []).mode, decide("auto", True, ["h1: no python3"]).why
    ('direct', 'h1: no python3; the bytes go through brsm')
    >>> decide("via-brsm", True, []).mode
    'via-brsm'
    """
    if asked == VIA_BRSM:
        return Choice(VIA_BRSM, "--data-path via-brsm")
    if not signs_urls:
        return Choice(VIA_BRSM, "the storage signs no URLs (local storage): the bytes go through brsm")
    if refusals:
        return Choice(VIA_BRSM, f"{'; '.join(refusals)}; the bytes go through brsm")
    return Choice(DIRECT, "every host runs the helper and reaches the store: each host moves its own bytes")


def python_refusal(hello: dict[str, Any] | None) -> str | None:
    """Why a helper's greeting rules the host out, or None.

    >>> python_refusal({"hello": 1, "python": "3.6.8"}), python_refusal({"hello": 1, "python": "3.5.2"})
    (None, 'python3 is 3.5.2, the helper needs 3.6 or newer')
    """
    if not hello or "hello" not in hello:
        return "python3 did not run the helper"
    try:
        version = tuple(int(x) for x in str(hello.get("python", "0")).split(".")[:2])
    except ValueError:
        return f"python3 says it is {hello.get('python')!r}"
    if version < MIN_PYTHON:
        return f"python3 is {hello.get('python')}, the helper needs {MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer"
    return None


def probe_refusal(err: dict[str, Any]) -> str:
    """Why a host's signed probe failed, in words an operator can act on (pure; no URL in it: the
    helper reports none). An HTTP answer means the store was reached and refused the URL, most often
    because it took the URL for expired: the clocks of brsm's machine and the store differ.

    >>> probe_refusal({"status": 0, "code": "ConnectionRefusedError"})
    'cannot reach the store: ConnectionRefusedError'
    """
    status, code = int(err.get("status") or 0), err.get("code") or ""
    if not status:
        return f"cannot reach the store: {code or 'no answer'}"
    message = str(err.get("message") or "")[:120]
    why = f"the store refused its signed probe: {status} {code}".rstrip() + (f" ({message})" if message else "")
    if "expired" in message.lower() or code == "RequestTimeTooSkewed":
        why += "; is this machine's clock right?"
    return why


def _md5_hex(etag: str) -> bool:
    return len(etag) == 32 and all(c in "0123456789abcdef" for c in etag)


def attest(parts: list[dict[str, Any]], signed: dict[int, str], listed: dict[int, dict[str, Any]] | None,
           part_size: int, size: int) -> list[str]:
    """What the store attests against what the host claimed (pure): every part it reported is
    stored, with the ETag and size it reported; a part sent in this run has as its ETag the MD5 brsm
    signed its URL for (the store checks a PUT's Content-MD5; an ETag that is no plain MD5, e.g.
    under SSE-KMS, is not compared); every part but the last is whole, and they add up to the file.

    >>> import base64, hashlib
    >>> md5 = base64.b64encode(hashlib.md5(b"ab").digest()).decode()
    >>> p = [{"n": 1, "etag": hashlib.md5(b"ab").hexdigest(), "size": 2}]
    >>> attest(p, {1: md5}, {1: {"etag": p[0]["etag"], "size": 2}}, 2, 2)
    []
    >>> attest(p, {1: md5}, {1: {"etag": p[0]["etag"], "size": 1}}, 2, 3)
    ['part 1: the store holds 1 bytes, the host reported 2', 'the parts hold 2 bytes, the file has 3']
    >>> attest(p, {1: md5}, {}, 2, 2)
    ['part 1: the store has no such part']
    """
    if listed is None:
        return ["the store no longer has the upload"]
    out: list[str] = []
    for p in parts:
        n = p["n"]
        s = listed.get(n)
        if s is None:
            out.append(f"part {n}: the store has no such part")
            continue
        etag = str(s.get("etag", "")).strip('"').lower()
        if etag != str(p["etag"]).strip('"').lower():
            out.append(f"part {n}: the store's ETag {etag} is not the {p['etag']} the host reported")
        if "size" in s and int(s["size"]) != int(p["size"]):
            out.append(f"part {n}: the store holds {s['size']} bytes, the host reported {p['size']}")
        if n in signed and _md5_hex(etag) and etag != base64.b64decode(signed[n]).hex():
            out.append(f"part {n}: the store's ETag {etag} is not the MD5 its URL was signed for")
    sizes = [int(p["size"]) for p in parts]
    if any(x != part_size for x in sizes[:-1]):
        out.append(f"parts of other sizes than {part_size} bytes: {sorted(set(sizes[:-1]))}")
    if sum(sizes) != size:
        out.append(f"the parts hold {sum(sizes)} bytes, the file has {size}")
    return out


RETRY, RESTART, STOP = "retry", "restart", "stop"
_QUERY = re.compile(r"\?[^\s'\"]*")


def scrubbed(m: dict[str, Any] | None) -> dict[str, Any] | None:
    """A helper's message with any URL query cut from its error text (pure). The helper reports no URL
    and scrubs its own errors; this is brsm's own guard, since an error's text goes into the journal.

    >>> scrubbed({"error": {"message": "URL can't contain control characters. '/b/k?X-Amz-Signature=ab cd'"}})
    {'error': {'message': "URL can't contain control characters. '/b/k?... cd'"}}
    """
    if m and isinstance(m.get("error"), dict) and m["error"].get("message"):
        m["error"]["message"] = _QUERY.sub("?...", str(m["error"]["message"]))
    return m


def store_full(err: dict[str, Any]) -> bool:
    return int(err.get("status") or 0) == 507 or err.get("code") in ("InsufficientStorage", "QuotaExceeded")


def part_failure(err: dict[str, Any]) -> str:
    """What a part the store refused calls for (pure): RETRY it with a fresh URL (the store was busy or
    unreachable, the URL expired, the bytes were damaged on the way), RESTART the file (its upload is
    gone: aborted under us), or STOP (the store is full; it refuses the credentials or the signature:
    asking again cannot help).

    >>> [part_failure(e) for e in ({"status": 503}, {"status": 403, "code": "AccessDenied", "message": "Request has expired"},
    ...                            {"status": 404, "code": "NoSuchUpload"}, {"status": 507}, {"status": 403, "code": "SignatureDoesNotMatch"})]
    ['retry', 'retry', 'restart', 'stop', 'stop']
    """
    status, code = int(err.get("status") or 0), str(err.get("code") or "")
    message = str(err.get("message") or "").lower()
    if code == "NoSuchUpload":
        return RESTART
    if store_full(err):
        return STOP
    if status in (0, 408, 429) or status >= 500 or code in ("SlowDown", "RequestTimeout", "BadDigest", "InvalidDigest",
                                                          "ShortRead", "IncompleteBody"):
        return RETRY
    if status == 403 and "expired" in message:
        return RETRY
    return STOP
