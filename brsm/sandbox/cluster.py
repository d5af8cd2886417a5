"""Sandbox orchestration: ``up``, ``down``, ``status``, and the host/SSH faults.

``up`` lays out ``DIR`` (see :mod:`brsm.sandbox.hosts`), starts per host an sshd and the services
(through the host's own ``install/scripts/nebula.service``, like an operator would), starts the S3
and OSS stand-ins, registers the storage hosts with metad (``ADD HOSTS``: addHosts), waits until
every storaged is ONLINE and every service listens, and writes
``DIR/cluster.toml``, ``DIR/sandbox.json`` and ``DIR/credentials.env``.

``sandbox.json`` is the single record of what runs; ``down`` stops everything it names, plus any
process left whose command line mentions ``DIR`` (a safety net: every sandbox process names it).
"""
from __future__ import annotations

import concurrent.futures as cf
import datetime as _dt
import hashlib
import json
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
from typing import Any

from brsm.sandbox.errors import SandboxFailure, SandboxUsageError
from brsm.sandbox import sshd as sshd_mod
from brsm.sandbox.hosts import (
    SERVICE_PORTS,
    Host,
    can_bind,
    cmdline,
    pid_alive,
    pids_mentioning,
    plan_hosts,
    port_open,
    read_pid_file,
    run_service,
    spawn_detached,
    tail,
    terminate,
    terminate_tree,
    wait_for,
    write_host_files,
)

STATE_FILE = "sandbox.json"
CONFIG_FILE = "cluster.toml"
CREDS_FILE = "credentials.env"
BUCKET = "brsm-backups"
S3_ADDR_SUFFIX = 2
OSS_ADDR_SUFFIX = 3
SIDE_PORT_OFFSET = 10000          # sshd moves to port+10000 while a netfault proxy holds its port
CLAIMS_DIR = os.path.join(tempfile.gettempdir(), "brsm-sandbox-claims")


