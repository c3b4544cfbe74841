"""Readable forms of generated resources, for goldens, the debug endpoint and ``proxy-config``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2

# Importing the filter modules registers their types, so Any fields inside resources print as JSON.
from envoy.extensions.filters.http.cors.v3 import cors_pb2  # noqa: F401
from envoy.extensions.filters.http.fault.v3 import fault_pb2  # noqa: F401
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401
from envoy.extensions.filters.listener.original_dst.v3 import original_dst_pb2  # noqa: F401
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2  # noqa: F401
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2  # noqa: F401
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2  # noqa: F401
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2  # noqa: F401
from google.protobuf import json_format

from controller.xds.resources import CLUSTER, ENDPOINT, LISTENER, PUSH_ORDER, ROUTE, SHORT_NAMES, Resource

MESSAGES: dict[str, Any] = {
    LISTENER: listener_pb2.Listener,
    ROUTE: route_pb2.RouteConfiguration,
    CLUSTER: cluster_pb2.Cluster,
    ENDPOINT: endpoint_pb2.ClusterLoadAssignment,
}


def decode(resource: Resource) -> Any:
    message = MESSAGES[resource.type_url]()
    message.ParseFromString(resource.body)
    return message


def to_dict(resource: Resource) -> dict[str, Any]:
    return _redact(json_format.MessageToDict(decode(resource), preserving_proto_field_name=True))  # type: ignore[no-any-return]


def _redact(value: Any) -> Any:
    """Private keys given inline (a gateway's credential) never leave in a dump."""
    if isinstance(value, dict):
        hidden = {"inline_string": "[redacted]"}
        return {k: hidden if k == "private_key" else _redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v) for v in value]
    return value


def dump(resources: Mapping[str, Mapping[str, Resource]]) -> dict[str, dict[str, Any]]:
    """{"CDS": {name: resource as JSON}, ...} in push order, names sorted."""
    return {
        SHORT_NAMES[t]: {name: to_dict(resources[t][name]) for name in sorted(resources.get(t, {}))}
        for t in PUSH_ORDER
    }
