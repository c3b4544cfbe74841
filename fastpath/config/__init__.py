"""Envoy v3 resources compiled into the sidecar's runtime tables.

The proxy implements the subset of Envoy's config that the controller emits. What it cannot honour is
rejected with a ``ConfigError`` naming the resource and the field, which the xDS client sends back as the
NACK's error_detail; the proxy then keeps serving its last good ``ProxyConfig``. Compiled objects are
immutable: a new config is swapped in whole, and requests in flight keep the one they started with.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2

from fastpath.config.clusters import ClusterConfig, Endpoint, compile_cluster, compile_endpoints
from fastpath.config.errors import ConfigError, Resource
from fastpath.config.listeners import FilterChainConfig, ListenerConfig, TcpProxyConfig, compile_listener
from fastpath.config.routes import compile_route_config
from fastpath.routing import RouteTable

LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"

MESSAGE_TYPES: dict[str, Any] = {
    LISTENER: listener_pb2.Listener,
    ROUTE: route_pb2.RouteConfiguration,
    CLUSTER: cluster_pb2.Cluster,
    ENDPOINT: endpoint_pb2.ClusterLoadAssignment,
}
SHORT = {LISTENER: "listeners", ROUTE: "routes", CLUSTER: "clusters", ENDPOINT: "endpoints"}

__all__ = [
    "CLUSTER",
    "ENDPOINT",
    "LISTENER",
    "ROUTE",
    "ClusterConfig",
    "ConfigError",
    "Endpoint",
    "FilterChainConfig",
    "ListenerConfig",
    "ProxyConfig",
    "TcpProxyConfig",
    "build",
]

_versions = itertools.count(1)


def _name(type_url: str, msg: Any) -> str:
    return msg.cluster_name if type_url == ENDPOINT else msg.name


def _compile(type_url: str, msg: Any) -> Any:
    if type_url == LISTENER:
        return compile_listener(msg)
    if type_url == ROUTE:
        return compile_route_config(msg)
    if type_url == CLUSTER:
        return compile_cluster(msg)
    return compile_endpoints(msg)


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    """Everything the proxy runs on, swapped whole. Raw resources are kept for /config_dump."""

    listeners: Mapping[str, ListenerConfig] = field(default_factory=dict)
    routes: Mapping[str, RouteTable] = field(default_factory=dict)
    clusters: Mapping[str, ClusterConfig] = field(default_factory=dict)
    endpoints: Mapping[str, tuple[Endpoint, ...]] = field(default_factory=dict)  # EDS, by service name
    raw: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # type URL -> name -> message
    version: int = field(default_factory=lambda: next(_versions))

    def handoff(self, ip: str, port: int) -> ListenerConfig | None:
        """The listener an original-destination listener hands a connection to: exact address, then
        the wildcard address on the same port (Envoy's use_original_dst)."""
        exact = wildcard = None
        for lst in self.listeners.values():
            if lst.bind_to_port or lst.port != port:
                continue
            if lst.host == ip:
                exact = lst
            elif lst.host in ("0.0.0.0", "::"):
                wildcard = lst
        return exact or wildcard

    def endpoints_of(self, cluster: ClusterConfig) -> tuple[Endpoint, ...]:
        if cluster.discovery == "EDS":
            return self.endpoints.get(cluster.eds_service_name, ())
        return cluster.endpoints

    def with_changes(
        self, type_url: str, updated: Iterable[Any], removed: Iterable[str] = (), replace_all: bool = False
    ) -> ProxyConfig:
        """A new config with ``updated`` resources of one type compiled in and ``removed`` ones dropped
        (every other resource of the type too, when ``replace_all``: a state-of-the-world update).
        Raises ``ConfigError`` for the first resource it cannot apply; ``self`` is untouched."""
        attr = SHORT[type_url]
        compiled = {} if replace_all else dict(getattr(self, attr))
        raw = {} if replace_all else dict(self.raw.get(type_url, {}))
        for name in removed:
            compiled.pop(name, None)
            raw.pop(name, None)
        for msg in updated:
            name = _name(type_url, msg)
            compiled[name] = _compile(type_url, msg)
            raw[name] = msg
        all_raw = dict(self.raw)
        all_raw[type_url] = raw
        return replace(self, **{attr: compiled}, raw=all_raw, version=next(_versions))


def build(
    listeners: Iterable[listener_pb2.Listener] = (),
    clusters: Iterable[cluster_pb2.Cluster] = (),
    assignments: Iterable[endpoint_pb2.ClusterLoadAssignment] = (),
    routes: Iterable[route_pb2.RouteConfiguration] = (),
    *,
    static: bool = True,
) -> ProxyConfig:
    """Compile a full set of resources; raises ConfigError on the first resource it cannot apply.

    ``static``: a bootstrap's own resources, which Envoy checks as a whole: every cluster a listener or
    inline route names must exist (over xDS, clusters may arrive after the listeners that use them)."""
    cfg = ProxyConfig()
    for type_url, msgs in (
        (CLUSTER, clusters),
        (ENDPOINT, assignments),
        (ROUTE, routes),
        (LISTENER, listeners),
    ):
        cfg = cfg.with_changes(type_url, list(msgs))
    if static:
        for lst in cfg.listeners.values():
            for chain in lst.chains():
                names: list[str] = []
                if chain.tcp_proxy is not None:
                    names = [n for n, _ in chain.tcp_proxy.clusters]
                elif chain.http is not None and chain.http.route_table is not None:
                    names = _route_clusters(chain.http.route_table)
                for name in names:
                    if name not in cfg.clusters:
                        raise Resource("Listener", lst.name).error(
                            f"filter chain {chain.name!r}", f"unknown cluster {name}"
                        )
    return cfg


def _route_clusters(table: RouteTable) -> list[str]:
    vhosts = {
        id(v): v
        for v in [
            *table.exact.values(),
            *(v for _, v in table.suffixes),
            *(v for _, v in table.prefixes),
            *([table.default] if table.default else []),
        ]
    }
    out: list[str] = []
    for vh in vhosts.values():
        for route in vh.routes:
            if route.action is not None:
                out += [route.action.cluster] if route.action.cluster else list(route.action.weighted.names)  # type: ignore[union-attr]
    return out
