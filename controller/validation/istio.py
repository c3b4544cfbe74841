"""Schemas and semantic checks for Istio's networking and security resources, as Mizzen reads them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from controller.validation.schema import (
    Field,
    Issues,
    Unsupported,
    anything,
    boolean,
    dns_label,
    duration,
    integer,
    ip_or_cidr,
    join,
    list_of,
    map_of,
    obj,
    port_number,
    regex,
    string,
)

PROTOCOLS = ("HTTP", "HTTPS", "GRPC", "GRPC-WEB", "HTTP2", "MONGO", "TCP", "TLS", "MYSQL", "REDIS", "UDP")
LB_SIMPLE = ("UNSPECIFIED", "LEAST_CONN", "RANDOM", "PASSTHROUGH", "ROUND_ROBIN", "LEAST_REQUEST")


def _lower_case_header(name: str) -> str | None:
    return None if name == name.lower() else "header names must be lower case"


STRING_MATCH = obj(
    {"exact": string(), "prefix": string(), "regex": regex()}, one_of=[("exact", "prefix", "regex")]
)
PORT_SELECTOR = obj({"number": port_number()})

DESTINATION = obj(
    {
        "host": Field(string(non_empty=True), required=True),
        "subset": dns_label(),
        "port": PORT_SELECTOR,
    }
)

HTTP_ROUTE_DESTINATION = obj(
    {
        "destination": Field(DESTINATION, required=True),
        "weight": integer(minimum=0, maximum=100),
        "headers": Unsupported("header manipulation"),
    }
)

HTTP_MATCH = obj(
    {
        "name": string(),
        "uri": STRING_MATCH,
        "scheme": Unsupported(),
        "method": STRING_MATCH,
        "authority": STRING_MATCH,
        "headers": map_of(STRING_MATCH, key_check=_lower_case_header),
        "queryParams": map_of(STRING_MATCH),
        "port": port_number(),
        "ignoreUriCase": boolean(),
        "gateways": list_of(string()),
        "withoutHeaders": Unsupported(),
        "sourceLabels": Unsupported(),
        "sourceNamespace": Unsupported(),
        "statPrefix": Unsupported(),
    }
)

RETRIES = obj(
    {
        "attempts": integer(minimum=0),
        "perTryTimeout": duration(),
        "retryOn": string(),
        "retryRemoteLocalities": Unsupported(),
        "backoff": Unsupported(),
    }
)

_NON_ROUTE_ACTIONS = ("redirect", "directResponse", "delegate")


def _check_http_route(route: Mapping[str, Any], path: str, out: Issues) -> None:
    destinations = route.get("route") or []
    if not destinations:
        other = [name for name in _NON_ROUTE_ACTIONS if route.get(name) is not None]
        if other:
            out.warn(path, f"has no route destinations ({other[0]} is not supported); the rule is skipped")
        else:
            out.error(join(path, "route"), "is required (at least one destination)")
        return
    _check_weights(destinations, join(path, "route"), out)


def _check_weights(destinations: list[Any], path: str, out: Issues) -> None:
    if len(destinations) < 2:
        return
    total = sum(int(d.get("weight") or 0) for d in destinations)
    if total != 100:
        out.error(f"{path}[0].weight", f"weights must sum to 100 (they sum to {total})")


HTTP_ROUTE = obj(
    {
        "name": string(),
        "match": list_of(HTTP_MATCH),
        "route": list_of(HTTP_ROUTE_DESTINATION),
        "redirect": Unsupported(),
        "directResponse": Unsupported(),
        "delegate": Unsupported(),
        "rewrite": obj({"uri": string(), "authority": string(), "uriRegexRewrite": Unsupported()}),
        "timeout": duration(),
        "retries": RETRIES,
        "fault": Unsupported(),
        "mirror": Unsupported(),
        "mirrors": Unsupported(),
        "mirrorPercentage": Unsupported(),
        "mirrorPercent": Unsupported(),
        "mirror_percent": Unsupported(),
        "corsPolicy": Unsupported(),
        "headers": Unsupported("header manipulation"),
    },
    extra=_check_http_route,
)

ROUTE_DESTINATION = obj(
    {"destination": Field(DESTINATION, required=True), "weight": integer(minimum=0, maximum=100)}
)

L4_MATCH = obj(
    {
        "destinationSubnets": list_of(ip_or_cidr()),
        "port": port_number(),
        "gateways": list_of(string()),
        "sourceLabels": Unsupported(),
        "sourceNamespace": Unsupported(),
        "sourceSubnet": Unsupported(),
    }
)


def _check_tcp_route(route: Mapping[str, Any], path: str, out: Issues) -> None:
    _check_weights(route.get("route") or [], join(path, "route"), out)


TCP_ROUTE = obj(
    {"match": list_of(L4_MATCH), "route": Field(list_of(ROUTE_DESTINATION, min_items=1), required=True)},
    extra=_check_tcp_route,
)


def _check_virtual_service(spec: Mapping[str, Any], path: str, out: Issues) -> None:
    gateways = spec.get("gateways") or []
    for i, host in enumerate(spec.get("hosts") or []):
        if host == "*" and (not gateways or "mesh" in gateways):
            out.error(f"hosts[{i}]", "the wildcard host '*' is not allowed for sidecars (gateway 'mesh')")
    if not spec.get("http") and not spec.get("tcp") and not spec.get("tls"):
        out.error("", "at least one of http, tcp or tls must be set")


VIRTUAL_SERVICE = obj(
    {
        "hosts": Field(list_of(string(non_empty=True), min_items=1), required=True),
        "gateways": list_of(string(non_empty=True)),
        "http": list_of(HTTP_ROUTE),
        "tls": Unsupported("TLS routes by SNI"),
        "tcp": list_of(TCP_ROUTE),
        "exportTo": list_of(string()),
    },
    extra=_check_virtual_service,
)

LOAD_BALANCER = obj(
    {
        "simple": string(enum=LB_SIMPLE),
        "consistentHash": Unsupported(),
        "localityLbSetting": Unsupported(),
        "warmupDurationSecs": Unsupported(),
        "warmup": Unsupported(),
    }
)

CONNECTION_POOL = obj(
    {
        "tcp": obj(
            {
                "maxConnections": integer(minimum=0),
                "connectTimeout": duration(positive=True),
                "tcpKeepalive": Unsupported(),
                "maxConnectionDuration": Unsupported(),
                "idleTimeout": Unsupported(),
            }
        ),
        "http": obj(
            {
                "http1MaxPendingRequests": integer(minimum=0),
                "http2MaxRequests": integer(minimum=0),
                "maxRequestsPerConnection": Unsupported(),
                "maxRetries": integer(minimum=0),
                "idleTimeout": Unsupported(),
                "h2UpgradePolicy": Unsupported(),
                "useClientProtocol": Unsupported(),
                "maxConcurrentStreams": Unsupported(),
            }
        ),
    }
)

OUTLIER_DETECTION = obj(
    {
        "consecutive5xxErrors": integer(minimum=0),
        "consecutiveErrors": integer(minimum=0),
        "consecutiveGatewayErrors": integer(minimum=0),
        "consecutiveLocalOriginFailures": Unsupported(),
        "splitExternalLocalOriginErrors": Unsupported(),
        "interval": duration(positive=True),
        "baseEjectionTime": duration(positive=True),
        "maxEjectionPercent": integer(minimum=0, maximum=100),
        "minHealthPercent": integer(minimum=0, maximum=100),
    }
)

_POLICY_FIELDS: dict[str, Any] = {
    "loadBalancer": LOAD_BALANCER,
    "connectionPool": CONNECTION_POOL,
    "outlierDetection": OUTLIER_DETECTION,
    "tls": Unsupported("client TLS settings"),
}

PORT_TRAFFIC_POLICY = obj({"port": Field(PORT_SELECTOR, required=True), **_POLICY_FIELDS})

TRAFFIC_POLICY = obj(
    {
        **_POLICY_FIELDS,
        "portLevelSettings": list_of(PORT_TRAFFIC_POLICY),
        "tunnel": Unsupported(),
        "proxyProtocol": Unsupported(),
        "retryBudget": Unsupported(),
    }
)

SUBSET = obj(
    {
        "name": Field(dns_label(), required=True),
        "labels": map_of(string()),
        "trafficPolicy": TRAFFIC_POLICY,
    }
)


def _check_destination_rule(spec: Mapping[str, Any], path: str, out: Issues) -> None:
    seen: set[str] = set()
    for i, subset in enumerate(spec.get("subsets") or []):
        name = subset.get("name")
        if name in seen:
            out.error(f"subsets[{i}].name", f"duplicate subset name {name!r}")
        seen.add(name)


DESTINATION_RULE = obj(
    {
        "host": Field(string(non_empty=True), required=True),
        "trafficPolicy": TRAFFIC_POLICY,
        "subsets": list_of(SUBSET),
        "exportTo": list_of(string()),
        "workloadSelector": Unsupported(),
    },
    extra=_check_destination_rule,
)

SERVICE_ENTRY_PORT = obj(
    {
        "number": Field(port_number(), required=True),
        "protocol": string(enum=PROTOCOLS),
        "name": Field(string(non_empty=True), required=True),
        "targetPort": port_number(),
    }
)

WORKLOAD_ENTRY = obj(
    {
        "address": string(non_empty=True),
        "ports": map_of(port_number()),
        "labels": map_of(string()),
        "network": Unsupported(),
        "locality": string(),
        "weight": integer(minimum=0),
        "serviceAccount": Unsupported(),
    }
)


def _is_ip(text: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _check_service_entry(spec: Mapping[str, Any], path: str, out: Issues) -> None:
    resolution = spec.get("resolution") or "NONE"
    endpoints = spec.get("endpoints") or []
    for i, host in enumerate(spec.get("hosts") or []):
        if resolution in ("DNS", "DNS_ROUND_ROBIN") and host.startswith("*") and not endpoints:
            out.error(f"hosts[{i}]", "a wildcard host cannot be resolved by DNS without endpoints")
    if resolution == "STATIC":
        for i, ep in enumerate(endpoints):
            if not _is_ip(str(ep.get("address") or "")):
                out.error(f"endpoints[{i}].address", "resolution STATIC needs an IP address")
    if resolution == "NONE" and endpoints:
        out.error("endpoints", "endpoints are not allowed with resolution NONE")
    names = {p.get("name") for p in spec.get("ports") or []}
    for i, ep in enumerate(endpoints):
        for name in ep.get("ports") or {}:
            if name not in names:
                out.error(f"endpoints[{i}].ports[{name}]", "names no port of this ServiceEntry")


SERVICE_ENTRY = obj(
    {
        "hosts": Field(list_of(string(non_empty=True), min_items=1), required=True),
        "addresses": list_of(ip_or_cidr()),
        "ports": list_of(SERVICE_ENTRY_PORT),
        "location": string(enum=("MESH_EXTERNAL", "MESH_INTERNAL")),
        "resolution": string(enum=("NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN")),
        "endpoints": list_of(WORKLOAD_ENTRY),
        "workloadSelector": Unsupported("WorkloadEntry selection"),
        "exportTo": list_of(string()),
        "subjectAltNames": Unsupported(),
    },
    extra=_check_service_entry,
)


def _egress_host() -> Any:
    def check(value: Any, path: str, out: Issues) -> None:
        if not isinstance(value, str) or "/" not in value:
            out.error(path, f"must be namespace/host, e.g. ./* or istio-system/* (got {value!r})")
            return
        namespace, _, host = value.partition("/")
        if not namespace or not host:
            out.error(path, f"must be namespace/host with both parts set (got {value!r})")

    return check


SIDECAR = obj(
    {
        "workloadSelector": obj({"labels": Field(map_of(string()), required=True)}),
        "egress": list_of(
            obj(
                {
                    "hosts": Field(list_of(_egress_host(), min_items=1), required=True),
                    "port": Unsupported("per-port egress listeners"),
                    "bind": Unsupported(),
                    "captureMode": Unsupported(),
                }
            )
        ),
        "ingress": Unsupported(),
        "outboundTrafficPolicy": obj(
            {"mode": string(enum=("REGISTRY_ONLY", "ALLOW_ANY")), "egressProxy": Unsupported()}
        ),
        "inboundConnectionPool": Unsupported(),
    }
)

# Kept and versioned, but nothing is enforced from them yet; the user is told.
NOT_ENFORCED = {
    "Gateway": "Gateways are not served by Mizzen yet; this resource has no effect",
    "PeerAuthentication": "mutual TLS is not enforced by Mizzen yet; this resource has no effect",
    "AuthorizationPolicy": "authorization is not enforced by Mizzen yet; this resource has no effect",
}

SPECS = {
    "VirtualService": VIRTUAL_SERVICE,
    "DestinationRule": DESTINATION_RULE,
    "ServiceEntry": SERVICE_ENTRY,
    "Sidecar": SIDECAR,
    "Gateway": obj({"selector": map_of(string()), "servers": list_of(anything())}),
    "PeerAuthentication": obj(
        {
            "selector": anything(),
            "mtls": obj({"mode": string(enum=("UNSET", "DISABLE", "PERMISSIVE", "STRICT"))}),
            "portLevelMtls": anything(),
        }
    ),
    "AuthorizationPolicy": obj(
        {
            "selector": anything(),
            "targetRef": anything(),
            "targetRefs": anything(),
            "action": string(enum=("ALLOW", "DENY", "AUDIT", "CUSTOM")),
            "provider": anything(),
            "rules": list_of(anything()),
        }
    ),
}
