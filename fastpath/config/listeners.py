"""Listeners and their filter chains (TcpProxy or HttpConnectionManager) compiled for the runtime."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

from fastpath.access_log import AccessLog
from fastpath.config.errors import Resource, join
from fastpath.config.hcm import HcmConfig, compile_access_log, compile_hcm
from fastpath.config.routes import seconds
from fastpath.config.tls import DownstreamTls, compile_downstream_socket
from fastpath.filters import rbac as _http_rbac  # noqa: F401 - registers envoy.filters.http.rbac
from fastpath.rbac import RbacEngine, compile_rbac

TCP_PROXY = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
HTTP_CONNECTION_MANAGER = (
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
)
NETWORK_RBAC = "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC"
ORIGINAL_DST_FILTER = "type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst"
TLS_INSPECTOR = "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"
HTTP_INSPECTOR = "type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector"
_LISTENER_FILTERS = {
    ORIGINAL_DST_FILTER: "original_dst",
    "envoy.filters.listener.original_dst": "original_dst",
    TLS_INSPECTOR: "tls",
    "envoy.filters.listener.tls_inspector": "tls",
    HTTP_INSPECTOR: "http",
    "envoy.filters.listener.http_inspector": "http",
}

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_LISTENER_FIELDS = {
    "name",
    "address",
    "filter_chains",
    "use_original_dst",
    "default_filter_chain",
    "listener_filters",
    "traffic_direction",
    "bind_to_port",
    "metadata",
    "per_connection_buffer_limit_bytes",
    "continue_on_listener_filters_timeout",
    "listener_filters_timeout",
    "stat_prefix",
    "access_log",
}
_CHAIN_FIELDS = {"filter_chain_match", "filters", "name", "metadata", "transport_socket"}
_TCP_FIELDS = {
    "stat_prefix",
    "cluster",
    "weighted_clusters",
    "idle_timeout",
    "access_log",
    "max_connect_attempts",
}


@dataclass(frozen=True, slots=True)
class TcpProxyConfig:
    """The TcpProxy network filter: one cluster, or weighted clusters."""

    stat_prefix: str
    clusters: tuple[tuple[str, int], ...]  # (cluster, weight)
    idle_timeout: float | None = 3600.0  # Envoy's default; None disables it
    max_connect_attempts: int = 1
    access_logs: tuple[AccessLog, ...] = ()

    def pick(self, rand: float) -> str:
        """The cluster for a connection, ``rand`` uniform in [0, 1)."""
        if len(self.clusters) == 1:
            return self.clusters[0][0]
        total = sum(w for _, w in self.clusters)
        point = rand * total
        for name, weight in self.clusters:
            point -= weight
            if point < 0:
                return name
        return self.clusters[-1][0]


@dataclass(frozen=True, slots=True)
class ChainMatch:
    destination_port: int | None = None
    prefix_ranges: tuple[Network, ...] = ()
    server_names: tuple[str, ...] = ()  # exact names, or "*.suffix" wildcards
    transport_protocol: str = ""  # "tls" or "raw_buffer" (tls_inspector)
    application_protocols: tuple[str, ...] = ()  # ALPN, or http_inspector's "http/1.1" / "h2c"

    def prefix_len(self, ip: str) -> int:
        """The longest of our ranges holding ``ip``; -1 if none does (or there are none)."""
        if not self.prefix_ranges:
            return -1
        addr = ipaddress.ip_address(ip)
        return max(
            (n.prefixlen for n in self.prefix_ranges if addr.version == n.version and addr in n), default=-1
        )

    def name_rank(self, sni: str) -> int:
        """How well ``sni`` matches our server names: longer matches rank higher; -1 if none matches."""
        best = -1
        for name in self.server_names:
            if name == sni:
                return 1 << 16
            if name.startswith("*.") and sni.endswith(name[1:]) and len(sni) > len(name) - 1:
                best = max(best, len(name))
        return best


@dataclass(frozen=True, slots=True)
class FilterChainConfig:
    name: str
    match: ChainMatch
    tcp_proxy: TcpProxyConfig | None = None
    http: HcmConfig | None = None
    tls: DownstreamTls | None = None  # terminate TLS (transport_socket) before the filters
    rbac: tuple[RbacEngine, ...] = ()  # network RBAC filters, in order, before the terminal filter


@dataclass(frozen=True, slots=True)
class ListenerConfig:
    name: str
    host: str
    port: int
    bind_to_port: bool = True
    use_original_dst: bool = False  # hand connections to the listener of their original destination
    original_dst_filter: bool = False  # match chains against the original destination
    filter_chains: tuple[FilterChainConfig, ...] = ()
    default_chain: FilterChainConfig | None = None
    direction: str = "UNSPECIFIED"
    fingerprint: bytes = b""

    inspect_tls: bool = False  # tls_inspector: wait for a ClientHello (SNI, ALPN) before choosing a chain
    inspect_http: bool = False  # http_inspector: tell HTTP/1.x and HTTP/2 from other bytes
    filters_timeout: float = 15.0  # listener_filters_timeout
    continue_on_timeout: bool = False

    @property
    def inspects(self) -> bool:
        return self.inspect_tls or self.inspect_http

    def select_chain(
        self, ip: str, port: int, sni: str = "", transport: str = "", alpn: tuple[str, ...] = ()
    ) -> FilterChainConfig | None:
        """The filter chain for the connection (Envoy's matching), else the default chain."""
        return select_chain(self.filter_chains, ip, port, sni, transport, alpn) or self.default_chain

    def chains(self) -> list[FilterChainConfig]:
        return [*self.filter_chains, *([self.default_chain] if self.default_chain else [])]


def select_chain(
    chains: tuple[FilterChainConfig, ...],
    ip: str,
    port: int,
    sni: str = "",
    transport: str = "",
    alpn: tuple[str, ...] = (),
) -> FilterChainConfig | None:
    """Envoy's filter chain match, level by level: destination port, destination IP (longest prefix),
    server name (exact, then the longest wildcard), transport protocol, application protocols. At each
    level the chains that name a matching value win; chains that leave it unset come next; others drop."""
    c = [x for x in chains if x.match.destination_port == port] or [
        x for x in chains if x.match.destination_port is None
    ]
    lens = [x.match.prefix_len(ip) for x in c]
    best = max(lens, default=-1)
    if best >= 0:
        c = [x for x, n in zip(c, lens, strict=True) if n == best]
    else:
        c = [x for x in c if not x.match.prefix_ranges]
    ranks = [x.match.name_rank(sni) if sni else -1 for x in c]
    top = max(ranks, default=-1)
    if top >= 0:
        c = [x for x, r in zip(c, ranks, strict=True) if r == top]
    else:
        c = [x for x in c if not x.match.server_names]
    c = [x for x in c if x.match.transport_protocol == transport] or [
        x for x in c if not x.match.transport_protocol
    ]
    # Application protocols in the client's order (Envoy's rule): the first the client offers that some
    # chain names picks those chains; none: the chains that name none.
    for proto in alpn:
        named = [x for x in c if proto in x.match.application_protocols]
        if named:
            return named[0]
    c = [x for x in c if not x.match.application_protocols]
    return c[0] if c else None


def _compile_match(res: Resource, path: str, m: listener_components_pb2.FilterChainMatch) -> ChainMatch:
    res.reject_unsupported(
        m,
        path,
        {"destination_port", "prefix_ranges", "server_names", "transport_protocol", "application_protocols"},
    )
    if m.transport_protocol not in ("", "tls", "raw_buffer"):
        raise res.error(join(path, "transport_protocol"), f"{m.transport_protocol!r}: tls or raw_buffer")
    for i, name in enumerate(m.server_names):
        if "*" in name and not (name.startswith("*.") and "*" not in name[1:]):
            raise res.error(f"{path}.server_names[{i}]", f"{name!r}: only a leading '*.' wildcard")
    ranges: list[Network] = []
    for i, cidr in enumerate(m.prefix_ranges):
        try:
            ranges.append(
                ipaddress.ip_network(f"{cidr.address_prefix}/{cidr.prefix_len.value}", strict=False)
            )
        except ValueError as exc:
            raise res.error(f"{path}.prefix_ranges[{i}]", str(exc)) from None
    return ChainMatch(
        m.destination_port.value if m.HasField("destination_port") else None,
        tuple(ranges),
        tuple(n.lower() for n in m.server_names),
        m.transport_protocol,
        tuple(m.application_protocols),
    )


def _compile_tcp(res: Resource, path: str, tp: tcp_proxy_pb2.TcpProxy) -> TcpProxyConfig:
    res.reject_unsupported(tp, path, _TCP_FIELDS)
    if tp.HasField("weighted_clusters"):
        weighted = tuple((w.name, w.weight) for w in tp.weighted_clusters.clusters)
        if not weighted or sum(w for _, w in weighted) <= 0:
            raise res.error(join(path, "weighted_clusters"), "weights must sum above 0")
        clusters = weighted
    elif tp.cluster:
        clusters = ((tp.cluster, 1),)
    else:
        raise res.error(join(path, "cluster"), "required")
    idle: float | None = 3600.0
    if tp.HasField("idle_timeout"):
        idle = seconds(tp.idle_timeout) or None
    logs = tuple(compile_access_log(res, f"{path}.access_log[{i}]", a) for i, a in enumerate(tp.access_log))
    attempts = tp.max_connect_attempts.value if tp.HasField("max_connect_attempts") else 1
    return TcpProxyConfig(tp.stat_prefix, clusters, idle, max(1, attempts), logs)


def _compile_network_rbac(res: Resource, path: str, flt: listener_components_pb2.Filter) -> RbacEngine:
    from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as network_rbac_pb2

    cfg = network_rbac_pb2.RBAC()
    flt.typed_config.Unpack(cfg)
    p = join(path, "typed_config")
    res.reject_unsupported(cfg, p, {"rules", "stat_prefix"})
    if not cfg.HasField("rules"):
        raise res.error(join(p, "rules"), "required (mizzen-proxy has no shadow-only RBAC)")
    return compile_rbac(res, join(p, "rules"), cfg.rules)


def _compile_chain(res: Resource, path: str, fc: listener_components_pb2.FilterChain) -> FilterChainConfig:
    res.reject_unsupported(fc, path, _CHAIN_FIELDS)
    match = _compile_match(res, join(path, "filter_chain_match"), fc.filter_chain_match)
    tls = (
        compile_downstream_socket(res, join(path, "transport_socket"), fc.transport_socket)
        if fc.HasField("transport_socket")
        else None
    )
    rbac: list[RbacEngine] = []
    for i, flt in enumerate(fc.filters[:-1]):
        if flt.typed_config.type_url != NETWORK_RBAC:
            raise res.error(
                f"{path}.filters[{i}]",
                "only network RBAC filters may come before the terminal filter (tcp_proxy or "
                "http_connection_manager)",
            )
        rbac.append(_compile_network_rbac(res, f"{path}.filters[{i}]", flt))
    if not fc.filters:
        raise res.error(join(path, "filters"), "a terminal filter (tcp_proxy or http_connection_manager)")
    last = len(fc.filters) - 1
    flt = fc.filters[last]
    fpath = f"{path}.filters[{last}]"
    url = flt.typed_config.type_url
    if url == HTTP_CONNECTION_MANAGER:
        if rbac:
            raise res.error(
                f"{path}.filters[0]", "HTTP chains take RBAC as an HTTP filter (envoy.filters.http.rbac)"
            )
        h = hcm_pb2.HttpConnectionManager()
        flt.typed_config.Unpack(h)
        return FilterChainConfig(fc.name, match, http=compile_hcm(res, fpath, h), tls=tls)
    if url == TCP_PROXY:
        tp = tcp_proxy_pb2.TcpProxy()
        flt.typed_config.Unpack(tp)
        return FilterChainConfig(
            fc.name, match, tcp_proxy=_compile_tcp(res, fpath, tp), tls=tls, rbac=tuple(rbac)
        )
    raise res.error(join(fpath, "typed_config"), f"unsupported network filter {url or flt.name!r}")


def compile_listener(lst: listener_pb2.Listener) -> ListenerConfig:
    res = Resource("Listener", lst.name)
    if not lst.name:
        raise res.error("name", "required")
    res.reject_unsupported(lst, "", _LISTENER_FIELDS)
    if not lst.address.HasField("socket_address"):
        raise res.error("address", "a socket address is required")
    sock = lst.address.socket_address
    if lst.access_log:
        raise res.error("access_log", "listener access logs are not supported; use the filter's")
    kinds = set()
    for i, lf in enumerate(lst.listener_filters):
        kind = _LISTENER_FILTERS.get(lf.typed_config.type_url) or _LISTENER_FILTERS.get(lf.name)
        if kind is None:
            raise res.error(
                f"listener_filters[{i}]", f"{lf.name or lf.typed_config.type_url!r} is not supported"
            )
        if lf.HasField("filter_disabled"):
            raise res.error(f"listener_filters[{i}].filter_disabled", "not supported by mizzen-proxy")
        kinds.add(kind)
    all_chains = [
        *lst.filter_chains,
        *([lst.default_filter_chain] if lst.HasField("default_filter_chain") else []),
    ]
    for i, fc in enumerate(all_chains):
        m = fc.filter_chain_match
        if (m.server_names or m.transport_protocol) and "tls" not in kinds:
            raise res.error(
                f"filter_chains[{i}].filter_chain_match", "matching on TLS needs the tls_inspector"
            )
        if m.application_protocols and not kinds & {"tls", "http"}:
            raise res.error(
                f"filter_chains[{i}].filter_chain_match.application_protocols",
                "needs the tls_inspector or the http_inspector",
            )
    chains = tuple(_compile_chain(res, f"filter_chains[{i}]", fc) for i, fc in enumerate(lst.filter_chains))
    default = (
        _compile_chain(res, "default_filter_chain", lst.default_filter_chain)
        if lst.HasField("default_filter_chain")
        else None
    )
    return ListenerConfig(
        name=lst.name,
        host=sock.address,
        port=sock.port_value,
        bind_to_port=lst.bind_to_port.value if lst.HasField("bind_to_port") else True,
        use_original_dst=lst.use_original_dst.value,
        original_dst_filter="original_dst" in kinds,
        inspect_tls="tls" in kinds,
        inspect_http="http" in kinds,
        filters_timeout=seconds(lst.listener_filters_timeout)
        if lst.HasField("listener_filters_timeout")
        else 15.0,
        continue_on_timeout=lst.continue_on_listener_filters_timeout,
        filter_chains=chains,
        default_chain=default,
        direction={0: "UNSPECIFIED", 1: "INBOUND", 2: "OUTBOUND"}.get(lst.traffic_direction, "UNSPECIFIED"),
        fingerprint=lst.SerializeToString(deterministic=True),
    )
