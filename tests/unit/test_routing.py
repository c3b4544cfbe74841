"""Route tables and pickers: every case over the compiled modules and their pure-Python twins."""

from __future__ import annotations

import re
from types import ModuleType

import pytest
from support.impls import both

ROUTING = both("fastpath.routing")
LB = both("fastpath.lb")


def ids(mods: list[ModuleType]) -> list[str]:
    return ["compiled" if str(m.__file__).endswith(".so") else "python" for m in mods]


@pytest.fixture(params=ROUTING, ids=ids(ROUTING))
def r(request: pytest.FixtureRequest) -> ModuleType:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture(params=LB, ids=ids(LB))
def lb(request: pytest.FixtureRequest) -> ModuleType:
    return request.param  # type: ignore[no-any-return]


def vh(r: ModuleType, name: str, domains: list[str], *routes: object) -> object:
    routes = routes or (r.Route(name, r.PREFIX, b"/"),)
    return r.VirtualHost(name, tuple(domains), tuple(routes))


def test_virtual_host_order_is_envoys(r: ModuleType) -> None:
    table = r.RouteTable(
        "t",
        [
            vh(r, "exact", ["api.example.com", "api.example.com:8080"]),
            vh(r, "suffix-short", ["*.com"]),
            vh(r, "suffix-long", ["*.example.com"]),
            vh(r, "prefix", ["api.*"]),
            vh(r, "any", ["*"]),
        ],
    )
    name = lambda host: table.vhost(host).name  # noqa: E731
    assert name(b"api.example.com") == "exact"
    assert name(b"API.Example.COM:8080") == "exact"  # case-insensitive, port included
    assert name(b"api.example.com:9090") == "prefix"  # this port is not listed; wildcards see the port too
    assert name(b"www.example.com") == "suffix-long"  # the longest suffix wins
    assert name(b"www.other.com") == "suffix-short"
    assert name(b"api.internal") == "prefix"
    assert name(b"localhost") == "any"
    assert name(b"example.com") == "suffix-short"  # "*.example.com" needs something before the dot
    no_default = r.RouteTable("t", [vh(r, "only", ["a"])])
    assert no_default.vhost(b"b") is None


def test_path_matching(r: ModuleType) -> None:
    prefix = r.Route("p", r.PREFIX, b"/api")
    assert (
        prefix.path_matches(b"/api/v1") and prefix.path_matches(b"/apix") and not prefix.path_matches(b"/ap")
    )
    exact = r.Route("e", r.PATH, b"/login")
    assert exact.path_matches(b"/login?next=/") and not exact.path_matches(b"/login/x")
    sep = r.Route("s", r.SEPARATED_PREFIX, b"/api")
    assert sep.path_matches(b"/api") and sep.path_matches(b"/api/x?q") and not sep.path_matches(b"/apix")
    regex = r.Route("x", r.REGEX, b"", regex=re.compile(r"/v[0-9]+/items"))
    assert regex.path_matches(b"/v2/items?a=1") and not regex.path_matches(b"/v2/items/1")
    nocase = r.Route("n", r.PATH, b"/Login", case_sensitive=False)
    assert nocase.path_matches(b"/LOGIN") and nocase.path_matches(b"/login")


def test_first_matching_route_with_headers_and_query(r: ModuleType) -> None:
    jason = r.Route("jason", r.PREFIX, b"/", headers=(lambda h: h.get("end-user") == "jason",))
    post = r.Route("post", r.PREFIX, b"/", headers=(lambda h: h.get(":method") == "POST",))
    beta = r.Route("beta", r.PREFIX, b"/", query=(lambda q: q.get("beta") == "1",))
    rest = r.Route("rest", r.PREFIX, b"/")
    v = r.VirtualHost("v", ("*",), (jason, post, beta, rest))
    assert v.needs_headers and v.needs_query
    pick = lambda method, target, headers=(): v.select(method, target, b"h", list(headers)).name  # noqa: E731
    assert pick(b"GET", b"/", [(b"end-user", b"jason")]) == "jason"
    assert pick(b"POST", b"/") == "post"
    assert pick(b"GET", b"/x?beta=1") == "beta"
    assert pick(b"GET", b"/x?beta=2") == "rest"
    # Repeated headers are seen joined, as Envoy matches them.
    joined = r.Route("j", r.PREFIX, b"/", headers=(lambda h: h.get("x-a") == "1,2",))
    assert r.VirtualHost("v", ("*",), (joined,)).select(b"GET", b"/", b"h", [(b"x-a", b"1"), (b"x-a", b"2")])
    assert r.VirtualHost("v", ("*",), (jason,)).select(b"GET", b"/", b"h", []) is None