class SandboxError(SandboxFailure):
    """The sandbox could not be started, stopped or changed."""


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _atomic_write(path: str, text: str, mode: int = 0o644) -> None:
    """Written with ``mode`` from its first byte (a new file, never a leftover's wider mode), then renamed."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        os.unlink(tmp)  # a leftover of a killed writer with this pid
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def venv_python() -> str:
    """The interpreter that has brsm installed (the venv's, not a resolved symlink target)."""
    return sys.executable


def venv_bin() -> str:
    return os.path.dirname(venv_python())


# ---------------------------------------------------------------------------------------------
# state file


def state_path(root: str) -> str:
    return os.path.join(root, STATE_FILE)


def load_state(root: str) -> dict[str, Any] | None:
    try:
        with open(state_path(root)) as fh:
            return json.load(fh)
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise SandboxError(f"{state_path(root)} is not valid JSON: {exc}") from exc


def save_state(root: str, state: dict[str, Any]) -> None:
    # 0600: it holds the stores' keys
    _atomic_write(state_path(root), json.dumps(state, indent=2, sort_keys=False) + "\n", 0o600)


def hosts_of(state: dict[str, Any]) -> list[Host]:
    return [Host.from_json(h) for h in state["hosts"]]


def host_by_name(state: dict[str, Any], name: str) -> tuple[int, Host]:
    for i, h in enumerate(state["hosts"]):
        if h["name"] == name or h["address"] == name:
            return i, Host.from_json(h)
    names = ", ".join(h["name"] for h in state["hosts"])
    raise SandboxUsageError(f"no sandbox host {name!r}", hint=f"hosts: {names}")


def require_state(root: str) -> dict[str, Any]:
    st = load_state(root)
    if st is None:
        raise SandboxUsageError(f"no sandbox in {root} ({STATE_FILE} missing)", hint="start one: brsm sandbox up --dir DIR")
    return st


# ---------------------------------------------------------------------------------------------
# choosing 127.k.0.0/24


def _claim_path(k: int) -> str:
    return os.path.join(CLAIMS_DIR, f"{k}")


def _claim_stale(k: int) -> bool:
    path = _claim_path(k)
    try:
        with open(path) as fh:
            owner = fh.read().strip()
        age = time.time() - os.stat(path).st_mtime
    except FileNotFoundError:
        return True
    if age < 120:
        return False                     # an `up` may be in progress there
    try:
        with open(os.path.join(owner, STATE_FILE)) as fh:
            st = json.load(fh)
        return not (st.get("k") == k and st.get("state") in ("up", "starting"))
    except (OSError, ValueError):
        return True


def _try_claim(k: int, root: str) -> bool:
    os.makedirs(CLAIMS_DIR, exist_ok=True)
    path = _claim_path(k)
    for _ in range(2):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            try:
                with open(path) as fh:
                    if fh.read().strip() == root:
                        os.utime(path)
                        return True
            except OSError:
                pass
            if _claim_stale(k):
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
                continue
            return False
        with os.fdopen(fd, "w") as fh:
            fh.write(root)
        return True
    return False


def release_claim(k: int | None, root: str) -> None:
    if k is None:
        return
    path = _claim_path(k)
    try:
        with open(path) as fh:
            if fh.read().strip() == root:
                os.unlink(path)
    except OSError:
        pass


def _addresses_free(k: int, meta_hosts: int, storage_hosts: int, ssh_port: int) -> bool:
    checks: list[tuple[str, int]] = [(f"127.{k}.0.{S3_ADDR_SUFFIX}", 0), (f"127.{k}.0.{OSS_ADDR_SUFFIX}", 0)]
    for i in range(1, meta_hosts + 1):
        a = f"127.{k}.0.{10 + i}"
        checks += [(a, ssh_port), (a, ssh_port + SIDE_PORT_OFFSET), (a, 9559), (a, 9560), (a, 19559), (a, 9669),
                   (a, 19669)]  # 9560: metad's Raft port (meta port + 1)
    for i in range(1, storage_hosts + 1):
        a = f"127.{k}.0.{100 + i}"
        checks += [(a, ssh_port), (a, ssh_port + SIDE_PORT_OFFSET), (a, 9779), (a, 19779)]
    # nothing may *listen* there either (a wildcard listener on 0.0.0.0:port would shadow us)
    return all(can_bind(a, p) and (p == 0 or not port_open(a, p, 0.1)) for a, p in checks)


def choose_ssh_port() -> int:
    """22 as root (2222 otherwise), unless a wildcard listener (a system sshd on 0.0.0.0:22) holds
    that port on every loopback address: then the next candidate."""
    first = sshd_mod.default_ssh_port()
    for port in dict.fromkeys((first, 2222, 2022, 3022, 4022)):
        if can_bind("127.254.254.253", port) and can_bind("127.254.254.253", port + SIDE_PORT_OFFSET):
            return port
    raise SandboxError("no SSH port free on the loopback addresses", hint="tried 22, 2222, 2022, 3022, 4022")


def choose_k(root: str, meta_hosts: int, storage_hosts: int, ssh_port: int) -> int:
    start = int(hashlib.sha256(root.encode()).hexdigest(), 16) % 200
    for i in range(250):
        k = 2 + (start + i) % 250
        if not _try_claim(k, root):
            continue
        if _addresses_free(k, meta_hosts, storage_hosts, ssh_port):
            return k
        release_claim(k, root)
    raise SandboxError("no free 127.k.0.0/24 range for a sandbox", hint="stop other sandboxes (brsm sandbox down)")


# ---------------------------------------------------------------------------------------------
# starting pieces


def _gen_keys(root: str, hosts: list[Host]) -> dict[str, str]:
    sshdir = os.path.join(root, "ssh")
    os.makedirs(sshdir, exist_ok=True)
    os.chmod(sshdir, 0o700)
    identity = os.path.join(sshdir, "id_ed25519")
    jobs = {"__client__": (identity, "brsm-sandbox-client")}
    for h in hosts:
        os.makedirs(h.sshd_dir, exist_ok=True)
        jobs[h.name] = (h.host_key, f"brsm-sandbox-{h.name}")
    with cf.ThreadPoolExecutor(8) as ex:
        futs = {name: ex.submit(sshd_mod.keygen, path, comment) for name, (path, comment) in jobs.items()}
        pubs = {name: f.result() for name, f in futs.items()}
    lines = [sshd_mod.known_hosts_line(h.address, h.ssh_port, pubs[h.name]) for h in hosts]
    _atomic_write(os.path.join(sshdir, "known_hosts"), "\n".join(lines) + "\n", 0o600)
    for h in hosts:
        _atomic_write(h.authorized_keys, pubs["__client__"] + "\n", 0o600)
    return pubs


def write_sshd_config(root: str, h: Host, *, port: int | None = None, deny: bool = False) -> None:
    sshd_mod.write_openssh_config(h.sshd_config, address=h.address, port=port or h.ssh_port, host_key=h.host_key,
                                  authorized_keys=h.authorized_keys, venv_bin=venv_bin(), deny_all=deny,
                                  sandbox_dir=root, host_bin=h.bin_dir)
    if deny:
        open(h.deny_file, "w").close()
    else:
        try:
            os.unlink(h.deny_file)
        except FileNotFoundError:
            pass


# A host's `python3` (what the direct data path's helper runs on): the venv's, unless a fault file says
# the host has none, or cannot reach the object stores (the direct path's "a host that cannot reach the store").
DIRECT_FAULTS = ("no-python3", "no-store")
_PYTHON_WRAPPER = """#!/bin/bash
# brsm sandbox: this host's python3 (faults: {faults}/no-python3, {faults}/no-store)
if [ -e {faults}/no-python3 ]; then echo "bash: python3: command not found" >&2; exit 127; fi
if [ -e {faults}/no-store ]; then export PYTHONPATH={faults}/site${{PYTHONPATH:+:$PYTHONPATH}}; fi
exec {python} "$@"
"""
_NO_STORE_SITE = """# brsm sandbox: this host cannot reach the object stores (fault no-store)
import json, os, socket
_state = json.load(open(os.path.join(os.environ.get("BRSM_SANDBOX_DIR", ""), "sandbox.json")))
_blocked = set()
for _s in (_state.get("stores") or {{}}).values():
    _h, _, _p = _s["endpoint"].split("://", 1)[1].partition(":")
    _blocked.add((_h, int(_p.rstrip("/") or 80)))
_real = socket.create_connection
def _refuse(address, *a, **kw):
    if (address[0], int(address[1])) in _blocked:
        raise ConnectionRefusedError(111, "Connection refused (sandbox fault no-store on {name})")
    return _real(address, *a, **kw)
socket.create_connection = _refuse
"""


def write_host_python(h: Host, python: str) -> None:
    os.makedirs(h.bin_dir, exist_ok=True)
    os.makedirs(os.path.join(h.faults_dir, "site"), exist_ok=True)
    _atomic_write(os.path.join(h.bin_dir, "python3"), _PYTHON_WRAPPER.format(faults=h.faults_dir, python=python),
                  mode=0o755)
    _atomic_write(os.path.join(h.faults_dir, "site", "sitecustomize.py"), _NO_STORE_SITE.format(name=h.name))


def direct_fault(root: str, name: str, kind: str) -> dict[str, Any]:
    """``kind``: no-python3, no-store (this host only), or clear (both off)."""
    state = require_state(os.path.abspath(root))
    _, h = host_by_name(state, name)
    if kind not in (*DIRECT_FAULTS, "clear"):
        raise SandboxUsageError(f"direct fault must be {', '.join(DIRECT_FAULTS)} or clear, not {kind!r}")
    for f in DIRECT_FAULTS:
        path = os.path.join(h.faults_dir, f)
        if f == kind:
            open(path, "w").close()
        elif os.path.exists(path):
            os.unlink(path)
    return {"host": name, "direct": [f for f in DIRECT_FAULTS if os.path.exists(os.path.join(h.faults_dir, f))]}


def start_sshd(root: str, h: Host, kind: str | None = None) -> dict[str, Any]:
    """``kind``: "openssh" / "asyncssh" (keep what the sandbox was started with), None = best available."""
    binary = None if kind == "asyncssh" else sshd_mod.sshd_binary()
    if binary:
        sshd_mod.ensure_privsep_dir()
    argv = sshd_mod.sshd_argv(binary, h.sshd_config, address=h.address, port=h.ssh_port, host_key=h.host_key,
                              authorized_keys=h.authorized_keys, deny_file=h.deny_file, venv_bin=venv_bin(),
                              host_bin=h.bin_dir)
    pid = spawn_detached(argv, h.sshd_log)
    return {"pid": pid, "kind": "openssh" if binary else "asyncssh", "argv": argv, "config": h.sshd_config,
            "log": h.sshd_log, "port": h.ssh_port}


def start_store(root: str, kind: str, address: str, key_id: str, secret: str,
                min_part_size: int | None = None) -> dict[str, Any]:
    module = {"s3": "brsm.sandbox.s3_server", "oss": "brsm.sandbox.oss_server"}[kind]
    data = os.path.join(root, "objects", kind)
    os.makedirs(data, exist_ok=True)
    port_file = os.path.join(data, ".port")
    pid_file = os.path.join(data, ".pid")
    for f in (port_file,):
        try:
            os.unlink(f)
        except FileNotFoundError:
            pass
    log = os.path.join(root, "objects", f"{kind}.log")
    # "--flag=value" forms: a value starting with "-" must not read as an option
    argv = [venv_python(), "-m", module, f"--host={address}", "--port=0", f"--data={data}", f"--bucket={BUCKET}",
            f"--access-key-id={key_id}", f"--access-key-secret={secret}", f"--port-file={port_file}",
            f"--pid-file={pid_file}"]
    if min_part_size is not None:
        argv.append(f"--min-part-size={min_part_size}")
    pid = spawn_detached(argv, log)
    return {"pid": pid, "module": module, "address": address, "port": None, "port_file": port_file,
            "pid_file": pid_file, "log": log, "data_dir": data, "bucket": BUCKET}


def _wait_store(info: dict[str, Any], timeout: float) -> None:
    def ready() -> bool:
        p = read_pid_file(info["port_file"])
        if p:
            info["port"] = p
            return True
        return False
    if not wait_for(lambda: ready() or not pid_alive(info["pid"]), timeout) or not info["port"]:
        raise SandboxError(f"{info['module']} did not start", hint=tail(info["log"]) or f"see {info['log']}")
    info["endpoint"] = f"http://{info['address']}:{info['port']}"


def _wait_cluster(meta_addr: str, storage_addrs: list[str], timeout: float) -> None:
    from brsm.sandbox import control
    from nebula3.meta import ttypes as meta

    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            with control.MetaClient(meta_addr, timeout=3.0) as mc:
                resp = mc.listHosts(meta.ListHostsReq(type=meta.ListHostType.STORAGE))
                if resp.code == 0:
                    online = {control.fmt_addr(h.hostAddr) for h in resp.hosts or []
                              if h.status == meta.HostStatus.ONLINE}
                    missing = [a for a in storage_addrs if a not in online]
                    if not missing:
                        return
                    last = f"storaged not registered yet: {', '.join(missing)}"
                else:
                    last = f"listHosts code {resp.code}"
        except Exception as exc:  # noqa: BLE001 - metad still starting
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.1)
    raise SandboxError(f"metad at {meta_addr} not ready within {timeout:.0f}s ({last})")


