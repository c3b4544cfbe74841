"""CDS: outbound clusters per service port and subset, inbound clusters, and the special clusters."""

from __future__ import annotations

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2
from envoy.config.core.v3 import address_pb2, config_source_pb2, health_check_pb2
from envoy.config.endpoint.v3 import endpoint_pb2

from controller.model.istio import TrafficPolicy
from controller.model.protocol import MeshProtocol
from controller.model.values import FrozenMap
from controller.xds import cluster_policies as policies
from controller.xds.registry import HEALTHY, LbEndpoint, MeshService
from controller.xds.resources import proto_duration, u32
from controller.xds.security import endpoint_metadata

PASSTHROUGH = "PassthroughCluster"
BLACKHOLE = "BlackHoleCluster"
INBOUND_PASSTHROUGH = "InboundPassthroughCluster"
# The source address the sidecar uses towards its own application: iptables lets it through uncaptured.
INBOUND_SOURCE = "127.0.0.6"
DEFAULT_CONNECT_TIMEOUT = 10.0  # Istio's mesh default connectTimeout
# Istio lifts Envoy's default circuit-breaker limits (1024) to "unlimited" unless a DestinationRule sets them.
UNLIMITED = 4294967295


def outbound_name(port: int, subset: str | None, host: str) -> str:
    return f"outbound|{port}|{subset or ''}|{host}"


def inbound_name(port: int) -> str:
    return f"inbound|{port}||"


def _ads() -> config_source_pb2.ConfigSource:
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(), resource_api_version=config_source_pb2.V3
    )


def _original_dst(name: str, *, bind_source: str | None = None) -> cluster_pb2.Cluster:
    cluster = cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.ORIGINAL_DST,
        lb_policy=cluster_pb2.Cluster.CLUSTER_PROVIDED,
        connect_timeout=proto_duration(DEFAULT_CONNECT_TIMEOUT),
        circuit_breakers=_circuit_breakers(None),
    )
    if bind_source:
        cluster.upstream_bind_config.CopyFrom(
            address_pb2.BindConfig(
                source_address=address_pb2.SocketAddress(address=bind_source, port_value=0)
            )
        )
    return cluster


def passthrough_cluster() -> cluster_pb2.Cluster:
    return _original_dst(PASSTHROUGH)


def inbound_passthrough_cluster() -> cluster_pb2.Cluster:
    return _original_dst(INBOUND_PASSTHROUGH, bind_source=INBOUND_SOURCE)


def inbound_cluster(
    port: int, protocol: MeshProtocol | None = None, endpoint: tuple[str, int] | None = None
) -> cluster_pb2.Cluster:
    """``inbound|<port>||``: to the app from 127.0.0.6, at the connection's original destination or at
    ``endpoint`` (a Sidecar's ``defaultEndpoint``), speaking what the port declares (HTTP/2 to a gRPC
    app; the client's protocol when the port's protocol is sniffed)."""
    cluster = _original_dst(inbound_name(port), bind_source=INBOUND_SOURCE)
    if endpoint is not None:
        cluster.type = cluster_pb2.Cluster.STATIC
        cluster.lb_policy = cluster_pb2.Cluster.ROUND_ROBIN
        cluster.load_assignment.CopyFrom(
            load_assignment(
                inbound_name(port), [LbEndpoint(endpoint[0], endpoint[1], HEALTHY, FrozenMap(), "", None)]
            )
        )
    policies.apply_upstream_protocol(cluster, protocol, None, inbound=True)
    return cluster


def blackhole_cluster() -> cluster_pb2.Cluster:
    return cluster_pb2.Cluster(
        name=BLACKHOLE,
        type=cluster_pb2.Cluster.STATIC,
        connect_timeout=proto_duration(DEFAULT_CONNECT_TIMEOUT),
    )


