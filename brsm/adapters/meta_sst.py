"""Meta SSTs read and written with RocksDB's own table format (rocksdict, the RocksDB bindings).

metad exports each meta table as an SST (RocksEngine::backupTable, SstFileWriter) and restoreMeta
ingests SSTs (IngestExternalFile). For a restore of chosen spaces brsm writes the SST itself (see
brsm.workflows.restore.meta_ingest): puts, and tombstones that delete keys on ingest. Keys go in
bytewise order, the comparator of metad's RocksDB.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence

from brsm.errors import PreflightFailed

__all__ = ["RocksMetaSst", "available"]
HINT = "reinstall brsm with its dependencies (pip install brsm brings rocksdict, RocksDB's bindings)"


def available() -> bool:
    try:
        import rocksdict  # noqa: F401
    except ImportError:
        return False
    return True


def _rocksdict():
    try:
        import rocksdict
    except ImportError as exc:
        raise PreflightFailed("brsm reads the backup's meta SSTs (its zones) and writes the one a restore of chosen "
                              "spaces ingests, and rocksdict is not installed", hint=HINT) from exc
    return rocksdict


class RocksMetaSst:
    def read(self, blobs: Sequence[bytes]) -> dict[bytes, bytes]:
        """Every row of these SSTs, as one RocksDB holding them all would show them. A blob that is no
        SST raises ValueError (rocksdict raises a bare Exception: "Corruption: Bad table magic number")."""
        rd = _rocksdict()
        with tempfile.TemporaryDirectory(prefix="brsm-sst-") as d:
            paths = []
            for i, blob in enumerate(blobs):
                p = os.path.join(d, f"{i}.sst")
                with open(p, "xb") as fh:
                    fh.write(blob)
                paths.append(p)
            db = rd.Rdict(os.path.join(d, "db"), rd.Options(raw_mode=True))
            try:
                for i, p in enumerate(paths):  # one at a time: two tables' SSTs never overlap, but need not be ordered
                    try:
                        db.ingest_external_file([p])
                    except Exception as exc:  # noqa: BLE001 - the bindings raise no narrower type
                        raise ValueError(f"SST {i + 1} of {len(paths)} is unreadable: {exc}") from exc
                return dict(db.items())
            finally:
                db.close()

    def write(self, puts: dict[bytes, bytes], deletes: set[bytes]) -> bytes:
        """One SST: the puts, and a tombstone for each key of ``deletes`` (a key in both is put)."""
        rd = _rocksdict()
        with tempfile.TemporaryDirectory(prefix="brsm-sst-") as d:
            p = os.path.join(d, "ingest.sst")
            w = rd.SstFileWriter(rd.Options(raw_mode=True))
            w.open(p)
            for k in sorted(set(puts) | set(deletes)):
                if k in puts:
                    w[k] = puts[k]
                else:
                    del w[k]
            w.finish()
            with open(p, "rb") as fh:
                return fh.read()