def wait_listening(hosts: list[Host], timeout: float) -> None:
    """Until every service of ``hosts`` runs and listens (nebula.service start returns before that)."""
    pending = [(h, svc) for h in hosts for svc in h.services]

    def ready() -> bool:
        pending[:] = [(h, svc) for h, svc in pending if not h.service_up(svc)]
        return not pending
    if not wait_for(ready, timeout, 0.05):
        what = ", ".join(f"{h.name}:{svc}" + ("" if h.service_pid(svc) else " (not running)") for h, svc in pending)
        logs = "; ".join(f"{h.name}: {tail(os.path.join(h.install_dir, 'logs', f'nebula-{svc}.log'), 3)}"
                         for h, svc in pending[:3])
        raise SandboxError(f"services not listening within {timeout:.0f}s: {what}", hint=logs or None)


def _toml_str(s: str) -> str:
    return json.dumps(s)


def render_config(state: dict[str, Any]) -> str:
    ssh = state["ssh"]
    s3, oss = state["stores"]["s3"], state["stores"]["oss"]
    out = ["# brsm config of the sandbox cluster (written by `brsm sandbox up`)",
           "[cluster]", 'name = "sandbox"',
           "meta = [" + ", ".join(_toml_str(a) for a in state["meta"]) + "]", "",
           "[ssh]", f"user = {_toml_str(ssh['user'])}", f"port = {ssh['port']}",
           f"identity = {_toml_str(ssh['identity'])}", f"known_hosts = {_toml_str(ssh['known_hosts'])}", ""]
    for h in state["hosts"]:
        out += ["[[hosts]]", f"address = {_toml_str(h['address'])}", f"ssh_host = {_toml_str(h['address'])}",
                f"ssh_port = {h['ssh_port']}", f"install_dir = {_toml_str(os.path.join(h['root'], 'install'))}",
                "data_paths = [" + ", ".join(_toml_str(d) for d in h["data_paths"]) + "]", ""]
    out += ["[storage]", f"default = {_toml_str('s3://' + s3['bucket'] + '/sandbox')}",
            f"s3_endpoint = {_toml_str(s3['endpoint'])}", 's3_region = "us-east-1"',
            f"oss_endpoint = {_toml_str(oss['endpoint'])}", ""]
    return "\n".join(out)


