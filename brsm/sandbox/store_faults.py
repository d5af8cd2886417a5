"""Client helpers for the sandbox object stores' fault control (``/_sandbox/fault``).

    from brsm.sandbox import store_faults
    store_faults.inject("http://127.0.0.5:9000", kind="error", status=503, count=3)
    store_faults.inject(endpoint, kind="throttle", bytes_per_second=1 << 20)
    store_faults.inject(endpoint, kind="quota", bytes=10 << 20)
    store_faults.status(endpoint)   # {"flavor":..., "active": [...], "counters": {...}}
    store_faults.clear(endpoint)

Works for both the OSS endpoint (:mod:`brsm.sandbox.oss_server`) and the S3 one
(:mod:`brsm.sandbox.s3_server`); the fault kinds are documented in
:mod:`brsm.sandbox.faultproxy`.
"""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from brsm.sandbox.errors import SandboxFailure
from brsm.sandbox.faultproxy import FAULT_PATH

KINDS = ("error", "reset", "throttle", "quota", "late", "clear")


class StoreFaultError(SandboxFailure):
    """The sandbox store refused or did not answer a fault-control request."""


def _url(endpoint: str) -> str:
    ep = endpoint.strip().rstrip("/")
    if "://" not in ep:
        ep = "http://" + ep
    return ep + FAULT_PATH


def _call(endpoint: str, body: dict | None, timeout: float) -> dict[str, Any]:
    url = _url(endpoint)
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="GET" if body is None else "POST",
                                 headers={"Content-Type": "application/json"})
    # never through an HTTP proxy from the environment: the sandbox is loopback only
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=timeout) as resp:
            return json.loads(resp.read().decode() or "{}")
    except urllib.error.HTTPError as e:
        detail = e.read().decode(errors="replace")
        try:
            detail = json.loads(detail).get("error", detail)
        except ValueError:
            pass
        raise StoreFaultError(f"fault control at {url} refused: HTTP {e.code}: {detail}",
                              hint="kinds: " + ", ".join(KINDS)) from None
    except (urllib.error.URLError, OSError) as e:
        raise StoreFaultError(f"fault control at {url} unreachable: {e}",
                              hint="is the sandbox store running? (brsm sandbox status)") from None


def inject(endpoint: str, timeout: float = 10.0, **fault: Any) -> dict[str, Any]:
    """Add a fault (``kind=...`` plus its fields); returns the active faults."""
    if fault.get("kind") not in KINDS:
        raise StoreFaultError(f"unknown fault kind {fault.get('kind')!r}",
                              hint="kinds: " + ", ".join(KINDS))
    return _call(endpoint, fault, timeout)


def clear(endpoint: str, what: str | None = None, timeout: float = 10.0) -> dict[str, Any]:
    """Remove every fault (or one kind: ``what="throttle"``)."""
    body: dict[str, Any] = {"kind": "clear"}
    if what:
        body["what"] = what
    return _call(endpoint, body, timeout)


def status(endpoint: str, timeout: float = 10.0) -> dict[str, Any]:
    """What is active, with counters (errors_injected, resets_injected, quota_rejections)."""
    return _call(endpoint, None, timeout)
