"""Schemas and semantic checks for Istio's networking and security resources, as Mizzen reads them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from controller.model.policies import GRPC_CODES
from controller.validation.gateway import GATEWAY, PORT, PROTOCOLS
from controller.validation.schema import (
    Field,
    Issues,
    Unsupported,
    boolean,
    dns_label,
    duration,
    integer,
    ip_or_cidr,
    join,
    list_of,
    map_of,
    number,
    obj,
    port_number,
    regex,
    string,
)
from controller.validation.security import AUTHORIZATION_POLICY, CLIENT_TLS, PEER_AUTHENTICATION
from controller.validation.telemetry import MESH_CONFIG, TELEMETRY

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


def _settable_header(name: str) -> str | None:
    if name.startswith(":") or name.lower() == "host":
        return "pseudo-headers and Host cannot be changed this way (use rewrite.authority)"
    if any(c in name for c in " \t\r\n:"):
        return "not a valid header name"
    return None


def _header_value() -> Any:
    def check(value: Any, path: str, out: Issues) -> None:
        if not isinstance(value, str):
            out.error(path, f"must be a string, not {type(value).__name__}")
        elif "%" in value:
            out.error(path, "Envoy's %...% formatters in header values are not supported")
        elif any(c in value for c in "\r\n\x00"):
            out.error(path, "CR, LF and NUL are not allowed in header values")

    return check


HEADER_OPERATIONS = obj(
    {
        "set": map_of(_header_value(), key_check=_settable_header),
        "add": map_of(_header_value(), key_check=_settable_header),
        "remove": list_of(string(non_empty=True)),
    }
)
HEADERS = obj({"request": HEADER_OPERATIONS, "response": HEADER_OPERATIONS})

HTTP_ROUTE_DESTINATION = obj(
    {
        "destination": Field(DESTINATION, required=True),
        "weight": integer(minimum=0, maximum=100),
        "headers": HEADERS,
    }
)

HTTP_MATCH = obj(
    {
        "name": string(),
        "uri": STRING_MATCH,
        "scheme": STRING_MATCH,
        "method": STRING_MATCH,
        "authority": STRING_MATCH,
        "headers": map_of(STRING_MATCH, key_check=_lower_case_header),
        "queryParams": map_of(STRING_MATCH),
        "port": port_number(),
        "ignoreUriCase": boolean(),
        "gateways": list_of(string()),
        "withoutHeaders": map_of(STRING_MATCH, key_check=_lower_case_header),
        "sourceLabels": map_of(string()),
        "sourceNamespace": string(non_empty=True),
        "statPrefix": Unsupported(),
    }
)

RETRIES = obj(
    {
        "attempts": integer(minimum=0),
        "perTryTimeout": duration(),
        "retryOn": string(),
        "retryRemoteLocalities": Unsupported(),
        "backoff": duration(positive=True),
    }
)

_ACTIONS = ("route", "redirect", "directResponse", "delegate")


def _check_http_route(route: Mapping[str, Any], path: str, out: Issues) -> None:
    actions = [name for name in _ACTIONS if route.get(name)]
    if not actions:
        out.error(join(path, "route"), "is required (or one of redirect, directResponse, delegate)")
        return
    if len(actions) > 1:
        out.error(join(path, actions[1]), f"cannot be set together with {actions[0]}")
        return
    if route.get("delegate") and route.get("rewrite") is not None and route["rewrite"].get("uriRegexRewrite"):
        out.error(join(path, "rewrite.uriRegexRewrite"), "cannot be used with delegate")
    rewrite = route.get("rewrite") or {}
    if rewrite.get("uri") is not None and rewrite.get("uriRegexRewrite") is not None:
        out.error(join(path, "rewrite"), "uri and uriRegexRewrite cannot both be set")
    if route.get("redirect") and rewrite:
        out.error(join(path, "rewrite"), "cannot be combined with redirect")
    if route.get("mirror") and route.get("mirrors"):
        out.error(join(path, "mirrors"), "cannot be set together with mirror")
    if route.get("route"):
        _check_weights(route["route"], join(path, "route"), out)


def _check_weights(destinations: list[Any], path: str, out: Issues) -> None:
    if len(destinations) < 2:
        return
    total = sum(int(d.get("weight") or 0) for d in destinations)
    if total != 100:
        out.error(f"{path}[0].weight", f"weights must sum to 100 (they sum to {total})")


PERCENT = obj({"value": number(minimum=0, maximum=100)})


def _grpc_status() -> Any:
    def check(value: Any, path: str, out: Issues) -> None:
        text = str(value).strip()
        if not isinstance(value, str | int) or isinstance(value, bool):
            out.error(path, "must be a gRPC status name such as UNAVAILABLE")
        elif text.isdigit():
            if int(text) > 16:
                out.error(path, f"{text} is not a gRPC status code (0-16)")
        elif text.upper() not in GRPC_CODES:
            out.error(path, f"{value!r} is not a gRPC status ({', '.join(GRPC_CODES)})")

    return check


def _check_fault(fault: Mapping[str, Any], path: str, out: Issues) -> None:
    if fault.get("delay") is None and fault.get("abort") is None:
        out.error(path, "delay or abort is required")
    delay = fault.get("delay")
    if isinstance(delay, Mapping) and not delay.get("fixedDelay"):
        out.error(join(path, "delay.fixedDelay"), "is required")
    abort = fault.get("abort")
    if isinstance(abort, Mapping):
        kinds = [k for k in ("httpStatus", "grpcStatus") if abort.get(k) is not None]
        if not kinds:
            out.error(join(path, "abort"), "httpStatus or grpcStatus is required")
        elif len(kinds) > 1:
            out.error(join(path, "abort.grpcStatus"), "cannot be set together with httpStatus")


FAULT = obj(
    {
        "delay": obj(
            {
                "fixedDelay": duration(positive=True),
                "percentage": PERCENT,
                "percent": integer(minimum=0, maximum=100),
                "exponentialDelay": Unsupported(),
            }
        ),
        "abort": obj(
            {
                "httpStatus": integer(minimum=200, maximum=599),
                "grpcStatus": _grpc_status(),
                "http2Error": Unsupported(),
                "percentage": PERCENT,
            }
        ),
    },
    extra=_check_fault,
)

MIRROR_POLICY = obj({"destination": Field(DESTINATION, required=True), "percentage": PERCENT})


def _check_redirect(redirect: Mapping[str, Any], path: str, out: Issues) -> None:
    if redirect.get("port") is not None and redirect.get("derivePort") is not None:
        out.error(join(path, "derivePort"), "cannot be set together with port")
    code = redirect.get("redirectCode")
    if isinstance(code, int) and code not in (301, 302, 303, 307, 308):
        out.error(join(path, "redirectCode"), f"must be 301, 302, 303, 307 or 308 (got {code})")


REDIRECT = obj(
    {
        "uri": string(non_empty=True),
        "authority": string(non_empty=True),
        "port": port_number(),
        "derivePort": string(enum=("FROM_PROTOCOL_DEFAULT", "FROM_REQUEST_PORT")),
        "scheme": string(enum=("http", "https")),
        "redirectCode": integer(minimum=300, maximum=399),
    },
    extra=_check_redirect,
)


def _check_direct_body(body: Mapping[str, Any], path: str, out: Issues) -> None:
    if body.get("string") is not None and body.get("bytes") is not None:
        out.error(path, "string and bytes cannot both be set")
    if body.get("bytes") is not None:
        import base64
        import binascii

        try:
            base64.b64decode(str(body["bytes"]), validate=True)
        except (binascii.Error, ValueError):
            out.error(join(path, "bytes"), "must be base64")


DIRECT_RESPONSE = obj(
    {
        "status": Field(integer(minimum=200, maximum=599), required=True),
        "body": obj({"string": string(), "bytes": string()}, extra=_check_direct_body),
    }
)

CORS_POLICY = obj(
    {
        "allowOrigins": list_of(STRING_MATCH),
        "allowOrigin": list_of(string(non_empty=True)),
        "allowMethods": list_of(string(non_empty=True)),
        "allowHeaders": list_of(string(non_empty=True)),
        "exposeHeaders": list_of(string(non_empty=True)),
        "maxAge": duration(),
        "allowCredentials": boolean(),
        "unmatchedPreflights": string(enum=("UNSPECIFIED", "FORWARD", "IGNORE")),
    }
)

HTTP_ROUTE = obj(
    {
        "name": string(),
        "match": list_of(HTTP_MATCH),
        "route": list_of(HTTP_ROUTE_DESTINATION),
        "redirect": REDIRECT,
        "directResponse": DIRECT_RESPONSE,
        "delegate": obj({"name": Field(string(non_empty=True), required=True), "namespace": dns_label()}),
        "rewrite": obj(
            {
                "uri": string(),
                "authority": string(),
                "uriRegexRewrite": obj(
                    {"match": Field(regex(), required=True), "rewrite": Field(string(), required=True)}
                ),
            }
        ),
        "timeout": duration(),
        "retries": RETRIES,
        "fault": FAULT,
        "mirror": DESTINATION,
        "mirrors": list_of(MIRROR_POLICY),
        "mirrorPercentage": PERCENT,
        "mirrorPercent": integer(minimum=0, maximum=100),
        "mirror_percent": integer(minimum=0, maximum=100),
        "corsPolicy": CORS_POLICY,
        "headers": HEADERS,
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
        "sourceLabels": map_of(string()),
        "sourceNamespace": string(non_empty=True),
        "sourceSubnet": Unsupported(),
    }
)

TLS_MATCH = obj(
    {
        "sniHosts": Field(list_of(string(non_empty=True), min_items=1), required=True),
        "destinationSubnets": list_of(ip_or_cidr()),
        "port": port_number(),
        "gateways": list_of(string()),
        "sourceLabels": map_of(string()),
        "sourceNamespace": string(non_empty=True),
    }
)


def _check_tcp_route(route: Mapping[str, Any], path: str, out: Issues) -> None:
    _check_weights(route.get("route") or [], join(path, "route"), out)


TCP_ROUTE = obj(
    {"match": list_of(L4_MATCH), "route": Field(list_of(ROUTE_DESTINATION, min_items=1), required=True)},
    extra=_check_tcp_route,
)

TLS_ROUTE = obj(
    {
        "match": Field(list_of(TLS_MATCH, min_items=1), required=True),
        "route": Field(list_of(ROUTE_DESTINATION, min_items=1), required=True),
    },
    extra=_check_tcp_route,
)


def _check_virtual_service(spec: Mapping[str, Any], path: str, out: Issues) -> None:
    gateways = spec.get("gateways") or []
    hosts = spec.get("hosts") or []
    for i, host in enumerate(hosts):
        if host == "*" and (not gateways or "mesh" in gateways):
            out.error(f"hosts[{i}]", "the wildcard host '*' is not allowed for sidecars (gateway 'mesh')")
    if not spec.get("http") and not spec.get("tcp") and not spec.get("tls"):
        out.error("", "at least one of http, tcp or tls must be set")
    if not hosts:
        # A delegate VirtualService: only http rules, handed routes by a root, no delegation of its own.
        if spec.get("gateways"):
            out.error("gateways", "a delegate VirtualService (no hosts) cannot name gateways")
        if spec.get("tcp") or spec.get("tls"):
            out.error("tcp" if spec.get("tcp") else "tls", "a delegate VirtualService has http rules only")
        for i, route in enumerate(spec.get("http") or []):
            if isinstance(route, Mapping) and route.get("delegate"):
                out.error(f"http[{i}].delegate", "only one level of delegation is supported")


VIRTUAL_SERVICE = obj(
    {
        # Without hosts a VirtualService is a delegate, reached only from a root's http[].delegate.
        "hosts": list_of(string(non_empty=True)),
        "gateways": list_of(string(non_empty=True)),
        "http": list_of(HTTP_ROUTE),
        "tls": list_of(TLS_ROUTE),
        "tcp": list_of(TCP_ROUTE),
        "exportTo": list_of(string()),
    },
    extra=_check_virtual_service,
)


def _check_consistent_hash(raw: Mapping[str, Any], path: str, out: Issues) -> None:
    names = ("httpHeaderName", "httpCookie", "useSourceIp", "httpQueryParameterName")
    keys = [k for k in names if raw.get(k)]
    if len(keys) != 1:
        out.error(
            path,
            "exactly one of httpHeaderName, httpCookie, useSourceIp, httpQueryParameterName is required"
            + (f" (got {', '.join(keys)})" if keys else ""),
        )
    kinds = [k for k in ("ringHash", "maglev", "minimumRingSize") if raw.get(k) is not None]
    if len(kinds) > 1:
        out.error(join(path, kinds[1]), f"cannot be set together with {kinds[0]}")
    size = (raw.get("maglev") or {}).get("tableSize")
    if isinstance(size, int) and not isinstance(size, bool) and not _is_prime(size):
        out.error(join(path, "maglev.tableSize"), f"must be a prime number (got {size})")


def _is_prime(n: int) -> bool:
    return n >= 2 and all(n % d for d in range(2, int(n**0.5) + 1))


CONSISTENT_HASH = obj(
    {
        "httpHeaderName": string(non_empty=True),
        "httpCookie": obj(
            {"name": Field(string(non_empty=True), required=True), "path": string(), "ttl": duration()}
        ),
        "useSourceIp": boolean(),
        "httpQueryParameterName": string(non_empty=True),
        "ringHash": obj({"minimumRingSize": integer(minimum=1, maximum=8 * 1024 * 1024)}),
        "maglev": obj({"tableSize": integer(minimum=2, maximum=5000011)}),
        "minimumRingSize": integer(minimum=1, maximum=8 * 1024 * 1024),
    },
    extra=_check_consistent_hash,
)


def _check_locality(raw: Mapping[str, Any], path: str, out: Issues) -> None:
    if raw.get("distribute") and raw.get("failover"):
        out.error(join(path, "failover"), "cannot be set together with distribute")
    if raw.get("distribute") and raw.get("failoverPriority"):
        out.error(join(path, "failoverPriority"), "cannot be set together with distribute")
    for i, entry in enumerate(raw.get("distribute") or []):
        to = entry.get("to") if isinstance(entry, Mapping) else None
        if isinstance(to, Mapping) and sum(int(v) for v in to.values() if isinstance(v, int)) != 100:
            out.error(f"{path}.distribute[{i}].to", "weights must sum to 100")


LOCALITY_LB = obj(
    {
        "enabled": boolean(),
        "distribute": list_of(
            obj(
                {
                    "from": Field(string(non_empty=True), required=True),
                    "to": Field(map_of(integer(minimum=0, maximum=100)), required=True),
                }
            )
        ),
        "failover": list_of(
            obj(
                {
                    "from": Field(string(non_empty=True), required=True),
                    "to": Field(string(non_empty=True), required=True),
                }
            )
        ),
        "failoverPriority": list_of(string(non_empty=True)),
    },
    extra=_check_locality,
)


def _check_load_balancer(raw: Mapping[str, Any], path: str, out: Issues) -> None:
    if raw.get("simple") is not None and raw.get("consistentHash") is not None:
        out.error(join(path, "consistentHash"), "cannot be set together with simple")


LOAD_BALANCER = obj(
    {
        "simple": string(enum=LB_SIMPLE),
        "consistentHash": CONSISTENT_HASH,
        "localityLbSetting": LOCALITY_LB,
        "warmupDurationSecs": Unsupported(),
        "warmup": Unsupported(),
    },
    extra=_check_load_balancer,
)

CONNECTION_POOL = obj(
    {
        "tcp": obj(
            {
                "maxConnections": integer(minimum=0),
                "connectTimeout": duration(positive=True),
                "tcpKeepalive": obj(
                    {"probes": integer(minimum=0), "time": duration(), "interval": duration()}
                ),
                "maxConnectionDuration": duration(positive=True),
                "idleTimeout": duration(),
            }
        ),
        "http": obj(
            {
                "http1MaxPendingRequests": integer(minimum=0),
                "http2MaxRequests": integer(minimum=0),
                "maxRequestsPerConnection": integer(minimum=0),
                "maxRetries": integer(minimum=0),
                "idleTimeout": duration(),
                "h2UpgradePolicy": string(enum=("DEFAULT", "DO_NOT_UPGRADE", "UPGRADE")),
                "useClientProtocol": boolean(),
                "maxConcurrentStreams": integer(minimum=1),
            }
        ),
    }
)


def _check_outlier(raw: Mapping[str, Any], path: str, out: Issues) -> None:
    split = raw.get("splitExternalLocalOriginErrors")
    if raw.get("consecutiveLocalOriginFailures") is not None and not split:
        out.warn(
            join(path, "consecutiveLocalOriginFailures"),
            "has no effect unless splitExternalLocalOriginErrors is true",
        )


OUTLIER_DETECTION = obj(
    {
        "consecutive5xxErrors": integer(minimum=0),
        "consecutiveErrors": integer(minimum=0),
        "consecutiveGatewayErrors": integer(minimum=0),
        "consecutiveLocalOriginFailures": integer(minimum=0),
        "splitExternalLocalOriginErrors": boolean(),
        "interval": duration(positive=True),
        "baseEjectionTime": duration(positive=True),
        "maxEjectionPercent": integer(minimum=0, maximum=100),
        "minHealthPercent": integer(minimum=0, maximum=100),
    },
    extra=_check_outlier,
)

_POLICY_FIELDS: dict[str, Any] = {
    "loadBalancer": LOAD_BALANCER,
    "connectionPool": CONNECTION_POOL,
    "outlierDetection": OUTLIER_DETECTION,
    "tls": CLIENT_TLS,
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
        "serviceAccount": string(non_empty=True),
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
    if spec.get("workloadSelector"):
        if endpoints:
            out.error("workloadSelector", "endpoints and workloadSelector cannot both be set")
        if resolution != "STATIC":
            out.error(
                "resolution", "must be STATIC with a workloadSelector (its endpoints are pod addresses)"
            )
        if (spec.get("location") or "MESH_EXTERNAL") != "MESH_INTERNAL":
            out.error("location", "must be MESH_INTERNAL with a workloadSelector (it selects mesh workloads)")


SERVICE_ENTRY = obj(
    {
        "hosts": Field(list_of(string(non_empty=True), min_items=1), required=True),
        "addresses": list_of(ip_or_cidr()),
        "ports": list_of(SERVICE_ENTRY_PORT),
        "location": string(enum=("MESH_EXTERNAL", "MESH_INTERNAL")),
        "resolution": string(enum=("NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN")),
        "endpoints": list_of(WORKLOAD_ENTRY),
        "workloadSelector": obj({"labels": Field(map_of(string()), required=True)}),
        "exportTo": list_of(string()),
        "subjectAltNames": list_of(string(non_empty=True)),
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


def _default_endpoint() -> Any:
    def check(value: Any, path: str, out: Issues) -> None:
        host, sep, port = str(value).rpartition(":")
        if not sep or host not in ("127.0.0.1", "0.0.0.0") or not port.isdigit() or not 0 < int(port) < 65536:
            out.error(
                path,
                "must be 127.0.0.1:PORT (the app on loopback) or 0.0.0.0:PORT (the pod's address); "
                f"got {value!r}"
                + (" (unix sockets are not supported)" if str(value).startswith("unix://") else ""),
            )

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
        "ingress": list_of(
            obj(
                {
                    "port": Field(PORT, required=True),
                    "defaultEndpoint": _default_endpoint(),
                    "bind": Unsupported(),
                    "captureMode": Unsupported(),
                    "tls": Unsupported("TLS termination of inbound ports"),
                    "connectionPool": Unsupported(),
                }
            )
        ),
        "outboundTrafficPolicy": obj(
            {"mode": string(enum=("REGISTRY_ONLY", "ALLOW_ANY")), "egressProxy": Unsupported()}
        ),
        "inboundConnectionPool": Unsupported(),
    }
)


# Kept and versioned, but nothing is enforced from them yet; the user is told.
NOT_ENFORCED: dict[str, str] = {}

SPECS = {
    "VirtualService": VIRTUAL_SERVICE,
    "DestinationRule": DESTINATION_RULE,
    "ServiceEntry": SERVICE_ENTRY,
    "Sidecar": SIDECAR,
    "Gateway": GATEWAY,
    "PeerAuthentication": PEER_AUTHENTICATION,
    "AuthorizationPolicy": AUTHORIZATION_POLICY,
    "Telemetry": TELEMETRY,
    "MeshConfig": MESH_CONFIG,
}
