"""Which multipart sizes a store can take: checked when the config loads and again for the
storage a run opens, so a wrong size fails before the first upload rather than minutes into it."""
from __future__ import annotations

from brsm.sizes import exact_size_text
from brsm.store_limits import MAX_PART, MAX_PUT, MIN_PART


def part_size_problems(part_size: int | None, threshold: int | None, *, scheme: str | None,
                       min_part_size: int | None = None) -> list[tuple[str, str]]:
    """[(key, what is wrong)] for multipart sizes that cannot work on ``scheme``'s store (None: on S3
    or OSS, whichever is picked later). ``min_part_size`` replaces the store's minimum (an
    S3-compatible store that accepts smaller parts, such as the sandbox's stand-ins).

        part_size_problems(1024, None, scheme="s3")
        -> [("part_size", "1024 bytes is below S3's minimum part of 5 MiB: ...")]
    """
    out = []
    if part_size is not None:
        if min_part_size is not None:
            floor, who = min_part_size, "storage.min_part_size"
        elif scheme in MIN_PART:
            floor, who = MIN_PART[scheme], f"{scheme.upper()}'s minimum part"
        elif scheme is None:
            floor, who = min(MIN_PART.values()), "the smallest part S3 or OSS accept"
        else:  # local storage has no parts
            floor, who = 1, ""
        if part_size < floor:
            out.append(("part_size", f"{exact_size_text(part_size)} is below {who} of {exact_size_text(floor)}: every part but the "
                        "last must be at least that (S3 5 MiB, OSS 100 KiB; set storage.min_part_size only for "
                        "a store that accepts smaller parts)"))
        if part_size > MAX_PART:
            out.append(("part_size", f"{exact_size_text(part_size)} is above the largest part S3 and OSS accept "
                        f"({exact_size_text(MAX_PART)})"))
    if threshold is not None and threshold > MAX_PUT:
        out.append(("multipart_threshold", f"{exact_size_text(threshold)} is above the largest single upload S3 and OSS "
                    f"accept ({exact_size_text(MAX_PUT)}): larger files must go up in parts"))
    return out
