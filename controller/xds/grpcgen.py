"""Config for proxyless gRPC clients (node metadata ``GENERATOR: grpc``), shaped as Istio's grpcgen does.

gRPC's xDS client asks for a listener named after its target (``xds:///<host>:<port>`` asks for
``<host>:<port>``): an API listener whose HttpConnectionManager names a RouteConfiguration over ADS, here
of the same name. Clusters and endpoints keep the sidecar names (``outbound|<port>|<subset>|<host>``).
Only what gRPC implements is emitted: EDS clusters with ROUND_ROBIN or RING_HASH-free policies, routes with
path/header matching, weighted clusters; per-route timeouts and Envoy-only retry conditions are left out.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import config_source_pb2
from envoy.config.listener.v3 import api_listener_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc

from controller.model.istio import TrafficPolicy
from controller.xds import listeners as lds
from controller.xds import routes as rds
from controller.xds.registry import MeshService
from controller.xds.resources import any_of

# gRPC implements these of Istio's simple policies; the rest fall back to round robin.
_LB = {
    "ROUND_ROBIN": cluster_pb2.Cluster.ROUND_ROBIN,
    "LEAST_REQUEST": cluster_pb2.Cluster.ROUND_ROBIN,
    "LEAST_CONN": cluster_pb2.Cluster.ROUND_ROBIN,
    "RANDOM": cluster_pb2.Cluster.ROUND_ROBIN,
}


def target_name(host: str, port: int) -> str:
    return f"{host}:{port}"


def cluster(name: str, service: MeshService, policy: TrafficPolicy | None) -> cluster_pb2.Cluster | None:
    """An EDS cluster for gRPC, or None where gRPC has no equivalent (original-destination services)."""
    if service.resolution != "EDS":
        return None
    lb_name = (policy.load_balancer if policy else None) or "ROUND_ROBIN"
    if lb_name == "PASSTHROUGH":
        return None
    out = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.EDS, lb_policy=_LB.get(lb_name, 0))
    out.eds_cluster_config.service_name = name
    out.eds_cluster_config.eds_config.ads.SetInParent()
    out.eds_cluster_config.eds_config.resource_api_version = config_source_pb2.V3
    pool = policy.connection_pool if policy else None
    if pool is not None and pool.http2_max_requests is not None:
        # gRPC reads max_requests alone from the circuit breakers.
        threshold = out.circuit_breakers.thresholds.add()
        threshold.max_requests.value = pool.http2_max_requests
    return out


def listener_and_route(
    service: MeshService, port: int, client_namespace: str, routes: list[rc.Route]
) -> Iterator[tuple[str, Any]]:
    """The API listener and the RouteConfiguration for one ``host:port`` target."""
    name = target_name(service.hostname, port)
    manager = lds.http_manager(name, rds_name=name)
    listener = listener_pb2.Listener(
        name=name, api_listener=api_listener_pb2.ApiListener(api_listener=any_of(manager))
    )
    yield name, listener
    host = rds.virtual_host(service, port, client_namespace, routes)
    yield name, rds.route_configuration(name, [host])
