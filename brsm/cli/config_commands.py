"""`brsm config check`: load a cluster config and print what brsm will use, or every problem in it.

Apart from the storage and cluster commands (ops_commands): it reads only the file, never a
cluster or a store, so an operator can check a config on a machine that reaches neither. With
``--json`` stdout carries exactly one document, the problems in it when there are any (exit 2).
"""
from __future__ import annotations

from typing import Annotated, Any

import typer

from brsm.cli.ops_commands import fail
from brsm.cli.options import JsonOpt
from brsm.console.output import Output
from brsm.errors import UsageError

config_app = typer.Typer(help="Check the cluster config file.", no_args_is_help=True, rich_markup_mode=None)


@config_app.command("check")
def config_check(
    file: Annotated[str, typer.Argument(metavar="FILE", help="The cluster config (TOML) to check.")],
    json_: JsonOpt = False,
) -> None:
    """Load a cluster config and print a summary, or every problem in it (exit 2)."""
    from brsm.adapters.storage import parse_uri
    from brsm.config import load_config

    out = Output(as_json=json_)
    try:
        cfg = load_config(file)
    except UsageError as e:
        lines = e.message.splitlines()
        errors = [l.strip() for l in lines[1:] if l.strip()] if len(lines) > 1 else [e.message]
        if not json_:
            for l in errors:
                out.err.print(l, markup=False)
        fail(out, {"ok": False, "file": file, "errors": errors},
             UsageError(f"{file}: {len(errors)} problem(s)", hint=e.hint))
        return
    errors = []
    if cfg.storage.default:
        try:
            parse_uri(cfg.storage.default)
        except UsageError as e:
            errors.append(f"{file}: storage.default: {e.message}")
    summary = _summary(file, cfg, errors)
    if errors:
        if not json_:
            for l in errors:
                out.err.print(l, markup=False)
        fail(out, summary, UsageError(f"{file}: {len(errors)} problem(s)",
                                      hint=f"storage URIs look like {_uri_forms()}"))
        return
    if json_:
        out.result(summary)
        return
    _print_summary(out, file, cfg, summary)


def _summary(file: str, cfg: Any, errors: list[str]) -> dict[str, Any]:
    """The loaded config as `--json` shows it: what brsm will use."""
    return {
        "ok": not errors, "file": file, "name": cfg.name, "meta": list(cfg.meta),
        "ssh": {"user": cfg.ssh.user, "port": cfg.ssh.port, "identity": cfg.ssh.identity,
                "known_hosts": cfg.ssh.known_hosts, "accept_new_host_keys": cfg.ssh.accept_new_host_keys,
                "config": cfg.ssh.config},
        "hosts": [{"address": h.address, "ssh_host": h.ssh_host, "ssh_port": h.ssh_port, "user": h.user,
                   "install_dir": h.install_dir, "data_paths": list(h.data_paths)} for h in cfg.hosts],
        "storage": {"default": cfg.storage.default, "s3_endpoint": cfg.storage.s3_endpoint,
                    "s3_region": cfg.storage.s3_region, "oss_endpoint": cfg.storage.oss_endpoint},
        "errors": errors,
    }


def _print_summary(out: Output, file: str, cfg: Any, summary: dict[str, Any]) -> None:
    out.line(f"ok: {file}")
    out.line(f"cluster {cfg.name}: meta {', '.join(cfg.meta)}")
    out.line(f"ssh defaults: user {cfg.ssh.user or '(OpenSSH config, else local user)'}, port "
             f"{cfg.ssh.port or '(OpenSSH config, else 22)'}" + (f", key {cfg.ssh.identity}" if cfg.ssh.identity else "")
             + (", accept_new_host_keys = true (first contact accepts unknown host keys)"
                if cfg.ssh.accept_new_host_keys else ""))
    if cfg.hosts:  # a line per host, never a table: at 80 columns a table cut the addresses
        for h in summary["hosts"]:
            ssh = (f"{h['user']}@" if h["user"] else "") + h["ssh_host"] + (f":{h['ssh_port']}" if h["ssh_port"] else "")
            out.line(f"host {h['address']}: ssh {ssh}, install_dir {h['install_dir']}"
                     + (f", data_paths {', '.join(h['data_paths'])}" if h["data_paths"] else ""))
    else:
        out.line("hosts: none listed (every host metad reports uses the ssh defaults)")
    if cfg.storage.default:
        out.line(f"storage default: {cfg.storage.default}")


def _uri_forms() -> str:
    from brsm.adapters.storage import FORMS

    return FORMS