def _circuit_breakers(policy: TrafficPolicy | None) -> circuit_breaker_pb2.CircuitBreakers:
    pool = policy.connection_pool if policy else None
    threshold = circuit_breaker_pb2.CircuitBreakers.Thresholds(
        max_connections=u32(pool.max_connections if pool and pool.max_connections is not None else UNLIMITED),
        max_pending_requests=u32(
            pool.http1_max_pending_requests
            if pool and pool.http1_max_pending_requests is not None
            else UNLIMITED
        ),
        max_requests=u32(
            pool.http2_max_requests if pool and pool.http2_max_requests is not None else UNLIMITED
        ),
        max_retries=u32(pool.max_retries if pool and pool.max_retries is not None else UNLIMITED),
    )
    return circuit_breaker_pb2.CircuitBreakers(thresholds=[threshold])


def outbound_cluster(
    name: str,
    service: MeshService,
    policy: TrafficPolicy | None,
    dns_endpoints: list[LbEndpoint] | None = None,
    protocol: MeshProtocol | None = None,
) -> cluster_pb2.Cluster:
    """One outbound cluster. ``policy`` is the DestinationRule policy already resolved for the port/subset;
    ``protocol`` the port's, which picks the HTTP version spoken upstream."""
    pool = policy.connection_pool if policy else None
    timeout = pool.connect_timeout if pool and pool.connect_timeout else None
    lb_name = (policy.load_balancer if policy else None) or "LEAST_REQUEST"
    if service.resolution == "NONE" or lb_name == "PASSTHROUGH":
        passthrough = _original_dst(name)
        policies.apply_upstream_protocol(passthrough, protocol, pool)
        return passthrough
    cluster = cluster_pb2.Cluster(
        name=name,
        connect_timeout=proto_duration(timeout if timeout is not None else DEFAULT_CONNECT_TIMEOUT),
        circuit_breakers=_circuit_breakers(policy),
    )
    policies.apply_load_balancer(cluster, policy)
    policies.apply_upstream_protocol(cluster, protocol, pool)
    policies.apply_connection_pool(cluster, pool)
    if service.resolution == "DNS":
        cluster.type = cluster_pb2.Cluster.STRICT_DNS
        cluster.load_assignment.CopyFrom(load_assignment(name, dns_endpoints or []))
    else:
        cluster.type = cluster_pb2.Cluster.EDS
        cluster.eds_cluster_config.CopyFrom(
            cluster_pb2.Cluster.EdsClusterConfig(eds_config=_ads(), service_name=name)
        )
    policies.apply_outlier(cluster, policy.outlier_detection if policy else None)
    return cluster


_HEALTH = {
    "HEALTHY": health_check_pb2.HEALTHY,
    "UNHEALTHY": health_check_pb2.UNHEALTHY,
    "DRAINING": health_check_pb2.DRAINING,
}


def load_assignment(name: str, endpoints: list[LbEndpoint]) -> endpoint_pb2.ClusterLoadAssignment:
    """EDS: endpoints grouped by locality. Every group has a locality (possibly empty) and a weight: gRPC
    clients refuse a group without the first and ignore one without the second; Envoy accepts both."""
    by_locality: dict[str, list[LbEndpoint]] = {}
    for ep in endpoints:
        by_locality.setdefault(ep.locality, []).append(ep)
    assignment = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    for key in sorted(by_locality):
        group = by_locality[key]
        locality = assignment.endpoints.add()
        region, zone, sub_zone = ([*key.split("/", 2), "", ""])[:3]
        locality.locality.SetInParent()  # gRPC rejects a locality-less group, even an empty one must be set
        if region:
            locality.locality.region = region
        if zone:
            locality.locality.zone = zone
        if sub_zone:
            locality.locality.sub_zone = sub_zone
        weight = 0
        for ep in group:
            lb = locality.lb_endpoints.add()
            lb.endpoint.address.socket_address.address = ep.address
            lb.endpoint.address.socket_address.port_value = ep.port
            lb.health_status = _HEALTH[ep.health]
            meta = endpoint_metadata(ep.labels)
            if meta is not None:  # auto mTLS: this endpoint's pod has a sidecar
                for key, fields in meta.items():
                    lb.metadata.filter_metadata[key].update(fields)
            if ep.weight:
                lb.load_balancing_weight.value = ep.weight
            weight += ep.weight or 1
        locality.load_balancing_weight.value = weight
    return assignment
