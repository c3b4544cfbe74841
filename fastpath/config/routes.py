"""RouteConfiguration (RDS, or inline in an HttpConnectionManager) compiled into a ``RouteTable``.

Every field is either honoured or refused with an error naming it (an allow-list per message), so a
config the proxy cannot carry out is NACKed instead of half-applied.
"""

from __future__ import annotations

from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2

from fastpath import filters, routing
from fastpath.config.errors import ConfigError, Resource, join
from fastpath.config.matchers import (
    compile_header_matcher,
    compile_query_matcher,
    compile_regex_matcher,
    compile_rewrite_substitution,
)

KIND = "RouteConfiguration"
DEFAULT_ROUTE_TIMEOUT = 15.0  # Envoy's RouteAction.timeout default

_ROUTE_CONFIG_FIELDS = {"name", "virtual_hosts", "validate_clusters", "metadata"}
_VHOST_FIELDS = {
    "name",
    "domains",
    "routes",
    "retry_policy",
    "include_request_attempt_count",
    "metadata",
    "request_headers_to_add",
    "request_headers_to_remove",
    "response_headers_to_add",
    "response_headers_to_remove",
    "require_tls",
}
_ROUTE_FIELDS = {
    "name",
    "match",
    "route",
    "redirect",
    "direct_response",
    "metadata",
    "decorator",
    "request_headers_to_add",
    "request_headers_to_remove",
    "response_headers_to_add",
    "response_headers_to_remove",
    "typed_per_filter_config",
}
_MATCH_FIELDS = {
    "prefix",
    "path",
    "safe_regex",
    "path_separated_prefix",
    "case_sensitive",
    "headers",
    "query_parameters",
    "connect_matcher",
}
_ACTION_FIELDS = {
    "cluster",
    "weighted_clusters",
    "timeout",
    "idle_timeout",
    "retry_policy",
    "prefix_rewrite",
    "regex_rewrite",
    "host_rewrite_literal",
    "upgrade_configs",
    "cluster_not_found_response_code",
    "metadata_match",
    "request_mirror_policies",
    "hash_policy",
}
_MIRROR_FIELDS = {"cluster", "runtime_fraction", "disable_shadow_host_suffix_append", "trace_sampled"}
_RETRY_FIELDS = {
    "retry_on",
    "num_retries",
    "per_try_timeout",
    "retriable_status_codes",
    "retry_back_off",
    "retry_host_predicate",
    "host_selection_retry_max_attempts",
}
_RETRY_ON = {
    "5xx",
    "gateway-error",
    "connect-failure",
    "reset",
    "retriable-4xx",
    "retriable-status-codes",
    "refused-stream",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
    "envoy-ratelimited",
}
_CLUSTER_WEIGHT_FIELDS = {
    "name",
    "weight",
    "request_headers_to_add",
    "request_headers_to_remove",
    "response_headers_to_add",
    "response_headers_to_remove",
}
_DENOMINATORS = {0: 100, 1: 10_000, 2: 1_000_000}  # FractionalPercent: HUNDRED, TEN_THOUSAND, MILLION


def seconds(duration: Any) -> float:
    return float(duration.seconds) + duration.nanos / 1e9


def compile_route_config(rc: route_pb2.RouteConfiguration) -> routing.RouteTable:
    res = Resource(KIND, rc.name)
    res.reject_unsupported(rc, "", _ROUTE_CONFIG_FIELDS)
    vhosts = [compile_vhost(res, f"virtual_hosts[{i}]", vh) for i, vh in enumerate(rc.virtual_hosts)]
    seen: dict[str, str] = {}
    for i, vh in enumerate(rc.virtual_hosts):
        for domain in vh.domains:
            key = domain.lower()
            if key in seen:
                # Envoy refuses a RouteConfiguration with a domain in two virtual hosts.
                raise res.error(
                    f"virtual_hosts[{i}].domains", f"{domain!r} is already in virtual host {seen[key]!r}"
                )
            seen[key] = vh.name
    return routing.RouteTable(rc.name, vhosts)