def render_credentials(state: dict[str, Any]) -> str:
    s3, oss = state["stores"]["s3"], state["stores"]["oss"]
    return ("# credentials of the sandbox object stores: source this file\n"
            f"export AWS_ACCESS_KEY_ID={s3['access_key_id']}\n"
            f"export AWS_SECRET_ACCESS_KEY={s3['secret_access_key']}\n"
            "export AWS_DEFAULT_REGION=us-east-1\n"
            f"export OSS_ACCESS_KEY_ID={oss['access_key_id']}\n"
            f"export OSS_ACCESS_KEY_SECRET={oss['access_key_secret']}\n")


def summary(state: dict[str, Any]) -> dict[str, Any]:
    """What ``up --json`` prints: enough to drive brsm against the sandbox."""
    s3, oss = state["stores"]["s3"], state["stores"]["oss"]
    return {
        "dir": state["dir"],
        "meta": state["meta"][0],
        "meta_addrs": state["meta"],
        "nebula_version": state.get("nebula_version") or "3.8.0",
        "config": os.path.join(state["dir"], CONFIG_FILE),
        "credentials": os.path.join(state["dir"], CREDS_FILE),
        "ssh": state["ssh"],
        "hosts": [{"name": h["name"], "address": h["address"], "ssh_port": h["ssh_port"], "roles": h["roles"],
                   "data_paths": h["data_paths"], "install_dir": os.path.join(h["root"], "install")}
                  for h in state["hosts"]],
        "s3": {"endpoint": s3["endpoint"], "bucket": s3["bucket"], "access_key_id": s3["access_key_id"],
               "secret_access_key": s3["secret_access_key"], "region": "us-east-1"},
        "oss": {"endpoint": oss["endpoint"], "bucket": oss["bucket"], "access_key_id": oss["access_key_id"],
                "access_key_secret": oss["access_key_secret"]},
    }


def is_running(state: dict[str, Any] | None) -> bool:
    if not state or state.get("state") == "down":
        return False
    pids = [h.get("sshd", {}).get("pid") for h in state["hosts"]]
    pids += [s.get("pid") for s in state.get("stores", {}).values()]
    pids += [Host.from_json(h).service_pid(svc) for h in state["hosts"] for svc in h["services"]]
    return any(pid_alive(p) for p in pids if p)


AGENT_PORT = 8888


def agent_argv(h: Host, meta_addrs: list[str], python: str) -> list[str]:
    """How a host's nebula-agent is started (its own flags, as nebula-agent's cmd/agent.go takes them)."""
    return [python, "-m", "brsm.sandbox.agent", f"--agent={h.address}:{AGENT_PORT}", f"--meta={','.join(meta_addrs)}",
            "--hbs=1", f"--pid_file={os.path.join(h.install_dir, 'pids', 'nebula-agent.pid')}",
            f"--log_dir={os.path.join(h.install_dir, 'logs')}"]


def start_agent(state: dict[str, Any], i: int) -> None:
    """Start host ``i``'s agent (unless the sandbox runs without agents); its pid goes in the state."""
    if not state.get("agents", True):
        return
    h = Host.from_json(state["hosts"][i])
    info = state["hosts"][i].get("agent") or {}
    if info.get("pid") and pid_alive(info["pid"]) and "brsm.sandbox.agent" in cmdline(info["pid"]):
        return
    pid = spawn_detached(agent_argv(h, state["meta"], state.get("python") or venv_python()),
                         os.path.join(h.install_dir, "logs", "nebula-agent.stdout.log"), cwd=h.install_dir)
    state["hosts"][i]["agent"] = {"pid": pid, "addr": f"{h.address}:{AGENT_PORT}"}


def stop_agent(hj: dict[str, Any], hard: bool = False) -> None:
    info = hj.get("agent") or {}
    if info.get("pid") and pid_alive(info["pid"]) and "brsm.sandbox.agent" in cmdline(info["pid"]):
        terminate([info["pid"]], 2.0 if hard else 5.0, signal.SIGKILL if hard else signal.SIGTERM)


def _wait_agents(state: dict[str, Any], timeout: float) -> None:
    """listCluster answers once every host's agent has heartbeated (it fails while one is missing)."""
    from brsm.sandbox import control
    from nebula3.meta import ttypes as meta

    if not state.get("agents", True):
        return
    last: Any = None

    def ok() -> bool:
        nonlocal last
        try:
            with control.MetaClient(state["meta"][0], timeout=3.0) as c:
                last = c.call("listCluster", meta.ListClusterInfoReq())
            return last.code == 0
        except Exception as exc:  # noqa: BLE001
            last = exc
            return False
    if not wait_for(ok, timeout, 0.2):
        raise SandboxError(f"listCluster did not succeed within {timeout:.0f}s (agents): {last}")


NEBULA_VERSIONS = ("3.0", "3.2", "3.4", "3.6", "3.8")  # the releases whose meta wire the stand-ins were read against


def nebula_release(version: str) -> str:
    """``--nebula-version`` → the release string the daemons report: "3.2" → "3.2.0". Any 3.x is
    taken (its wire follows the rules read at the releases in NEBULA_VERSIONS: a 3.9 speaks 3.8's)."""
    v = version.strip().lstrip("v")
    parts = v.split(".")
    if len(parts) not in (2, 3) or not all(p.isdigit() for p in parts) or parts[0] != "3":
        raise SandboxUsageError(f"--nebula-version {version!r}: the stand-ins play Nebula 3.x releases only",
                                hint=f"one of {', '.join(NEBULA_VERSIONS)}")
    return ".".join(parts + ["0"] * (3 - len(parts)))


