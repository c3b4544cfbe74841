"""Istio's networking resources as the mesh uses them: VirtualService, DestinationRule, ServiceEntry, Sidecar.

Builders take a raw object that validation has accepted; they resolve short host names to the mesh's
fully qualified ones (``reviews`` in ``default`` -> ``reviews.default.svc.cluster.local``) once, here, so
translation never has to. Fields that validation reports as unsupported are not carried.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import msgspec

from controller.model.hosts import resolve_export_to, resolve_gateway_name, resolve_host
from controller.model.meta import ObjectMeta, object_meta, spec_of
from controller.model.policies import (
    ConsistentHash,
    CorsPolicy,
    Delegate,
    DirectResponse,
    Fault,
    Headers,
    LocalityLb,
    Mirror,
    Redirect,
    build_consistent_hash,
    build_cors,
    build_delegate,
    build_direct_response,
    build_fault,
    build_headers,
    build_locality_lb,
    build_mirrors,
    build_redirect,
)
from controller.model.protocol import MeshProtocol, parse_protocol
from controller.model.security import ClientTls, build_client_tls
from controller.model.values import (
    Duration,
    FrozenMap,
    ResourceKey,
    StringMatch,
    duration_or_none,
    int_or_none,
    str_map,
    str_tuple,
    string_match,
    string_match_map,
)

# Istio's default retry policy for HTTP routes without `retries` (mesh config defaultHttpRetryPolicy).
DEFAULT_RETRY_ATTEMPTS = 2
DEFAULT_RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"


# --- VirtualService -----------------------------------------------------------------------------------------


class Destination(msgspec.Struct, frozen=True, gc=False):
    host: str
    subset: str | None
    port: int | None


class RouteDestination(msgspec.Struct, frozen=True, gc=False):
    destination: Destination
    # Already normalised: a lone destination weighs 100; validation guarantees the sum is 100.
    weight: int
    headers: Headers | None = None


class HTTPMatch(msgspec.Struct, frozen=True, gc=False):
    name: str
    uri: StringMatch | None
    method: StringMatch | None
    authority: StringMatch | None
    headers: FrozenMap[StringMatch]
    query_params: FrozenMap[StringMatch]
    port: int | None
    ignore_uri_case: bool
    gateways: tuple[str, ...]
    scheme: StringMatch | None = None
    without_headers: FrozenMap[StringMatch] = FrozenMap()
    source_labels: FrozenMap[str] = FrozenMap()
    source_namespace: str | None = None


class Retry(msgspec.Struct, frozen=True, gc=False):
    attempts: int
    per_try_timeout: Duration | None
    retry_on: str
    backoff: Duration | None = None  # the base interval of the jittered exponential backoff (25 ms unset)


class Rewrite(msgspec.Struct, frozen=True, gc=False):
    uri: str | None
    authority: str | None
    uri_regex: tuple[str, str] | None = None  # (RE2 pattern, substitution)


class HTTPRoute(msgspec.Struct, frozen=True, gc=False):
    name: str
    matches: tuple[HTTPMatch, ...]  # empty: matches everything
    route: tuple[RouteDestination, ...]
    timeout: Duration | None
    retries: Retry | None  # None: Istio's default policy; attempts 0 disables retries
    rewrite: Rewrite | None
    fault: Fault | None = None
    mirrors: tuple[Mirror, ...] = ()
    headers: Headers | None = None
    redirect: Redirect | None = None
    direct_response: DirectResponse | None = None
    cors: CorsPolicy | None = None
    delegate: Delegate | None = None


class L4Match(msgspec.Struct, frozen=True, gc=False):
    port: int | None
    destination_subnets: tuple[str, ...]
    gateways: tuple[str, ...]
    sni_hosts: tuple[str, ...] = ()  # TLS routes only
    source_labels: FrozenMap[str] = FrozenMap()
    source_namespace: str | None = None


class TCPRoute(msgspec.Struct, frozen=True, gc=False):
    """A ``tcp`` rule, or a ``tls`` one (its matches carry ``sni_hosts``)."""

    matches: tuple[L4Match, ...]
    route: tuple[RouteDestination, ...]


class VirtualService(msgspec.Struct, frozen=True, gc=False):
    meta: ObjectMeta
    hosts: tuple[str, ...]
    gateways: tuple[str, ...]  # resolved ``namespace/name`` or ``mesh``
    http: tuple[HTTPRoute, ...]
    tcp: tuple[TCPRoute, ...]
    export_to: frozenset[str]
    tls: tuple[TCPRoute, ...] = ()

    @property
    def key(self) -> ResourceKey:
        return ResourceKey("VirtualService", self.meta.namespace, self.meta.name)

    @property
    def delegates(self) -> tuple[Delegate, ...]:
        """The VirtualServices this one hands routes to (``http[].delegate``)."""
        return tuple(r.delegate for r in self.http if r.delegate is not None)

    @property
    def applies_to_mesh(self) -> bool:
        """Sidecars read a VirtualService bound to the ``mesh`` gateway (the default when none is listed)."""
        return not self.gateways or "mesh" in self.gateways


def _destination(raw: Mapping[str, Any], namespace: str) -> Destination:
    port = (raw.get("port") or {}).get("number")
    return Destination(
        host=resolve_host(str(raw.get("host") or ""), namespace),
        subset=str(raw["subset"]) if raw.get("subset") else None,
        port=int(port) if port is not None else None,
    )


def _route_destinations(raw: Any, namespace: str) -> tuple[RouteDestination, ...]:
    items = list(raw or ())
    if len(items) == 1:
        item = items[0]
        dest = _destination(item.get("destination") or {}, namespace)
        return (RouteDestination(dest, 100, build_headers(item.get("headers"))),)
    return tuple(
        RouteDestination(
            _destination(item.get("destination") or {}, namespace),
            int(item.get("weight") or 0),
            build_headers(item.get("headers")),
        )
        for item in items
    )


def _http_match(raw: Mapping[str, Any], namespace: str) -> HTTPMatch:
    return HTTPMatch(
        scheme=string_match(raw.get("scheme")),
        without_headers=string_match_map(raw.get("withoutHeaders")),
        source_labels=str_map(raw.get("sourceLabels")),
        source_namespace=str(raw["sourceNamespace"]) if raw.get("sourceNamespace") else None,
        name=str(raw.get("name") or ""),
        uri=string_match(raw.get("uri")),
        method=string_match(raw.get("method")),
        authority=string_match(raw.get("authority")),
        headers=string_match_map(raw.get("headers")),
        query_params=string_match_map(raw.get("queryParams")),
        port=int_or_none(raw.get("port")),
        ignore_uri_case=bool(raw.get("ignoreUriCase", False)),
        gateways=tuple(resolve_gateway_name(g, namespace) for g in raw.get("gateways") or ()),
    )


def _retry(raw: Mapping[str, Any] | None) -> Retry | None:
    if raw is None:
        return None
    return Retry(
        attempts=int(raw.get("attempts") or 0),
        per_try_timeout=duration_or_none(raw.get("perTryTimeout")),
        retry_on=str(raw.get("retryOn") or DEFAULT_RETRY_ON),
        backoff=duration_or_none(raw.get("backoff")),
    )


def _rewrite(raw: Mapping[str, Any] | None) -> Rewrite | None:
    if not raw:
        return None
    regex = raw.get("uriRegexRewrite")
    return Rewrite(
        uri=raw.get("uri"),
        authority=raw.get("authority"),
        uri_regex=(str(regex.get("match") or ""), str(regex.get("rewrite") or "")) if regex else None,
    )


def _http_route(raw: Mapping[str, Any], namespace: str) -> HTTPRoute:
    return HTTPRoute(
        name=str(raw.get("name") or ""),
        matches=tuple(_http_match(m, namespace) for m in raw.get("match") or ()),
        route=_route_destinations(raw.get("route"), namespace),
        timeout=duration_or_none(raw.get("timeout")),
        retries=_retry(raw.get("retries")),
        rewrite=_rewrite(raw.get("rewrite")),
        fault=build_fault(raw.get("fault")),
        mirrors=build_mirrors(raw, lambda host: resolve_host(host, namespace)),
        headers=build_headers(raw.get("headers")),
        redirect=build_redirect(raw.get("redirect")),
        direct_response=build_direct_response(raw.get("directResponse")),
        cors=build_cors(raw.get("corsPolicy")),
        delegate=build_delegate(raw.get("delegate"), namespace),
    )


def _l4_match(m: Mapping[str, Any], namespace: str) -> L4Match:
    return L4Match(
        port=int_or_none(m.get("port")),
        destination_subnets=str_tuple(m.get("destinationSubnets")),
        gateways=tuple(resolve_gateway_name(g, namespace) for g in m.get("gateways") or ()),
        sni_hosts=str_tuple(m.get("sniHosts")),
        source_labels=str_map(m.get("sourceLabels")),
        source_namespace=str(m["sourceNamespace"]) if m.get("sourceNamespace") else None,
    )


def _tcp_route(raw: Mapping[str, Any], namespace: str) -> TCPRoute:
    return TCPRoute(
        matches=tuple(_l4_match(m, namespace) for m in raw.get("match") or ()),
        route=_route_destinations(raw.get("route"), namespace),
    )


def build_virtual_service(raw: Mapping[str, Any]) -> VirtualService:
    meta = object_meta(raw)
    spec = spec_of(raw)
    ns = meta.namespace
    return VirtualService(
        meta=meta,
        hosts=tuple(resolve_host(str(h), ns) for h in spec.get("hosts") or ()),
        gateways=tuple(resolve_gateway_name(str(g), ns) for g in spec.get("gateways") or ()),
        http=tuple(_http_route(r, ns) for r in spec.get("http") or ()),
        tcp=tuple(_tcp_route(r, ns) for r in spec.get("tcp") or ()),
        export_to=resolve_export_to(str_tuple(spec.get("exportTo")), ns),
        tls=tuple(_tcp_route(r, ns) for r in spec.get("tls") or ()),
    )


# --- DestinationRule ----------------------------------------------------------------------------------------


class TcpKeepalive(msgspec.Struct, frozen=True, gc=False):
    probes: int | None
    time: Duration | None
    interval: Duration | None


class ConnectionPool(msgspec.Struct, frozen=True, gc=False):
    max_connections: int | None
    connect_timeout: Duration | None
    http1_max_pending_requests: int | None
    http2_max_requests: int | None
    max_retries: int | None
    tcp_keepalive: TcpKeepalive | None = None
    max_connection_duration: Duration | None = None
    tcp_idle_timeout: Duration | None = None
    max_requests_per_connection: int | None = None
    http_idle_timeout: Duration | None = None
    h2_upgrade: bool | None = None  # h2UpgradePolicy: UPGRADE True, DO_NOT_UPGRADE False, DEFAULT None
    use_client_protocol: bool = False  # HTTP/2 upstream for HTTP/2 clients, HTTP/1.1 for the rest
    max_concurrent_streams: int | None = None  # per HTTP/2 connection to the upstream


class OutlierDetection(msgspec.Struct, frozen=True, gc=False):
    consecutive_5xx_errors: int | None
    consecutive_gateway_errors: int | None
    interval: Duration | None
    base_ejection_time: Duration | None
    max_ejection_percent: int | None
    min_health_percent: int | None
    consecutive_local_origin_failures: int | None = None
    split_external_local_origin_errors: bool = False


class TrafficPolicy(msgspec.Struct, frozen=True, gc=False):
    load_balancer: str | None  # Istio's simple LB name; None: the mesh default (LEAST_REQUEST)
    connection_pool: ConnectionPool | None
    outlier_detection: OutlierDetection | None
    port_level: FrozenMap[TrafficPolicy]  # str(port number) -> policy for that port
    consistent_hash: ConsistentHash | None = None  # loadBalancer.consistentHash (instead of simple)
    locality_lb: LocalityLb | None = None  # loadBalancer.localityLbSetting
    tls: ClientTls | None = None  # client TLS towards the host (None: auto mutual TLS)

    @property
    def has_load_balancer(self) -> bool:
        return (
            self.load_balancer is not None or self.consistent_hash is not None or self.locality_lb is not None
        )

    def _merged(
        self, over: TrafficPolicy, base: TrafficPolicy, port_level: FrozenMap[TrafficPolicy]
    ) -> TrafficPolicy:
        # loadBalancer is one field in Istio: the overriding policy's replaces the base's whole.
        lb = over if over.has_load_balancer else base
        return TrafficPolicy(
            load_balancer=lb.load_balancer,
            connection_pool=over.connection_pool or base.connection_pool,
            outlier_detection=over.outlier_detection or base.outlier_detection,
            port_level=port_level,
            consistent_hash=lb.consistent_hash,
            locality_lb=lb.locality_lb,
            tls=over.tls or base.tls,
        )

    def for_port(self, port: int) -> TrafficPolicy:
        """The policy for one port: port-level settings replace the top-level ones field by field."""
        override = self.port_level.get(str(port))
        if override is None:
            return self
        return self._merged(override, self, FrozenMap())

    def merged_over(self, base: TrafficPolicy | None) -> TrafficPolicy:
        """A subset's policy over the rule's: the subset's fields win where set (Istio's merge)."""
        if base is None:
            return self
        return self._merged(self, base, self.port_level or base.port_level)


class Subset(msgspec.Struct, frozen=True, gc=False):
    name: str
    labels: FrozenMap[str]
    traffic_policy: TrafficPolicy | None


class DestinationRule(msgspec.Struct, frozen=True, gc=False):
    meta: ObjectMeta
    host: str
    traffic_policy: TrafficPolicy | None
    subsets: tuple[Subset, ...]
    export_to: frozenset[str]

    @property
    def key(self) -> ResourceKey:
        return ResourceKey("DestinationRule", self.meta.namespace, self.meta.name)

    def subset(self, name: str) -> Subset | None:
        return next((s for s in self.subsets if s.name == name), None)

    def policies(self) -> Iterator[TrafficPolicy]:
        """Every traffic policy it holds: the rule's, its subsets', and their port-level ones."""
        for policy in (self.traffic_policy, *(s.traffic_policy for s in self.subsets)):
            if policy is not None:
                yield policy
                yield from policy.port_level.values()


def _connection_pool(raw: Mapping[str, Any] | None) -> ConnectionPool | None:
    if not raw:
        return None
    tcp = raw.get("tcp") or {}
    http = raw.get("http") or {}
    keepalive = tcp.get("tcpKeepalive")
    return ConnectionPool(
        max_connections=int_or_none(tcp.get("maxConnections")),
        connect_timeout=duration_or_none(tcp.get("connectTimeout")),
        http1_max_pending_requests=int_or_none(http.get("http1MaxPendingRequests")),
        http2_max_requests=int_or_none(http.get("http2MaxRequests")),
        max_retries=int_or_none(http.get("maxRetries")),
        tcp_keepalive=TcpKeepalive(
            probes=int_or_none(keepalive.get("probes")),
            time=duration_or_none(keepalive.get("time")),
            interval=duration_or_none(keepalive.get("interval")),
        )
        if keepalive is not None
        else None,
        max_connection_duration=duration_or_none(tcp.get("maxConnectionDuration")),
        tcp_idle_timeout=duration_or_none(tcp.get("idleTimeout")),
        max_requests_per_connection=int_or_none(http.get("maxRequestsPerConnection")),
        http_idle_timeout=duration_or_none(http.get("idleTimeout")),
        h2_upgrade={"UPGRADE": True, "DO_NOT_UPGRADE": False}.get(str(http.get("h2UpgradePolicy"))),
        use_client_protocol=bool(http.get("useClientProtocol")),
        max_concurrent_streams=int_or_none(http.get("maxConcurrentStreams")),
    )


def _outlier(raw: Mapping[str, Any] | None) -> OutlierDetection | None:
    if not raw:
        return None
    gateway = raw.get("consecutiveGatewayErrors")
    five_xx = raw.get("consecutive5xxErrors")
    if raw.get("consecutiveErrors") and gateway is None:
        # The deprecated consecutiveErrors counted 502/503/504 only: Istio turns it into gateway errors
        # and stops the 5xx detector.
        gateway, five_xx = raw["consecutiveErrors"], 0
    return OutlierDetection(
        consecutive_5xx_errors=int_or_none(five_xx),
        consecutive_gateway_errors=int_or_none(gateway),
        interval=duration_or_none(raw.get("interval")),
        base_ejection_time=duration_or_none(raw.get("baseEjectionTime")),
        max_ejection_percent=int_or_none(raw.get("maxEjectionPercent")),
        min_health_percent=int_or_none(raw.get("minHealthPercent")),
        consecutive_local_origin_failures=int_or_none(raw.get("consecutiveLocalOriginFailures")),
        split_external_local_origin_errors=bool(raw.get("splitExternalLocalOriginErrors", False)),
    )


def build_traffic_policy(raw: Mapping[str, Any] | None) -> TrafficPolicy | None:
    if not raw:
        return None
    balancer = raw.get("loadBalancer") or {}
    lb = balancer.get("simple")
    port_level: dict[str, TrafficPolicy] = {}
    for entry in raw.get("portLevelSettings") or ():
        number = (entry.get("port") or {}).get("number")
        policy = build_traffic_policy({k: v for k, v in entry.items() if k != "port"})
        if number is not None and policy is not None:
            port_level[str(int(number))] = policy
    return TrafficPolicy(
        load_balancer=str(lb) if lb else None,
        connection_pool=_connection_pool(raw.get("connectionPool")),
        outlier_detection=_outlier(raw.get("outlierDetection")),
        port_level=FrozenMap(port_level),
        consistent_hash=build_consistent_hash(balancer.get("consistentHash")),
        locality_lb=build_locality_lb(balancer.get("localityLbSetting")),
        tls=build_client_tls(raw.get("tls")),
    )


def build_destination_rule(raw: Mapping[str, Any]) -> DestinationRule:
    meta = object_meta(raw)
    spec = spec_of(raw)
    return DestinationRule(
        meta=meta,
        host=resolve_host(str(spec.get("host") or ""), meta.namespace),
        traffic_policy=build_traffic_policy(spec.get("trafficPolicy")),
        subsets=tuple(
            Subset(
                name=str(s.get("name") or ""),
                labels=str_map(s.get("labels")),
                traffic_policy=build_traffic_policy(s.get("trafficPolicy")),
            )
            for s in spec.get("subsets") or ()
        ),
        export_to=resolve_export_to(str_tuple(spec.get("exportTo")), meta.namespace),
    )


# --- ServiceEntry -------------------------------------------------------------------------------------------


class ServiceEntryPort(msgspec.Struct, frozen=True, gc=False):
    number: int
    name: str
    protocol: MeshProtocol
    target_port: int | None


class WorkloadEndpoint(msgspec.Struct, frozen=True, gc=False):
    address: str
    ports: FrozenMap[int]  # port name -> endpoint port
    labels: FrozenMap[str]
    weight: int | None
    locality: str | None
    service_account: str | None = None  # its identity in the entry's namespace, when it runs a sidecar


class ServiceEntry(msgspec.Struct, frozen=True, gc=False):
    meta: ObjectMeta
    hosts: tuple[str, ...]
    addresses: tuple[str, ...]
    ports: tuple[ServiceEntryPort, ...]
    location: str  # MESH_EXTERNAL or MESH_INTERNAL
    resolution: str  # NONE, STATIC, DNS or DNS_ROUND_ROBIN
    endpoints: tuple[WorkloadEndpoint, ...]
    export_to: frozenset[str]
    # What the servers' certificates must name: checked over mesh mTLS to its endpoints, and over
    # DestinationRule SIMPLE/MUTUAL TLS unless the rule names its own.
    subject_alt_names: tuple[str, ...] = ()
    # The pods of its namespace whose labels match are its endpoints (instead of ``endpoints``).
    workload_selector: FrozenMap[str] | None = None

    @property
    def key(self) -> ResourceKey:
        return ResourceKey("ServiceEntry", self.meta.namespace, self.meta.name)


def build_service_entry(raw: Mapping[str, Any]) -> ServiceEntry:
    meta = object_meta(raw)
    spec = spec_of(raw)
    return ServiceEntry(
        meta=meta,
        # ServiceEntry hosts are taken literally (a short name stays short), as Istio does.
        hosts=str_tuple(spec.get("hosts")),
        addresses=str_tuple(spec.get("addresses")),
        ports=tuple(
            ServiceEntryPort(
                number=int(p["number"]),
                name=str(p.get("name") or ""),
                protocol=parse_protocol(str(p.get("protocol") or "TCP")),
                target_port=int_or_none(p.get("targetPort")),
            )
            for p in spec.get("ports") or ()
        ),
        location=str(spec.get("location") or "MESH_EXTERNAL"),
        resolution=str(spec.get("resolution") or "NONE"),
        endpoints=tuple(
            WorkloadEndpoint(
                address=str(e.get("address") or ""),
                ports=FrozenMap({str(k): int(v) for k, v in (e.get("ports") or {}).items()}),
                labels=str_map(e.get("labels")),
                weight=int_or_none(e.get("weight")),
                locality=e.get("locality"),
                service_account=e.get("serviceAccount") or None,
            )
            for e in spec.get("endpoints") or ()
        ),
        export_to=resolve_export_to(str_tuple(spec.get("exportTo")), meta.namespace),
        subject_alt_names=str_tuple(spec.get("subjectAltNames")),
        workload_selector=(
            str_map((spec.get("workloadSelector") or {}).get("labels"))
            if spec.get("workloadSelector")
            else None
        ),
    )


# --- Sidecar ------------------------------------------------------------------------------------------------


class SidecarIngress(msgspec.Struct, frozen=True, gc=False):
    """One ``ingress`` listener: traffic to ``port`` goes to ``endpoint`` (``defaultEndpoint``), an
    (address, port) where the address is 127.0.0.1, or None for the pod's own address ("0.0.0.0")."""

    port: int
    protocol: MeshProtocol
    endpoint_host: str | None
    endpoint_port: int | None  # None: no defaultEndpoint, the same port at the original destination