def test_connect_requests_match_connect_routes_only(r: ModuleType) -> None:
    # Envoy's connect_matcher: CONNECT is matched by these routes alone, which take nothing else.
    everything = r.Route("everything", r.PREFIX, b"")
    vip = r.Route("vip", r.CONNECT, b"", headers=(lambda h: h.get("x-tier") == "vip",))
    tunnel = r.Route("tunnel", r.CONNECT, b"")
    v = r.VirtualHost("v", ("*",), (everything, vip, tunnel))
    assert not tunnel.path_matches(b"/") and not tunnel.path_matches(b"db:5432")
    assert v.select(b"GET", b"/", b"h", []).name == "everything"
    assert v.select_connect(b"CONNECT", b"db:5432", b"db:5432", []).name == "tunnel"
    assert v.select_connect(b"CONNECT", b"db:5432", b"db:5432", [(b"x-tier", b"vip")]).name == "vip"
    assert r.VirtualHost("v", ("*",), (everything,)).select_connect(b"CONNECT", b"db:1", b"db:1", []) is None


def test_weighted_clusters_and_retry_policy(r: ModuleType) -> None:
    w = r.WeightedClusters([("a", 80), ("b", 0), ("c", 20)])
    assert w.total == 100 and w.names == ("a", "c")
    assert [w.pick(n) for n in (0, 79, 80, 99)] == ["a", "a", "c", "c"]
    p = r.RetryPolicy(
        2,
        on=frozenset({"gateway-error", "retriable-status-codes", "unavailable"}),
        retriable_status_codes=frozenset({409}),
    )
    assert p.retriable_response(503, None) and p.retriable_response(409, None)
    assert not p.retriable_response(500, None) and p.retriable_response(200, 14)
    assert (
        p.retries_connect_failure
        and not r.RetryPolicy(1, on=frozenset({"retriable-4xx"})).retries_connect_failure
    )
    assert p.max_interval == pytest.approx(0.25)  # 10x the base, Envoy's default cap


class H:
    def __init__(self, name: str, weight: int = 1, active: int = 0) -> None:
        self.name, self.weight, self.active_requests = name, weight, active


def test_round_robin(lb: ModuleType) -> None:
    hosts = [H("a"), H("b"), H("c")]
    rr = lb.RoundRobin(hosts)
    assert [rr.pick().name for _ in range(6)] == ["a", "b", "c", "a", "b", "c"]
    assert rr.pick(exclude=hosts[0]).name == "b"  # the next was a: skipped
    weighted = lb.RoundRobin([H("a", 5), H("b", 1), H("c", 1)])
    seq = [weighted.pick().name for _ in range(14)]
    assert seq.count("a") == 10 and seq.count("b") == seq.count("c") == 2
    assert "aaa" not in "".join(seq[:7])[:3] or seq[:7].count("a") == 5  # smooth: spread, not bunched
    assert lb.RoundRobin([]).pick() is None


def test_least_request_prefers_the_idle_host(lb: ModuleType) -> None:
    busy, idle = H("busy", active=10), H("idle", active=0)
    rolls = iter([0, 1, 1, 0])
    p = lb.LeastRequest([busy, idle], rand=lambda n: next(rolls))
    assert p.pick().name == "idle" and p.pick().name == "idle"
    heavy = H("heavy", weight=10, active=5)  # 6/10 beats 1/1 once weights count
    rolls = iter([0, 1])
    assert lb.LeastRequest([heavy, H("light", active=0)], rand=lambda n: next(rolls)).pick().name == "heavy"


def test_random_follows_weights(lb: ModuleType) -> None:
    p = lb.Random([H("a", 3), H("b", 1)], rand=lambda n: 2)
    assert p.pick().name == "a"
    p = lb.Random([H("a", 3), H("b", 1)], rand=lambda n: 3)
    assert p.pick().name == "b"
