"""CORS (Envoy's ``envoy.filters.http.cors``, Istio's VirtualService ``corsPolicy``).

Per route: a preflight (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``) from an allowed
origin is answered by the proxy itself; an actual request from an allowed origin goes on, and its response
gets ``Access-Control-Allow-Origin`` (and credentials / exposed headers). Requests from other origins pass
untouched, so the browser refuses the response; a preflight from another origin is forwarded unless the
policy says not to (Istio's ``unmatchedPreflights: IGNORE``), then it is answered without CORS headers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from envoy.extensions.filters.http.cors.v3 import cors_pb2
from google.protobuf import any_pb2

from fastpath import filters
from fastpath.config.errors import Resource, join
from fastpath.config.matchers import compile_string_matcher
from fastpath.config.routes import fraction

if TYPE_CHECKING:
    from fastpath.exchange import Exchange

FILTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"
POLICY_TYPE = "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy"

_POLICY_FIELDS = {
    "allow_origin_string_match",
    "allow_methods",
    "allow_headers",
    "expose_headers",
    "max_age",
    "allow_credentials",
    "filter_enabled",
    "allow_private_network_access",
    "forward_not_matching_preflights",
}


class CorsPolicy:
    __slots__ = (
        "allow_private_network",
        "credentials",
        "expose",
        "forward_unmatched",
        "headers",
        "max_age",
        "methods",
        "origins",
    )

    def __init__(self) -> None:
        self.origins: tuple[Any, ...] = ()
        self.methods = b""
        self.headers = b""
        self.expose = b""
        self.max_age = b""
        self.credentials = False
        self.allow_private_network = False
        self.forward_unmatched = True

    def allows(self, origin: str) -> bool:
        # Envoy: an origin matcher that accepts "*" accepts every origin.
        return any(test(origin) or test("*") for test in self.origins)


def compile_policy(res: Resource, path: str, config: any_pb2.Any) -> CorsPolicy:
    msg = cors_pb2.CorsPolicy()
    if not config.Unpack(msg):
        raise res.error(path, f"expected CorsPolicy, got {config.type_url}")
    res.reject_unsupported(msg, path, _POLICY_FIELDS)
    if msg.HasField("filter_enabled"):
        fe = msg.filter_enabled
        res.reject_unsupported(fe, join(path, "filter_enabled"), {"default_value", "runtime_key"})
        numerator, denominator = fraction(res, join(path, "filter_enabled.default_value"), fe.default_value)
        if numerator not in (0, denominator):
            raise res.error(join(path, "filter_enabled"), "only 0% or 100% (a policy is on or off)")
        if numerator == 0:
            return CorsPolicy()  # disabled: no origin is allowed, everything passes untouched
    out = CorsPolicy()
    out.origins = tuple(
        compile_string_matcher(res, f"{path}.allow_origin_string_match[{i}]", m)
        for i, m in enumerate(msg.allow_origin_string_match)
    )
    for name, value in (
        ("allow_methods", msg.allow_methods),
        ("allow_headers", msg.allow_headers),
        ("expose_headers", msg.expose_headers),
        ("max_age", msg.max_age),
    ):
        if any(c in value for c in "\r\n\x00"):
            raise res.error(join(path, name), "CR, LF and NUL are not allowed")
    if msg.max_age and not msg.max_age.isdigit():
        raise res.error(join(path, "max_age"), f"{msg.max_age!r} is not a number of seconds")
    out.methods = msg.allow_methods.encode()
    out.headers = msg.allow_headers.encode()
    out.expose = msg.expose_headers.encode()
    out.max_age = msg.max_age.encode()
    out.credentials = msg.allow_credentials.value
    out.allow_private_network = msg.allow_private_network_access.value
    if msg.HasField("forward_not_matching_preflights"):
        out.forward_unmatched = msg.forward_not_matching_preflights.value
    return out


class CorsFilter(filters.HttpFilter):
    name = "envoy.filters.http.cors"
    passive = True  # the filter's own config is empty: policies come from routes

    def on_request(self, exchange: Exchange) -> int:
        route = exchange.route
        policy: CorsPolicy | None = (
            route.typed_per_filter_config.get(self.name) if route is not None else None
        )
        if policy is None:
            return filters.CONTINUE
        head = exchange.head
        origin_bytes = head.get(b"origin")
        if not origin_bytes:
            return filters.CONTINUE
        origin = origin_bytes.decode("utf-8", "surrogateescape")
        preflight = head.method == b"OPTIONS" and bool(head.get(b"access-control-request-method"))
        if not policy.allows(origin):
            if preflight and not policy.forward_unmatched:
                exchange.local_reply(200, b"", "-", "cors_response")
                return filters.STOP
            return filters.CONTINUE
        allow = b"access-control-allow-origin: " + origin_bytes + b"\r\n"
        if policy.credentials:
            allow += b"access-control-allow-credentials: true\r\n"
        if not preflight:
            if policy.expose:
                allow += b"access-control-expose-headers: " + policy.expose + b"\r\n"
            exchange.response_extra += allow  # on the response, whoever makes it
            return filters.CONTINUE
        if policy.methods:
            allow += b"access-control-allow-methods: " + policy.methods + b"\r\n"
        if policy.headers:
            allow += b"access-control-allow-headers: " + policy.headers + b"\r\n"
        if policy.max_age:
            allow += b"access-control-max-age: " + policy.max_age + b"\r\n"
        if policy.allow_private_network and head.get(b"access-control-request-private-network") == b"true":
            allow += b"access-control-allow-private-network: true\r\n"
        exchange.local_reply(200, b"", "-", "cors_response", allow)
        return filters.STOP


@filters.register(FILTER_TYPE)
def _factory(res: Resource, path: str, config: any_pb2.Any) -> filters.HttpFilter:
    msg = cors_pb2.Cors()
    if not config.Unpack(msg):
        raise res.error(path, f"expected Cors, got {config.type_url}")
    res.reject_unsupported(msg, path, ())
    return CorsFilter()


filters.register_route_config(POLICY_TYPE)(compile_policy)