def compile_vhost(res: Resource, path: str, vh: route_components_pb2.VirtualHost) -> routing.VirtualHost:
    res.reject_unsupported(vh, path, _VHOST_FIELDS)
    if not vh.domains:
        raise res.error(join(path, "domains"), "at least one domain is required")
    for i, domain in enumerate(vh.domains):
        star = domain.count("*")
        if domain != "*" and (
            star > 1 or (star == 1 and not (domain.startswith("*") or domain.endswith("*")))
        ):
            raise res.error(
                f"{path}.domains[{i}]", f"{domain!r}: a wildcard must be the first or last character"
            )
    retry = (
        compile_retry(res, join(path, "retry_policy"), vh.retry_policy)
        if vh.HasField("retry_policy")
        else None
    )
    vh_add = header_options(res, join(path, "request_headers_to_add"), vh.request_headers_to_add)
    vh_remove = frozenset(h.lower().encode() for h in vh.request_headers_to_remove)
    vh_radd = header_options(res, join(path, "response_headers_to_add"), vh.response_headers_to_add)
    vh_rremove = frozenset(h.lower().encode() for h in vh.response_headers_to_remove)
    if vh.require_tls != route_components_pb2.VirtualHost.NONE:
        # Every request here arrives in plain text (the proxy terminates no TLS on an HTTP chain), so
        # both ALL and EXTERNAL_ONLY answer each request with a redirect to https (Envoy's 301).
        redirect = routing.Route(
            "https_redirect", routing.PREFIX, b"/", redirect=routing.Redirect(status=301, https=True)
        )
        return routing.VirtualHost(vh.name, tuple(vh.domains), (redirect,), None)
    routes = []
    for i, r in enumerate(vh.routes):
        route = compile_route(res, f"{path}.routes[{i}]", r, retry)
        variants = route.action.weighted.variants if route.action and route.action.weighted else None
        for each in (route, *(variants or ())):
            # Virtual-host header mutations apply after the route's (Envoy's default order).
            each.request_headers_to_add = each.request_headers_to_add + vh_add
            each.request_headers_to_remove = each.request_headers_to_remove | vh_remove
            each.response_headers_to_add = each.response_headers_to_add + vh_radd
            each.response_headers_to_remove = each.response_headers_to_remove | vh_rremove
            each.include_attempt_count = vh.include_request_attempt_count
        routes.append(route)
    return routing.VirtualHost(vh.name, tuple(vh.domains), tuple(routes), retry)


