"""How often, and how patiently, brsm asks again: one rule per kind of work, all of them here.

Each kind is retried in exactly one place, so the layers never multiply (3 tries of a file that
makes 5 tries of each request are 3, not 15, tries of that request):

* a request brsm makes of the store: ``STORE_REQUEST``, in brsm.adapters.storage.retry (every
  verb of the Storage port, the direct path's upload verbs too);
* a request a host makes of the store on a URL brsm signed (the direct data path): ``HOST_PART``,
  in brsm.workflows.direct, since brsm never sees that request and can only sign a fresh URL;
* the direct path's signed probe: ``PROBE``, fewer tries than a part, since it decides only which
  path a run takes and a host that cannot reach the store should not hold up the run;
* a whole file: ``WHOLE_FILE``, in brsm.workflows.transfer, for what no request retry can mend
  because the bytes must come again from where they are (the SSH stream from a host dropped, the
  host's helper died, the store dropped the upload, the bytes arrived wrong);
* a file brsm creates exclusively on a host whose name is taken by a temp file an interrupted
  write left, or whose parent directory is missing: ``EXCLUSIVE_CREATE``, in brsm.adapters.ssh,
  the obstacle cleared and the create sent again at once (nothing is busy, so nothing to wait for);
* the check and removal of one metad's meta checkpoint after dropSnapshot: ``META_CHECKPOINT``, in
  brsm.workflows.meta_checkpoints.remove_meta_checkpoints, as patient as ``PROBE``: a metad that answers an
  error or a host that drops for a moment should not leave the checkpoint behind, and one still out
  of reach after these tries is left for `brsm gc` (which lists and removes it later).
"""
from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """``attempts`` in all; before retry ``n`` (1-based) a wait of ``first · 2^(n-1)`` seconds, at most
    ``cap``, drawn from its upper half when ``jitter`` (many clients hitting one store spread out).

    >>> [Backoff(4, 0.5, 1.5).delay(n) for n in (1, 2, 3)]
    [0.5, 1.0, 1.5]
    """

    attempts: int
    first: float
    cap: float
    jitter: bool = False

    def delay(self, n: int) -> float:
        d = min(self.cap, self.first * (2 ** (n - 1)))
        return d * (0.5 + random.random() / 2) if self.jitter else d


STORE_REQUEST = Backoff(attempts=5, first=0.25, cap=8.0, jitter=True)
HOST_PART = Backoff(attempts=5, first=0.4, cap=5.0)
PROBE = Backoff(attempts=3, first=0.5, cap=1.0)
WHOLE_FILE = Backoff(attempts=3, first=0.5, cap=1.0)
EXCLUSIVE_CREATE = Backoff(attempts=3, first=0.0, cap=0.0)
META_CHECKPOINT = Backoff(attempts=3, first=0.5, cap=1.0)
