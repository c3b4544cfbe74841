"""Opaque TCP and TLS passthrough on the sidecar's outbound side: a listener per service port whose filter
chains come from the VirtualService's ``tcp`` rules (by destination subnet) or ``tls`` rules (by SNI, and
subnet), each proxying to its destinations by weight.

Without rules a port has one chain to the service itself. With rules, the chains are the rules' matches
in order; a match Envoy would find twice (same subnets and server names) keeps its first rule, as the
first matching rule wins in Istio. A TLS connection whose SNI no rule names finds no chain and is closed,
as in Envoy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

from controller.model.istio import L4Match, TCPRoute, VirtualService
from controller.model.values import Duration, FrozenMap
from controller.xds.clusters import outbound_name
from controller.xds.resources import any_of, proto_duration

TCP_PROXY = "envoy.filters.network.tcp_proxy"
TLS_INSPECTOR = "envoy.filters.listener.tls_inspector"


class TcpChain(NamedTuple):
    stat: str  # the TcpProxy stat prefix: the service's own cluster name
    targets: tuple[tuple[str, int], ...]  # (cluster, weight)
    subnets: tuple[str, ...] = ()  # destination CIDRs (filter_chain_match.prefix_ranges)
    sni: tuple[str, ...] = ()  # server names (filter_chain_match.server_names)
    idle: Duration | None = None  # the first destination's connectionPool.tcp.idleTimeout

    @property
    def key(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        return (self.subnets, self.sni)


class Client(NamedTuple):
    """Who the chains are for: match conditions about the client are decided at translation."""

    namespace: str = ""
    labels: FrozenMap[str] = FrozenMap()
    gateway: str = "mesh"


def _applies(m: L4Match, port: int, client: Client) -> bool:
    if m.port not in (None, port):
        return False
    if m.gateways and client.gateway not in m.gateways:
        return False
    if m.source_namespace is not None and m.source_namespace != client.namespace:
        return False
    return not m.source_labels or client.labels.matches(m.source_labels)


def chains(
    host: str,
    port: int,
    vs: VirtualService | None,
    client: Client,
    *,
    tls: bool,
    shared: bool = False,
    subnets: tuple[str, ...] = (),
    idle_for: Callable[[str, str | None, int], Duration | None] | None = None,
    own_port: Callable[[str, int | None], int] | None = None,
    fallback: bool = True,
) -> list[TcpChain]:
    """The chains of one service port: ``tls`` rules when the port carries TLS, else ``tcp`` rules, else
    one chain to the service. ``shared``: the port's listener is ``0.0.0.0_<port>`` (no VIP), where a TLS
    service without rules is told from others by SNI, its host name, and a TCP one by its ``subnets`` (a
    ServiceEntry's address ranges). ``own_port`` picks a destination's port when a rule gives none.
    Without ``fallback``, only what rules say: no chain to the service itself when none applies."""
    stat = outbound_name(port, None, host)
    rules: Sequence[TCPRoute] = ((vs.tls if tls else vs.tcp) if vs is not None else ()) or ()
    out: list[TcpChain] = []
    seen: set[tuple[tuple[str, ...], tuple[str, ...]]] = set()
    for rule in rules:
        matches: Iterable[L4Match | None] = [m for m in rule.matches if _applies(m, port, client)]
        if rule.matches and not matches:
            continue
        if not rule.matches:
            matches = [None]
        targets = []
        for d in rule.route:
            if d.weight <= 0:
                continue
            dest_port = d.destination.port
            if dest_port is None:
                dest_port = own_port(d.destination.host, None) if own_port is not None else port
            targets.append((outbound_name(dest_port, d.destination.subset, d.destination.host), d.weight))
        if not targets:
            continue
        first = rule.route[0].destination
        idle = idle_for(first.host, first.subset, port) if idle_for is not None else None
        for m in matches:
            chain = TcpChain(
                stat,
                tuple(targets),
                m.destination_subnets if m is not None else (),
                m.sni_hosts if m is not None else (),
                idle,
            )
            if chain.key in seen:
                continue
            seen.add(chain.key)
            out.append(chain)
    if not out and fallback and not (tls and rules):
        idle = idle_for(host, None, port) if idle_for is not None else None
        sni = (host,) if tls and shared else ()
        out.append(TcpChain(stat, ((stat, 100),), subnets if shared and not sni else (), sni, idle))
    return out


def tcp_proxy_filter(chain: TcpChain) -> listener_components_pb2.Filter:
    proxy = tcp_proxy_pb2.TcpProxy(stat_prefix=chain.stat)
    if len(chain.targets) == 1:
        proxy.cluster = chain.targets[0][0]
    else:
        for name, weight in chain.targets:
            proxy.weighted_clusters.clusters.add(name=name, weight=weight)
    if chain.idle is not None:
        proxy.idle_timeout.CopyFrom(proto_duration(chain.idle))
    return listener_components_pb2.Filter(name=TCP_PROXY, typed_config=any_of(proxy))


def filter_chain(chain: TcpChain) -> listener_components_pb2.FilterChain:
    out = listener_components_pb2.FilterChain(filters=[tcp_proxy_filter(chain)])
    match = out.filter_chain_match
    for cidr in chain.subnets:
        address, _, length = cidr.partition("/")
        prefix = match.prefix_ranges.add(address_prefix=address)
        prefix.prefix_len.value = int(length) if length else (128 if ":" in address else 32)
    if chain.sni:
        match.server_names.extend(chain.sni)
        match.transport_protocol = "tls"
    return out


def listener(
    address: str, port: int, port_chains: Sequence[TcpChain], fallback: str | None = None
) -> listener_pb2.Listener:
    """``<address>_<port>`` (bind_to_port false: the capture listener hands connections to it).
    ``fallback``: where connections no chain matches go (PassthroughCluster or BlackHoleCluster, as the
    capture listener would have sent them), for the shared ``0.0.0.0_<port>``."""
    out = listener_pb2.Listener(
        name=f"{address}_{port}",
        address=address_pb2.Address(
            socket_address=address_pb2.SocketAddress(address=address, port_value=port)
        ),
        traffic_direction=base_pb2.OUTBOUND,
        filter_chains=[filter_chain(c) for c in port_chains],
    )
    out.bind_to_port.value = False
    if fallback is not None:
        rest = TcpChain(fallback, ((fallback, 1),))
        out.default_filter_chain.CopyFrom(filter_chain(rest))
        out.default_filter_chain.name = f"{address}_{port}-fallthrough"
    if any(c.sni for c in port_chains):
        out.listener_filters.append(
            listener_components_pb2.ListenerFilter(
                name=TLS_INSPECTOR, typed_config=any_of(tls_inspector_pb2.TlsInspector())
            )
        )
    return out


def merge(per_host: Iterable[Sequence[TcpChain]]) -> list[TcpChain]:
    """The chains of several VIP-less hosts sharing ``0.0.0.0_<port>``: the first host (by name) keeps a
    match that two of them would make."""
    out: list[TcpChain] = []
    seen: set[tuple[tuple[str, ...], tuple[str, ...]]] = set()
    for host_chains in per_host:
        for chain in host_chains:
            if chain.key not in seen:
                seen.add(chain.key)
                out.append(chain)
    return out