def compile_route(
    res: Resource, path: str, r: route_components_pb2.Route, vhost_retry: routing.RetryPolicy | None
) -> routing.Route:
    res.reject_unsupported(r, path, _ROUTE_FIELDS)
    # Per-route filter config is compiled by the filter that reads it (fault, CORS); one that no filter
    # of ours reads is refused rather than ignored.
    per_filter = {
        name: filters.build_route_config(res, f"{path}.typed_per_filter_config[{name!r}]", config)
        for name, config in sorted(r.typed_per_filter_config.items())
    }
    m = r.match
    mpath = join(path, "match")
    res.reject_unsupported(m, mpath, _MATCH_FIELDS)
    which = m.WhichOneof("path_specifier")
    case_sensitive = m.case_sensitive.value if m.HasField("case_sensitive") else True
    regex = None
    if which == "prefix":
        kind, value = routing.PREFIX, m.prefix
    elif which == "path":
        kind, value = routing.PATH, m.path
    elif which == "path_separated_prefix":
        kind, value = routing.SEPARATED_PREFIX, m.path_separated_prefix
        if not value.startswith("/") or (value.endswith("/") and value != "/"):
            raise res.error(join(mpath, which), "must start with '/' and not end with '/'")
    elif which == "safe_regex":
        kind, value = routing.REGEX, ""
        regex = compile_regex_matcher(res, join(mpath, "safe_regex"), m.safe_regex)
    elif which == "connect_matcher":
        kind, value = routing.CONNECT, ""
        if m.query_parameters:
            raise res.error(join(mpath, "query_parameters"), "a CONNECT request has no query")
    else:
        raise res.error(
            mpath,
            "a path match (prefix, path, path_separated_prefix, safe_regex or connect_matcher) is required",
        )
    headers = tuple(
        compile_header_matcher(res, f"{mpath}.headers[{i}]", h)[1] for i, h in enumerate(m.headers)
    )
    query = tuple(
        compile_query_matcher(res, f"{mpath}.query_parameters[{i}]", q)
        for i, q in enumerate(m.query_parameters)
    )
    action = direct = redirect = None
    which_action = r.WhichOneof("action")
    if which_action == "route":
        action = compile_action(res, join(path, "route"), r.route, vhost_retry)
    elif which_action == "direct_response":
        d = r.direct_response
        if not 200 <= d.status <= 599:
            raise res.error(join(path, "direct_response.status"), f"{d.status} is not an HTTP status")
        body = b""
        if d.HasField("body"):
            spec = d.body.WhichOneof("specifier")
            if spec == "inline_string":
                body = d.body.inline_string.encode()
            elif spec == "inline_bytes":
                body = d.body.inline_bytes
            else:
                raise res.error(
                    join(path, f"direct_response.body.{spec}"), "only inline bodies are supported"
                )
        direct = routing.DirectResponse(d.status, body)
    elif which_action == "redirect":
        redirect = compile_redirect(res, join(path, "redirect"), r.redirect)
    else:
        raise res.error(path, "an action (route, redirect or direct_response) is required")
    route = routing.Route(
        r.name,
        kind,
        value.encode(),
        case_sensitive=case_sensitive,
        regex=regex,
        headers=headers,
        query=query,
        action=action,
        direct=direct,
        redirect=redirect,
        request_headers_to_add=header_options(
            res, join(path, "request_headers_to_add"), r.request_headers_to_add
        ),
        request_headers_to_remove=frozenset(h.lower().encode() for h in r.request_headers_to_remove),
        response_headers_to_add=header_options(
            res, join(path, "response_headers_to_add"), r.response_headers_to_add
        ),
        response_headers_to_remove=frozenset(h.lower().encode() for h in r.response_headers_to_remove),
        typed_per_filter_config=per_filter,
    )
    if action is not None and action.weighted is not None:
        _destination_variants(res, join(path, "route.weighted_clusters"), r.route.weighted_clusters, route)
    return route


def _destination_variants(res: Resource, path: str, wc: Any, route: routing.Route) -> None:
    """Weighted destinations with their own header changes: one Route per destination, so that the
    exchange applies the chosen destination's changes (before the route's, as Envoy orders them)."""
    weighted = route.action.weighted  # type: ignore[union-attr]
    picked = [c for c in wc.clusters if c.weight.value > 0]
    if not any(
        c.request_headers_to_add
        or c.request_headers_to_remove
        or c.response_headers_to_add
        or c.response_headers_to_remove
        for c in picked
    ):
        return
    variants = []
    for i, c in enumerate(wc.clusters):
        if c.weight.value <= 0:
            continue
        cpath = f"{path}.clusters[{i}]"
        action = copy_action(route.action, cluster=c.name)  # type: ignore[arg-type]
        variant = routing.Route(
            route.name,
            route.kind,
            route.path,
            case_sensitive=route.case_sensitive,
            regex=route.regex,
            headers=route.headers,
            query=route.query,
            action=action,
            request_headers_to_add=header_options(
                res, join(cpath, "request_headers_to_add"), c.request_headers_to_add
            )
            + route.request_headers_to_add,
            request_headers_to_remove=frozenset(h.lower().encode() for h in c.request_headers_to_remove)
            | route.request_headers_to_remove,
            response_headers_to_add=header_options(
                res, join(cpath, "response_headers_to_add"), c.response_headers_to_add
            )
            + route.response_headers_to_add,
            response_headers_to_remove=frozenset(h.lower().encode() for h in c.response_headers_to_remove)
            | route.response_headers_to_remove,
            typed_per_filter_config=route.typed_per_filter_config,
        )
        variants.append(variant)
    weighted.variants = tuple(variants)  # type: ignore[union-attr]


