"""An append-only, hash-chained, crash-safe event journal on SQLite. Imports nothing of brsm."""
