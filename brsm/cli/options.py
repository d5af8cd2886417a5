"""The options several commands share, defined once (their help text is the CLI reference's)."""
from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Annotated, Any, Optional

import typer

from brsm.errors import UsageError

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout instead of text.")]
AcceptNewOpt = Annotated[bool, typer.Option(
    "--accept-new-host-keys",
    help="First contact: accept the SSH host key of a host known_hosts has no entry for, add it there and "
         "warn with its fingerprint. A changed key is refused regardless.")]
StorageOpt = Annotated[Optional[str], typer.Option(
    help="local:///path, s3://bucket/prefix or oss://bucket/prefix; default: storage.default of --config.")]
ConfigOpt = Annotated[Optional[str], typer.Option(
    help="Cluster config (TOML) for the storage default and endpoints; default $BRSM_CONFIG if set.")]
S3EndpointOpt = Annotated[Optional[str], typer.Option(
    help="S3 endpoint URL (MinIO, Ceph and other S3-compatible stores); default the config's [storage] "
         "s3_endpoint, else $AWS_ENDPOINT_URL, else AWS. Journaled: a resume uses it again.")]
S3RegionOpt = Annotated[Optional[str], typer.Option(
    help="S3 region; default [storage] s3_region, else the AWS config or $AWS_REGION, else us-east-1.")]
OssEndpointOpt = Annotated[Optional[str], typer.Option(
    help="OSS endpoint URL; default the config's [storage] oss_endpoint, else $OSS_ENDPOINT.")]
ConcurrencyOpt = Annotated[int, typer.Option(help="Files transferred at once, in all (1-1024).")]
PerHostOpt = Annotated[int, typer.Option(help="Files transferred at once to or from one host (1-256).")]
RateLimitOpt = Annotated[Optional[str], typer.Option(help="Total bandwidth cap, e.g. 100MiB/s.")]
KeepOnFailureOpt = Annotated[bool, typer.Option(help="Do not roll back by itself when a step fails.")]
MetricsFileOpt = Annotated[Optional[str], typer.Option(
    "--metrics-file", help="After the operation, write Prometheus textfile-collector metrics here (atomically); "
                           "default $BRSM_METRICS_FILE, else the config's metrics.file.")]
DATA_PATHS = ("via-brsm", "direct", "auto")
DataPathOpt = Annotated[str, typer.Option(
    help="auto (the default): direct when the storage is S3/OSS and every host can, else via brsm, with one "
         "line saying why; direct: each host moves its own files to or from S3/OSS with URLs brsm signs per "
         "part (python3 >= 3.6 on every host), refused when a host cannot; via-brsm: every byte through brsm.")]

# the one confirmation rule of the commands that delete or take the cluster down (brsm.cli.confirm)
YES_HELP = ("Do it without asking (needed off a terminal: cron, scripts); on a terminal brsm shows what it "
            "will do and asks first.")
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help=YES_HELP)]
# prune and gc had --confirm first: both spellings, one flag
YesOrConfirmOpt = Annotated[bool, typer.Option("--yes", "--confirm", "-y", help=YES_HELP + " --confirm is the same.")]

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


# Option groups: the options several commands share, declared once as a dataclass each; a command
# takes the group as one parameter and :func:`with_options` shows its fields as options (typer reads
# the signature). Field order is the order ``--help`` shows them in.
@dataclass(frozen=True)
class TransferFlags:
    """How fast to move the bytes, and what to do when a step fails (start backup / restore)."""
    concurrency: ConcurrencyOpt = 8
    per_host: PerHostOpt = 4
    rate_limit: RateLimitOpt = None
    keep_on_failure: KeepOnFailureOpt = False
    data_path: DataPathOpt = "auto"

    def params(self) -> dict:
        """As operation params; the limits checked first (exit 2 before anything starts)."""
        from brsm.cli.inputs import CONCURRENCY, PER_HOST, check_rate_limit, in_range

        in_range("--concurrency", self.concurrency, CONCURRENCY)
        in_range("--per-host", self.per_host, PER_HOST)
        check_rate_limit(self.rate_limit)
        if self.data_path not in DATA_PATHS:
            raise UsageError(f"--data-path must be {', '.join(DATA_PATHS)}, not {self.data_path!r}",
                             hint="e.g. --data-path auto")
        return {"concurrency": self.concurrency, "per_host": self.per_host, "rate_limit": self.rate_limit,
                "data_path": self.data_path}


@dataclass(frozen=True)
class StoreFlags:
    """The object store's endpoint and region, when the config does not name them."""
    s3_endpoint: S3EndpointOpt = None
    s3_region: S3RegionOpt = None
    oss_endpoint: OssEndpointOpt = None

    def params(self) -> dict:
        return {"s3_endpoint": self.s3_endpoint, "s3_region": self.s3_region, "oss_endpoint": self.oss_endpoint}


@dataclass(frozen=True)
class ClusterFlags:
    """nebula-br's way of naming the cluster without a config file, and the first-contact host-key rule."""
    meta: MetaOpt = None
    ssh_user: SshUserOpt = None
    ssh_key: SshKeyOpt = None
    ssh_port: SshPortOpt = None
    known_hosts: KnownHostsOpt = None
    accept_new_host_keys: AcceptNewOpt = False

    def params(self) -> dict:
        """As operation params (journaled: a resume reaches the same cluster the same way)."""
        return {"accept_new_host_keys": self.accept_new_host_keys,
                **flag_params(self.meta, self.ssh_user, self.ssh_key, self.ssh_port, self.known_hosts)}


def with_options(**groups: type) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``@with_options(store=StoreFlags)`` on ``fn(store: StoreFlags, ...own options..., json_)``: the
    command typer sees takes its own options, then each group's fields, then ``--json`` (all keyword-only)
    and calls ``fn`` with each group built from them."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        kw = inspect.Parameter.KEYWORD_ONLY
        own = [p.replace(kind=kw) for p in inspect.signature(fn, eval_str=True).parameters.values()
               if p.name not in groups]
        members = {g: [f.name for f in fields(cls)] for g, cls in groups.items()}
        shared = [inspect.Parameter(f.name, kw, default=f.default, annotation=_resolved(f.type))
                  for cls in groups.values() for f in fields(cls)]

        @functools.wraps(fn)
        def command(**kwargs: Any) -> Any:
            built = {g: cls(**{n: kwargs.pop(n) for n in members[g]}) for g, cls in groups.items()}
            return fn(**built, **kwargs)

        command.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [p for p in own if p.name != "json_"] + shared + [p for p in own if p.name == "json_"])
        del command.__wrapped__  # typer must see this signature, not fn's
        return command

    return wrap


def _resolved(annotation: Any) -> Any:
    """A field's annotation as an object (this module postpones annotations: they are strings)."""
    return eval(annotation, globals()) if isinstance(annotation, str) else annotation  # noqa: S307 - our own names
