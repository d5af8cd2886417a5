"""Secrets must never reach the journal: it is kept forever, copied into bug reports and shown by `brsm audit`.

Callers are expected to strip secrets already; this is the second line of defence, so it errs on the side
of hiding (any key that merely contains a suspicious word, in any spelling: aws_secret_access_key, apiToken,
private-key). brsm's first line (its errors, its output, its log) uses the same rules from here, so there
is one definition of what a secret looks like:

- a mapping key that names a secret: its whole value;
- a URL's userinfo: ``s3://KEY:SECRET@b`` -> ``s3://KEY:<redacted>@b``, ``https://TOKEN@h`` -> ``https://<redacted>@h``;
- a credential in a query string or a header-like ``name=value``: ``?secret=…``, ``&X-Amz-Signature=…``,
  ``Signature=…``, ``sig=…``, ``access_key_secret=…`` -> ``name=<redacted>``;
- an ``Authorization:`` header's value and a ``Bearer`` token.
"""
from __future__ import annotations

import functools
import re
from typing import Any

REDACTED = "<redacted>"

# Keys are compared with case, '_' and '-' removed, so 'privateKey' and 'private-key' are caught too.
_SECRET_WORDS = ("secret", "password", "passwd", "token", "credential", "privatekey", "accesskey")
# Names that are secrets as query parameters (SigV2/SigV4 presigned URLs, SAS tokens), compared the same way.
_QUERY_WORDS = ("signature",)
_QUERY_NAMES = frozenset({"sig", "pwd", "pass", "apikey", "auth", "authorization", "xamzsignature"})

# (a password may hold '/': AWS secret keys do)
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*):[^\s@]*@")
# userinfo without a password: the whole of it is the credential (a token)
_URL_USER = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^/\s:@'\"<>][^\s:@'\"<>]*)@")
# name=value where name starts a query parameter, a header field or a word (never inside a path: '/' before it)
_NAMED = re.compile(r"(?P<lead>^|[?&;\s,'\"(\[{])(?P<name>[A-Za-z][A-Za-z0-9_.-]{0,63})=(?P<value>[^&\s'\"#,;)\]}]+)")
_AUTH_HEADER = re.compile(r"(?P<head>\bauthorization\s*[:=]\s*)(?P<value>[^\r\n'\"]+)", re.IGNORECASE)
_BEARER = re.compile(r"(?P<head>\bbearer\s+)(?P<value>[A-Za-z0-9._~+/=-]{6,})", re.IGNORECASE)
# A cheap test that a text (or a JSON document) may hold something the rules above would change: a URL's
# userinfo needs '@', and every secret name above contains one of these words (a file copied has none).
# Plain substring tests on a lowered copy: a regex alternation costs ~30x more on a 300-byte event.
_SUSPECT_WORDS = ("@", "sig", "pass", "secret", "token", "auth", "access", "private", "credential", "pwd", "api",
                  "bearer")


def _norm(key: str) -> str:
    return key.lower().replace("_", "").replace("-", "").replace(".", "")


@functools.lru_cache(maxsize=4096)
def is_secret_key(key: str) -> bool:
    k = _norm(key)
    return any(w in k for w in _SECRET_WORDS)


@functools.lru_cache(maxsize=4096)
def is_secret_param(name: str) -> bool:
    """A query-string or header parameter that carries a credential (``X-Amz-Signature``, ``sig``, ``secret``)."""
    k = _norm(name)
    return k in _QUERY_NAMES or is_secret_key(name) or any(w in k for w in _QUERY_WORDS)


def scrub_url_password(text: str) -> str:
    """scheme://user:pass@host -> scheme://user:<redacted>@host; free text such as a target URI can carry one."""
    return _URL_PASSWORD.sub(lambda m: f"{m.group('head')}:{REDACTED}@", text)


def _named(m: re.Match[str]) -> str:
    if not is_secret_param(m.group("name")) or m.group("value") == REDACTED:
        return m.group(0)
    return f"{m.group('lead')}{m.group('name')}={REDACTED}"


def scrub_text(text: str) -> str:
    """Every credential-shaped part of a free text replaced by ``<redacted>``; anything else unchanged.

        scrub_text("bad URI 's3://bucket/x?secret=abc&v=1'") == "bad URI 's3://bucket/x?secret=<redacted>&v=1'"
    """
    if not suspect(text):
        return text
    if "@" in text and "://" in text:
        text = scrub_url_password(text)
        text = _URL_USER.sub(lambda m: m.group(0) if m.group("user") == REDACTED
                             else f"{m.group('head')}{REDACTED}@", text)
    if "=" in text:
        text = _NAMED.sub(_named, text)
    text = _AUTH_HEADER.sub(lambda m: m.group(0) if m.group("value").strip() == REDACTED
                            else f"{m.group('head')}{REDACTED}", text)
    return _BEARER.sub(lambda m: f"{m.group('head')}{REDACTED}", text)


def suspect(text: str) -> bool:
    """False when ``scrub_text``/``redact`` would surely change nothing in ``text`` (e.g. a JSON document)."""
    low = text.lower()
    for w in _SUSPECT_WORDS:
        if w in low:
            return True
    return False


def redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: (REDACTED if isinstance(k, str) and is_secret_key(k) else redact(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return scrub_text(value)
    return value
