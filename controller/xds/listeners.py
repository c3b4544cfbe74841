"""LDS: the capture listeners (virtualOutbound on 15001, virtualInbound on 15006) and the per-port outbound
listeners they hand connections to."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.listener.http_inspector.v3 import http_inspector_pb2
from envoy.extensions.filters.listener.original_dst.v3 import original_dst_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from google.protobuf import struct_pb2
from xds.type.v3 import typed_struct_pb2

from controller.model.protocol import MeshProtocol
from controller.xds.clusters import BLACKHOLE, INBOUND_PASSTHROUGH, PASSTHROUGH, inbound_name
from controller.xds.resources import any_of, proto_duration
from controller.xds.routes import connect_route
from controller.xds.security import InboundSecurity

OUTBOUND_PORT = 15001
INBOUND_PORT = 15006
VIRTUAL_OUTBOUND = "virtualOutbound"
VIRTUAL_INBOUND = "virtualInbound"
ROUTER = "envoy.filters.http.router"
CORS = "envoy.filters.http.cors"
FAULT = "envoy.filters.http.fault"
HCM = "envoy.filters.network.http_connection_manager"
TCP_PROXY = "envoy.filters.network.tcp_proxy"
HTTP_INSPECTOR = "envoy.filters.listener.http_inspector"
TLS_INSPECTOR = "envoy.filters.listener.tls_inspector"
# What the http_inspector reports for plain-text HTTP: chains for a sniffed port's HTTP side match these.
SNIFFED_HTTP = ("http/1.1", "h2c")
# Mutual TLS between sidecars says in its ALPN which protocol the client's sidecar speaks inside (Istio's
# istio.alpn filter sets it per request), so a server whose port is sniffed can tell HTTP from TCP.
ISTIO_ALPN = "istio.alpn"
ISTIO_ALPN_CONFIG = "type.googleapis.com/istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig"
MTLS_HTTP_ALPN = ("istio-http/1.0", "istio-http/1.1", "istio-h2")
_ALPN_OVERRIDES = (
    ("HTTP10", ("istio-http/1.0", "istio", "http/1.0")),
    ("HTTP11", ("istio-http/1.1", "istio", "http/1.1")),
    ("HTTP2", ("istio-h2", "istio", "h2")),
)


def _address(ip: str, port: int) -> address_pb2.Address:
    return address_pb2.Address(socket_address=address_pb2.SocketAddress(address=ip, port_value=port))


def tcp_proxy_filter(stat_prefix: str, clusters: list[tuple[str, int]]) -> listener_components_pb2.Filter:
    proxy = tcp_proxy_pb2.TcpProxy(stat_prefix=stat_prefix)
    if len(clusters) == 1:
        proxy.cluster = clusters[0][0]
    else:
        for name, weight in clusters:
            proxy.weighted_clusters.clusters.add(name=name, weight=weight)
    return listener_components_pb2.Filter(name=TCP_PROXY, typed_config=any_of(proxy))


def router_filter() -> hcm_pb2.HttpFilter:
    return hcm_pb2.HttpFilter(name=ROUTER, typed_config=any_of(router_pb2.Router()))


def policy_filters() -> list[hcm_pb2.HttpFilter]:
    """CORS and fault injection, as Istio puts them before the router on outbound and gateway HTTP: empty
    configs, so only routes that carry a corsPolicy or a fault (per-route config) pay for them."""
    return [
        hcm_pb2.HttpFilter(name=CORS, typed_config=any_of(cors_pb2.Cors())),
        hcm_pb2.HttpFilter(name=FAULT, typed_config=any_of(fault_pb2.HTTPFault())),
    ]


def alpn_filter() -> hcm_pb2.HttpFilter:
    """Istio's ``istio.alpn``: the ALPN a request's upstream mutual TLS offers names the HTTP version the
    cluster speaks (``istio-http/1.1``, ``istio-h2``...). Its proto is Istio's own, so it travels as a
    TypedStruct."""
    value = struct_pb2.Struct()
    value.update(
        {"alpn_override": [{"upstream_protocol": p, "alpn_override": list(a)} for p, a in _ALPN_OVERRIDES]}
    )
    config = typed_struct_pb2.TypedStruct(type_url=ISTIO_ALPN_CONFIG, value=value)
    return hcm_pb2.HttpFilter(name=ISTIO_ALPN, typed_config=any_of(config))


def http_manager(
    stat_prefix: str,
    *,
    rds_name: str | None = None,
    route_config: route_pb2.RouteConfiguration | None = None,
    policies: bool = False,
    connect: bool = False,
) -> hcm_pb2.HttpConnectionManager:
    filters = [*((alpn_filter(), *policy_filters()) if policies else ()), router_filter()]
    manager = hcm_pb2.HttpConnectionManager(stat_prefix=stat_prefix, http_filters=filters)
    # WebSocket upgrades pass through every HTTP hop, as Istio configures its HCMs.
    manager.upgrade_configs.add(upgrade_type="websocket")
    if connect:
        # A sidecar's HCMs forward CONNECT too (routes with connect_matcher, see routes.connect_route):
        # an application's tunnel through a forward proxy in the mesh crosses both sidecars.
        manager.upgrade_configs.add(upgrade_type="CONNECT")
    if rds_name is not None:
        manager.rds.route_config_name = rds_name
        manager.rds.config_source.ads.SetInParent()
        manager.rds.config_source.resource_api_version = config_source_pb2.V3
    elif route_config is not None:
        manager.route_config.CopyFrom(route_config)
    return manager


def hcm_filter(manager: hcm_pb2.HttpConnectionManager) -> listener_components_pb2.Filter:
    return listener_components_pb2.Filter(name=HCM, typed_config=any_of(manager))


def virtual_outbound(allow_any: bool) -> listener_pb2.Listener:
    """The listener iptables sends outbound connections to; it hands each to the listener of its original
    destination, and what matches none goes to PassthroughCluster (ALLOW_ANY) or BlackHoleCluster."""
    target = PASSTHROUGH if allow_any else BLACKHOLE
    listener = listener_pb2.Listener(
        name=VIRTUAL_OUTBOUND,
        address=_address("0.0.0.0", OUTBOUND_PORT),
        traffic_direction=base_pb2.OUTBOUND,
        default_filter_chain=listener_components_pb2.FilterChain(
            name="virtualOutbound-catchall-tcp", filters=[tcp_proxy_filter(target, [(target, 1)])]
        ),
    )
    listener.use_original_dst.value = True
    return listener


def _bind_false(listener: listener_pb2.Listener) -> listener_pb2.Listener:
    listener.bind_to_port.value = False
    return listener


def outbound_manager(port: int) -> hcm_pb2.HttpConnectionManager:
    """The outbound HCM of a port: RouteConfiguration ``<port>`` over ADS."""
    return http_manager(f"outbound_0.0.0.0_{port}", rds_name=str(port), policies=True, connect=True)


def sniff_http(listener: listener_pb2.Listener, port: int) -> listener_pb2.Listener:
    """Protocol sniffing on an outbound listener of opaque-TCP chains (a port with no declared protocol):
    each plain-text chain gets an HTTP twin that matches what the http_inspector reports for HTTP/1.1 or
    h2c and routes through RouteConfiguration ``<port>``; anything else stays TCP. TLS chains (matched by
    SNI) are left as they are."""
    twins = []
    plain = [c for c in listener.filter_chains if c.filter_chain_match.transport_protocol != "tls"]
    if listener.HasField("default_filter_chain"):
        plain.append(listener.default_filter_chain)
    for chain in plain:
        twin = listener_components_pb2.FilterChain(
            name=f"{chain.name}-http" if chain.name else "", filters=[hcm_filter(outbound_manager(port))]
        )
        twin.filter_chain_match.CopyFrom(chain.filter_chain_match)
        twin.filter_chain_match.application_protocols[:] = SNIFFED_HTTP
        twins.append(twin)
    chains = list(listener.filter_chains)
    del listener.filter_chains[:]
    listener.filter_chains.extend([*twins, *chains])
    _inspect(listener, HTTP_INSPECTOR, http_inspector_pb2.HttpInspector())
    return listener


def _inspect(listener: listener_pb2.Listener, name: str, config: object) -> None:
    if all(f.name != name for f in listener.listener_filters):
        listener.listener_filters.append(
            listener_components_pb2.ListenerFilter(name=name, typed_config=any_of(config))
        )


def outbound_http_listener(port: int) -> listener_pb2.Listener:
    """``0.0.0.0_<port>``: every HTTP service on this port, routed by the RouteConfiguration ``<port>``."""
    manager = outbound_manager(port)
    return _bind_false(
        listener_pb2.Listener(
            name=f"0.0.0.0_{port}",
            address=_address("0.0.0.0", port),
            traffic_direction=base_pb2.OUTBOUND,
            filter_chains=[listener_components_pb2.FilterChain(filters=[hcm_filter(manager)])],
        )
    )


def outbound_tcp_listener(
    address: str, port: int, stat_prefix: str, clusters: list[tuple[str, int]]
) -> listener_pb2.Listener:
    """``<vip>_<port>``: one opaque-TCP service port."""
    return _bind_false(
        listener_pb2.Listener(
            name=f"{address}_{port}",
            address=_address(address, port),
            traffic_direction=base_pb2.OUTBOUND,
            filter_chains=[
                listener_components_pb2.FilterChain(filters=[tcp_proxy_filter(stat_prefix, clusters)])
            ],
        )
    )


def virtual_inbound(
    ports: Iterable[tuple[int, MeshProtocol]], security: InboundSecurity | None = None
) -> listener_pb2.Listener:
    """The listener iptables sends inbound connections to: one chain per pod port (HTTP through an inline
    route to ``inbound|<port>||``, else opaque TCP; both, told apart by sniffing, when the port declares no
    protocol), the rest to InboundPassthroughCluster.

    Connections arrive by REDIRECT, so the original_dst listener filter recovers the port each chain matches
    on. (Not use_original_dst: that would hand inbound connections to the outbound ``0.0.0.0_<port>``.)
    With ``security`` (``controller.xds.security``) each port gets the chains of its mTLS mode and the
    workload's authorization filters, and the catch-all is chains too (no default chain to fall into).
    """
    chains = []
    sniffing = False
    for port, protocol in sorted(ports, key=lambda p: p[0]):
        cluster = inbound_name(port)
        make = _inbound_filters(cluster, port, protocol.is_http, security)
        if protocol.sniffed:
            sniffing = True
            make_http = _inbound_filters(cluster, port, True, security)
            chains += _sniffed_inbound(cluster, port, make, make_http, security)
            continue
        if security is None:
            chain = listener_components_pb2.FilterChain(name=cluster, filters=make(False))
            chain.filter_chain_match.destination_port.value = port
            chains.append(chain)
        else:
            chains += security.chains(cluster, port, security.mtls.for_port(port), make)
    listener = listener_pb2.Listener(
        name=VIRTUAL_INBOUND,
        address=_address("0.0.0.0", INBOUND_PORT),
        traffic_direction=base_pb2.INBOUND,
        listener_filters=[
            listener_components_pb2.ListenerFilter(
                name="envoy.filters.listener.original_dst",
                typed_config=any_of(original_dst_pb2.OriginalDst()),
            )
        ],
        filter_chains=chains,
    )
    catchall = _inbound_filters(INBOUND_PASSTHROUGH, None, False, security)
    if security is None:
        listener.default_filter_chain.CopyFrom(
            listener_components_pb2.FilterChain(name="virtualInbound-catchall", filters=catchall(False))
        )
    else:
        listener.listener_filters.append(
            listener_components_pb2.ListenerFilter(
                name="envoy.filters.listener.tls_inspector",
                typed_config=any_of(tls_inspector_pb2.TlsInspector()),
            )
        )
        listener.filter_chains.extend(
            security.chains("virtualInbound-catchall", None, security.mtls.mode, catchall)
        )
    if sniffing:
        _inspect(listener, HTTP_INSPECTOR, http_inspector_pb2.HttpInspector())
    return listener


def _sniffed_inbound(
    cluster: str,
    port: int,
    tcp: Callable[[bool], list[listener_components_pb2.Filter]],
    http: Callable[[bool], list[listener_components_pb2.Filter]],
    security: InboundSecurity | None,
) -> list[listener_components_pb2.FilterChain]:
    """A port with no declared protocol: HTTP chains for what is HTTP (plain text: what the http_inspector
    saw; mutual TLS: the ``istio-http/*``/``istio-h2`` ALPN the client's sidecar offers), TCP for the rest."""
    if security is None:
        http_chain = listener_components_pb2.FilterChain(name=f"{cluster}-http", filters=http(False))
        http_chain.filter_chain_match.destination_port.value = port
        http_chain.filter_chain_match.application_protocols.extend(SNIFFED_HTTP)
        tcp_chain = listener_components_pb2.FilterChain(name=cluster, filters=tcp(False))
        tcp_chain.filter_chain_match.destination_port.value = port
        return [http_chain, tcp_chain]
    mode = security.mtls.for_port(port)
    out = []
    for chain in security.chains(f"{cluster}-http", port, mode, http):
        match = chain.filter_chain_match
        if chain.HasField("transport_socket"):
            match.application_protocols[:] = MTLS_HTTP_ALPN
        elif match.transport_protocol == "tls":
            continue  # TLS the sidecar does not terminate is never HTTP it can see
        else:
            match.application_protocols[:] = SNIFFED_HTTP
        out.append(chain)
    for chain in security.chains(cluster, port, mode, tcp):
        if chain.HasField("transport_socket"):
            match = chain.filter_chain_match
            tcp_alpn = [a for a in match.application_protocols if a not in MTLS_HTTP_ALPN]
            match.application_protocols[:] = tcp_alpn
        out.append(chain)
    return out


def _inbound_filters(
    cluster: str, port: int | None, http: bool, security: InboundSecurity | None
) -> Callable[[bool], list[listener_components_pb2.Filter]]:
    """The network filters of an inbound chain, made per chain (mutual TLS or not)."""

    def make(mtls: bool) -> list[listener_components_pb2.Filter]:
        if not http:
            rbac = security.network_filters(cluster) if security is not None else []
            return [*rbac, tcp_proxy_filter(cluster, [(cluster, 1)])]
        route = rc.Route(
            name="default",
            match=rc.RouteMatch(prefix="/"),
            route=rc.RouteAction(cluster=cluster, timeout=proto_duration(0.0)),
        )
        tunnel = connect_route("connect", route=rc.RouteAction(cluster=cluster))
        config = route_pb2.RouteConfiguration(
            name=cluster,
            virtual_hosts=[
                rc.VirtualHost(name=f"inbound|http|{port}", domains=["*"], routes=[route, tunnel])
            ],
        )
        config.validate_clusters.value = False
        manager = http_manager(f"inbound_0.0.0.0_{port}", route_config=config, connect=True)
        if security is not None:
            # Istio's inbound: the application learns the caller (x-forwarded-client-cert).
            manager.forward_client_cert_details = hcm_pb2.HttpConnectionManager.APPEND_FORWARD
            details = manager.set_current_client_cert_details
            details.subject.value = True
            details.dns = True
            details.uri = True
            router = list(manager.http_filters)
            del manager.http_filters[:]
            manager.http_filters.extend([*security.http_filters(), *router])
        return [hcm_filter(manager)]

    return make
