"""Where a failed operation's storage endpoint came from, so its hint never sends the user to a
`brsm resume` that cannot reach the storage either.

A resume replays the operation's journaled params: an ``--s3-endpoint``/``--oss-endpoint`` given when it
started is used again and cannot be changed; the config's ``[storage] s3_endpoint`` and the environment
(``AWS_ENDPOINT_URL``, ``OSS_ENDPOINT``) are read again by the resume. "Is the S3 endpoint reachable?;
fix the cause, then `brsm resume 7`" was wrong advice when the operation went to AWS's own endpoint
because the user forgot ``--s3-endpoint``: the resume would go there again. The hint now names the
endpoint used, where it came from, and the fix a resume can actually see.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from brsm.errors import BrsmError, StorageError

ENV = {"s3": "AWS_ENDPOINT_URL", "oss": "OSS_ENDPOINT"}
UNREACHABLE = "endpoint reachable?"  # the adapters' hint for a connection that failed


def endpoint_source(params: Mapping[str, Any], config_endpoint: str | None,
                    environ: Mapping[str, str]) -> tuple[str, str, str | None] | None:
    """(scheme, where the endpoint came from in words, the fix a resume sees or None when none can),
    for an S3/OSS storage; None for another storage.

    >>> endpoint_source({"storage": "s3://b/p"}, None, {})[1:]
    ("AWS's own endpoint (no --s3-endpoint, no [storage] s3_endpoint, no AWS_ENDPOINT_URL)", 'export AWS_ENDPOINT_URL=URL')
    >>> endpoint_source({"storage": "s3://b/p", "s3_endpoint": "http://m:9000"}, None, {})[2] is None
    True
    """
    scheme = str(params.get("storage") or "").split("://", 1)[0]
    if scheme not in ENV:
        return None
    env, key = ENV[scheme], f"{scheme}_endpoint"
    if params.get(key):
        return scheme, f"{params[key]} (its --{scheme}-endpoint, journaled with it)", None
    if config_endpoint:
        return scheme, (f"{config_endpoint} ([storage] {key} of {params.get('config')}, which a resume reads "
                        "again)"), f"correct [storage] {key} in {params.get('config')}"
    if scheme == "s3":
        from brsm.wiring import s3_env_endpoint

        env = "AWS_ENDPOINT_URL_S3" if environ.get("AWS_ENDPOINT_URL_S3") else env
        if s3_env_endpoint(environ):
            return scheme, f"{environ[env]} (${env}, which a resume reads again)", f"correct ${env}"
    elif environ.get(env):
        return scheme, f"{environ[env]} (${env}, which a resume reads again)", f"correct ${env}"
    if scheme == "s3":
        return (scheme, "AWS's own endpoint (no --s3-endpoint, no [storage] s3_endpoint, no AWS_ENDPOINT_URL)",
                "export AWS_ENDPOINT_URL=URL")
    return (scheme, "no endpoint (no --oss-endpoint, no [storage] oss_endpoint, no OSS_ENDPOINT)",
            "export OSS_ENDPOINT=URL")


def reach_hint(op_id: int, params: Mapping[str, Any], can: frozenset[str], *, config_endpoint: str | None,
               environ: Mapping[str, str]) -> str | None:
    """The hint for a storage that did not answer, or None when the usual one fits."""
    src = endpoint_source(params, config_endpoint, environ)
    if src is None:
        return None
    scheme, where, fix = src
    flag = f"--{scheme}-endpoint"
    head = f"is the {scheme.upper()} endpoint reachable? operation {op_id} uses {where}"
    cmds = " or ".join(f"`brsm {c} {op_id}`" for c in ("resume", "rollback") if c in can)
    if not cmds:  # rolled back, or done: only a new operation is left
        return f"{head}; start again with the right {flag} (or ${ENV[scheme]})"
    if fix is None:
        return (f"{head}: {cmds} goes there again once it answers; if that endpoint is wrong, it cannot be "
                f"changed for this operation: start a new one with the right {flag}")
    return f"{head}: if that is not your store, {fix}, then {cmds}"


def with_reach_hint(e: BrsmError, op_id: int, st: Any, can: frozenset[str],
                    environ: Mapping[str, str] | None = None) -> BrsmError:
    """``e`` with its hint replaced by reach_hint when the storage did not answer."""
    if not isinstance(e, StorageError) or UNREACHABLE not in (e.hint or "") or st is None:
        return e
    params = st.params or {}
    cfg_ep = None
    if params.get("config"):
        from brsm.config import load_config

        try:
            storage = load_config(params["config"]).storage
            cfg_ep = getattr(storage, f"{str(params.get('storage', '')).split('://', 1)[0]}_endpoint", None)
        except BrsmError:
            cfg_ep = None
    hint = reach_hint(op_id, params, can, config_endpoint=cfg_ep, environ=os.environ if environ is None else environ)
    if hint is not None:
        e.hint = hint
    return e
