"""Compiled routes: the per-request half of a RouteConfiguration.

``fastpath.config.routes`` builds these objects once per config update; here is only what runs for every
request: find the virtual host for the Host header (Envoy's order: exact domain, longest ``*.suffix``,
longest ``prefix.*``, then ``*``), then the first route whose match holds. Paths are compared as bytes,
as Envoy compares them; only regexes and header/query matchers see decoded text, and the header map
they need is built only for virtual hosts that have such matchers.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from fastpath.config.matchers import parse_query

# Route.kind
PREFIX = 0
PATH = 1
REGEX = 2
SEPARATED_PREFIX = 3
CONNECT = 4  # connect_matcher: CONNECT requests only, whatever their target (an authority, no path)

HeaderMap = Mapping[str, str]
HeaderTest = Callable[[HeaderMap], bool]

_VHOST_CACHE_MAX = 4096  # distinct Host values remembered per table (bounded: Host is client-chosen)


class RetryPolicy:
    """Envoy's RetryPolicy, resolved: which outcomes may be retried, how often and how soon."""

    __slots__ = (
        "base_interval",
        "grpc_statuses",
        "host_selection_max_attempts",
        "max_interval",
        "num_retries",
        "on_5xx",
        "on_connect_failure",
        "on_gateway_error",
        "on_reset",
        "on_retriable_4xx",
        "per_try_timeout",
        "previous_hosts",
        "retriable_status_codes",
    )

    def __init__(
        self,
        num_retries: int = 1,
        per_try_timeout: float = 0.0,
        on: frozenset[str] = frozenset(),
        retriable_status_codes: frozenset[int] = frozenset(),
        base_interval: float = 0.025,
        max_interval: float | None = None,
        previous_hosts: bool = False,
        host_selection_max_attempts: int = 1,
    ) -> None:
        self.num_retries = num_retries
        self.per_try_timeout = per_try_timeout
        self.on_5xx = "5xx" in on
        self.on_gateway_error = "gateway-error" in on
        self.on_connect_failure = "connect-failure" in on
        self.on_reset = "reset" in on
        self.on_retriable_4xx = "retriable-4xx" in on
        statuses = set(retriable_status_codes) if "retriable-status-codes" in on else set()
        self.retriable_status_codes = frozenset(statuses)
        grpc = set()
        for name, code in (
            ("cancelled", 1),
            ("deadline-exceeded", 4),
            ("internal", 13),
            ("resource-exhausted", 8),
            ("unavailable", 14),
        ):
            if name in on:
                grpc.add(code)
        self.grpc_statuses = frozenset(grpc)
        self.base_interval = base_interval
        self.max_interval = max_interval if max_interval is not None else base_interval * 10
        self.previous_hosts = previous_hosts
        self.host_selection_max_attempts = host_selection_max_attempts

    def retriable_response(self, status: int, grpc_status: int | None) -> bool:
        """Whether a response with this status (and grpc-status, when there is one) may be retried."""
        if self.on_5xx and status >= 500:
            return True
        if self.on_gateway_error and status in (502, 503, 504):
            return True
        if self.on_retriable_4xx and status == 409:
            return True
        if status in self.retriable_status_codes:
            return True
        return grpc_status is not None and grpc_status in self.grpc_statuses

    @property
    def retries_connect_failure(self) -> bool:
        return self.on_connect_failure or self.on_5xx or self.on_gateway_error or self.on_reset

    @property
    def retries_reset(self) -> bool:
        return self.on_reset or self.on_5xx or self.on_gateway_error


class WeightedClusters:
    """A split of traffic: ``pick(n)`` with ``n`` uniform in [0, total) gives the cluster name.

    ``variants``: when destinations carry their own header changes, one Route per destination (same
    match, that destination's cluster, its headers merged with the route's), in the order of ``names``.
    """

    __slots__ = ("bounds", "names", "total", "variants")

    def __init__(self, clusters: list[tuple[str, int]]) -> None:
        self.names = tuple(name for name, weight in clusters if weight > 0)
        bounds, running = [], 0
        for _, weight in clusters:
            if weight > 0:
                running += weight
                bounds.append(running)
        self.bounds = tuple(bounds)
        self.total = running
        self.variants: tuple[Route, ...] | None = None

    def index(self, n: int) -> int:
        """The position of the destination that ``n`` (uniform in [0, total)) falls on."""
        for i, bound in enumerate(self.bounds):
            if n < bound:
                return i
        return len(self.bounds) - 1

    def pick(self, n: int) -> str:
        return self.names[self.index(n)]  # type: ignore[no-any-return]


class MirrorPolicy:
    """Envoy's RequestMirrorPolicy: a copy of the request to ``cluster`` for ``numerator`` out of
    ``denominator`` requests; the response is read and dropped."""

    __slots__ = ("cluster", "denominator", "host_suffix", "numerator")

    def __init__(self, cluster: str, numerator: int, denominator: int, host_suffix: bool = True) -> None:
        self.cluster = cluster
        self.numerator = numerator
        self.denominator = denominator
        self.host_suffix = host_suffix  # "-shadow" appended to the Host of the copy


