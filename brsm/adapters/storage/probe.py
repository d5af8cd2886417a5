"""The backup preflight's proof that a store is reachable and writable: a small object written, read
back and deleted, through any Storage (so through the retry wrapper too)."""
from __future__ import annotations

import uuid
from typing import Any

from brsm.errors import StorageError

PROBE_PREFIX = ".brsm-probe-"


async def probe(storage: Any) -> None:
    """Backup preflight: write a small probe object, read it back, delete it (any Storage)."""
    key = f"{PROBE_PREFIX}{uuid.uuid4().hex}"
    data = b"brsm probe " + key.encode()
    await storage.put_bytes(key, data)
    try:
        got = await storage.get_bytes(key)
        if got != data:
            raise StorageError(f"{storage.uri}: the probe object read back different bytes", permanent=True)
    finally:
        await storage.delete(key)
