"""What a store's error reply means to brsm: transient or permanent, and what to check. S3 and
OSS answer with the same HTTP statuses and their own codes and hints."""
from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass

from brsm.errors import ObjectNotFound, StorageError


def upload_gone(msg: str) -> StorageError:
    """The store no longer has the upload (aborted under us, expired): asking again cannot bring it
    back; only sending the bytes again, in a new upload, can (``resend``)."""
    e = StorageError(msg, permanent=False)
    e.resend = True
    return e


@dataclass(frozen=True)
class ReplyRules:
    """One object store's words for the failures every store has: S3 and OSS answer with the same
    HTTP statuses and different codes and hints, and :func:`classify_reply` decides for both."""
    bucket_hint: str  # NoSuchBucket
    credential_hints: Mapping[str, str]  # error code → what to check
    auth_hint: str  # any other 401/403
    transient_codes: frozenset[str]


FULL_CODES = frozenset({"InsufficientStorage", "QuotaExceeded"})


def classify_reply(msg: str, status: int, code: str, rules: ReplyRules, *,
                   missing_key: str | None = None) -> StorageError:
    """An error reply (HTTP ``status``, the store's error ``code``) → the StorageError brsm acts on:
    retried (transient) or not, with what to check. ``missing_key``: the key when the reply says it
    does not exist (each store says that its own way).

    >>> r = ReplyRules("b", {"Sig": "check the secret"}, "check the key", frozenset({"SlowDown"}))
    >>> [(e.permanent, e.hint) for e in (classify_reply("m", 403, "Sig", r), classify_reply("m", 503, "", r),
    ...                                  classify_reply("m", 400, "SlowDown", r), classify_reply("m", 400, "", r))]
    [(True, 'check the secret'), (False, None), (False, None), (True, None)]
    """
    if missing_key is not None:
        return ObjectNotFound(missing_key)
    if code == "NoSuchUpload":  # aborted under us: a put with the state starts over
        return upload_gone(msg)
    if code == "NoSuchBucket":
        return StorageError(msg, permanent=True, hint=rules.bucket_hint)
    if code in rules.credential_hints:
        return StorageError(msg, permanent=True, hint=rules.credential_hints[code])
    if status in (401, 403):
        return StorageError(msg, permanent=True, hint=rules.auth_hint)
    if status == 507 or code in FULL_CODES:
        return StorageError(msg, permanent=True, hint="the storage is full: free space or raise its quota")
    if code in rules.transient_codes or status >= 500 or status in (0, 408, 429):
        return StorageError(msg, permanent=False)
    return StorageError(msg, permanent=True)


def transport_error(e: BaseException, what: str, where: str, http_module: str = "") -> StorageError | None:
    """The failures below any SDK (socket, timeout, OS, and the HTTP client library the SDK uses,
    ``http_module``'s own exception classes when it is installed): transient for every backend."""
    if http_module:
        import importlib

        try:
            mod = importlib.import_module(http_module)
        except ImportError:  # pragma: no cover - the SDK needs it
            mod = None
        base = {"requests": "RequestException", "aiohttp": "ClientError"}[http_module]
        if mod is not None and isinstance(e, getattr(mod, base)):
            return StorageError(f"{what} {where}: {type(e).__name__}: {e}", permanent=False)
    if isinstance(e, (ConnectionError, TimeoutError, asyncio.TimeoutError, OSError)):
        return StorageError(f"{what} {where}: {type(e).__name__}: {e}", permanent=False)
    return None
