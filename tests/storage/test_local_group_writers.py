"""A local store writes at most GROUP_WRITERS groups at once: more threads only took the GIL from the
event loop's journal appends (docs/performance.md, session 12)."""
import asyncio
import threading
import time

from brsm.adapters.storage import local_group as group_mod
from brsm.adapters.storage.local import LocalStorage
from brsm.adapters.storage.local_group import GROUP_WRITERS


async def test_no_more_than_group_writers_groups_are_written_at_once(tmp_path, monkeypatch):
    real = group_mod.write_group
    lock = threading.Lock()
    now = {"in": 0, "peak": 0}

    def counting(root, entries, within):
        with lock:
            now["in"] += 1
            now["peak"] = max(now["peak"], now["in"])
        try:
            time.sleep(0.02)
            return real(root, entries, within)
        finally:
            with lock:
                now["in"] -= 1

    monkeypatch.setattr(group_mod, "write_group", counting)
    st = LocalStorage(tmp_path / "store")
    groups = [[(f"g{g}/f{i}", b"x" * 10) for i in range(3)] for g in range(8)]
    results = await asyncio.gather(*(st.put_many(items) for items in groups))
    assert [len(r) for r in results] == [3] * 8
    assert now["peak"] == GROUP_WRITERS == 2
    assert (tmp_path / "store" / "g7" / "f2").read_bytes() == b"x" * 10
