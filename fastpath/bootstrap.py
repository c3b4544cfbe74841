"""Reading an Envoy-shaped bootstrap file (YAML or JSON) into the proto and our config."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from envoy.config.bootstrap.v3 import bootstrap_pb2
from google.protobuf import json_format

from fastpath import config

# Imported so that their types resolve inside typed_config (google.protobuf.Any) while parsing.
from fastpath.config import registry  # noqa: F401


class BootstrapError(ValueError):
    """The bootstrap file cannot be read or parsed; the message names the file."""


@dataclass(frozen=True, slots=True)
class AdsServer:
    """Where the ADS stream goes: the bootstrap's ads_config names a static cluster."""

    cluster: str
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class Bootstrap:
    proto: bootstrap_pb2.Bootstrap
    static: config.ProxyConfig
    admin_address: tuple[str, int] | None
    ads: AdsServer | None
    node_metadata: dict[str, Any]


def parse(data: dict[str, Any], source: str = "<bootstrap>") -> Bootstrap:
    msg = bootstrap_pb2.Bootstrap()
    try:
        json_format.ParseDict(data, msg)
    except json_format.ParseError as exc:
        raise BootstrapError(f"{source}: {exc}") from None
    sr = msg.static_resources
    if sr.secrets:
        from fastpath.config.errors import ConfigError, Resource
        from fastpath.config.tls import static_secret

        for i, secret in enumerate(sr.secrets):
            try:
                static_secret(Resource("Secret", secret.name), "", secret)
            except ConfigError as exc:
                raise BootstrapError(f"{source}: static_resources.secrets[{i}]: {exc}") from None
    static = config.build(sr.listeners, sr.clusters, routes=())
    admin = None
    if msg.admin.address.HasField("socket_address"):
        sa = msg.admin.address.socket_address
        admin = (sa.address, sa.port_value)
    ads = None
    dyn = msg.dynamic_resources
    if dyn.HasField("ads_config"):
        services = dyn.ads_config.grpc_services
        if dyn.ads_config.api_type not in (2, 3):  # GRPC, DELTA_GRPC
            raise BootstrapError(f"{source}: dynamic_resources.ads_config.api_type: GRPC or DELTA_GRPC")
        if not services or not services[0].HasField("envoy_grpc"):
            raise BootstrapError(f"{source}: dynamic_resources.ads_config: an envoy_grpc service is required")
        name = services[0].envoy_grpc.cluster_name
        cluster = static.clusters.get(name)
        if cluster is None or not cluster.endpoints:
            raise BootstrapError(
                f"{source}: the ADS cluster {name!r} must be a static cluster with an endpoint"
            )
        ep = cluster.endpoints[0]
        ads = AdsServer(name, ep.host, ep.port)
    meta = json_format.MessageToDict(msg.node.metadata) if msg.node.HasField("metadata") else {}
    return Bootstrap(msg, static, admin, ads, meta)


def load(path: str | Path) -> Bootstrap:
    """Parse a bootstrap file; every problem is a BootstrapError or ConfigError naming what is wrong."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise BootstrapError(f"{path}: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except ValueError:
        import yaml  # only for YAML bootstraps: every sidecar saves the import otherwise

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise BootstrapError(f"{path}: not YAML or JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BootstrapError(f"{path}: expected a mapping at the top level")
    return parse(data, str(path))
