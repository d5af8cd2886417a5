"""Storage backends behind :class:`brsm.ports.Storage`, opened from a URI.

    storage = open_storage("s3://bucket/backups", s3_endpoint="http://127.0.0.1:9000")

``local:///abs/path``, ``s3://bucket[/prefix]``, ``oss://bucket[/prefix]`` (and ``memory://name``
for tests). The backend module is imported only when its scheme is used. The result is wrapped
once in :class:`~brsm.adapters.storage.retry.RetryStorage` (``retry=False`` for the bare backend).
"""
from __future__ import annotations

from typing import Any, Callable
from urllib.parse import urlsplit

from brsm.errors import BrsmError, UsageError
from brsm.ports import Storage

FORMS = "local:///absolute/path, s3://bucket/prefix or oss://bucket/prefix"
_HINT = f"--storage takes one of: {FORMS}"


def _local(uri: str, bucket: str, path: str, opts: dict[str, Any]):
    from .local import LocalStorage
    if bucket:
        raise UsageError(f"bad storage URI {uri!r}: a local path has three slashes after 'local:'",
                         hint=f"write local:///{bucket}{path} (an absolute path); {_HINT}")
    if not path.startswith("/") or path == "/":
        raise UsageError(f"bad storage URI {uri!r}: needs an absolute directory path", hint=_HINT)
    return LocalStorage(path.rstrip("/") or "/", uri=f"local://{path.rstrip('/')}", **opts)


def _s3(uri: str, bucket: str, path: str, opts: dict[str, Any]):
    from .s3 import S3Storage
    return S3Storage(bucket, path, endpoint=opts.pop("s3_endpoint"), region=opts.pop("s3_region"), **opts)


def _oss(uri: str, bucket: str, path: str, opts: dict[str, Any]):
    from .oss import OssStorage
    return OssStorage(bucket, path, endpoint=opts.pop("oss_endpoint"), **opts)


def _memory(uri: str, bucket: str, path: str, opts: dict[str, Any]):
    from .memory import MemoryStorage
    return MemoryStorage(uri, path, **opts)


# scheme -> (factory, the open_storage arguments it takes)
_REGISTRY: dict[str, tuple[Callable[..., Any], tuple[str, ...]]] = {
    "local": (_local, ()),
    "s3": (_s3, ("s3_endpoint", "s3_region")),
    "oss": (_oss, ("oss_endpoint",)),
    "memory": (_memory, ()),
}


def parse_uri(uri: str) -> tuple[str, str, str]:
    """``(scheme, bucket, path)``; raises UsageError naming the accepted forms."""
    if not isinstance(uri, str) or "://" not in uri:
        raise UsageError(f"bad storage URI {uri!r}", hint=_HINT)
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme not in _REGISTRY:
        raise UsageError(f"unknown storage scheme {parts.scheme!r} in {uri!r}", hint=_HINT)
    if parts.query or parts.fragment or uri.rstrip().endswith(("?", "#")):
        # shown without what follows the '?' or '#': it may be a token, and errors are logged
        shown = uri.split("?", 1)[0].split("#", 1)[0] + ("?…" if "?" in uri.split("#", 1)[0] else "#…")
        raise UsageError(f"bad storage URI {shown!r}: no '?' or '#' allowed", hint=_HINT)
    bucket, path = parts.netloc, parts.path
    if scheme == "local" and (bucket or not path.startswith("/") or path == "/"):
        _local(uri, bucket, path, {})  # raises the error that names the fix
    if scheme in ("s3", "oss"):
        if not bucket:
            raise UsageError(f"bad storage URI {uri!r}: no bucket", hint=_HINT)
        if "@" in bucket or ":" in bucket:
            raise UsageError(f"bad storage URI {uri!r}: put credentials and endpoints in the environment "
                             "or the config, not in the URI", hint=_HINT)
        if any(seg in (".", "..") for seg in path.split("/")):
            raise UsageError(f"bad storage URI {uri!r}: '.' and '..' are not allowed in the prefix", hint=_HINT)
    return scheme, bucket, path


def open_storage(uri: str, *, s3_endpoint: str | None = None, s3_region: str | None = None,
                 oss_endpoint: str | None = None, retry: bool = True, retry_options: dict[str, Any] | None = None,
                 **options: Any) -> Storage:
    """Open the backend for ``uri``. ``options`` go to the backend (block_size, part_size,
    multipart_threshold, part_concurrency, list_page_size)."""
    scheme, bucket, path = parse_uri(uri)
    factory, takes = _REGISTRY[scheme]
    given = {"s3_endpoint": s3_endpoint, "s3_region": s3_region, "oss_endpoint": oss_endpoint}
    opts = {k: given[k] for k in takes} | options
    try:
        backend = factory(uri, bucket, path, opts)
    except BrsmError:
        raise
    except ImportError as e:  # pragma: no cover - a broken install
        raise UsageError(f"storage scheme {scheme!r} is unavailable: {e}",
                         hint="reinstall brsm with its dependencies") from e
    if not retry:
        return backend
    from .retry import RetryStorage
    return RetryStorage(backend, **(retry_options or {}))

