"""Readable forms of generated resources, for goldens, the debug endpoint and ``proxy-config``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2

from controller.xds.resources import CLUSTER, ENDPOINT, LISTENER, PUSH_ORDER, ROUTE, SHORT_NAMES, Resource
from mizzen.configdump import resource_dict

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
    return resource_dict(decode(resource))  # type: ignore[no-any-return]


def dump(resources: Mapping[str, Mapping[str, Resource]]) -> dict[str, dict[str, Any]]:
    """{"CDS": {name: resource as JSON}, ...} in push order, names sorted."""
    return {
        SHORT_NAMES[t]: {name: to_dict(resources[t][name]) for name in sorted(resources.get(t, {}))}
        for t in PUSH_ORDER
    }