# HashPolicy.kind
HASH_HEADER = 0
HASH_COOKIE = 1
HASH_SOURCE_IP = 2
HASH_QUERY = 3


class HashPolicy:
    """One of a route's hash policies (consistent-hash load balancing): what of the request is hashed."""

    __slots__ = ("cookie_path", "kind", "name", "terminal", "ttl")

    def __init__(
        self,
        kind: int,
        name: str = "",
        terminal: bool = False,
        ttl: float | None = None,
        cookie_path: str = "",
    ) -> None:
        self.kind = kind
        self.name = name  # header (lower case), cookie or query parameter name
        self.terminal = terminal
        self.ttl = ttl  # cookies: when set, a missing cookie is generated and returned with this Max-Age
        self.cookie_path = cookie_path


class RouteAction:
    """Where a matched request goes and how (cluster or split, timeouts, retries, rewrites)."""

    __slots__ = (
        "cluster",
        "hash_policies",
        "host_rewrite",
        "idle_timeout",
        "mirrors",
        "prefix_rewrite",
        "regex_rewrite",
        "retry",
        "timeout",
        "websocket",
        "weighted",
    )

    def __init__(
        self,
        cluster: str = "",
        weighted: WeightedClusters | None = None,
        timeout: float = 15.0,
        idle_timeout: float = 0.0,
        retry: RetryPolicy | None = None,
        prefix_rewrite: bytes | None = None,
        regex_rewrite: tuple[re.Pattern[str], str] | None = None,
        host_rewrite: bytes | None = None,
        websocket: bool = False,
        mirrors: tuple[MirrorPolicy, ...] = (),
        hash_policies: tuple[HashPolicy, ...] = (),
    ) -> None:
        self.cluster = cluster
        self.weighted = weighted
        self.timeout = timeout  # 0: none (Envoy's "0s")
        self.idle_timeout = idle_timeout
        self.retry = retry
        self.prefix_rewrite = prefix_rewrite
        self.regex_rewrite = regex_rewrite
        self.host_rewrite = host_rewrite
        self.websocket = websocket
        self.mirrors = mirrors
        self.hash_policies = hash_policies

    @property
    def rewrites(self) -> bool:
        return (
            self.prefix_rewrite is not None or self.regex_rewrite is not None or self.host_rewrite is not None
        )


class DirectResponse:
    __slots__ = ("body", "status")

    def __init__(self, status: int, body: bytes) -> None:
        self.status = status
        self.body = body


class Redirect:
    """Envoy's RedirectAction: every part optional, the rest taken from the request."""

    __slots__ = ("host", "https", "path", "port", "prefix", "status", "strip_query")

    def __init__(
        self,
        status: int = 301,
        https: bool | None = None,
        host: bytes | None = None,
        port: int | None = None,
        path: bytes | None = None,
        prefix: bytes | None = None,
        strip_query: bool = False,
    ) -> None:
        self.status = status
        self.https = https
        self.host = host
        self.port = port
        self.path = path
        self.prefix = prefix
        self.strip_query = strip_query


