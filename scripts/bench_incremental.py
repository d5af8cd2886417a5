"""Incremental backups' measurements (issue 26), for scripts/bench (--incremental-size 1GiB).

One sandbox (3 storage hosts) loaded with --incremental-size; to each of local storage (via brsm), the
sandbox's S3 (direct path) and its OSS (via brsm), each under a prefix of its own: a full backup, then,
after about 5 % more data is loaded (once, the same new data for every store), an incremental backup
(``--incremental``: its base is that store's full backup). Each backup is run by
``bench_direct.measured`` (wall seconds; bytes across brsm's sockets and the hosts' sshd sockets from
``ss``; CPU). Per store the incremental backup is reported against the full one:
- wall time (outside figure);
- bytes read across the network from the hosts: via brsm the bytes across the hosts' sshd sockets
  (outside figure, from ``ss``); on the direct path the hosts upload to the store themselves, past any
  socket we watch apart from the store's, so there it is brsm's OWN count: the manifest header's
  ``incremental.bytes_sent`` (``brsm show --json``'s ``bytes_sent``);
- bytes read from the hosts' disks: (bytes sent + bytes hashed on the hosts) / the full backup's
  total_bytes, brsm's OWN counts (the COPIED step's ``bytes_hashed`` from the audit; bytes sent as above).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import bench_direct

MiB = 1 << 20
GiB = 1 << 30
# (store, data path): local storage through brsm, S3 on the direct path, OSS through brsm
STORES = (("local", "via-brsm"), ("s3", "direct"), ("oss", "via-brsm"))
COPY_FACTS = ("files", "bytes", "bytes_sent", "base", "files_reused", "bytes_reused", "files_hashed", "bytes_hashed",
              "data_path")


def ratio(a: float | int | None, b: float | int | None) -> float | None:
    return round(a / b, 4) if a is not None and b else None


def copy_facts(bench: Any, op_id: Any) -> tuple[dict[str, Any], dict[str, float]]:
    """The COPIED step's facts of operation ``op_id`` (bytes_hashed, files_reused, ...) and every step's
    seconds, from its audit."""
    if op_id is None:
        return {}, {}
    facts: dict[str, Any] = {}
    au = bench.audit(int(op_id))
    for e in au["events"]:
        d = e.get("data") or {}
        if e["type"] == "StepCompleted" and d.get("step") == "COPIED":
            facts = dict(d.get("facts") or {})  # the last one (a resume completes it again)
    return {k: facts[k] for k in COPY_FACTS if k in facts}, {k: round(v, 2) for k, v in au["steps"].items()}


def shown(bench: Any, sb: dict[str, Any], loc: list[str], cfg: str) -> dict[str, dict[str, Any]]:
    """``brsm show --json`` of a storage: name -> its entry (bytes, bytes_sent, incremental_from, state)."""
    doc = bench.brsm("show", *loc, "--config", cfg, "--json", env=sb["env"]).check("show").json()
    return {b["name"]: b for b in doc.get("backups", [])}


def store_loc(bench: Any, sb: dict[str, Any], kind: str, prefix: str) -> list[str]:
    if kind == "local":
        return ["--storage", f"local://{bench.work / prefix}"]
    return bench_direct.store_args(sb, kind, prefix)


def judge(full: dict[str, Any], inc: dict[str, Any], mode: str) -> dict[str, Any]:
    """The incremental backup against the full one: the ratios of the report."""
    if mode == "direct":  # the hosts upload themselves: brsm's own count of what they read and sent
        net_full, net_inc, net_kind = full["shown_bytes_sent"], inc["shown_bytes_sent"], "brsm's count"
    else:
        net_full, net_inc, net_kind = full["sshd_socket_bytes"], inc["sshd_socket_bytes"], "sshd sockets (ss)"
    read_inc = (inc["shown_bytes_sent"] or 0) + int(inc["copy"].get("bytes_hashed") or 0)
    read_full = (full["shown_bytes_sent"] or 0) + int(full["copy"].get("bytes_hashed") or 0)
    return {"wall_ratio": ratio(inc["seconds"], full["seconds"]),
            "net_kind": net_kind, "net_full": net_full, "net_inc": net_inc, "net_ratio": ratio(net_inc, net_full),
            "disk_read_full": read_full, "disk_read_inc": read_inc,
            # the brief's figure: (bytes sent + bytes hashed) of the incremental / the full backup's total_bytes
            "disk_ratio": ratio(read_inc, full["bytes"])}


def run_incremental(bench: Any, size: int, stores: tuple[tuple[str, str], ...] = STORES) -> list[dict[str, Any]]:
    """The whole incremental section; rows also go to bench.results["incremental"]."""
    rows: list[dict[str, Any]] = bench.results.setdefault("incremental", [])
    sb = bench.up("incremental", 3)
    cfg = str(Path(sb["dir"]) / "cluster.toml")
    made: dict[str, list[str]] = {}  # store -> backups to free, newest first
    locs = {kind: store_loc(bench, sb, kind, f"bench-incremental-{kind}") for kind, _mode in stores}
    try:
        bench.load(sb, size)
        fulls: dict[str, dict[str, Any]] = {}
        for kind, mode in stores:
            fulls[kind] = measure(bench, sb, cfg, kind, mode, locs[kind], "full", made)
        more = size // 20
        bench.load(sb, more)  # about 5 % more data: the same new data for every store
        for kind, mode in stores:
            inc = measure(bench, sb, cfg, kind, mode, locs[kind], "incremental", made)
            full = fulls[kind]
            if inc["incremental_from"] != full["backup_name"]:
                bench.notes.append(f"incremental backup to {kind}: base {inc['incremental_from']!r}, not the full "
                                   f"backup {full['backup_name']!r}")
            row = {"store": kind, "mode": mode, "size": size, "added": more, "full": full, "incremental": inc,
                   **judge(full, inc, mode)}
            rows.append(row)
            bench.log(f"incremental -> {kind} ({mode}): wall {row['wall_ratio']} x full, network {row['net_ratio']} "
                      f"x ({row['net_kind']}), disk reads {row['disk_ratio']} x the full backup's bytes")
    finally:
        for kind, names in made.items():  # free the stores (moto keeps objects in memory); newest first
            for name in names:
                r = bench.brsm("cleanup", "--yes", name, *locs[kind], "--config", cfg, env=sb["env"])
                if r.rc != 0:
                    bench.log(f"cleanup {name} in {kind}: exit {r.rc}: {r.stderr[-400:]}")
            if kind == "local":
                shutil.rmtree(bench.work / f"bench-incremental-{kind}", ignore_errors=True)
        bench.down(Path(sb["dir"]))
    return rows


def measure(bench: Any, sb: dict[str, Any], cfg: str, kind: str, mode: str, loc: list[str], what: str,
            made: dict[str, list[str]]) -> dict[str, Any]:
    argv = ["start", "backup", "--config", cfg, *loc, "--json", "--data-path", mode]
    if what == "incremental":
        argv.append("--incremental")
    rec = bench_direct.measured(bench, sb, argv, f"{what} backup -> {kind} ({mode})")
    if rec["backup_name"]:
        made.setdefault(kind, []).insert(0, rec["backup_name"])
    if rec["data_path"] != mode:
        raise RuntimeError(f"asked for {mode}, brsm chose {rec['data_path']}")
    rec["copy"], rec["steps"] = copy_facts(bench, rec["op_id"])
    entry = shown(bench, sb, loc, cfg).get(rec["backup_name"], {})
    rec["shown_state"] = entry.get("state")
    rec["shown_bytes"] = entry.get("bytes")
    rec["shown_bytes_sent"] = entry.get("bytes_sent")  # the manifest header's incremental.bytes_sent (or all)
    rec["incremental_from"] = entry.get("incremental_from")
    if kind == "local" and rec["backup_name"]:  # the manifest header itself, as a cross-check of show
        head = bench.work / f"bench-incremental-{kind}" / rec["backup_name"] / "brsm-manifest.json"
        try:
            rec["manifest_incremental"] = json.loads(head.read_text()).get("incremental")
        except (OSError, ValueError):
            rec["manifest_incremental"] = None
    return rec


def pct(x: float | None) -> str:
    return "?" if x is None else f"{100 * x:.1f} %"


def mib(n: int | None) -> str:
    return "?" if n is None else f"{n / MiB:.1f}"


def report_lines(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    lines = ["", f"incremental backups (issue 26): 3 storage hosts loaded with {rows[0]['size'] / MiB:.0f} MiB "
             f"(`sandbox load --size`), a full backup, {rows[0]['added'] / MiB:.0f} MiB more loaded, then --incremental; "
             f"ratios incremental / full", "",
             "| store | path | wall | network read from hosts | disk read on hosts (brsm's counts) |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['store']} | {r['mode']} | {pct(r['wall_ratio'])} | {pct(r['net_ratio'])} ({r['net_kind']}) | "
                     f"{pct(r['disk_ratio'])} |")
    lines += ["", "network: via brsm the bytes across the hosts' sshd sockets (from ss, outside brsm); on the direct "
              "path the hosts upload to the store themselves, so there it is brsm's OWN count (the manifest's "
              "incremental.bytes_sent). disk: (bytes sent + bytes hashed on the hosts) / the full backup's total "
              "bytes, brsm's OWN counts. MiB through brsm: the COPIED step's bytes_sent (0 on the direct path). "
              "s: the whole command, from outside; COPIED s: that step, from the audit.", "",
              "| store | path | backup | s | COPIED s | MiB backed up | files | MiB sent (manifest) | MiB through brsm | "
              "reused files / MiB | hashed files / MiB | sshd socket MiB | brsm socket MiB | brsm CPU s | hosts CPU s |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        for what in ("full", "incremental"):
            b = r[what]
            c = b["copy"]
            lines.append(f"| {r['store']} | {r['mode']} | {what} | {b['seconds']} | "
                         f"{b.get('steps', {}).get('COPIED', '?')} | {mib(b['bytes'])} | {b['files']} | "
                         f"{mib(b['shown_bytes_sent'])} | {mib(c.get('bytes_sent'))} | "
                         f"{c.get('files_reused', '-')} / {mib(c.get('bytes_reused')) if 'bytes_reused' in c else '-'} | "
                         f"{c.get('files_hashed', '-')} / {mib(c.get('bytes_hashed')) if 'bytes_hashed' in c else '-'} | "
                         f"{mib(b['sshd_socket_bytes'])} | {mib(b['brsm_socket_bytes'])} | {b['brsm_cpu_s']} | "
                         f"{b['hosts_cpu_s']} |")
    return lines
