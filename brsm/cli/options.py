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
