"""Secrets must never reach the journal: it is kept forever, copied into bug reports and shown by `brsm audit`.

Callers are expected to strip secrets already; this is the second line of defence, so it errs on the side
of hiding (any key that merely contains a suspicious word, in any spelling: aws_secret_access_key, apiToken,
private-key).
"""
from __future__ import annotations

import re
from typing import Any

REDACTED = "<redacted>"

# Keys are compared with case, '_' and '-' removed, so 'privateKey' and 'private-key' are caught too.
_SECRET_WORDS = ("secret", "password", "passwd", "token", "credential", "privatekey", "accesskey")
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*):[^/\s@]*@")


def is_secret_key(key: str) -> bool:
    k = key.lower().replace("_", "").replace("-", "")
    return any(w in k for w in _SECRET_WORDS)


def scrub_url_password(text: str) -> str:
    """scheme://user:pass@host -> scheme://user:<redacted>@host; free text such as a target URI can carry one."""
    return _URL_PASSWORD.sub(lambda m: f"{m.group('head')}:{REDACTED}@", text)


def redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: (REDACTED if isinstance(k, str) and is_secret_key(k) else redact(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return scrub_url_password(value)
    return value