def up(root: str, *, meta_hosts: int = 1, storage_hosts: int = 3, data_paths: int = 1,
       timeout: float = 60.0, min_part_size: int | None = None, agents: bool = True,
       symlink_data: bool = False, wal_path: bool = False,
       nebula_version: str | None = None, rocksdb_wal_dir: bool = False) -> tuple[dict[str, Any], bool]:
    """Start a sandbox in ``root``. Returns (state, started); started is False when one runs there.

    ``nebula_version`` ("3.2"): the release every daemon plays, its meta wire and the version it
    reports (default 3.8).

    ``agents=False`` starts no nebula-agent: a 3.x deployment that never installed them, where
    listCluster fails with E_LIST_CLUSTER_NO_AGENT_FAILURE.

    ``min_part_size`` lowers the S3 and OSS stand-ins' smallest multipart part (every part but the
    last; S3 5 MiB, OSS 100 KiB by default), for tests whose small files must span several parts."""
    root = os.path.abspath(root)
    if meta_hosts < 1 or storage_hosts < 1 or data_paths < 1:
        raise SandboxUsageError("need at least 1 meta host, 1 storage host and 1 data path")
    if meta_hosts > 9 or storage_hosts > 99 or data_paths > 8:
        raise SandboxUsageError("at most 9 meta hosts, 99 storage hosts and 8 data paths")
    release = nebula_release(nebula_version) if nebula_version else None
    old = load_state(root)
    if is_running(old):
        return old, False  # type: ignore[return-value]
    if old is not None:
        down(root)        # leftovers of a half-dead sandbox
    t0 = time.monotonic()
    os.makedirs(root, exist_ok=True)
    ssh_port = choose_ssh_port()
    k = choose_k(root, meta_hosts, storage_hosts, ssh_port)
    state: dict[str, Any] = {"version": 1, "dir": root, "state": "starting", "k": k, "created": _now(),
                             "python": venv_python(), "agents": agents, "nebula_version": release,
                             "topology": {"meta_hosts": meta_hosts,
                                                                   "storage_hosts": storage_hosts,
                                                                   "data_paths": data_paths,
                                                                   "symlink_data": symlink_data,
                                                                   "wal_path": wal_path,
                                                                   "rocksdb_wal_dir": rocksdb_wal_dir}}
    try:
        hosts = plan_hosts(root, k, meta_hosts, storage_hosts, data_paths, ssh_port,
                           symlink_data=symlink_data, wal_path=wal_path, rocksdb_wal_dir=rocksdb_wal_dir)
        meta_addrs = [f"{h.address}:{SERVICE_PORTS['metad'][0]}" for h in hosts if "meta" in h.roles]
        sshdir = os.path.join(root, "ssh")
        state.update({
            "meta": meta_addrs,
            "ssh": {"user": sshd_mod.login_user(), "port": ssh_port, "identity": os.path.join(sshdir, "id_ed25519"),
                    "known_hosts": os.path.join(sshdir, "known_hosts")},
            "hosts": [h.to_json() for h in hosts],
            "stores": {},
            "faults": {},
        })
        save_state(root, state)
        for h in hosts:
            write_host_files(h, meta_addrs, venv_python(), nebula_version=release)
            write_host_python(h, venv_python())
        _gen_keys(root, hosts)
        s3_key, s3_secret = "SANDBOXS3" + secrets.token_hex(6).upper(), secrets.token_hex(20)
        oss_key, oss_secret = "SANDBOXOSS" + secrets.token_hex(6).upper(), secrets.token_hex(20)
        stores = {
            "s3": start_store(root, "s3", f"127.{k}.0.{S3_ADDR_SUFFIX}", s3_key, s3_secret, min_part_size),
            "oss": start_store(root, "oss", f"127.{k}.0.{OSS_ADDR_SUFFIX}", oss_key, oss_secret, min_part_size),
        }
        stores["s3"].update(access_key_id=s3_key, secret_access_key=s3_secret)
        stores["oss"].update(access_key_id=oss_key, access_key_secret=oss_secret)
        state["stores"] = stores
        save_state(root, state)
        for i, h in enumerate(hosts):
            write_sshd_config(root, h)
            state["hosts"][i]["sshd"] = start_sshd(root, h)
            state["hosts"][i]["state"] = "up"
        save_state(root, state)

        def start_services(h: Host) -> None:
            r = run_service(h, "start", "all", timeout=timeout)
            if r.returncode != 0:
                raise SandboxError(f"services on {h.name} did not start: {r.stderr.strip() or r.stdout.strip()}")
        with cf.ThreadPoolExecutor(len(hosts)) as ex:
            for f in [ex.submit(start_services, h) for h in hosts]:
                f.result()
        for name in ("s3", "oss"):
            _wait_store(stores[name], timeout)
        for i, h in enumerate(hosts):
            info = state["hosts"][i]["sshd"]
            if not wait_for(lambda: port_open(h.address, h.ssh_port) or not pid_alive(info["pid"]), timeout) \
                    or not pid_alive(info["pid"]):
                raise SandboxError(f"sshd of {h.name} did not start", hint=tail(h.sshd_log))
        storage_addrs = [f"{h.address}:{SERVICE_PORTS['storaged'][0]}" for h in hosts if "storage" in h.roles]
        # as an operator does: storaged joins only once its host is a registered machine (ADD HOSTS)
        from brsm.sandbox import control
        control.add_hosts(meta_addrs[0], storage_addrs, timeout)
        _wait_cluster(meta_addrs[0], storage_addrs, timeout)
        wait_listening(hosts, timeout)
        for i in range(len(hosts)):
            start_agent(state, i)
        save_state(root, state)
        _wait_agents(state, timeout)
        state["state"] = "up"
        state["started"] = _now()
        state["up_seconds"] = round(time.monotonic() - t0, 2)
        _atomic_write(os.path.join(root, CONFIG_FILE), render_config(state))
        _atomic_write(os.path.join(root, CREDS_FILE), render_credentials(state), 0o600)
        save_state(root, state)
        return state, True
    except BaseException:
        try:
            down(root)
        finally:
            release_claim(k, root)
        raise


