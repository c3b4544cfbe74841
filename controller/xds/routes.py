"""RDS: virtual hosts and routes from VirtualServices, and the route configurations that hold them."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2

from controller.model.hosts import MESH_GATEWAY
from controller.model.istio import (
    DEFAULT_RETRY_ATTEMPTS,
    DEFAULT_RETRY_ON,
    HTTPMatch,
    HTTPRoute,
    VirtualService,
)
from controller.model.policies import ConsistentHash
from controller.model.values import FrozenMap, StringMatch
from controller.xds import delegate as delegation
from controller.xds import route_policies as pol
from controller.xds.clusters import PASSTHROUGH, outbound_name
from controller.xds.registry import MeshService
from controller.xds.resources import proto_duration, u32


def domains(service: MeshService, port: int, client_namespace: str) -> list[str]:
    """The names a client may use for a service, as Istio writes them: the FQDN, ``name.namespace`` and
    ``name.namespace.svc`` (the short ``name`` only for clients in the service's namespace, where the DNS
    search path makes it mean this service), and the addresses; each with and without ``:port``."""
    host = service.hostname
    names = [host]
    suffix = f".{service.namespace}.svc."
    if service.source.kind == "Service" and suffix in host:
        short = host.split(".", 1)[0]
        if client_namespace == service.namespace:
            names.append(short)
        names += [f"{short}.{service.namespace}", f"{short}.{service.namespace}.svc"]
    names += list(service.addresses)
    out: list[str] = []
    for name in names:
        out.append(name)
        out.append(f"{name}:{port}")
    return out


def _string_matcher(match: StringMatch, *, ignore_case: bool = False) -> string_pb2.StringMatcher:
    if match.kind == "exact":
        return string_pb2.StringMatcher(exact=match.value, ignore_case=ignore_case)
    if match.kind == "prefix":
        return string_pb2.StringMatcher(prefix=match.value, ignore_case=ignore_case)
    return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=match.value))


def _header(name: str, match: StringMatch) -> rc.HeaderMatcher:
    if match.kind == "regex" and match.value == ".*":
        return rc.HeaderMatcher(name=name, present_match=True)
    return rc.HeaderMatcher(name=name, string_match=_string_matcher(match))


def route_match(match: HTTPMatch | None) -> rc.RouteMatch:
    out = rc.RouteMatch()
    uri = match.uri if match else None
    if uri is None:
        out.prefix = "/"
    elif uri.kind == "exact":
        out.path = uri.value
    elif uri.kind == "prefix":
        out.prefix = uri.value
    else:
        out.safe_regex.regex = uri.value
    if match is None:
        return out
    if match.ignore_uri_case:
        out.case_sensitive.value = False
    if match.method is not None:
        out.headers.append(_header(":method", match.method))
    if match.authority is not None:
        out.headers.append(_header(":authority", match.authority))
    if match.scheme is not None:
        out.headers.append(_header(":scheme", match.scheme))
    for name in sorted(match.headers):
        out.headers.append(_header(name, match.headers[name]))
    for name in sorted(match.without_headers):
        inverted = _header(name, match.without_headers[name])
        inverted.invert_match = True
        out.headers.append(inverted)
    for name in sorted(match.query_params):
        qm = match.query_params[name]
        param = rc.QueryParameterMatcher(name=name)
        if qm.kind == "regex" and qm.value == ".*":
            param.present_match = True
        else:
            param.string_match.CopyFrom(_string_matcher(qm))
        out.query_parameters.append(param)
    return out


class RouteContext(NamedTuple):
    """Who the routes are for, and what translation may look up while writing them."""

    services: Mapping[str, MeshService]
    namespace: str = ""  # the client's namespace (sourceNamespace)
    labels: FrozenMap[str] = FrozenMap()  # the client's labels that some sourceLabels names
    gateway: str = MESH_GATEWAY  # "mesh" for sidecars, "<namespace>/<name>" for a gateway
    proxyless: bool = False
    # The consistent hash a DestinationRule sets for a destination (host, subset, port), if any.
    hash_for: Callable[[str, str | None, int], ConsistentHash | None] | None = None
    # A delegate VirtualService by (namespace, name).
    delegate: Callable[[str, str], VirtualService | None] | None = None


def match_applies(match: HTTPMatch, port: int, ctx: RouteContext) -> bool:
    """Whether one match condition can hold for this client on this port (conditions on who is asking
    are decided here, at translation, as Istio does; the rest go to the proxy)."""
    if match.port not in (None, port):
        return False
    if match.gateways and ctx.gateway not in match.gateways:
        return False
    if match.source_namespace is not None and match.source_namespace != ctx.namespace:
        return False
    return not match.source_labels or ctx.labels.matches(match.source_labels)


def _cluster_for(
    host: str, subset: str | None, port: int | None, default_port: int, services: Mapping[str, MeshService]
) -> str:
    return outbound_name(_port_for(host, port, default_port, services), subset, host)


def _port_for(host: str, port: int | None, default_port: int, services: Mapping[str, MeshService]) -> int:
    if port is not None:
        return port
    svc = services.get(host)
    # Istio: a destination without a port uses the service's only port, else the port being routed.
    return svc.ports[0].port if svc is not None and len(svc.ports) == 1 else default_port


def route_action(
    route: HTTPRoute,
    port: int,
    services: Mapping[str, MeshService],
    *,
    proxyless: bool = False,
    ctx: RouteContext | None = None,
) -> rc.RouteAction:
    action = rc.RouteAction()
    targets = [
        (_cluster_for(d.destination.host, d.destination.subset, d.destination.port, port, services), d)
        for d in route.route
    ]
    if len(targets) == 1:
        action.cluster = targets[0][0]
    else:
        for name, dest in targets:
            if dest.weight > 0:
                weighted = action.weighted_clusters.clusters.add(name=name, weight=u32(dest.weight))
                if not proxyless:
                    pol.HeaderChanges(dest.headers).apply(weighted)
    if not proxyless:
        # Istio disables Envoy's 15 s default route timeout unless the VirtualService sets one.
        action.timeout.CopyFrom(proto_duration(route.timeout.seconds if route.timeout else 0.0))
        policy = retry_policy(route)
        if policy is not None:
            action.retry_policy.CopyFrom(policy)
        for m in route.mirrors:
            cluster = _cluster_for(m.host, m.subset, m.port, port, services)
            action.request_mirror_policies.append(pol.mirror_policy(cluster, m.percent))
        if ctx is not None and ctx.hash_for is not None and route.route:
            first = route.route[0].destination
            ch = ctx.hash_for(first.host, first.subset, _port_for(first.host, first.port, port, services))
            if ch is not None:
                action.hash_policy.append(pol.hash_policy(ch))
    if route.rewrite is not None:
        if route.rewrite.uri is not None:
            action.prefix_rewrite = route.rewrite.uri
        if route.rewrite.uri_regex is not None:
            pattern, substitution = route.rewrite.uri_regex
            action.regex_rewrite.pattern.regex = pattern
            action.regex_rewrite.substitution = substitution
        if route.rewrite.authority is not None:
            action.host_rewrite_literal = route.rewrite.authority
    return action


def retry_policy(route: HTTPRoute) -> rc.RetryPolicy | None:
    retries = route.retries
    if retries is not None and retries.attempts == 0:
        return None
    policy = rc.RetryPolicy(
        retry_on=retries.retry_on if retries else DEFAULT_RETRY_ON,
    )
    policy.num_retries.value = retries.attempts if retries else DEFAULT_RETRY_ATTEMPTS
    if retries is not None and retries.per_try_timeout is not None:
        policy.per_try_timeout.CopyFrom(proto_duration(retries.per_try_timeout))
    if retries is not None and retries.backoff is not None:
        # Envoy's jittered exponential backoff from this base, capped at ten times it (Envoy's default).
        policy.retry_back_off.base_interval.CopyFrom(proto_duration(retries.backoff))
    if "retriable-status-codes" in policy.retry_on:
        policy.retriable_status_codes.append(503)
    return policy


def default_route(
    host: str, port: int, *, proxyless: bool = False, hash_policy: ConsistentHash | None = None
) -> rc.Route:
    route = HTTPRoute(name="default", matches=(), route=(), timeout=None, retries=None, rewrite=None)
    action = rc.RouteAction(cluster=outbound_name(port, None, host))
    if not proxyless:
        action.timeout.CopyFrom(proto_duration(0.0))
        policy = retry_policy(route)
        assert policy is not None
        action.retry_policy.CopyFrom(policy)
        if hash_policy is not None:
            action.hash_policy.append(pol.hash_policy(hash_policy))
    return rc.Route(name="default", match=rc.RouteMatch(prefix="/"), route=action)


def routes_for(
    service: MeshService,
    port: int,
    vs: VirtualService | None,
    services: Mapping[str, MeshService],
    *,
    proxyless: bool = False,
    ctx: RouteContext | None = None,
) -> list[rc.Route]:
    """The routes of one service port: the VirtualService's rules in order (the first match wins; several
    matches in one rule become consecutive routes), or the default route when no VirtualService applies.

    As in Istio, a VirtualService replaces the default route: a request that matches none of its rules gets
    404 (NR) rather than silently reaching the service.
    """
    ctx = ctx or RouteContext(services, proxyless=proxyless)
    if vs is None:
        ch = ctx.hash_for(service.hostname, None, port) if ctx.hash_for is not None else None
        return [default_route(service.hostname, port, proxyless=proxyless, hash_policy=ch)]
    rules = delegation.expand(vs, ctx.delegate) if ctx.delegate is not None else vs.http
    return http_routes(f"{vs.meta.namespace}/{vs.meta.name}", rules, port, ctx)


def http_routes(label: str, rules: Iterable[HTTPRoute], port: int, ctx: RouteContext) -> list[rc.Route]:
    """Envoy routes for VirtualService http rules (``label`` names the VirtualService in route names)."""
    proxyless = ctx.proxyless
    out: list[rc.Route] = []
    for i, rule in enumerate(rules):
        if rule.delegate is not None:
            continue  # a delegation whose delegate is missing: nothing to route to
        if not rule.route and (proxyless or (rule.redirect is None and rule.direct_response is None)):
            continue  # gRPC clients have no redirects or direct responses
        matches: Iterable[HTTPMatch | None] = [m for m in rule.matches if match_applies(m, port, ctx)]
        if rule.matches and not matches:
            continue  # every match of this rule is for another port, gateway or client
        if not rule.matches:
            matches = [None]
        route = rc.Route(name=rule.name or f"{label}.http[{i}]")
        if rule.redirect is not None:
            route.redirect.CopyFrom(pol.redirect(rule.redirect))
        elif rule.direct_response is not None:
            route.direct_response.CopyFrom(pol.direct_response(rule.direct_response))
        else:
            route.route.CopyFrom(route_action(rule, port, ctx.services, proxyless=proxyless, ctx=ctx))
        if not proxyless:
            changes = pol.HeaderChanges(rule.headers)
            if len(rule.route) == 1:
                # One destination: its header changes go on the route, after the rule's (as Istio does).
                changes = pol.HeaderChanges(rule.headers, rule.route[0].headers)
            changes.apply(route)
            for name, config in pol.per_filter_config(rule, _string_matcher).items():
                route.typed_per_filter_config[name].CopyFrom(config)
        for j, match in enumerate(matches):
            each = rc.Route()
            each.CopyFrom(route)
            if match is not None and match.name:
                each.name = f"{route.name}.{match.name}"
            elif len(rule.matches) > 1:
                each.name = f"{route.name}.match[{j}]"
            each.match.CopyFrom(route_match(match))
            out.append(each)
    return out


def virtual_host(
    service: MeshService, port: int, client_namespace: str, routes: list[rc.Route]
) -> rc.VirtualHost:
    return rc.VirtualHost(
        name=f"{service.hostname}:{port}", domains=domains(service, port, client_namespace), routes=routes
    )


def connect_route(name: str, **action: Any) -> rc.Route:
    """What a CONNECT request takes (Envoy matches CONNECT by ``connect_matcher`` only): a tunnel lasts as
    long as its two ends keep it, so a route action has no timeout."""
    route = rc.Route(name=name, match=rc.RouteMatch(connect_matcher=rc.RouteMatch.ConnectMatcher()), **action)
    if route.HasField("route"):
        route.route.timeout.CopyFrom(proto_duration(0.0))
    return route


def fallback_virtual_host(allow_any: bool) -> rc.VirtualHost:
    """Hosts outside the registry: passed through (ALLOW_ANY) or refused with 502 (REGISTRY_ONLY), as
    Istio's ``block_all`` virtual host answers. CONNECT requests, routed by the authority they name like
    any other, are treated the same: an application's tunnel through a forward proxy in the mesh reaches
    the proxy it connected to (ALLOW_ANY)."""
    if allow_any:
        action = rc.RouteAction(cluster=PASSTHROUGH, timeout=proto_duration(0.0))
        return rc.VirtualHost(
            name="allow_any",
            domains=["*"],
            routes=[
                rc.Route(name="allow_any", match=rc.RouteMatch(prefix="/"), route=action),
                connect_route("allow_any.connect", route=action),
            ],
        )
    refused = rc.DirectResponseAction(status=502)
    return rc.VirtualHost(
        name="block_all",
        domains=["*"],
        routes=[
            rc.Route(name="block_all", match=rc.RouteMatch(prefix="/"), direct_response=refused),
            connect_route("block_all.connect", direct_response=refused),
        ],
    )


def route_configuration(name: str, hosts: list[rc.VirtualHost]) -> route_pb2.RouteConfiguration:
    # validate_clusters off: routes may name a subset cluster whose DestinationRule arrives later.
    config = route_pb2.RouteConfiguration(name=name, virtual_hosts=hosts)
    config.validate_clusters.value = False
    return config
