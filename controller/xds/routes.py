"""RDS: virtual hosts and routes from VirtualServices, and the route configurations that hold them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2

from controller.model.istio import (
    DEFAULT_RETRY_ATTEMPTS,
    DEFAULT_RETRY_ON,
    HTTPMatch,
    HTTPRoute,
    VirtualService,
)
from controller.model.values import StringMatch
from controller.xds.clusters import BLACKHOLE, PASSTHROUGH, outbound_name
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
    for name in sorted(match.headers):
        out.headers.append(_header(name, match.headers[name]))
    for name in sorted(match.query_params):
        qm = match.query_params[name]
        param = rc.QueryParameterMatcher(name=name)
        if qm.kind == "regex" and qm.value == ".*":
            param.present_match = True
        else:
            param.string_match.CopyFrom(_string_matcher(qm))
        out.query_parameters.append(param)
    return out


def _cluster_for(
    host: str, subset: str | None, port: int | None, default_port: int, services: Mapping[str, MeshService]
) -> str:
    svc = services.get(host)
    if port is None:
        # Istio: a destination without a port uses the service's only port, else the port being routed.
        port = svc.ports[0].port if svc is not None and len(svc.ports) == 1 else default_port
    return outbound_name(port, subset, host)


def route_action(
    route: HTTPRoute, port: int, services: Mapping[str, MeshService], *, proxyless: bool = False
) -> rc.RouteAction:
    action = rc.RouteAction()
    targets = [
        (_cluster_for(d.destination.host, d.destination.subset, d.destination.port, port, services), d.weight)
        for d in route.route
    ]
    if len(targets) == 1:
        action.cluster = targets[0][0]
    else:
        for name, weight in targets:
            if weight > 0:
                action.weighted_clusters.clusters.add(name=name, weight=u32(weight))
    if not proxyless:
        # Istio disables Envoy's 15 s default route timeout unless the VirtualService sets one.
        action.timeout.CopyFrom(proto_duration(route.timeout.seconds if route.timeout else 0.0))
        policy = retry_policy(route)
        if policy is not None:
            action.retry_policy.CopyFrom(policy)
    if route.rewrite is not None:
        if route.rewrite.uri is not None:
            action.prefix_rewrite = route.rewrite.uri
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
    if "retriable-status-codes" in policy.retry_on:
        policy.retriable_status_codes.append(503)
    return policy


def default_route(host: str, port: int, *, proxyless: bool = False) -> rc.Route:
    route = HTTPRoute(name="default", matches=(), route=(), timeout=None, retries=None, rewrite=None)
    action = rc.RouteAction(cluster=outbound_name(port, None, host))
    if not proxyless:
        action.timeout.CopyFrom(proto_duration(0.0))
        policy = retry_policy(route)
        assert policy is not None
        action.retry_policy.CopyFrom(policy)
    return rc.Route(name="default", match=rc.RouteMatch(prefix="/"), route=action)


def routes_for(
    service: MeshService,
    port: int,
    vs: VirtualService | None,
    services: Mapping[str, MeshService],
    *,
    proxyless: bool = False,
) -> list[rc.Route]:
    """The routes of one service port: the VirtualService's rules in order (the first match wins; several
    matches in one rule become consecutive routes), or the default route when no VirtualService applies.

    As in Istio, a VirtualService replaces the default route: a request that matches none of its rules gets
    404 (NR) rather than silently reaching the service.
    """
    if vs is None:
        return [default_route(service.hostname, port, proxyless=proxyless)]
    out: list[rc.Route] = []
    for i, rule in enumerate(vs.http):
        if not rule.route:
            continue  # a redirect/directResponse-only rule; validation warned about it
        matches: Iterable[HTTPMatch | None] = [m for m in rule.matches if m.port in (None, port)]
        if rule.matches and not matches:
            continue  # every match of this rule is for another port
        if not rule.matches:
            matches = [None]
        action = route_action(rule, port, services, proxyless=proxyless)
        for j, match in enumerate(matches):
            name = rule.name or f"{vs.meta.namespace}/{vs.meta.name}.http[{i}]"
            if match is not None and match.name:
                name = f"{name}.{match.name}"
            elif len(rule.matches) > 1:
                name = f"{name}.match[{j}]"
            route = rc.Route(name=name, match=route_match(match), route=action)
            out.append(route)
    return out


def virtual_host(
    service: MeshService, port: int, client_namespace: str, routes: list[rc.Route]
) -> rc.VirtualHost:
    return rc.VirtualHost(
        name=f"{service.hostname}:{port}", domains=domains(service, port, client_namespace), routes=routes
    )


def fallback_virtual_host(allow_any: bool) -> rc.VirtualHost:
    """Hosts outside the registry: passed through (ALLOW_ANY) or black-holed (REGISTRY_ONLY)."""
    if allow_any:
        action = rc.RouteAction(cluster=PASSTHROUGH, timeout=proto_duration(0.0))
        return rc.VirtualHost(
            name="allow_any",
            domains=["*"],
            routes=[rc.Route(name="allow_any", match=rc.RouteMatch(prefix="/"), route=action)],
        )
    action = rc.RouteAction(cluster=BLACKHOLE, timeout=proto_duration(0.0))
    return rc.VirtualHost(
        name="block_all",
        domains=["*"],
        routes=[rc.Route(name="block_all", match=rc.RouteMatch(prefix="/"), route=action)],
    )


def route_configuration(name: str, hosts: list[rc.VirtualHost]) -> route_pb2.RouteConfiguration:
    # validate_clusters off: routes may name a subset cluster whose DestinationRule arrives later.
    config = route_pb2.RouteConfiguration(name=name, virtual_hosts=hosts)
    config.validate_clusters.value = False
    return config