# ---------------------------------------------------------------------------------------------
# down / status


def _stop_host_services(h: Host, hard: bool = False) -> None:
    """nebula.service stop|kill all (which only signals), then wait for the pids (SIGKILL at the end)."""
    if os.path.exists(h.script):
        try:
            run_service(h, "kill" if hard else "stop", "all", timeout=30)
        except Exception:  # noqa: BLE001 - fall through to pids
            pass
    pids = [p for p in (read_pid_file(h.pid_file(s)) for s in h.services) if p]
    pids = [p for p in pids if pid_alive(p) and "brsm.sandbox." in cmdline(p)]
    if pids:
        terminate(pids, 2.0 if hard else 10.0, signal.SIGKILL if hard else signal.SIGTERM)


def _stop_sshd(info: dict[str, Any] | None) -> None:
    if info and info.get("pid") and pid_alive(info["pid"]):
        terminate_tree(info["pid"])


def _stop_proxy(info: dict[str, Any] | None) -> None:
    if info and info.get("pid") and pid_alive(info["pid"]) and "brsm.sandbox.netfault" in cmdline(info["pid"]):
        terminate([info["pid"]], 5.0)


def down(root: str, *, purge: bool = False) -> dict[str, Any]:
    root = os.path.abspath(root)
    state = load_state(root)
    report: dict[str, Any] = {"dir": root, "stopped": [], "strays_killed": []}
    if state is not None:
        hosts = hosts_of(state) if state.get("hosts") else []
        with cf.ThreadPoolExecutor(max(1, len(hosts))) as ex:
            list(ex.map(_stop_host_services, hosts))
        report["stopped"] += [f"{h.name}:{s}" for h in hosts for s in h.services]
        for hj in state.get("hosts", []):
            stop_agent(hj)
            _stop_proxy((hj.get("fault") or {}).get("proxy"))
            _stop_sshd(hj.get("sshd"))
            report["stopped"].append(f"{hj['name']}:sshd")
        for name, info in (state.get("stores") or {}).items():
            if info.get("pid") and pid_alive(info["pid"]):
                terminate_tree(info["pid"], 10.0)
            report["stopped"].append(name)
    # safety net: anything still naming this sandbox directory was started by it
    strays = pids_mentioning(root + os.sep) + pids_mentioning(root + " ")
    strays = sorted(set(strays))
    if strays:
        report["strays_killed"] = [{"pid": p, "cmdline": cmdline(p)[:200]} for p in strays]
        for p in strays:
            terminate_tree(p, 5.0)
    if state is not None:
        release_claim(state.get("k"), root)
        if not purge:
            state["state"] = "down"
            state["stopped"] = _now()
            for hj in state.get("hosts", []):
                hj["state"] = "down"
                hj.pop("fault", None)
            save_state(root, state)
    if purge and os.path.isdir(root):
        shutil.rmtree(root, ignore_errors=True)
        report["purged"] = True
    return report


def status(root: str) -> dict[str, Any]:
    root = os.path.abspath(root)
    state = require_state(root)
    out: dict[str, Any] = {"dir": root, "state": state.get("state"), "hosts": [], "stores": {}}
    all_up = True
    for hj in state["hosts"]:
        h = Host.from_json(hj)
        sshd = hj.get("sshd") or {}
        fault = hj.get("fault") or {}
        ssh_pid = sshd.get("pid")
        ssh_up = bool(ssh_pid and pid_alive(ssh_pid) and port_open(h.address, h.ssh_port))
        entry: dict[str, Any] = {"name": h.name, "address": h.address, "roles": h.roles,
                                 "ssh": {"port": h.ssh_port, "pid": ssh_pid if ssh_pid and pid_alive(ssh_pid) else None,
                                         "up": ssh_up, "kind": sshd.get("kind")},
                                 "services": {}, "fault": {k: v for k, v in fault.items() if k != "proxy"} or None}
        all_up &= ssh_up
        for svc in h.services:
            pid = h.service_pid(svc)
            up_ = pid is not None and port_open(*h.service_addr(svc))
            all_up &= up_
            a, p = h.service_addr(svc)
            entry["services"][svc] = {"address": f"{a}:{p}", "pid": pid, "up": up_,
                                      "http": f"{a}:{h.http_addr(svc)[1]}"}
        out["hosts"].append(entry)
    for name, info in (state.get("stores") or {}).items():
        up_ = bool(info.get("pid") and pid_alive(info["pid"]) and info.get("port")
                   and port_open(info["address"], int(info["port"])))
        all_up &= up_
        out["stores"][name] = {"endpoint": info.get("endpoint"), "pid": info.get("pid") if up_ else None, "up": up_,
                               "bucket": info.get("bucket")}
    out["all_up"] = all_up
    out["any_up"] = is_running(state)
    return out


# ---------------------------------------------------------------------------------------------
# host and SSH faults
#
# A host's fault record (sandbox.json hosts[i].fault):
#   {"ssh": "drop"|"close"|"hang"|"slow", "after_bytes": N, "rate": B, "side_port": P,
#    "proxy": {"pid", "listen", "upstream", "log"}, "deny": true, "down": true}
# SSH link faults move the host's sshd to ``ssh_port + 10000`` (config rewrite + SIGHUP: same
# pid, sessions kept) and put a netfault proxy on the host's SSH address. Refused logins are
# ``DenyUsers *`` + SIGHUP (asyncssh fallback: a deny file), so clients get "Permission denied".