class Sidecar(msgspec.Struct, frozen=True, gc=False):
    meta: ObjectMeta
    workload_selector: FrozenMap[str] | None  # None: every workload of the namespace
    egress_hosts: tuple[str, ...]  # "namespace/host" patterns; empty: no egress listener given
    outbound_traffic_policy: str | None  # ALLOW_ANY, REGISTRY_ONLY, or None for the mesh default
    # Inbound ports declared by the Sidecar: when set, the workload's inbound side is exactly these.
    ingress: tuple[SidecarIngress, ...] = ()

    @property
    def key(self) -> ResourceKey:
        return ResourceKey("Sidecar", self.meta.namespace, self.meta.name)


def build_sidecar(raw: Mapping[str, Any]) -> Sidecar:
    meta = object_meta(raw)
    spec = spec_of(raw)
    selector = spec.get("workloadSelector")
    hosts: list[str] = []
    for egress in spec.get("egress") or ():
        hosts.extend(str(h) for h in egress.get("hosts") or ())
    mode = (spec.get("outboundTrafficPolicy") or {}).get("mode")
    ingress = []
    for listener in spec.get("ingress") or ():
        port = listener.get("port") or {}
        endpoint = str(listener.get("defaultEndpoint") or "")
        host, _, target = endpoint.rpartition(":")
        ingress.append(
            SidecarIngress(
                port=int(port.get("number") or 0),
                protocol=parse_protocol(str(port.get("protocol") or "TCP")),
                endpoint_host="127.0.0.1" if host == "127.0.0.1" else None,
                endpoint_port=int(target) if endpoint else None,
            )
        )
    return Sidecar(
        meta=meta,
        workload_selector=str_map(selector.get("labels")) if selector else None,
        egress_hosts=tuple(hosts),
        outbound_traffic_policy=str(mode) if mode else None,
        ingress=tuple(ingress),
    )
