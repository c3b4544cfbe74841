"""Envoy v3 config as the controller will emit it, built as plain dicts for readable tests."""

from __future__ import annotations

from typing import Any

TCP_PROXY = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"


def addr(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def tcp_chain(
    cluster: str, *, port: int | None = None, name: str = "", idle: str | None = None
) -> dict[str, Any]:
    proxy: dict[str, Any] = {"@type": TCP_PROXY, "stat_prefix": cluster, "cluster": cluster}
    if idle is not None:
        proxy["idle_timeout"] = idle
    chain: dict[str, Any] = {
        "name": name or cluster,
        "filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": proxy}],
    }
    if port is not None:
        chain["filter_chain_match"] = {"destination_port": port}
    return chain


def static_cluster(name: str, *endpoints: tuple[str, int], timeout: str = "1s") -> dict[str, Any]:
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": timeout,
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": addr(h, p)}} for h, p in endpoints]}],
        },
    }


def original_dst_cluster(name: str, source: str | None = None) -> dict[str, Any]:
    cluster: dict[str, Any] = {
        "name": name,
        "type": "ORIGINAL_DST",
        "lb_policy": "CLUSTER_PROVIDED",
        "connect_timeout": "1s",
    }
    if source:
        cluster["upstream_bind_config"] = {"source_address": {"address": source, "port_value": 0}}
    return cluster


def bootstrap(listeners: list[dict[str, Any]], clusters: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "node": {"id": "sidecar~10.0.0.1~test.default~default.svc.cluster.local", "cluster": "test"},
        "static_resources": {"listeners": listeners, "clusters": clusters},
    }


HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"


def http_chain(
    routes: dict[str, Any] | None = None,
    *,
    rds: str | None = None,
    port: int | None = None,
    **hcm_fields: Any,
) -> dict[str, Any]:
    """A filter chain with an HttpConnectionManager: inline ``routes`` (a RouteConfiguration) or RDS."""
    hcm: dict[str, Any] = {
        "@type": HCM,
        "stat_prefix": "test",
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}}],
        **hcm_fields,
    }
    if rds is not None:
        hcm["rds"] = {"config_source": {"ads": {}, "resource_api_version": "V3"}, "route_config_name": rds}
    else:
        hcm["route_config"] = routes
    chain: dict[str, Any] = {
        "name": "http",
        "filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}],
    }
    if port is not None:
        chain["filter_chain_match"] = {"destination_port": port}
    return chain


def route_config(name: str, *vhosts: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "virtual_hosts": list(vhosts)}


def vhost(name: str, domains: list[str], *routes: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"name": name, "domains": domains, "routes": list(routes), **fields}


def route(
    cluster: str | None = None, *, prefix: str = "/", match: dict[str, Any] | None = None, **action: Any
) -> dict[str, Any]:
    out: dict[str, Any] = {"match": match or {"prefix": prefix}}
    if cluster is not None:
        out["route"] = {"cluster": cluster, **action}
    return out


def http_listener(name: str, host: str, port: int, chain: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "address": addr(host, port), "filter_chains": [chain]}