def _listen_count(h: Host) -> int:
    try:
        with open(h.sshd_log, errors="replace") as fh:
            return fh.read().count("Server listening on")
    except OSError:
        return 0


def _reconfigure_sshd(root: str, hj: dict[str, Any]) -> None:
    """Write the host's sshd config from its fault record and make the running sshd reload it."""
    h = Host.from_json(hj)
    fault = hj.get("fault") or {}
    port = fault.get("side_port") or h.ssh_port
    write_sshd_config(root, h, port=port, deny=bool(fault.get("deny")))
    pid = (hj.get("sshd") or {}).get("pid")
    if not pid or not pid_alive(pid):
        return
    before = _listen_count(h)
    sshd_mod.reload(pid)
    # sshd re-executes itself on SIGHUP; wait for it to listen again, on the new port
    if not wait_for(lambda: _listen_count(h) > before and port_open(h.address, port), 10.0):
        raise SandboxError(f"sshd of {h.name} did not come back after reload", hint=tail(h.sshd_log))


def _start_proxy(root: str, hj: dict[str, Any], mode: str, after_bytes: int, rate: float) -> dict[str, Any]:
    h = Host.from_json(hj)
    side = h.ssh_port + SIDE_PORT_OFFSET
    ready = os.path.join(h.sshd_dir, "netfault.ready")
    try:
        os.unlink(ready)
    except FileNotFoundError:
        pass
    log = os.path.join(h.sshd_dir, "netfault.log")
    argv = [venv_python(), "-m", "brsm.sandbox.netfault", f"--listen={h.address}:{h.ssh_port}",
            f"--upstream={h.address}:{side}", f"--mode={mode}", f"--after-bytes={after_bytes}",
            f"--rate={rate}", f"--ready-file={ready}", f"--tag={root}"]
    pid = spawn_detached(argv, log)
    if not wait_for(lambda: os.path.exists(ready) or not pid_alive(pid), 10.0) or not pid_alive(pid):
        raise SandboxError(f"fault proxy for {h.name} did not start", hint=tail(log))
    return {"pid": pid, "listen": f"{h.address}:{h.ssh_port}", "upstream": f"{h.address}:{side}", "log": log}


def ssh_fault(root: str, host: str, mode: str, *, after_bytes: int = 0, rate: float = 0.0) -> dict[str, Any]:
    """``mode``: drop (cut after N bytes), close (close at once), hang, slow (rate B/s),
    refuse (logins refused), clear (back to normal)."""
    root = os.path.abspath(root)
    state = require_state(root)
    i, h = host_by_name(state, host)
    hj = state["hosts"][i]
    fault = dict(hj.get("fault") or {})
    if fault.get("down") and mode != "clear":
        raise SandboxUsageError(f"host {h.name} is down", hint=f"brsm sandbox fault host-up {h.name}")
    if mode == "refuse":
        fault["deny"] = True
        hj["fault"] = fault
        _reconfigure_sshd(root, hj)
    elif mode in ("drop", "close", "hang", "slow"):
        if mode == "drop" and after_bytes <= 0:
            raise SandboxUsageError("ssh drop needs --after-bytes N (N > 0)")
        if mode == "slow" and rate <= 0:
            raise SandboxUsageError("ssh slow needs --rate BYTES_PER_SECOND (> 0)")
        _stop_proxy(fault.get("proxy"))
        fault.pop("proxy", None)
        if not fault.get("side_port"):
            fault["side_port"] = h.ssh_port + SIDE_PORT_OFFSET
            hj["fault"] = fault
            _reconfigure_sshd(root, hj)
            wait_for(lambda: not port_open(h.address, h.ssh_port), 5.0)
        fault.update(ssh=mode, after_bytes=after_bytes, rate=rate)
        fault["proxy"] = _start_proxy(root, hj, "pass" if mode == "slow" else mode, after_bytes, rate)
        hj["fault"] = fault
    elif mode == "clear":
        _stop_proxy(fault.get("proxy"))
        was_down = fault.get("down")
        hj["fault"] = {"down": True} if was_down else {}
        if not was_down:
            _reconfigure_sshd(root, hj)
    else:
        raise SandboxUsageError(f"unknown ssh fault {mode!r}", hint="drop, close, hang, slow, refuse, clear")
    save_state(root, state)
    return {"host": h.name, "fault": {k: v for k, v in (hj.get("fault") or {}).items() if k != "proxy"}}


def host_down(root: str, host: str, *, graceful: bool = False) -> dict[str, Any]:
    """The machine goes away: its services die (SIGKILL unless graceful), its sshd stops."""
    root = os.path.abspath(root)
    state = require_state(root)
    i, h = host_by_name(state, host)
    hj = state["hosts"][i]
    fault = hj.get("fault") or {}
    _stop_host_services(h, hard=not graceful)
    stop_agent(hj, hard=not graceful)
    _stop_proxy(fault.get("proxy"))
    _stop_sshd(hj.get("sshd"))
    hj["fault"] = {"down": True}
    hj["state"] = "down"
    save_state(root, state)
    return {"host": h.name, "state": "down"}


