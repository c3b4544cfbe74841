"""Cluster and ClusterLoadAssignment (CDS, EDS) compiled into immutable descriptions.

The runtime side (``fastpath.clusters``) keeps the state that must survive a config update: pooled
connections, request counts, ejections. It is rebuilt only when a cluster's description changes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

from fastpath.config.errors import Resource, join
from fastpath.config.routes import seconds
from fastpath.config.tls import UpstreamTls, compile_upstream_socket

DEFAULT_CONNECT_TIMEOUT = 5.0  # Envoy's Cluster.connect_timeout default
DEFAULT_UPSTREAM_IDLE = 3600.0  # Envoy's common_http_protocol_options.idle_timeout default
HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

_CLUSTER_FIELDS = {
    "http2_protocol_options",
    "name",
    "alt_stat_name",
    "type",
    "eds_cluster_config",
    "connect_timeout",
    "lb_policy",
    "load_assignment",
    "max_requests_per_connection",
    "circuit_breakers",
    "typed_extension_protocol_options",
    "dns_refresh_rate",
    "dns_lookup_family",
    "respect_dns_ttl",
    "outlier_detection",
    "cleanup_interval",
    "upstream_bind_config",
    "common_lb_config",
    "metadata",
    "per_connection_buffer_limit_bytes",
    "least_request_lb_config",
    "round_robin_lb_config",
    "original_dst_lb_config",
    "ring_hash_lb_config",
    "maglev_lb_config",
    "upstream_connection_options",
    "transport_socket",
    "transport_socket_matches",
}
# Endpoint metadata that picks a cluster's transport_socket_matches entry (Istio's tlsMode).
SOCKET_MATCH_KEY = "envoy.transport_socket_match"
_OUTLIER_FIELDS = {
    "consecutive_5xx",
    "interval",
    "base_ejection_time",
    "max_ejection_percent",
    "enforcing_consecutive_5xx",
    "consecutive_gateway_failure",
    "enforcing_consecutive_gateway_failure",
    "split_external_local_origin_errors",
    "consecutive_local_origin_failure",
    "enforcing_consecutive_local_origin_failure",
    "max_ejection_time",
    "enforcing_success_rate",
    "enforcing_failure_percentage",
    "enforcing_local_origin_success_rate",
    "enforcing_failure_percentage_local_origin",
}
_DISCOVERY = ("STATIC", "EDS", "ORIGINAL_DST", "STRICT_DNS", "LOGICAL_DNS")
_LB = ("ROUND_ROBIN", "LEAST_REQUEST", "RANDOM", "RING_HASH", "MAGLEV")
_USABLE_HEALTH = {0, 1}  # UNKNOWN, HEALTHY; DRAINING, UNHEALTHY, TIMEOUT and DEGRADED are not picked
_U32 = 4294967295


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int
    weight: int = 1
    priority: int = 0
    # envoy.transport_socket_match metadata, e.g. (("tlsMode", "istio"),): picks the transport socket.
    socket_match: tuple[tuple[str, str], ...] = ()
    locality: str = ""  # "region/zone/sub_zone"
    locality_weight: int = 0  # the locality's load_balancing_weight (locality-weighted balancing)


@dataclass(frozen=True, slots=True)
class CircuitBreakers:
    """The default-priority thresholds (Envoy's defaults when unset)."""

    max_connections: int = 1024
    max_pending_requests: int = 1024
    max_requests: int = 1024
    max_retries: int = 3


@dataclass(frozen=True, slots=True)
class OutlierDetection:
    """Passive health checking by consecutive errors (Envoy's defaults when unset)."""

    consecutive_5xx: int = 5
    enforcing_consecutive_5xx: int = 100
    consecutive_gateway_failure: int = 5
    enforcing_consecutive_gateway_failure: int = 0
    split_local_origin: bool = False
    consecutive_local_origin_failure: int = 5
    enforcing_consecutive_local_origin_failure: int = 100
    interval: float = 10.0
    base_ejection_time: float = 30.0
    max_ejection_time: float = 300.0
    max_ejection_percent: int = 10


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    name: str
    discovery: str  # one of _DISCOVERY
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    lb_policy: str = "ROUND_ROBIN"
    endpoints: tuple[Endpoint, ...] = ()  # STATIC and the DNS types (host names there)
    eds_service_name: str = ""
    source_address: str | None = None  # upstream_bind_config (inbound clusters connect from 127.0.0.6)
    circuit_breakers: CircuitBreakers = CircuitBreakers()
    outlier: OutlierDetection | None = None
    idle_timeout: float = DEFAULT_UPSTREAM_IDLE
    max_requests_per_connection: int = 0  # 0: unlimited
    dns_refresh: float = 5.0
    panic_threshold: float = 50.0  # percent of healthy hosts below which all hosts are used
    hash_table_size: int = 0  # RING_HASH: minimum ring size; MAGLEV: table size (0: the default)
    locality_weighted: bool = False  # pick a locality by its weight first (locality_weighted_lb_config)
    tcp_keepalive: tuple[int, int, int] | None = None  # (probes, idle time s, interval s); 0 = system's
    max_connection_duration: float = 0.0  # upstream connections are retired after this long (0: never)
    fingerprint: bytes = b""  # the serialized resource: equal fingerprints keep the runtime state
    tls: UpstreamTls | None = None  # transport_socket: what every host gets unless a match says otherwise
    # transport_socket_matches: (metadata every key of which the endpoint must carry, socket); first wins.
    tls_matches: tuple[tuple[tuple[tuple[str, str], ...], UpstreamTls | None], ...] = ()
    protocol: str = "http1"  # to upstreams: "http1", "http2", or "downstream" (what the client spoke)
    h2_max_concurrent_streams: int = 100  # streams per HTTP/2 connection before another is opened
    h2_initial_window: int = 0  # 0: HTTP/2's default stream window

    def tls_for(self, endpoint: Endpoint | None) -> UpstreamTls | None:
        """The transport socket for one endpoint (Envoy's transport_socket_matches, then the default)."""
        if self.tls_matches:
            have = set(endpoint.socket_match) if endpoint is not None else set()
            for match, socket in self.tls_matches:
                if all(item in have for item in match):
                    return socket
        return self.tls

    @property
    def original_dst(self) -> bool:
        return self.discovery == "ORIGINAL_DST"

    @property
    def dns(self) -> bool:
        return self.discovery in ("STRICT_DNS", "LOGICAL_DNS")


def compile_endpoints(
    cla: endpoint_pb2.ClusterLoadAssignment,
    res: Resource | None = None,
    path: str = "",
    allow_names: bool = False,
) -> tuple[Endpoint, ...]:
    """The endpoints of a load assignment that may be picked (health UNKNOWN or HEALTHY)."""
    res = res or Resource("ClusterLoadAssignment", cla.cluster_name)
    res.reject_unsupported(cla, path, {"cluster_name", "endpoints", "policy"})
    out: list[Endpoint] = []
    for li, locality in enumerate(cla.endpoints):
        lpath = f"{join(path, 'endpoints')}[{li}]"
        res.reject_unsupported(
            locality, lpath, {"locality", "lb_endpoints", "load_balancing_weight", "priority", "metadata"}
        )
        first = len(out)
        for ei, lb in enumerate(locality.lb_endpoints):
            epath = f"{lpath}.lb_endpoints[{ei}]"
            res.reject_unsupported(
                lb, epath, {"endpoint", "health_status", "load_balancing_weight", "metadata"}
            )
            if lb.health_status not in _USABLE_HEALTH:
                continue
            addr = lb.endpoint.address
            if not addr.HasField("socket_address") or not addr.socket_address.address:
                raise res.error(join(epath, "endpoint.address"), "a socket address is required")
            sock = addr.socket_address
            if sock.protocol != address_pb2.SocketAddress.TCP:
                raise res.error(
                    join(epath, "endpoint.address.socket_address.protocol"), "only TCP is supported"
                )
            if not allow_names and not _is_ip(sock.address):
                raise res.error(
                    join(epath, "endpoint.address.socket_address.address"),
                    f"{sock.address!r} is not an IP address (only DNS clusters resolve names)",
                )
            if not 0 < sock.port_value < 65536:
                raise res.error(join(epath, "endpoint.address.socket_address.port_value"), "must be 1-65535")
            weight = lb.load_balancing_weight.value if lb.HasField("load_balancing_weight") else 1
            match: tuple[tuple[str, str], ...] = ()
            fm = lb.metadata.filter_metadata
            if SOCKET_MATCH_KEY in fm:
                match = _string_fields(fm[SOCKET_MATCH_KEY])
            out.append(Endpoint(sock.address, sock.port_value, max(1, weight), locality.priority, match))
        where = locality.locality
        name = f"{where.region}/{where.zone}/{where.sub_zone}" if locality.HasField("locality") else ""
        weight = locality.load_balancing_weight.value
        if name.strip("/") or weight:
            out[first:] = [replace(e, locality=name, locality_weight=weight) for e in out[first:]]
    return tuple(out)


def compile_cluster(c: cluster_pb2.Cluster) -> ClusterConfig:
    res = Resource("Cluster", c.name)
    if not c.name:
        raise res.error("name", "required")
    res.reject_unsupported(c, "", _CLUSTER_FIELDS)
    tls = (
        compile_upstream_socket(res, "transport_socket", c.transport_socket)
        if c.HasField("transport_socket")
        else None
    )
    tls_matches = []
    for i, m in enumerate(c.transport_socket_matches):
        mp = f"transport_socket_matches[{i}]"
        res.reject_unsupported(m, mp, {"name", "match", "transport_socket"})
        socket = (
            compile_upstream_socket(res, join(mp, "transport_socket"), m.transport_socket)
            if m.HasField("transport_socket")
            else None
        )
        tls_matches.append((_string_fields(m.match), socket))
    discovery = cluster_pb2.Cluster.DiscoveryType.Name(c.type)
    if discovery not in _DISCOVERY:
        raise res.error("type", f"{discovery} is not supported ({', '.join(_DISCOVERY)})")
    lb = cluster_pb2.Cluster.LbPolicy.Name(c.lb_policy)
    if discovery == "ORIGINAL_DST":
        if lb != "CLUSTER_PROVIDED":
            raise res.error("lb_policy", "an ORIGINAL_DST cluster needs CLUSTER_PROVIDED")
    elif lb not in _LB:
        raise res.error("lb_policy", f"{lb} is not supported ({', '.join(_LB)})")
    endpoints: tuple[Endpoint, ...] = ()
    if c.HasField("load_assignment"):
        if discovery in ("EDS", "ORIGINAL_DST"):
            raise res.error("load_assignment", f"not used by a {discovery} cluster")
        endpoints = compile_endpoints(
            c.load_assignment, res, "load_assignment", allow_names=discovery != "STATIC"
        )
    if discovery == "LOGICAL_DNS" and len(endpoints) > 1:
        raise res.error("load_assignment", "a LOGICAL_DNS cluster has exactly one endpoint")
    if discovery == "EDS":
        res.reject_unsupported(c.eds_cluster_config, "eds_cluster_config", {"eds_config", "service_name"})
        src = c.eds_cluster_config.eds_config
        if src.WhichOneof("config_source_specifier") not in ("ads", None):
            raise res.error("eds_cluster_config.eds_config", "only ADS is supported")
    source = None
    if c.HasField("upstream_bind_config"):
        sa = c.upstream_bind_config.source_address
        res.reject_unsupported(c.upstream_bind_config, "upstream_bind_config", {"source_address"})
        if sa.port_value:
            raise res.error("upstream_bind_config.source_address.port_value", "must be 0")
        source = sa.address or None
    breakers = CircuitBreakers()
    for i, t in enumerate(c.circuit_breakers.thresholds):
        tpath = f"circuit_breakers.thresholds[{i}]"
        res.reject_unsupported(
            t,
            tpath,
            {
                "priority",
                "max_connections",
                "max_pending_requests",
                "max_requests",
                "max_retries",
                "track_remaining",
            },
        )
        if t.priority != 0:
            continue  # HIGH priority thresholds: no routing priorities here, so never reached
        breakers = CircuitBreakers(
            max_connections=t.max_connections.value if t.HasField("max_connections") else 1024,
            max_pending_requests=t.max_pending_requests.value if t.HasField("max_pending_requests") else 1024,
            max_requests=t.max_requests.value if t.HasField("max_requests") else 1024,
            max_retries=t.max_retries.value if t.HasField("max_retries") else 3,
        )
    outlier = compile_outlier(res, c.outlier_detection) if c.HasField("outlier_detection") else None
    idle = DEFAULT_UPSTREAM_IDLE
    max_per_conn = c.max_requests_per_connection.value if c.HasField("max_requests_per_connection") else 0
    protocol = "http1"
    h2_window = (100, 0)
    if c.HasField("http2_protocol_options"):  # the deprecated field Istio's older translations set
        protocol = "http2"
        h2_window = _http2_options(res, "http2_protocol_options", c.http2_protocol_options)
    max_duration = 0.0
    for key, any_msg in c.typed_extension_protocol_options.items():
        path = f"typed_extension_protocol_options[{key!r}]"
        if key != HTTP_PROTOCOL_OPTIONS and not any_msg.type_url.endswith(HTTP_PROTOCOL_OPTIONS):
            raise res.error(path, "only HttpProtocolOptions is supported")
        opts = http_protocol_options_pb2.HttpProtocolOptions()
        any_msg.Unpack(opts)
        res.reject_unsupported(
            opts,
            path,
            {"common_http_protocol_options", "explicit_http_config", "use_downstream_protocol_config"},
        )
        which = opts.WhichOneof("upstream_protocol_options")
        if which == "explicit_http_config":
            explicit = opts.explicit_http_config.WhichOneof("protocol_config")
            if explicit == "http2_protocol_options":
                protocol = "http2"
                h2_window = _http2_options(
                    res,
                    join(path, "explicit_http_config.http2_protocol_options"),
                    opts.explicit_http_config.http2_protocol_options,
                )
            elif explicit == "http_protocol_options":
                protocol = "http1"
            else:
                raise res.error(
                    join(path, f"explicit_http_config.{explicit}"), "HTTP/1.1 or HTTP/2 upstreams only"
                )
        elif which == "use_downstream_protocol_config":
            protocol = "downstream"  # HTTP/2 upstream for HTTP/2 clients (gRPC), HTTP/1.1 for the rest
            udp = opts.use_downstream_protocol_config
            res.reject_unsupported(
                udp,
                join(path, "use_downstream_protocol_config"),
                {"http_protocol_options", "http2_protocol_options"},
            )
            if udp.HasField("http2_protocol_options"):
                h2_window = _http2_options(
                    res,
                    join(path, "use_downstream_protocol_config.http2_protocol_options"),
                    udp.http2_protocol_options,
                )
        common = opts.common_http_protocol_options
        res.reject_unsupported(
            common,
            join(path, "common_http_protocol_options"),
            {"idle_timeout", "max_requests_per_connection", "max_headers_count", "max_connection_duration"},
        )
        if common.HasField("max_connection_duration"):
            max_duration = seconds(common.max_connection_duration)
        if common.HasField("idle_timeout"):
            idle = seconds(common.idle_timeout)
        if common.HasField("max_requests_per_connection"):
            max_per_conn = common.max_requests_per_connection.value
    panic = 50.0
    locality_weighted = False
    if c.HasField("common_lb_config"):
        res.reject_unsupported(
            c.common_lb_config, "common_lb_config", {"healthy_panic_threshold", "locality_weighted_lb_config"}
        )
        if c.common_lb_config.HasField("healthy_panic_threshold"):
            panic = c.common_lb_config.healthy_panic_threshold.value
        locality_weighted = c.common_lb_config.HasField("locality_weighted_lb_config")
    table = _hash_table_size(res, c, lb)
    keepalive = _tcp_keepalive(res, c) if c.HasField("upstream_connection_options") else None
    if c.HasField("least_request_lb_config"):
        res.reject_unsupported(c.least_request_lb_config, "least_request_lb_config", {"choice_count"})
        if (
            c.least_request_lb_config.HasField("choice_count")
            and c.least_request_lb_config.choice_count.value != 2
        ):
            raise res.error("least_request_lb_config.choice_count", "only 2 (power of two choices)")
    return ClusterConfig(
        name=c.name,
        discovery=discovery,
        connect_timeout=seconds(c.connect_timeout)
        if c.HasField("connect_timeout")
        else DEFAULT_CONNECT_TIMEOUT,
        lb_policy="CLUSTER_PROVIDED" if discovery == "ORIGINAL_DST" else lb,
        endpoints=endpoints,
        eds_service_name=c.eds_cluster_config.service_name or c.name,
        source_address=source,
        circuit_breakers=breakers,
        outlier=outlier,
        idle_timeout=idle,
        max_requests_per_connection=max_per_conn,
        dns_refresh=seconds(c.dns_refresh_rate) if c.HasField("dns_refresh_rate") else 5.0,
        panic_threshold=panic,
        hash_table_size=table,
        locality_weighted=locality_weighted,
        tcp_keepalive=keepalive,
        max_connection_duration=max_duration,
        fingerprint=c.SerializeToString(deterministic=True),
        tls=tls,
        tls_matches=tuple(tls_matches),
        protocol=protocol,
        h2_max_concurrent_streams=h2_window[0],
        h2_initial_window=h2_window[1],
    )


def _string_fields(struct: object) -> tuple[tuple[str, str], ...]:
    """The string-valued fields of a protobuf Struct, sorted (transport socket matching compares them)."""
    fields = getattr(struct, "fields", {})
    return tuple(
        sorted((k, v.string_value) for k, v in fields.items() if v.WhichOneof("kind") == "string_value")
    )



def _http2_options(res: Resource, path: str, o: object) -> tuple[int, int]:
    """(max concurrent streams, initial stream window) from Http2ProtocolOptions."""
    res.reject_unsupported(
        o,
        path,
        {
            "max_concurrent_streams",
            "initial_stream_window_size",  # type: ignore[arg-type]
            "initial_connection_window_size",
        },
    )
    streams = o.max_concurrent_streams.value if o.HasField("max_concurrent_streams") else 100  # type: ignore[attr-defined]
    window = o.initial_stream_window_size.value if o.HasField("initial_stream_window_size") else 0  # type: ignore[attr-defined]
    return max(1, streams), window


def _hash_table_size(res: Resource, c: cluster_pb2.Cluster, lb: str) -> int:
    """The ring's minimum size (RING_HASH) or Maglev's table size, from the policy's own config."""
    if c.HasField("ring_hash_lb_config"):
        if lb != "RING_HASH":
            raise res.error("ring_hash_lb_config", f"set, but lb_policy is {lb}")
        r = c.ring_hash_lb_config
        res.reject_unsupported(
            r, "ring_hash_lb_config", {"minimum_ring_size", "maximum_ring_size", "hash_function"}
        )
        if r.hash_function != 0:  # XX_HASH; we hash with BLAKE2b, which only changes which host owns a key
            raise res.error("ring_hash_lb_config.hash_function", "only XX_HASH")
        size = r.minimum_ring_size.value if r.HasField("minimum_ring_size") else 1024
        if not 1 <= size <= 8 * 1024 * 1024:
            raise res.error("ring_hash_lb_config.minimum_ring_size", "must be 1 to 8M")
        return size
    if c.HasField("maglev_lb_config"):
        if lb != "MAGLEV":
            raise res.error("maglev_lb_config", f"set, but lb_policy is {lb}")
        m = c.maglev_lb_config
        res.reject_unsupported(m, "maglev_lb_config", {"table_size"})
        size = m.table_size.value if m.HasField("table_size") else 65537
        if size < 2 or any(size % d == 0 for d in range(2, int(size**0.5) + 1)):
            raise res.error("maglev_lb_config.table_size", f"{size} is not a prime number")
        if size > 5000011:
            raise res.error("maglev_lb_config.table_size", "must be at most 5000011")
        return size
    return 0


def _tcp_keepalive(res: Resource, c: cluster_pb2.Cluster) -> tuple[int, int, int] | None:
    opts = c.upstream_connection_options
    res.reject_unsupported(opts, "upstream_connection_options", {"tcp_keepalive"})
    if not opts.HasField("tcp_keepalive"):
        return None
    k = opts.tcp_keepalive
    return (
        k.keepalive_probes.value if k.HasField("keepalive_probes") else 0,
        k.keepalive_time.value if k.HasField("keepalive_time") else 0,
        k.keepalive_interval.value if k.HasField("keepalive_interval") else 0,
    )


def compile_outlier(res: Resource, o: object) -> OutlierDetection:
    from envoy.config.cluster.v3 import outlier_detection_pb2

    assert isinstance(o, outlier_detection_pb2.OutlierDetection)
    res.reject_unsupported(o, "outlier_detection", _OUTLIER_FIELDS)
    for name in (
        "enforcing_success_rate",
        "enforcing_failure_percentage",
        "enforcing_local_origin_success_rate",
        "enforcing_failure_percentage_local_origin",
    ):
        if o.HasField(name) and getattr(o, name).value:
            raise res.error(
                f"outlier_detection.{name}", "only consecutive-error ejection is supported; set it to 0"
            )

    def u32(name: str, default: int) -> int:
        return getattr(o, name).value if o.HasField(name) else default

    def secs(name: str, default: float) -> float:
        return seconds(getattr(o, name)) if o.HasField(name) else default

    return OutlierDetection(
        consecutive_5xx=u32("consecutive_5xx", 5),
        enforcing_consecutive_5xx=u32("enforcing_consecutive_5xx", 100),
        consecutive_gateway_failure=u32("consecutive_gateway_failure", 5),
        enforcing_consecutive_gateway_failure=u32("enforcing_consecutive_gateway_failure", 0),
        split_local_origin=o.split_external_local_origin_errors,
        consecutive_local_origin_failure=u32("consecutive_local_origin_failure", 5),
        enforcing_consecutive_local_origin_failure=u32("enforcing_consecutive_local_origin_failure", 100),
        interval=secs("interval", 10.0),
        base_ejection_time=secs("base_ejection_time", 30.0),
        max_ejection_time=secs("max_ejection_time", 300.0),
        max_ejection_percent=u32("max_ejection_percent", 10),
    )


def _is_ip(text: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


__all__ = [
    "CircuitBreakers",
    "ClusterConfig",
    "Endpoint",
    "OutlierDetection",
    "compile_cluster",
    "compile_endpoints",
]
