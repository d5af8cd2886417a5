"""The options several commands share, defined once (their help text is the CLI reference's)."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout instead of text.")]
AcceptNewOpt = Annotated[bool, typer.Option(
    "--accept-new-host-keys",
    help="First contact: accept the SSH host key of a host known_hosts has no entry for, add it there and "
         "warn with its fingerprint. A changed key is refused regardless.")]
StorageOpt = Annotated[Optional[str], typer.Option(
    help="local:///path, s3://bucket/prefix or oss://bucket/prefix; default: storage.default of --config.")]
ConfigOpt = Annotated[Optional[str], typer.Option(
    help="Cluster config (TOML) for the storage default and endpoints; default $BRSM_CONFIG if set.")]
S3EndpointOpt = Annotated[Optional[str], typer.Option(help="S3 endpoint URL (S3-compatible stores).")]
S3RegionOpt = Annotated[Optional[str], typer.Option(help="S3 region.")]
OssEndpointOpt = Annotated[Optional[str], typer.Option(help="OSS endpoint URL.")]
ConcurrencyOpt = Annotated[int, typer.Option(help="Files transferred at once, in all (1-1024).")]
RateLimitOpt = Annotated[Optional[str], typer.Option(help="Total bandwidth cap, e.g. 100MiB/s.")]
KeepOnFailureOpt = Annotated[bool, typer.Option(help="Do not roll back by itself when a step fails.")]

# nebula-br's way of naming the cluster, without a config file (brsm.config.load_cluster: defaults <
# file < these flags)
MetaOpt = Annotated[Optional[str], typer.Option(
    "--meta", help="metad addresses, host:port[,host:port]; with it no config file is needed (it overrides "
                   "the config's cluster.meta).")]
SshUserOpt = Annotated[Optional[str], typer.Option("--ssh-user", help="SSH user on every host (overrides [ssh] user).")]
SshKeyOpt = Annotated[Optional[str], typer.Option("--ssh-key", help="SSH private key file (overrides [ssh] identity).")]
SshPortOpt = Annotated[Optional[int], typer.Option("--ssh-port", help="SSH port on every host (overrides [ssh] port).")]
KnownHostsOpt = Annotated[Optional[str], typer.Option(
    "--known-hosts", help="known_hosts file to check host keys against (overrides [ssh] known_hosts).")]


def flag_params(meta: str | None, ssh_user: str | None, ssh_key: str | None, ssh_port: int | None,
                  known_hosts: str | None) -> dict:
    """The given flags as operation params (journaled: a resume reaches the same cluster the same way)."""
    import os

    out: dict = {}
    if meta:
        out["meta"] = [m.strip() for m in meta.split(",") if m.strip()]
    if ssh_user:
        out["ssh_user"] = ssh_user
    if ssh_key:
        out["ssh_key"] = os.path.abspath(os.path.expanduser(ssh_key))
    if ssh_port is not None:
        out["ssh_port"] = ssh_port
    if known_hosts:
        out["known_hosts"] = os.path.abspath(os.path.expanduser(known_hosts))
    return out
