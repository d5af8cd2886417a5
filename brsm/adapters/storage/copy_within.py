"""``Storage.copy`` on an object store: an object copied inside the store, no byte through brsm.

An incremental backup (issue 26) reuses a file whose content a base backup already holds by copying
the base's object under the new backup's key: each backup then holds its own copy and stands alone
(the base may be pruned). S3 and OSS copy up to 5 GiB in one request (CopyObject) and bigger
objects in parts, each a byte range of the source (UploadPartCopy); the store does the copy. The
copy is trusted only when the new object is there with the source's size; the bytes were the
source's, whose SHA-256 the caller knows from the base's manifest (``verify --full`` re-hashes it).

A backend provides ``_copy_single(src_full, dst_full)`` and ``_copy_part(dst_full, upload_id, n,
src_full, first, last) -> {"etag", ...}``; the multipart upload itself is the put's (``_mp_create``,
``_mp_complete``, ``_mp_abort``).
"""
from __future__ import annotations

from typing import Any

from brsm.errors import StorageError
from brsm.ports import ObjectInfo

COPY_ONE_REQUEST = 5 << 30  # the largest object S3 and OSS copy in one request


def byte_ranges(size: int, part: int) -> list[tuple[int, int]]:
    """(first, last) byte of each part, inclusive, as a copy's ranges name them (pure).

    >>> byte_ranges(10, 4), byte_ranges(8, 4), byte_ranges(0, 4)
    ([(0, 3), (4, 7), (8, 9)], [(0, 3), (4, 7)], [])
    """
    return [(a, min(size, a + part) - 1) for a in range(0, size, part)]


async def copy_object(store: Any, src: str, dst: str) -> ObjectInfo:
    """``dst`` made a whole copy of ``src`` (ObjectNotFound when ``src`` is not there)."""
    info = await store.stat(src)
    sf, df = store.full_key(src), store.full_key(dst)
    if info.size <= store.copy_one_request:
        await store._copy_single(sf, df)
    else:
        upload_id = await store._mp_create(df)
        try:
            parts = []
            for n, (first, last) in enumerate(byte_ranges(info.size, store.choose_part_size(info.size)), start=1):
                got = await store._copy_part(df, upload_id, n, sf, first, last)
                parts.append({"n": n, "size": last - first + 1, **got})
            await store._mp_complete(df, upload_id, parts)
        except BaseException:
            await store._abort_quietly(df, upload_id)
            raise
    made = await store.stat(dst)
    if made.size != info.size:
        raise StorageError(f"{dst}: the copy of {src} holds {made.size} bytes, not {info.size}", permanent=False,
                           hint="the source changed while it was copied; it is copied again")
    return made
