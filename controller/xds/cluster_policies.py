"""A DestinationRule's traffic policy on an Envoy cluster and its endpoints: load balancer (simple,
consistent hash), outlier detection, connection-pool settings beyond the circuit breakers, and locality
load balancing (failover priorities, distribute weights), each as Istio writes it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from envoy.config.cluster.v3 import cluster_pb2, outlier_detection_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

from controller.model.istio import ConnectionPool, OutlierDetection, TrafficPolicy
from controller.model.policies import TOPOLOGY_KEYS, ConsistentHash, LocalityLb
from controller.model.protocol import MeshProtocol
from controller.xds.resources import any_of, proto_duration

HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

_SIMPLE = {
    "ROUND_ROBIN": cluster_pb2.Cluster.ROUND_ROBIN,
    "LEAST_REQUEST": cluster_pb2.Cluster.LEAST_REQUEST,
    "LEAST_CONN": cluster_pb2.Cluster.LEAST_REQUEST,  # Envoy's LEAST_CONN is gone; Istio maps it so
    "RANDOM": cluster_pb2.Cluster.RANDOM,
    "UNSPECIFIED": cluster_pb2.Cluster.LEAST_REQUEST,
}


def apply_load_balancer(cluster: cluster_pb2.Cluster, policy: TrafficPolicy | None) -> None:
    """lb_policy from ``simple`` (LEAST_REQUEST by default, as Istio's mesh default) or a consistent
    hash (RING_HASH or MAGLEV with their sizes; the hash key itself goes on the routes)."""
    ch = policy.consistent_hash if policy is not None else None
    if ch is not None:
        _consistent_hash(cluster, ch)
        return
    name = (policy.load_balancer if policy is not None else None) or "LEAST_REQUEST"
    cluster.lb_policy = _SIMPLE.get(name, cluster_pb2.Cluster.LEAST_REQUEST)


def _consistent_hash(cluster: cluster_pb2.Cluster, ch: ConsistentHash) -> None:
    if ch.maglev:
        cluster.lb_policy = cluster_pb2.Cluster.MAGLEV
        if ch.table_size is not None:
            cluster.maglev_lb_config.table_size.value = ch.table_size
    else:
        cluster.lb_policy = cluster_pb2.Cluster.RING_HASH
        if ch.table_size is not None:
            cluster.ring_hash_lb_config.minimum_ring_size.value = ch.table_size


def outlier_detection(od: OutlierDetection) -> outlier_detection_pb2.OutlierDetection:
    """Istio's translation: each detector it names enforced at 100% (0 when its threshold is 0), success
    rate off, local-origin errors counted apart only when asked."""
    out = outlier_detection_pb2.OutlierDetection()
    out.enforcing_success_rate.value = 0
    if od.consecutive_5xx_errors is not None:
        out.consecutive_5xx.value = od.consecutive_5xx_errors
        out.enforcing_consecutive_5xx.value = 100 if od.consecutive_5xx_errors else 0
    if od.consecutive_gateway_errors is not None:
        out.consecutive_gateway_failure.value = od.consecutive_gateway_errors
        out.enforcing_consecutive_gateway_failure.value = 100 if od.consecutive_gateway_errors else 0
    if od.interval is not None:
        out.interval.CopyFrom(proto_duration(od.interval))
    if od.base_ejection_time is not None:
        out.base_ejection_time.CopyFrom(proto_duration(od.base_ejection_time))
    if od.max_ejection_percent is not None and od.max_ejection_percent > 0:
        out.max_ejection_percent.value = od.max_ejection_percent
    if od.split_external_local_origin_errors:
        out.split_external_local_origin_errors = True
        if od.consecutive_local_origin_failures:
            out.consecutive_local_origin_failure.value = od.consecutive_local_origin_failures
            out.enforcing_consecutive_local_origin_failure.value = 100
        out.enforcing_local_origin_success_rate.value = 0
    return out


def apply_outlier(cluster: cluster_pb2.Cluster, od: OutlierDetection | None) -> None:
    if od is None:
        return
    cluster.outlier_detection.CopyFrom(outlier_detection(od))
    # Istio sets the panic threshold from minHealthPercent even when it is unset (0): with a few pods per
    # service, Envoy's default of 50% would send traffic back to ejected hosts.
    cluster.common_lb_config.healthy_panic_threshold.value = float(od.min_health_percent or 0)


def apply_upstream_protocol(
    cluster: cluster_pb2.Cluster,
    protocol: MeshProtocol | None,
    pool: ConnectionPool | None,
    *,
    inbound: bool = False,
) -> None:
    """Which HTTP the cluster speaks upstream, as Istio chooses it: HTTP/2 for HTTP2/gRPC ports (and HTTP
    ports whose DestinationRule says h2UpgradePolicy UPGRADE), the client's own protocol for ports whose
    protocol is sniffed or when useClientProtocol is set, else HTTP/1.1 (no options). TCP ports: nothing."""
    if protocol is None or not (protocol.is_http or protocol.sniffed):
        return
    options = http_protocol_options_pb2.HttpProtocolOptions()
    streams = pool.max_concurrent_streams if pool is not None else None
    if (pool is not None and pool.use_client_protocol) or protocol.sniffed:
        udp = options.use_downstream_protocol_config
        udp.http_protocol_options.SetInParent()
        udp.http2_protocol_options.SetInParent()
        if streams:
            udp.http2_protocol_options.max_concurrent_streams.value = streams
    elif protocol.is_http2 or (not inbound and pool is not None and pool.h2_upgrade and protocol.is_http):
        h2 = options.explicit_http_config.http2_protocol_options
        h2.SetInParent()
        if streams:
            h2.max_concurrent_streams.value = streams
    else:
        return
    cluster.typed_extension_protocol_options[HTTP_OPTIONS].CopyFrom(any_of(options))


def apply_connection_pool(cluster: cluster_pb2.Cluster, pool: ConnectionPool | None) -> None:
    """TCP keepalive, and the HTTP options Envoy keeps in HttpProtocolOptions (idle timeout, requests and
    lifetime per connection)."""
    if pool is None:
        return
    if pool.tcp_keepalive is not None:
        ka = cluster.upstream_connection_options.tcp_keepalive
        ka.SetInParent()
        if pool.tcp_keepalive.probes is not None:
            ka.keepalive_probes.value = pool.tcp_keepalive.probes
        if pool.tcp_keepalive.time is not None:
            ka.keepalive_time.value = max(1, int(pool.tcp_keepalive.time.seconds))
        if pool.tcp_keepalive.interval is not None:
            ka.keepalive_interval.value = max(1, int(pool.tcp_keepalive.interval.seconds))
    common = None
    if (
        pool.http_idle_timeout is not None
        or pool.max_requests_per_connection
        or pool.max_connection_duration is not None
    ):
        options = http_protocol_options_pb2.HttpProtocolOptions()
        existing = cluster.typed_extension_protocol_options.get(HTTP_OPTIONS)
        if existing is not None:
            existing.Unpack(options)
        common = options.common_http_protocol_options
        if pool.http_idle_timeout is not None:
            common.idle_timeout.CopyFrom(proto_duration(pool.http_idle_timeout))
        if pool.max_requests_per_connection:
            common.max_requests_per_connection.value = pool.max_requests_per_connection
        if pool.max_connection_duration is not None:
            common.max_connection_duration.CopyFrom(proto_duration(pool.max_connection_duration))
        if not options.WhichOneof("upstream_protocol_options"):
            options.explicit_http_config.http_protocol_options.SetInParent()
        cluster.typed_extension_protocol_options[HTTP_OPTIONS].CopyFrom(any_of(options))


# --- locality load balancing ------------------------------------------------------------------------------


def _parts(locality: str) -> tuple[str, str, str]:
    region, zone, sub_zone = ([*locality.split("/", 2), "", ""])[:3]
    return region, zone, sub_zone


def _of(group: endpoint_pb2.LocalityLbEndpoints) -> tuple[str, str, str]:
    loc = group.locality
    return loc.region, loc.zone, loc.sub_zone


def locality_matches(have: tuple[str, str, str], pattern: str) -> bool:
    """Istio's locality match: ``region/zone/sub_zone`` with ``*`` for any (a trailing part may be left
    out, which also means any)."""
    for part, want in zip(have, pattern.split("/"), strict=False):
        if want == "*":
            return True
        if part != want:
            return False
    return True


def apply_locality(
    cla: endpoint_pb2.ClusterLoadAssignment,
    proxy_locality: str,
    setting: LocalityLb | None,
    failover_enabled: bool,
) -> bool:
    """Rewrite the load assignment for one client locality; True when locality weights were set (the
    cluster must then balance by locality). Istio applies ``distribute`` when given, else failover
    priorities -- and failover only with outlier detection, since without it no host ever leaves a
    priority level (the mesh's default setting is enabled)."""
    if not proxy_locality.strip("/"):
        return False
    me = _parts(proxy_locality)
    if setting is not None and setting.failover_priority:
        return False  # ordered by labels instead (apply_failover_priority)
    if setting is not None and setting.distribute:
        return _distribute(cla, me, setting)
    if failover_enabled and (setting is None or setting.enabled):
        _failover(cla, me, setting.failover if setting is not None else ())
    return False


def apply_failover_priority(
    cla: endpoint_pb2.ClusterLoadAssignment,
    endpoint_labels: Mapping[tuple[str, int], Mapping[str, str]],
    proxy_locality: str,
    proxy_labels: Mapping[str, str],
    priority: tuple[str, ...],
) -> None:
    """Istio's ``failoverPriority``: an endpoint agreeing with the client on all N entries gets priority 0,
    on the first N-1 priority 1, ... on none priority N. An entry is a label key (the client's value and
    the endpoint's compared; the topology keys read the localities) or ``key=value`` (the endpoint must
    have that value). A locality group whose endpoints land on different priorities is split."""
    me = _parts(proxy_locality)

    def value(key: str, labels: Mapping[str, str], locality: tuple[str, str, str]) -> str:
        at = TOPOLOGY_KEYS.get(key)
        return locality[at] if at is not None else labels.get(key, "")

    def rank(labels: Mapping[str, str], locality: tuple[str, str, str]) -> int:
        matched = 0
        for entry in priority:
            key, sep, wanted = entry.partition("=")
            if not sep:
                wanted = value(key, proxy_labels, me)
            if value(key, labels, locality) != wanted:
                break
            matched += 1
        return len(priority) - matched

    groups: list[tuple[int, endpoint_pb2.LocalityLbEndpoints]] = []
    for group in cla.endpoints:
        theirs = _of(group)
        split: dict[int, endpoint_pb2.LocalityLbEndpoints] = {}
        for lb in group.lb_endpoints:
            sa = lb.endpoint.address.socket_address
            level = rank(endpoint_labels.get((sa.address, sa.port_value), {}), theirs)
            part = split.get(level)
            if part is None:
                part = split[level] = endpoint_components_pb2.LocalityLbEndpoints(locality=group.locality)
            part.lb_endpoints.append(lb)
            part.load_balancing_weight.value += lb.load_balancing_weight.value or 1
        groups += sorted(split.items(), key=lambda item: item[0])
    del cla.endpoints[:]
    # Envoy wants consecutive priorities from 0.
    ranks = {level: i for i, level in enumerate(sorted({level for level, _ in groups}))}
    for level, group in groups:
        group.priority = ranks[level]
        cla.endpoints.append(group)


def _failover(
    cla: endpoint_pb2.ClusterLoadAssignment, me: tuple[str, str, str], rules: tuple[tuple[str, str], ...]
) -> None:
    levels: dict[int, list[endpoint_pb2.LocalityLbEndpoints]] = {}
    for group in cla.endpoints:
        theirs = _of(group)
        if theirs == me:
            priority = 0
        elif theirs[:2] == me[:2]:
            priority = 1
        elif theirs[0] == me[0]:
            priority = 2
        else:
            priority = 3
            for source, target in rules:
                if source == me[0]:
                    # Regions other than the failover target come after it.
                    if theirs[0] != target:
                        priority = 4
                    break
        levels.setdefault(priority, []).append(group)
    # Envoy wants consecutive priorities from 0.
    for rank, level in enumerate(sorted(levels)):
        for group in levels[level]:
            group.priority = rank


def _distribute(
    cla: endpoint_pb2.ClusterLoadAssignment, me: tuple[str, str, str], setting: LocalityLb
) -> bool:
    for source, targets in setting.distribute:
        if not locality_matches(me, source):
            continue
        unmatched = set(range(len(cla.endpoints)))
        for target in sorted(targets):
            share = targets[target]
            picked: dict[int, int] = {}
            for i in sorted(unmatched):
                group = cla.endpoints[i]
                if locality_matches(_of(group), target):
                    picked[i] = group.load_balancing_weight.value or 1
            unmatched -= picked.keys()
            total = sum(picked.values())
            for i, original in picked.items():
                weight = math.ceil(original * share / total) if total else 0
                cla.endpoints[i].load_balancing_weight.value = weight
        for i in unmatched:
            del cla.endpoints[i].lb_endpoints[:]  # localities outside every target get no traffic
        return True
    return False
