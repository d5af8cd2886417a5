"""``brsm sandbox ...``: a Nebula Graph cluster of stand-ins on loopback addresses, for demos and tests.

Mounted by ``brsm.cli.app`` as ``brsm sandbox``; errors are ``SandboxFailure``s, printed by that layer.
"""
from __future__ import annotations

import json
import os
import re
import sys
import time
from typing import Annotated, Any, Optional

import typer

from brsm.sandbox.errors import SandboxUsageError

sandbox_app = typer.Typer(
    help="A local Nebula Graph sandbox: hosts with real sshd, metad/storaged/graphd stand-ins, S3 and OSS.",
    no_args_is_help=True,
)
fault_app = typer.Typer(
    help="Inject faults into a running sandbox (hosts, SSH, metad, storaged, S3/OSS).",
    no_args_is_help=True,
)
sandbox_app.add_typer(fault_app, name="fault")

DirOpt = Annotated[Optional[str], typer.Option("--dir", help="Sandbox directory (default $BRSM_SANDBOX_DIR).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]

_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2, "mb": 1000**2, "mib": 1024**2,
          "g": 1000**3, "gb": 1000**3, "gib": 1024**3}


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        raise SandboxUsageError(f"bad size {text!r}", hint="e.g. 200MiB, 5MB, 1GiB, 4096")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def _dir(d: str | None, ctx: typer.Context | None = None) -> str:
    if not d and ctx is not None and ctx.obj and ctx.obj.get("dir"):
        d = ctx.obj["dir"]
    d = d or os.environ.get("BRSM_SANDBOX_DIR")
    if not d:
        raise SandboxUsageError("which sandbox? give --dir DIR", hint="or set BRSM_SANDBOX_DIR")
    return os.path.abspath(d)


def _emit(data: Any, as_json: bool, text: str) -> None:
    if as_json:
        sys.stdout.write(json.dumps(data, default=str, sort_keys=True) + "\n")
    else:
        typer.echo(text)


def _describe(state: dict[str, Any], summary: dict[str, Any]) -> str:
    lines = [f"sandbox {state['dir']}: metad {summary['meta']}"]
    for h in summary["hosts"]:
        lines.append(f"  {h['name']:<10} {h['address']:<16} ssh :{h['ssh_port']}  {'+'.join(h['roles'])}")
    lines.append(f"  s3   {summary['s3']['endpoint']}  bucket {summary['s3']['bucket']}")
    lines.append(f"  oss  {summary['oss']['endpoint']}  bucket {summary['oss']['bucket']}")
    lines.append(f"config:      {summary['config']}")
    lines.append(f"credentials: source {summary['credentials']}")
    ssh = summary["ssh"]
    first = summary["hosts"][0]
    lines.append(f"ssh:         ssh -i {ssh['identity']} -o UserKnownHostsFile={ssh['known_hosts']} "
                 f"-p {first['ssh_port']} {ssh['user']}@{first['address']}")
    return "\n".join(lines)


@sandbox_app.command()
def up(
    dir: DirOpt = None,
    meta_hosts: Annotated[int, typer.Option("--meta-hosts", help="Hosts running metad (the first also graphd).")] = 1,
    storage_hosts: Annotated[int, typer.Option("--storage-hosts", help="Hosts running storaged.")] = 3,
    data_paths: Annotated[int, typer.Option("--data-paths", help="Data paths per storaged.")] = 1,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for everything to answer.")] = 60.0,
    no_agents: Annotated[bool, typer.Option("--no-agents", help="Start no nebula-agent on the hosts (a 3.x "
                                            "deployment without agents: listCluster then fails).")] = False,
    symlinked_data: Annotated[bool, typer.Option("--symlinked-data", help="Each storage data path is a symlink "
                                                 "to a dir elsewhere (a disk mounted apart).")] = False,
    wal_path: Annotated[bool, typer.Option("--wal-path", help="storaged keeps its WALs in a dir of their own "
                                           "(--wal_path).")] = False,
    nebula_version: Annotated[Optional[str], typer.Option(
        "--nebula-version", metavar="X.Y",
        help="The Nebula release the daemons play (3.0, 3.2, 3.4, 3.6 or 3.8; default 3.8): its meta Thrift "
             "where it differs (DropSnapshotReq, restoreMeta's answer) and the version they report.")] = None,
    rocksdb_wal_dir: Annotated[bool, typer.Option("--rocksdb-wal-dir", help="storaged keeps RocksDB's own WAL "
                                                  "in a dir of its own (--rocksdb_wal_dir).")] = False,
    json_: JsonOpt = False,
) -> None:
    """Start a sandbox cluster in DIR (or report the one already running there)."""
    from brsm.sandbox import cluster

    root = _dir(dir)
    t0 = time.monotonic()
    state, started = cluster.up(root, meta_hosts=meta_hosts, storage_hosts=storage_hosts, data_paths=data_paths,
                                timeout=timeout, agents=not no_agents, symlink_data=symlinked_data,
                                wal_path=wal_path, nebula_version=nebula_version, rocksdb_wal_dir=rocksdb_wal_dir)
    summ = cluster.summary(state)
    summ["started"] = started
    summ["seconds"] = round(time.monotonic() - t0, 2)
    if not started:
        summ["status"] = cluster.status(root)
        head = f"a sandbox is already running in {root} (nothing started)"
    else:
        head = f"sandbox up in {summ['seconds']:.1f}s"
    _emit(summ, json_, head + "\n" + _describe(state, summ))


@sandbox_app.command()
def down(
    dir: DirOpt = None,
    purge: Annotated[bool, typer.Option("--purge", help="Also delete DIR.")] = False,
    json_: JsonOpt = False,
) -> None:
    """Stop every process of the sandbox in DIR (keeps DIR unless --purge)."""
    from brsm.sandbox import cluster

    root = _dir(dir)
    rep = cluster.down(root, purge=purge)
    text = f"sandbox {root} down: stopped {len(rep['stopped'])} processes"
    if rep["strays_killed"]:
        text += f", killed {len(rep['strays_killed'])} strays"
    if rep.get("purged"):
        text += "; directory removed"
    _emit(rep, json_, text)


@sandbox_app.command()
def status(dir: DirOpt = None, json_: JsonOpt = False) -> None:
    """Each host, service and endpoint of the sandbox: up or down (pid alive and port open).
    Exit code 0 when everything is up, 1 otherwise."""
    from brsm.sandbox import cluster

    st = cluster.status(_dir(dir))
    lines = [f"sandbox {st['dir']} ({'all up' if st['all_up'] else 'NOT all up'})"]
    for h in st["hosts"]:
        ssh = h["ssh"]
        fault = f"  fault: {h['fault']}" if h.get("fault") else ""
        lines.append(f"  {h['name']:<10} {h['address']:<16} sshd :{ssh['port']} "
                     f"{'up' if ssh['up'] else 'DOWN'}{fault}")
        for svc, s in h["services"].items():
            lines.append(f"      {svc:<9} {s['address']:<22} {'up   pid ' + str(s['pid']) if s['up'] else 'DOWN'}")
    for name, s in st["stores"].items():
        lines.append(f"  {name:<4} {s['endpoint'] or '-':<30} {'up' if s['up'] else 'DOWN'}")
    _emit(st, json_, "\n".join(lines))
    if not st["all_up"]:
        raise SystemExit(1)  # (typer.Exit is swallowed under standalone_mode=False)


def _meta_addr(root: str) -> str:
    from brsm.sandbox import cluster

    return cluster.require_state(root)["meta"][0]


@sandbox_app.command()
def load(
    dir: DirOpt = None,
    spaces: Annotated[int, typer.Option(help="Spaces to create/fill (space1..N).")] = 2,
    size: Annotated[Optional[str], typer.Option(help="Total bytes to write, e.g. 200MiB (default 200MiB; "
                                                "with --files, 1 KiB per file).")] = None,
    files: Annotated[Optional[int], typer.Option("--files", help="Write the data as about this many small SST "
                                                 "and WAL files (ingested SSTs of one vertex each, WAL segments), "
                                                 "so a backup's checkpoint holds ~N files.")] = None,
    partitions: Annotated[int, typer.Option("--partitions", help="Partitions of each space created (spaces that "
                                            "exist keep theirs).")] = 10,
    replica_factor: Annotated[int, typer.Option("--replica-factor", help="Replicas of each part of the spaces "
                                                "created (at most the number of storage hosts).")] = 1,
    while_writing: Annotated[float, typer.Option("--while-writing", help="Then keep writing small batches for "
                                                 "this many seconds.")] = 0.0,
    seed: Annotated[Optional[int], typer.Option(help="Random seed of the keys.")] = None,
    json_: JsonOpt = False,
) -> None:
    """Write data into the sandbox (through the stand-ins' own write path)."""
    from brsm.sandbox import data

    root = _dir(dir)
    if files is not None and files < 1:
        raise SandboxUsageError("--files must be at least 1")
    if partitions < 1 or partitions > 1024:
        raise SandboxUsageError("--partitions must be between 1 and 1024")
    nbytes = parse_size(size) if size is not None else (files * 1024 if files else 200 * 2**20)
    rep = data.load(_meta_addr(root), spaces=spaces, size_bytes=nbytes, while_writing=while_writing > 0,
                    seed=seed, files=files, partition_num=partitions, replica_factor=replica_factor)
    bg = None
    if rep.writer is not None:
        time.sleep(while_writing)
        rep.writer.stop()
        bg = {"ok": rep.writer.ok, "refused": rep.writer.refused, "errors": rep.writer.errors[:5]}
    out = {"spaces": rep.spaces, "bytes": nbytes, "seconds": round(rep.seconds, 2), "counters": rep.counters,
           "background_writer": bg}
    rate = nbytes / 2**20 / rep.seconds if rep.seconds else 0.0
    text = (f"loaded {nbytes / 2**20:.1f} MiB into {', '.join(rep.spaces)} in {rep.seconds:.1f}s "
            f"({rate:.0f} MiB/s)")
    if files:
        ssts = sum(w.get("sst_files", 0) for w in rep.written.values())
        wals = sum(w.get("wal_files", 0) for w in rep.written.values())
        out["files"] = {"sst": ssts, "wal": wals}
        text += f" as {ssts} SST + {wals} WAL files"
    if bg:
        text += f"; background writer: {bg['ok']} batches ok, {bg['refused']} refused"
    _emit(out, json_, text)


@sandbox_app.command()
def checksum(dir: DirOpt = None, json_: JsonOpt = False) -> None:
    """A digest per space over every partition's data (equal before/after = data intact)."""
    from brsm.sandbox import data

    sums = data.checksum(_meta_addr(_dir(dir)))
    _emit({"spaces": sums}, json_, "\n".join(f"{k}  {v}" for k, v in sums.items()) or "(no spaces)")


# -- faults -----------------------------------------------------------------------------------


@fault_app.callback()
def _fault_group(ctx: typer.Context, dir: DirOpt = None) -> None:
    ctx.obj = {"dir": dir}


HostArg = Annotated[str, typer.Argument(metavar="HOST", help="Host name (meta1, storage2, ...) or its address.")]


@fault_app.command("host-down")
def fault_host_down(ctx: typer.Context, host: HostArg, dir: DirOpt = None,
                    graceful: Annotated[bool, typer.Option(help="Stop services with SIGTERM, not SIGKILL.")] = False,
                    json_: JsonOpt = False) -> None:
    """The host goes down: its services die (SIGKILL) and its sshd stops."""
    from brsm.sandbox import cluster
    r = cluster.host_down(_dir(dir, ctx), host, graceful=graceful)
    _emit(r, json_, f"{r['host']} is down")


@fault_app.command("host-up")
def fault_host_up(ctx: typer.Context, host: HostArg, dir: DirOpt = None,
                  services: Annotated[bool, typer.Option(help="Start the host's services too (as at boot).")] = True,
                  json_: JsonOpt = False) -> None:
    """The host comes back: sshd starts (SSH faults gone), then its services."""
    from brsm.sandbox import cluster
    r = cluster.host_up(_dir(dir, ctx), host, services=services)
    _emit(r, json_, f"{r['host']} is up" + ("\n" + "\n".join(r.get("services", [])) if r.get("services") else ""))


@fault_app.command("ssh")
def fault_ssh(ctx: typer.Context, host: HostArg,
              mode: Annotated[str, typer.Argument(metavar="MODE", help="drop | close | hang | slow | refuse | clear")],
              dir: DirOpt = None,
              after_bytes: Annotated[int, typer.Option("--after-bytes", help="drop: cut each connection after "
                                                       "this many bytes (both directions).")] = 0,
              rate: Annotated[Optional[str], typer.Option(help="slow: bytes per second per direction, e.g. 1MiB.")] = None,
              json_: JsonOpt = False) -> None:
    """SSH faults of one host: drop connections after N bytes, close them at once, hang, slow them,
    refuse logins (Permission denied), or clear."""
    from brsm.sandbox import cluster
    r = cluster.ssh_fault(_dir(dir, ctx), host, mode, after_bytes=after_bytes,
                          rate=float(parse_size(rate)) if rate else 0.0)
    _emit(r, json_, f"{r['host']}: ssh {mode} ({r['fault'] or 'no fault'})")


@fault_app.command("direct")
def fault_direct(ctx: typer.Context, host: HostArg,
                 kind: Annotated[str, typer.Argument(metavar="KIND", help="no-python3 | no-store | clear")],
                 dir: DirOpt = None, json_: JsonOpt = False) -> None:
    """What the direct data path meets on one host: no python3 on it, or no route to the object
    stores (its python3 is refused their addresses); or clear."""
    from brsm.sandbox import cluster
    r = cluster.direct_fault(_dir(dir, ctx), host, kind)
    _emit(r, json_, f"{r['host']}: direct-path faults {r['direct'] or 'none'}")


@fault_app.command("meta")
def fault_meta(ctx: typer.Context,
               rpc: Annotated[str, typer.Argument(metavar="RPC", help="RPC name (createBackup, listCluster, ...) or '*'.")],
               dir: DirOpt = None,
               code: Annotated[Optional[int], typer.Option(help="Answer with this error code (e.g. -24).")] = None,
               leader_changed: Annotated[Optional[str], typer.Option("--leader-changed",
                                         help="Answer E_LEADER_CHANGED naming this leader host:port.")] = None,
               delay: Annotated[Optional[float], typer.Option(help="Answer this many seconds late.")] = None,
               hang: Annotated[bool, typer.Option(help="Never answer (until cleared).")] = False,
               count: Annotated[int, typer.Option(help="For the next N calls; -1 = until cleared.")] = 1,
               host: Annotated[Optional[str], typer.Option(help="Only this meta host (default all).")] = None,
               json_: JsonOpt = False) -> None:
    """metad answers RPC with an error code / leader change / late / never, for the next N calls."""
    from brsm.sandbox import cluster
    r = cluster.meta_fault(_dir(dir, ctx), rpc, code=code, leader_changed=leader_changed, delay=delay, hang=hang,
                           count=count, host=host)
    _emit({"metad": r}, json_, f"metad fault set on {len(r)} metad: {rpc}")


@fault_app.command("meta-leader")
def fault_meta_leader(ctx: typer.Context, dir: DirOpt = None,
                      hold: Annotated[float, typer.Option(help="Seconds the old leader stands for no election.")] = 30.0,
                      json_: JsonOpt = False) -> None:
    """Force a meta Raft leader change: the leader steps down, a follower is elected with what its log holds."""
    from brsm.sandbox import cluster, meta_raft_faults
    r = meta_raft_faults.force_leader_change(cluster.require_state(_dir(dir, ctx)), hold=hold)
    _emit(r, json_, f"meta leader {r['old_leader']} -> {r['new_leader']}")


@fault_app.command("meta-stop")
def fault_meta_stop(ctx: typer.Context, host: HostArg, dir: DirOpt = None, json_: JsonOpt = False) -> None:
    """Stop one metad (nebula.service stop metad); with peers left a majority elects a leader."""
    from brsm.sandbox import cluster, meta_raft_faults
    r = meta_raft_faults.stop_metad(cluster.require_state(_dir(dir, ctx)), host)
    _emit(r, json_, f"{host}: metad {'stopped' if r['stopped'] else 'not stopped: ' + r['output']}")


@fault_app.command("checkpoint")
def fault_checkpoint(ctx: typer.Context,
                     host: Annotated[str, typer.Argument(metavar="HOST", help="Storage host name, or 'all'.")] = "all",
                     dir: DirOpt = None,
                     count: Annotated[int, typer.Option(help="Next N checkpoints fail; -1 = until cleared.")] = 1,
                     delay: Annotated[Optional[float], typer.Option(help="Instead: checkpoints take this long.")] = None,
                     json_: JsonOpt = False) -> None:
    """storaged fails (or delays) its next checkpoint(s): createBackup fails."""
    from brsm.sandbox import cluster
    body: dict[str, Any] = {"checkpoint_delay": delay} if delay is not None else {"fail_checkpoint": True}
    if count >= 0:
        body["count"] = count
    r = cluster.storage_fault(_dir(dir, ctx), host, **body)
    _emit({"storaged": r}, json_, f"checkpoint fault set on {len(r)} storaged")


@fault_app.command("store")
def fault_store(ctx: typer.Context,
                store: Annotated[str, typer.Argument(metavar="STORE", help="s3 or oss")],
                dir: DirOpt = None,
                error: Annotated[Optional[int], typer.Option(help="Answer HTTP status (500, 503, ...).")] = None,
                reset: Annotated[bool, typer.Option(help="Close connections without answering.")] = False,
                count: Annotated[int, typer.Option(help="For the next N requests; -1 = forever.")] = 1,
                methods: Annotated[Optional[str], typer.Option(help="Only these methods, e.g. PUT,POST.")] = None,
                skip: Annotated[int, typer.Option(help="Let the first N matching requests through.")] = 0,
                throttle: Annotated[Optional[str], typer.Option(help="Limit the endpoint to this rate, e.g. 5MiB.")] = None,
                quota: Annotated[Optional[str], typer.Option(help="Writes beyond this many stored bytes fail (507).")] = None,
                late: Annotated[Optional[float], typer.Option(help="The next --count presigned requests are judged this "
                                                              "many seconds later (an expired URL).")] = None,
                clear: Annotated[bool, typer.Option(help="Remove every fault of this store.")] = False,
                json_: JsonOpt = False) -> None:
    """S3/OSS faults: HTTP errors or resets for N requests, throttling, a quota, expired presigned URLs; or clear."""
    from brsm.sandbox import cluster
    root = _dir(dir, ctx)
    results = []
    if clear:
        from brsm.sandbox import store_faults
        results.append(store_faults.clear(cluster.store_endpoint(root, store)))
    if error is not None or reset:
        spec: dict[str, Any] = {"kind": "reset" if reset else "error", "count": count, "skip": skip}
        if error is not None:
            spec["status"] = error
        if methods:
            spec["methods"] = [m.strip().upper() for m in methods.split(",") if m.strip()]
        results.append(cluster.store_fault(root, store, **spec))
    if throttle:
        results.append(cluster.store_fault(root, store, kind="throttle", bytes_per_second=parse_size(throttle)))
    if quota:
        results.append(cluster.store_fault(root, store, kind="quota", bytes=parse_size(quota)))
    if late is not None:
        results.append(cluster.store_fault(root, store, kind="late", count=count, seconds=late))
    if not results:
        raise SandboxUsageError("say which fault: --error STATUS, --reset, --throttle RATE, --quota SIZE, --late "
                                "SECONDS or --clear")
    _emit(results[-1], json_, f"{store}: active faults {results[-1].get('active')}")


@fault_app.command("clear")
def fault_clear(ctx: typer.Context, dir: DirOpt = None, json_: JsonOpt = False) -> None:
    """Remove every fault: hosts back up, SSH normal, metad/storaged/S3/OSS faults cleared."""
    from brsm.sandbox import cluster
    r = cluster.clear_faults(_dir(dir, ctx))
    _emit(r, json_, "all faults cleared" + ("; errors: " + "; ".join(r["errors"]) if r["errors"] else ""))


@fault_app.command("show")
def fault_show(ctx: typer.Context, dir: DirOpt = None, json_: JsonOpt = False) -> None:
    """What is active: host/SSH faults, metad/storaged faults, store faults."""
    from brsm.sandbox import cluster
    r = cluster.show_faults(_dir(dir, ctx))
    _emit(r, json_, json.dumps(r, indent=2, default=str))
