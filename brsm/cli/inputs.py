"""What the CLI checks before an operation exists: a bad input is refused with one line and exit 2, and
leaves nothing behind (no operation in the journal, nothing written anywhere).

- numbers in range (``--concurrency 0`` used to run with 8, ``-5`` with 1);
- no credential in any parameter: parameters are journaled for ever and replayed by a resume;
- the storage pinned: the URI an operation writes to (``--storage``, else the config's
  ``storage.default``) is resolved once, when the operation is created, and journaled as its
  params' ``storage`` and its target, so a resume or rollback never follows an edited config.
"""
from __future__ import annotations

import re
from typing import Any

from journal.redact import scrub_text

from brsm.errors import UsageError

CONCURRENCY = (1, 1024)
PER_HOST = (1, 256)

# params key -> the flag it came from, for the error line
FLAGS = {"storage": "--storage", "config": "--config", "spaces": "--spaces", "rate_limit": "--rate-limit",
         "s3_endpoint": "--s3-endpoint", "s3_region": "--s3-region", "oss_endpoint": "--oss-endpoint",
         "host_map": "--host-map", "name": "--name"}


def in_range(flag: str, value: int, bounds: tuple[int, int]) -> int:
    """``in_range("--per-host", 0, (1, 256))`` -> UsageError "--per-host must be between 1 and 256, not 0"."""
    lo, hi = bounds
    if not lo <= value <= hi:
        raise UsageError(f"{flag} must be between {lo} and {hi}, not {value}",
                         hint=f"e.g. {flag} {min(max(8, lo), hi)}")
    return value


def check_rate_limit(text: str | None) -> None:
    from brsm.workflows.limits import parse_rate

    try:
        parse_rate(text)
    except UsageError as e:
        raise UsageError(f"--rate-limit: {e.message}" if not e.message.startswith("--rate-limit") else e.message,
                         hint="write it like 100MiB/s or 512KiB/s (powers of 1024, as progress shows them)") from None


def check_backup_name(name: str, flag: str = "NAME") -> str:
    from brsm.workflows.layout import bad_backup_name

    why = bad_backup_name(name)
    if why:
        raise UsageError(f"{flag}: {why}", hint="backup names look like BACKUP_2026_11_24_15_23_34; "
                                                "`brsm show --storage URI` lists them")
    return name


def refuse_credentials(params: dict[str, Any]) -> None:
    """A credential in a parameter (``s3://KEY:SECRET@…``, ``?X-Amz-Signature=…``, ``https://TOKEN@…``)
    is refused before anything is written: the journal could only keep it redacted, and a resume
    would then replay the redacted value. (The config refuses one in ``[storage]`` when it loads.)"""
    for key, value in params.items():
        for v in (value if isinstance(value, (list, tuple)) else [value]):
            if isinstance(v, str) and scrub_text(v) != v:
                raise UsageError(f"{FLAGS.get(key, key)}: {scrub_text(v)} carries a credential; brsm journals its "
                                 "parameters, so credentials are never taken from them",
                                 hint="give S3 keys as AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (or a profile), OSS "
                                      "keys as OSS_ACCESS_KEY_ID/OSS_ACCESS_KEY_SECRET, and the URI without them")


def pin_storage(params: dict[str, Any]) -> None:
    """Put the storage URI the operation will use into ``params["storage"]``: ``--storage``, else the
    config's ``storage.default``. A config that does not load is left for the operation to report, as
    before (it is journaled as an attempt that failed before its first step)."""
    if not params.get("config"):
        return
    from brsm.config import load_config

    try:
        cfg = load_config(params["config"])
    except UsageError:
        return
    # what the config said when the operation started: resume/rollback note a change only when there is one
    params["storage_default"] = cfg.storage.default or ""
    if cfg.storage.default and not params.get("storage"):
        params["storage"] = cfg.storage.default


def prepare(params: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """(params to journal, target): no credential anywhere, the storage pinned; else UsageError."""
    refuse_credentials(params)
    params = dict(params)
    pin_storage(params)
    check_storage_uri(params.get("storage"))
    for key in ("s3_endpoint", "oss_endpoint"):
        check_endpoint(FLAGS[key], params.get(key))
    return params, params.get("storage") or ""


def check_endpoint(flag: str, url: str | None) -> None:
    """An endpoint is journaled with the operation and used by every resume: one with a '?', a '#', a
    space or a control character is refused before the operation exists (the SDKs would fail on it, or
    quietly drop the part after '#', later)."""
    if not url:
        return
    if re.search(r"[?#\s\x00-\x1f\x7f]", url):
        shown = re.split(r"[?#\s\x00-\x1f\x7f]", url, maxsplit=1)[0] + "…"
        raise UsageError(f"{flag}: {shown!r} is not an endpoint URL: no '?', '#', spaces or control characters",
                         hint=f"e.g. {flag} https://s3.example.com:9000")


def check_storage_uri(uri: str | None) -> None:
    """The storage URI is journaled as the operation's target and replayed by every resume: one
    ``open_storage`` would refuse (``#fragment``, ``?query``, a relative local path, no bucket) is
    refused here, before the operation exists. (A config whose storage.default is bad is the
    config's error, named by the same rule.)"""
    if not uri:
        return
    from brsm.adapters.storage import parse_uri

    parse_uri(uri)


def same_storage(a: str, b: str) -> bool:
    return a.rstrip("/") == b.rstrip("/")