def copy_action(a: routing.RouteAction, *, cluster: str) -> routing.RouteAction:
    """``a`` sending to one cluster instead of its weighted split."""
    return routing.RouteAction(
        cluster=cluster,
        timeout=a.timeout,
        idle_timeout=a.idle_timeout,
        retry=a.retry,
        prefix_rewrite=a.prefix_rewrite,
        regex_rewrite=a.regex_rewrite,
        host_rewrite=a.host_rewrite,
        websocket=a.websocket,
        mirrors=a.mirrors,
        hash_policies=a.hash_policies,
    )


def compile_action(
    res: Resource, path: str, a: route_components_pb2.RouteAction, vhost_retry: routing.RetryPolicy | None
) -> routing.RouteAction:
    res.reject_unsupported(a, path, _ACTION_FIELDS)
    if a.HasField("metadata_match") and a.metadata_match.filter_metadata:
        raise res.error(
            join(path, "metadata_match"), "subset load balancing is not supported by mizzen-proxy"
        )
    which = a.WhichOneof("cluster_specifier")
    weighted = None
    cluster = ""
    if which == "cluster":
        cluster = a.cluster
    elif which == "weighted_clusters":
        wc = a.weighted_clusters
        res.reject_unsupported(wc, join(path, "weighted_clusters"), {"clusters", "total_weight"})
        parts: list[tuple[str, int]] = []
        for i, c in enumerate(wc.clusters):
            res.reject_unsupported(c, f"{path}.weighted_clusters.clusters[{i}]", _CLUSTER_WEIGHT_FIELDS)
            if not c.name:
                raise res.error(f"{path}.weighted_clusters.clusters[{i}].name", "required")
            parts.append((c.name, c.weight.value))
        if not parts or sum(w for _, w in parts) <= 0:
            raise res.error(join(path, "weighted_clusters"), "weights must sum to more than 0")
        weighted = routing.WeightedClusters(parts)
    else:
        raise res.error(path, "cluster or weighted_clusters is required")
    timeout = seconds(a.timeout) if a.HasField("timeout") else DEFAULT_ROUTE_TIMEOUT
    retry = (
        compile_retry(res, join(path, "retry_policy"), a.retry_policy)
        if a.HasField("retry_policy")
        else vhost_retry
    )
    regex_rewrite = None
    if a.HasField("regex_rewrite"):
        pattern = compile_regex_matcher(res, join(path, "regex_rewrite.pattern"), a.regex_rewrite.pattern)
        subst = compile_rewrite_substitution(
            res, join(path, "regex_rewrite"), pattern, a.regex_rewrite.substitution
        )
        regex_rewrite = (pattern, subst)
    websocket = False
    for i, up in enumerate(a.upgrade_configs):
        if up.upgrade_type.lower() != "websocket":
            # CONNECT is enabled on the connection manager and forwarded; terminating it here
            # (connect_config) is not done.
            raise res.error(
                f"{path}.upgrade_configs[{i}].upgrade_type",
                f"{up.upgrade_type!r}: only websocket (CONNECT is enabled on the connection manager)",
            )
        websocket = up.enabled.value if up.HasField("enabled") else True
    return routing.RouteAction(
        cluster=cluster,
        weighted=weighted,
        timeout=timeout,
        idle_timeout=seconds(a.idle_timeout) if a.HasField("idle_timeout") else 0.0,
        retry=retry,
        prefix_rewrite=a.prefix_rewrite.encode() if a.prefix_rewrite else None,
        regex_rewrite=regex_rewrite,
        host_rewrite=a.host_rewrite_literal.encode() if a.host_rewrite_literal else None,
        websocket=websocket,
        mirrors=tuple(
            compile_mirror(res, f"{path}.request_mirror_policies[{i}]", m)
            for i, m in enumerate(a.request_mirror_policies)
        ),
        hash_policies=tuple(
            compile_hash_policy(res, f"{path}.hash_policy[{i}]", h) for i, h in enumerate(a.hash_policy)
        ),
    )