class Route:
    __slots__ = (
        "action",
        "case_sensitive",
        "direct",
        "headers",
        "include_attempt_count",
        "kind",
        "name",
        "path",
        "query",
        "redirect",
        "regex",
        "request_headers_to_add",
        "request_headers_to_remove",
        "response_headers_to_add",
        "response_headers_to_remove",
        "typed_per_filter_config",
    )

    def __init__(
        self,
        name: str,
        kind: int,
        path: bytes,
        *,
        case_sensitive: bool = True,
        regex: re.Pattern[str] | None = None,
        headers: tuple[HeaderTest, ...] = (),
        query: tuple[HeaderTest, ...] = (),
        action: RouteAction | None = None,
        direct: DirectResponse | None = None,
        redirect: Redirect | None = None,
        request_headers_to_add: tuple[tuple[bytes, bytes, bool], ...] = (),
        request_headers_to_remove: frozenset[bytes] = frozenset(),
        response_headers_to_add: tuple[tuple[bytes, bytes, bool], ...] = (),
        response_headers_to_remove: frozenset[bytes] = frozenset(),
        typed_per_filter_config: Mapping[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.kind = kind
        self.case_sensitive = case_sensitive
        self.path = path if case_sensitive else path.lower()
        self.regex = regex
        self.headers = headers
        self.query = query
        self.action = action
        self.direct = direct
        self.redirect = redirect
        self.request_headers_to_add = request_headers_to_add
        self.request_headers_to_remove = request_headers_to_remove
        self.response_headers_to_add = response_headers_to_add
        self.response_headers_to_remove = response_headers_to_remove
        self.typed_per_filter_config = typed_per_filter_config or {}
        self.include_attempt_count = False  # x-envoy-attempt-count on upstream requests

    def path_matches(self, target: bytes) -> bool:
        """Envoy: ``prefix`` looks at the whole :path, query included; the others at the path alone."""
        if self.kind == PREFIX:
            if self.case_sensitive:
                return target.startswith(self.path)
            return target.lower().startswith(self.path)
        if self.kind == CONNECT:
            return False  # a CONNECT request is matched by VirtualHost.select_connect only
        q = target.find(b"?")
        path = target if q < 0 else target[:q]
        if not self.case_sensitive:
            path = path.lower()
        if self.kind == PATH:
            return path == self.path
        if self.kind == SEPARATED_PREFIX:
            return path == self.path or path.startswith(self.path + b"/")
        assert self.regex is not None
        return self.regex.fullmatch(path.decode("utf-8", "surrogateescape")) is not None


class VirtualHost:
    __slots__ = ("domains", "name", "needs_headers", "needs_query", "retry", "routes")

    def __init__(
        self, name: str, domains: tuple[str, ...], routes: tuple[Route, ...], retry: RetryPolicy | None = None
    ) -> None:
        self.name = name
        self.domains = domains
        self.routes = routes
        self.retry = retry
        self.needs_headers = any(r.headers for r in routes)
        self.needs_query = any(r.query for r in routes)

    def select(
        self, method: bytes, target: bytes, authority: bytes, headers: list[tuple[bytes, bytes]]
    ) -> Route | None:
        """The first route that matches the request."""
        hmap: HeaderMap | None = None
        qmap: HeaderMap | None = None
        for route in self.routes:
            if not route.path_matches(target):
                continue
            if route.headers:
                if hmap is None:
                    hmap = header_map(method, target, authority, headers)
                if not _all_hold(route.headers, hmap):
                    continue
            if route.query:
                if qmap is None:
                    qmap = parse_query(target.decode("utf-8", "surrogateescape"))
                if not _all_hold(route.query, qmap):
                    continue
            return route
        return None

    def select_connect(
        self, method: bytes, target: bytes, authority: bytes, headers: list[tuple[bytes, bytes]]
    ) -> Route | None:
        """The first connect_matcher route whose header conditions hold: as in Envoy, a CONNECT request
        matches no route by path, and no other request matches these."""
        hmap: HeaderMap | None = None
        for route in self.routes:
            if route.kind != CONNECT:
                continue
            if route.headers:
                if hmap is None:
                    hmap = header_map(method, target, authority, headers)
                if not _all_hold(route.headers, hmap):
                    continue
            return route
        return None


def _all_hold(tests: tuple[HeaderTest, ...], values: HeaderMap) -> bool:
    for test in tests:
        if not test(values):
            return False
    return True


def header_map(
    method: bytes, target: bytes, authority: bytes, headers: list[tuple[bytes, bytes]]
) -> dict[str, str]:
    """Header values by lower-case name, repeated headers joined with "," (Envoy's view for matching),
    with the pseudo-headers HTTP/2 would carry."""
    out: dict[str, str] = {
        ":method": method.decode("latin-1"),
        ":path": target.decode("utf-8", "surrogateescape"),
        ":authority": authority.decode("utf-8", "surrogateescape"),
        ":scheme": "http",
    }
    for name, value in headers:
        key = name.decode("latin-1")
        text = value.decode("utf-8", "surrogateescape")
        if key in out and not key.startswith(":"):
            out[key] = out[key] + "," + text
        elif key != "host":
            out[key] = text
    return out


class RouteTable:
    """A RouteConfiguration ready for requests."""

    __slots__ = ("_cache", "default", "exact", "name", "prefixes", "suffixes")

    def __init__(self, name: str, vhosts: list[VirtualHost]) -> None:
        self.name = name
        self.exact: dict[bytes, VirtualHost] = {}
        suffixes: list[tuple[bytes, VirtualHost]] = []
        prefixes: list[tuple[bytes, VirtualHost]] = []
        self.default: VirtualHost | None = None
        for vh in vhosts:
            for domain in vh.domains:
                d = domain.lower().encode()
                if d == b"*":
                    self.default = self.default or vh
                elif d.startswith(b"*"):
                    suffixes.append((d[1:], vh))
                elif d.endswith(b"*"):
                    prefixes.append((d[:-1], vh))
                else:
                    self.exact.setdefault(d, vh)
        # Longest wildcard first; for equal lengths the first declared (sort is stable).
        self.suffixes = tuple(sorted(suffixes, key=lambda t: -len(t[0])))
        self.prefixes = tuple(sorted(prefixes, key=lambda t: -len(t[0])))
        self._cache: dict[bytes, VirtualHost | None] = {}

    def vhost(self, host: bytes) -> VirtualHost | None:
        """The virtual host for a Host header value (compared case-insensitively, port included)."""
        vh = self._cache.get(host, self)  # self: "not cached"
        if vh is not self:
            return vh  # type: ignore[return-value]
        key = host.lower()
        vh = self.exact.get(key)
        if vh is None:
            for suffix, cand in self.suffixes:
                if key.endswith(suffix) and len(key) > len(suffix):
                    vh = cand
                    break
        if vh is None:
            for prefix, cand in self.prefixes:
                if key.startswith(prefix) and len(key) > len(prefix):
                    vh = cand
                    break
        if vh is None:
            vh = self.default
        if len(self._cache) >= _VHOST_CACHE_MAX:
            self._cache.clear()
        self._cache[host] = vh
        return vh
