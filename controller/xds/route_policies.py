"""A VirtualService route's policies as Envoy config: faults, CORS, mirrors, header changes, redirects,
direct responses, and the consistent-hash policy a DestinationRule puts on the routes to its host.

Fault and CORS travel as per-route filter config (``typed_per_filter_config``, keyed by the HCM filter
names below), which is how Istio writes them; the rest are fields of the Route / RouteAction.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.type.v3 import percent_pb2

from controller.model.istio import HTTPRoute
from controller.model.policies import ConsistentHash, CorsPolicy, DirectResponse, Fault, Headers, Redirect
from controller.xds.resources import any_of, proto_duration

FAULT_FILTER = "envoy.filters.http.fault"
CORS_FILTER = "envoy.filters.http.cors"

_REDIRECT_CODES = {
    301: rc.RedirectAction.MOVED_PERMANENTLY,
    302: rc.RedirectAction.FOUND,
    303: rc.RedirectAction.SEE_OTHER,
    307: rc.RedirectAction.TEMPORARY_REDIRECT,
    308: rc.RedirectAction.PERMANENT_REDIRECT,
}
REDIRECT_CODES = tuple(_REDIRECT_CODES)


def fractional(percent: float) -> percent_pb2.FractionalPercent:
    """Istio's 0-100 percentage as Envoy's fraction of a million (Istio's own conversion)."""
    numerator = max(0, min(1_000_000, round(percent * 10_000)))
    return percent_pb2.FractionalPercent(
        numerator=numerator, denominator=percent_pb2.FractionalPercent.MILLION
    )


def fault(f: Fault) -> fault_pb2.HTTPFault:
    out = fault_pb2.HTTPFault()
    if f.delay is not None:
        out.delay.fixed_delay.CopyFrom(proto_duration(f.delay))
        out.delay.percentage.CopyFrom(fractional(f.delay_percent))
    if f.abort_http is not None or f.abort_grpc is not None:
        if f.abort_grpc is not None:
            out.abort.grpc_status = f.abort_grpc
        else:
            out.abort.http_status = f.abort_http  # type: ignore[assignment]
        out.abort.percentage.CopyFrom(fractional(f.abort_percent))
    return out


def cors(c: CorsPolicy, string_matcher: Callable[[Any], Any]) -> cors_pb2.CorsPolicy:
    out = cors_pb2.CorsPolicy(
        allow_origin_string_match=[string_matcher(m) for m in c.allow_origins],
        allow_methods=",".join(c.allow_methods),
        allow_headers=",".join(c.allow_headers),
        expose_headers=",".join(c.expose_headers),
    )
    if c.max_age is not None:
        out.max_age = str(int(c.max_age.seconds))
    if c.allow_credentials is not None:
        out.allow_credentials.value = c.allow_credentials
    out.filter_enabled.default_value.CopyFrom(
        percent_pb2.FractionalPercent(numerator=100, denominator=percent_pb2.FractionalPercent.HUNDRED)
    )
    # FORWARD (Istio's default): a preflight from an origin the policy does not allow goes upstream.
    out.forward_not_matching_preflights.value = c.unmatched_preflights != "IGNORE"
    return out


def per_filter_config(rule: HTTPRoute, string_matcher: Callable[[Any], Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if rule.fault is not None:
        out[FAULT_FILTER] = any_of(fault(rule.fault))
    if rule.cors is not None:
        out[CORS_FILTER] = any_of(cors(rule.cors, string_matcher))
    return out


def mirror_policy(cluster: str, percent: float) -> rc.RouteAction.RequestMirrorPolicy:
    policy = rc.RouteAction.RequestMirrorPolicy(cluster=cluster)
    policy.runtime_fraction.default_value.CopyFrom(fractional(percent))
    return policy


def _options(values: Any, append: bool) -> list[base_pb2.HeaderValueOption]:
    action = (
        base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD
        if append
        else base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
    )
    return [
        base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=k, value=values[k]), append_action=action)
        for k in sorted(values)
    ]


class HeaderChanges:
    """Header operations in Envoy's four lists, ready to be put on a Route or a weighted cluster."""

    def __init__(self, *headers: Headers | None) -> None:
        self.request_add: list[base_pb2.HeaderValueOption] = []
        self.request_remove: list[str] = []
        self.response_add: list[base_pb2.HeaderValueOption] = []
        self.response_remove: list[str] = []
        for h in headers:
            if h is None:
                continue
            if h.request is not None:
                self.request_add += _options(h.request.set, False) + _options(h.request.add, True)
                self.request_remove += list(h.request.remove)
            if h.response is not None:
                self.response_add += _options(h.response.set, False) + _options(h.response.add, True)
                self.response_remove += list(h.response.remove)

    def __bool__(self) -> bool:
        return bool(self.request_add or self.request_remove or self.response_add or self.response_remove)

    def apply(self, target: Any) -> None:
        """Put the changes on a Route or a WeightedCluster.ClusterWeight (both have the four fields)."""
        target.request_headers_to_add.extend(self.request_add)
        target.request_headers_to_remove.extend(self.request_remove)
        target.response_headers_to_add.extend(self.response_add)
        target.response_headers_to_remove.extend(self.response_remove)


def redirect(r: Redirect) -> rc.RedirectAction:
    out = rc.RedirectAction(response_code=_REDIRECT_CODES.get(r.code, rc.RedirectAction.MOVED_PERMANENTLY))
    if r.uri:
        out.path_redirect = r.uri
    if r.authority:
        out.host_redirect = r.authority
    if r.scheme:
        out.scheme_redirect = r.scheme
    if r.port is not None:
        out.port_redirect = r.port
    elif r.derive_port == "FROM_PROTOCOL_DEFAULT":
        out.port_redirect = 443 if r.scheme == "https" else 80
    return out


def direct_response(d: DirectResponse) -> rc.DirectResponseAction:
    out = rc.DirectResponseAction(status=d.status)
    if d.body is not None:
        try:
            out.body.inline_string = d.body.decode()
        except UnicodeDecodeError:
            out.body.inline_bytes = d.body
    return out


def hash_policy(ch: ConsistentHash) -> rc.RouteAction.HashPolicy:
    policy = rc.RouteAction.HashPolicy()
    if ch.header:
        policy.header.header_name = ch.header
    elif ch.cookie:
        policy.cookie.name = ch.cookie
        if ch.cookie_path:
            policy.cookie.path = ch.cookie_path
        if ch.cookie_ttl is not None:
            policy.cookie.ttl.CopyFrom(proto_duration(ch.cookie_ttl))
    elif ch.source_ip:
        policy.connection_properties.source_ip = True
    elif ch.query_parameter:
        policy.query_parameter.name = ch.query_parameter
    return policy