def fraction(res: Resource, path: str, f: Any) -> tuple[int, int]:
    """A FractionalPercent as (numerator, denominator), the numerator capped at the denominator."""
    denominator = _DENOMINATORS.get(f.denominator)
    if denominator is None:
        raise res.error(join(path, "denominator"), "HUNDRED, TEN_THOUSAND or MILLION")
    return min(f.numerator, denominator), denominator


def compile_mirror(res: Resource, path: str, m: Any) -> routing.MirrorPolicy:
    res.reject_unsupported(m, path, _MIRROR_FIELDS)
    if not m.cluster:
        raise res.error(join(path, "cluster"), "required")
    numerator, denominator = 100, 100
    if m.HasField("runtime_fraction"):
        rf = m.runtime_fraction
        res.reject_unsupported(rf, join(path, "runtime_fraction"), {"default_value", "runtime_key"})
        numerator, denominator = fraction(res, join(path, "runtime_fraction.default_value"), rf.default_value)
    suffix = not m.disable_shadow_host_suffix_append
    return routing.MirrorPolicy(m.cluster, numerator, denominator, suffix)


def compile_hash_policy(res: Resource, path: str, h: Any) -> routing.HashPolicy:
    which = h.WhichOneof("policy_specifier")
    res.reject_unsupported(h, path, {which or "", "terminal"})
    if which == "header":
        res.reject_unsupported(h.header, join(path, "header"), {"header_name"})
        if not h.header.header_name:
            raise res.error(join(path, "header.header_name"), "required")
        return routing.HashPolicy(routing.HASH_HEADER, h.header.header_name.lower(), h.terminal)
    if which == "cookie":
        c = h.cookie
        res.reject_unsupported(c, join(path, "cookie"), {"name", "ttl", "path"})
        if not c.name:
            raise res.error(join(path, "cookie.name"), "required")
        ttl = seconds(c.ttl) if c.HasField("ttl") else None
        return routing.HashPolicy(routing.HASH_COOKIE, c.name, h.terminal, ttl, c.path)
    if which == "connection_properties":
        if not h.connection_properties.source_ip:
            raise res.error(join(path, "connection_properties.source_ip"), "must be true")
        return routing.HashPolicy(routing.HASH_SOURCE_IP, "", h.terminal)
    if which == "query_parameter":
        if not h.query_parameter.name:
            raise res.error(join(path, "query_parameter.name"), "required")
        return routing.HashPolicy(routing.HASH_QUERY, h.query_parameter.name, h.terminal)
    raise res.error(join(path, which or ""), "only header, cookie, connection_properties and query_parameter")