def host_up(root: str, host: str, *, services: bool = True, timeout: float = 60.0) -> dict[str, Any]:
    """The machine is back (a reboot: SSH faults are gone; its services start, as systemd would)."""
    root = os.path.abspath(root)
    state = require_state(root)
    i, h = host_by_name(state, host)
    hj = state["hosts"][i]
    fault = hj.get("fault") or {}
    _stop_proxy(fault.get("proxy"))
    hj["fault"] = {}
    sshd = hj.get("sshd") or {}
    if not (sshd.get("pid") and pid_alive(sshd["pid"])):
        write_sshd_config(root, h)
        hj["sshd"] = info = start_sshd(root, h, kind=sshd.get("kind"))
        if not wait_for(lambda: port_open(h.address, h.ssh_port) or not pid_alive(info["pid"]), timeout) \
                or not pid_alive(info["pid"]):
            raise SandboxError(f"sshd of {h.name} did not start", hint=tail(h.sshd_log))
    else:
        _reconfigure_sshd(root, hj)
    out: dict[str, Any] = {"host": h.name, "state": "up"}
    if services:
        r = run_service(h, "start", "all", timeout=timeout)
        out["services"] = r.stdout.strip().splitlines()
        if r.returncode != 0:
            save_state(root, state)
            raise SandboxError(f"services on {h.name} did not start", hint=(r.stderr or r.stdout).strip())
        try:
            wait_listening([h], timeout)  # the script returns once they forked
        except SandboxError:
            save_state(root, state)
            raise
        start_agent(state, i)  # the agent starts at boot too
    hj["state"] = "up"
    save_state(root, state)
    return out


# ---------------------------------------------------------------------------------------------
# service and store faults (through the stand-ins' own control interfaces)


def meta_http_addrs(state: dict[str, Any]) -> list[tuple[str, int]]:
    return [Host.from_json(h).http_addr("metad") for h in state["hosts"] if "metad" in h["services"]]


def storage_hosts(state: dict[str, Any], which: str | None = None) -> list[Host]:
    hs = [Host.from_json(h) for h in state["hosts"] if "storaged" in h["services"]]
    if which and which != "all":
        hs = [h for h in hs if which in (h.name, h.address)]
        if not hs:
            raise SandboxUsageError(f"no storage host {which!r}")
    return hs


def meta_fault(root: str, rpc: str, *, code: int | None = None, leader_changed: str | None = None,
               delay: float | None = None, hang: bool = False, count: int | None = None,
               host: str | None = None) -> list[dict[str, Any]]:
    from brsm.sandbox import control
    state = require_state(root)
    body: dict[str, Any] = {"rpc": rpc}
    if code is not None:
        body["code"] = code
    if leader_changed:
        body["leader_changed"] = leader_changed
    if delay is not None:
        body["delay"] = delay
    if hang:
        body["hang"] = True
    if count is not None and count >= 0:
        body["count"] = count
    if len(body) == 1 or (len(body) == 2 and "count" in body):
        raise SandboxUsageError("say what metad does: --code N, --leader-changed ADDR, --delay S or --hang")
    addrs = meta_http_addrs(state)
    if host:
        addrs = [Host.from_json(state["hosts"][host_by_name(state, host)[0]]).http_addr("metad")]
    return [control.set_fault(a, **body) for a in addrs]


def storage_fault(root: str, which: str | None = None, **fault: Any) -> list[dict[str, Any]]:
    from brsm.sandbox import control
    state = require_state(root)
    return [control.set_fault(h.http_addr("storaged"), **fault) for h in storage_hosts(state, which)]


def store_endpoint(root: str, store: str) -> str:
    state = require_state(root)
    try:
        return state["stores"][store]["endpoint"]
    except KeyError:
        raise SandboxUsageError(f"no store {store!r}", hint="s3 or oss") from None


def store_fault(root: str, store: str, **fault: Any) -> dict[str, Any]:
    from brsm.sandbox import store_faults
    return store_faults.inject(store_endpoint(root, store), **fault)


def clear_faults(root: str) -> dict[str, Any]:
    """Every fault off: hosts back up, SSH normal, metad/storaged/store faults cleared."""
    from brsm.sandbox import control, store_faults
    root = os.path.abspath(root)
    state = require_state(root)
    out: dict[str, Any] = {"hosts": [], "errors": []}
    for hj in state["hosts"]:
        fault = hj.get("fault") or {}
        try:
            if fault.get("down"):
                out["hosts"].append(host_up(root, hj["name"]))
            elif fault:
                out["hosts"].append(ssh_fault(root, hj["name"], "clear"))
        except SandboxFailure as exc:
            out["errors"].append(f"{hj['name']}: {exc}")
    state = require_state(root)
    for a in meta_http_addrs(state):
        try:
            control.clear_faults(a)
        except Exception as exc:  # noqa: BLE001
            out["errors"].append(f"metad {a[0]}:{a[1]}: {exc}")
    for hj in state["hosts"]:
        direct_fault(root, hj["name"], "clear")
    for h in storage_hosts(state):
        try:
            control.clear_faults(h.http_addr("storaged"))
        except Exception as exc:  # noqa: BLE001
            out["errors"].append(f"storaged {h.name}: {exc}")
    for name, info in (state.get("stores") or {}).items():
        try:
            store_faults.clear(info["endpoint"])
        except Exception as exc:  # noqa: BLE001
            out["errors"].append(f"{name}: {exc}")
    return out


def show_faults(root: str) -> dict[str, Any]:
    from brsm.sandbox import control, store_faults
    state = require_state(root)
    out: dict[str, Any] = {"hosts": {}, "metad": {}, "storaged": {}, "stores": {}}
    for hj in state["hosts"]:
        f = {k: v for k, v in (hj.get("fault") or {}).items() if k != "proxy"}
        if f:
            out["hosts"][hj["name"]] = f
    for h in [Host.from_json(x) for x in state["hosts"]]:
        for svc in ("metad", "storaged"):
            if svc in h.services and h.service_pid(svc):
                try:
                    out[svc][h.name] = control.get_faults(h.http_addr(svc))
                except Exception as exc:  # noqa: BLE001
                    out[svc][h.name] = {"error": str(exc)}
    for name, info in (state.get("stores") or {}).items():
        try:
            out["stores"][name] = store_faults.status(info["endpoint"])
        except Exception as exc:  # noqa: BLE001
            out["stores"][name] = {"error": str(exc)}
    return out