def compile_retry(res: Resource, path: str, p: route_components_pb2.RetryPolicy) -> routing.RetryPolicy:
    res.reject_unsupported(p, path, _RETRY_FIELDS)
    on = frozenset(x.strip() for x in p.retry_on.split(",") if x.strip())
    unknown = sorted(on - _RETRY_ON)
    if unknown:
        raise res.error(join(path, "retry_on"), f"unknown retry condition {unknown[0]!r}")
    previous_hosts = False
    for i, pred in enumerate(p.retry_host_predicate):
        if pred.name not in (
            "envoy.retry_host_predicates.previous_hosts",
        ) and not pred.typed_config.type_url.endswith("PreviousHostsPredicate"):
            raise res.error(f"{path}.retry_host_predicate[{i}]", f"{pred.name!r} is not supported")
        previous_hosts = True
    base, cap = 0.025, None
    if p.HasField("retry_back_off"):
        bo = p.retry_back_off
        base = seconds(bo.base_interval)
        if base <= 0:
            raise res.error(join(path, "retry_back_off.base_interval"), "must be greater than 0")
        if bo.HasField("max_interval"):
            cap = seconds(bo.max_interval)
            if cap < base:
                raise res.error(
                    join(path, "retry_back_off.max_interval"), "must not be less than base_interval"
                )
    return routing.RetryPolicy(
        num_retries=p.num_retries.value if p.HasField("num_retries") else 1,
        per_try_timeout=seconds(p.per_try_timeout) if p.HasField("per_try_timeout") else 0.0,
        on=on,
        retriable_status_codes=frozenset(p.retriable_status_codes),
        base_interval=base,
        max_interval=cap,
        previous_hosts=previous_hosts,
        host_selection_max_attempts=max(1, p.host_selection_retry_max_attempts or 1),
    )


def compile_redirect(res: Resource, path: str, r: route_components_pb2.RedirectAction) -> routing.Redirect:
    res.reject_unsupported(
        r,
        path,
        {
            "https_redirect",
            "scheme_redirect",
            "host_redirect",
            "port_redirect",
            "path_redirect",
            "prefix_rewrite",
            "response_code",
            "strip_query",
        },
    )
    codes = {0: 301, 1: 302, 2: 303, 3: 307, 4: 308}
    https: bool | None = None
    if r.WhichOneof("scheme_rewrite_specifier") == "https_redirect":
        https = r.https_redirect
    elif r.WhichOneof("scheme_rewrite_specifier") == "scheme_redirect":
        if r.scheme_redirect not in ("http", "https"):
            raise res.error(join(path, "scheme_redirect"), f"{r.scheme_redirect!r}: http or https")
        https = r.scheme_redirect == "https"
    return routing.Redirect(
        status=codes[r.response_code],
        https=https,
        host=r.host_redirect.encode() or None,
        port=r.port_redirect or None,
        path=r.path_redirect.encode() if r.WhichOneof("path_rewrite_specifier") == "path_redirect" else None,
        prefix=r.prefix_rewrite.encode()
        if r.WhichOneof("path_rewrite_specifier") == "prefix_rewrite"
        else None,
        strip_query=r.strip_query,
    )


def header_options(res: Resource, path: str, options: Any) -> tuple[tuple[bytes, bytes, bool], ...]:
    """HeaderValueOptions -> (name, value, append). Values are literal (no %VAR% formatting)."""
    out: list[tuple[bytes, bytes, bool]] = []
    for i, opt in enumerate(options):
        name, value = opt.header.key.lower(), opt.header.value
        if not name or name.startswith(":") or name == "host":
            raise res.error(f"{path}[{i}].header.key", f"{opt.header.key!r} cannot be set this way")
        if "%" in value:
            raise res.error(f"{path}[{i}].header.value", "command operators (%...%) are not supported")
        if any(c in value for c in "\r\n\x00"):
            raise res.error(f"{path}[{i}].header.value", "CR, LF and NUL are not allowed")
        append = True
        if opt.HasField("append"):
            append = opt.append.value
        elif opt.append_action == base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD:
            append = False
        elif opt.append_action != base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD:
            raise res.error(
                f"{path}[{i}].append_action", "only APPEND_IF_EXISTS_OR_ADD and OVERWRITE_IF_EXISTS_OR_ADD"
            )
        out.append((name.encode(), value.encode(), append))
    return tuple(out)


__all__ = ["ConfigError", "compile_route_config", "seconds"]
