"""mizzen-proxy as a real process proxying HTTP/1.1 from static bootstraps, over real sockets.

Every behaviour runs twice: with the compiled modules, and with their pure-Python twins
(``MIZZEN_NO_EXTENSIONS=1``), which must behave the same.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import rawhttp
from support.envoy import bootstrap, http_chain, http_listener, route, route_config, static_cluster, vhost
from support.proxyproc import ProxyProcess, free_port, http_get
from support.upstream import Upstream

IMPLS = {"compiled": {}, "python": {"MIZZEN_NO_EXTENSIONS": "1"}}


@pytest.fixture(scope="module")
def upstreams() -> Iterator[dict[str, Upstream]]:
    ups = {name: Upstream(name) for name in ("a", "b", "c")}
    yield ups
    for up in ups.values():
        up.stop()


@pytest.fixture(params=list(IMPLS))
def impl(request: pytest.FixtureRequest) -> dict[str, str]:
    return IMPLS[request.param]


class Mesh:
    """One proxy on a free port with the given routes and clusters; stopped after the test."""

    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        self.tmp = tmp
        self.env = env
        self.proxies: list[ProxyProcess] = []

    def start(self, vhosts: list[dict[str, Any]], clusters: list[dict[str, Any]], **hcm: Any) -> int:
        port = free_port()
        boot = bootstrap(
            [http_listener("http", "127.0.0.1", port, http_chain(route_config("local", *vhosts), **hcm))],
            clusters,
        )
        proxy = ProxyProcess(self.tmp, boot, env=self.env)
        self.proxies.append(proxy)
        proxy.wait_ready()
        self.proxy = proxy
        return port

    def stop(self) -> None:
        for p in self.proxies:
            p.stop()


@pytest.fixture
def mesh(tmp_path: Path, impl: dict[str, str]) -> Iterator[Mesh]:
    m = Mesh(tmp_path, impl)
    yield m
    m.stop()


def cluster(name: str, *ups: Upstream, **fields: Any) -> dict[str, Any]:
    c = static_cluster(name, *[("127.0.0.1", u.port) for u in ups])
    c.update(fields)
    return c


def body(resp: rawhttp.Response) -> dict[str, Any]:
    return json.loads(resp.body)  # type: ignore[no-any-return]


def stat(proxy: ProxyProcess, name: str) -> int:
    text = http_get(proxy.url("/stats", proxy.admin))[1]
    for line in text.splitlines():
        key, _, value = line.partition(": ")
        if key == name:
            return int(value)
    return 0


# -- the basics ---------------------------------------------------------------------------------


def test_request_reaches_the_upstream_with_a_request_id(mesh: Mesh, upstreams: dict[str, Upstream]) -> None:
    port = mesh.start([vhost("v", ["*"], route("a"))], [cluster("a", upstreams["a"])])
    resp = rawhttp.get(port, "/hello?x=1", headers={"X-Custom": "kept"})
    assert resp.status == 200
    seen = body(resp)
    assert seen["name"] == "a" and seen["path"] == "/hello?x=1" and seen["headers"]["x-custom"] == "kept"
    assert len(seen["headers"]["x-request-id"]) == 36  # generated: a UUID
    assert resp.header("x-envoy-upstream-service-time") is not None
    # An incoming x-request-id is kept, not replaced.
    resp = rawhttp.get(port, "/", headers={"X-Request-Id": "abc-123"})
    assert body(resp)["headers"]["x-request-id"] == "abc-123"


def test_keep_alive_and_pipelining_keep_order(mesh: Mesh, upstreams: dict[str, Upstream]) -> None:
    port = mesh.start([vhost("v", ["*"], route("a"))], [cluster("a", upstreams["a"])])
    with rawhttp.Conn(port) as c:
        c.send(
            b"GET /1?delay=0.2 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n"
            b"POST /3 HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"
        )
        first, second, third = c.read_response(), c.read_response(), c.read_response()
        assert [body(r)["path"] for r in (first, second, third)] == ["/1?delay=0.2", "/2", "/3"]
        assert body(third)["body_len"] == 5
        # Still open and usable afterwards.
        c.send(b"GET /4 HTTP/1.1\r\nHost: h\r\n\r\n")
        assert body(c.read_response())["path"] == "/4"


def test_bodies_chunked_and_large_pass_through(mesh: Mesh, upstreams: dict[str, Upstream]) -> None:
    port = mesh.start([vhost("v", ["*"], route("a"))], [cluster("a", upstreams["a"])])
    with rawhttp.Conn(port) as c:
        c.send(
            b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        )
        assert body(c.read_response())["body_len"] == 11
        big = b"z" * (3 * 1024 * 1024)
        c.send(b"PUT /big HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % len(big) + big)
        assert body(c.read_response())["body_len"] == len(big)
        c.send(b"GET /?size=2000000 HTTP/1.1\r\nHost: h\r\n\r\n")
        assert c.read_response().body == b"x" * 2000000


def test_routing_by_host_path_and_header(mesh: Mesh, upstreams: dict[str, Upstream]) -> None:
    a, b, c = upstreams["a"], upstreams["b"], upstreams["c"]
    port = mesh.start(
        [
            vhost(
                "reviews",
                ["reviews", "reviews:9080"],
                route(
                    "b",
                    match={
                        "prefix": "/",
                        "headers": [{"name": "end-user", "string_match": {"exact": "jason"}}],
                    },
                ),
                route("c", match={"path": "/exact"}),
                route("c", match={"safe_regex": {"regex": "/api/v[0-9]+/.*"}}),
                route("a"),
            ),
            vhost("other", ["*.example.com"], route("c")),
        ],
        [cluster("a", a), cluster("b", b), cluster("c", c)],
    )
    assert body(rawhttp.get(port, "/x", host="reviews"))["name"] == "a"
    assert body(rawhttp.get(port, "/x", host="reviews:9080", headers={"end-user": "jason"}))["name"] == "b"
    assert (
        body(rawhttp.get(port, "/exact?q=1", host="reviews"))["name"] == "c"
    )  # path match ignores the query
    assert body(rawhttp.get(port, "/exact/more", host="reviews"))["name"] == "a"
    assert body(rawhttp.get(port, "/api/v2/items", host="reviews"))["name"] == "c"
    assert body(rawhttp.get(port, "/", host="shop.example.com"))["name"] == "c"
    no_route = rawhttp.get(port, "/", host="unknown")
    assert no_route.status == 404
    text = mesh.proxy.prometheus()
    assert 'response_code="404",grpc_response_status="",response_flags="NR"' in text


def test_weighted_split_and_round_robin(mesh: Mesh, upstreams: dict[str, Upstream]) -> None:
    a, b, c = upstreams["a"], upstreams["b"], upstreams["c"]
    port = mesh.start(
        [
            vhost(
                "v",
                ["split"],
                {
                    "match": {"prefix": "/"},
                    "route": {
                        "weighted_clusters": {
                            "clusters": [{"name": "a", "weight": 80}, {"name": "bc", "weight": 20}]
                        }
                    },
                },
            ),
            vhost("rr", ["rr"], route("bc")),
        ],
        [cluster("a", a), cluster("bc", b, c, lb_policy="ROUND_ROBIN")],
    )
    names = [body(rawhttp.get(port, "/", host="split"))["name"] for _ in range(200)]
    share_a = names.count("a") / len(names)
    assert 0.65 < share_a < 0.93, share_a
    rr = [body(rawhttp.get(port, "/", host="rr"))["name"] for _ in range(20)]
    assert rr.count("b") == rr.count("c") == 10  # strict alternation


# -- resilience ---------------------------------------------------------------------------------


def test_retries_on_5xx_then_succeed(mesh: Mesh, upstreams: dict[str, Upstream]) -> None:
    port = mesh.start(
        [
            vhost(
                "v",
                ["*"],
                route(
                    "a",
                    retry_policy={
                        "retry_on": "5xx",
                        "num_retries": 2,
                        "retry_back_off": {"base_interval": "0.01s"},
                    },
                ),
            )
        ],
        [cluster("a", upstreams["a"])],
    )
    key = f"k{time.monotonic_ns()}"
    resp = rawhttp.get(port, f"/?fail=2&key={key}", method="POST", body=b"payload")
    assert resp.status == 200 and body(resp)["body_len"] == 7  # the body was replayed
    assert stat(mesh.proxy, "cluster.a.upstream_rq_retry") == 2
    key = f"k{time.monotonic_ns()}"
    resp = rawhttp.get(port, f"/?fail=5&key={key}")
    assert resp.status == 503 and resp.body.startswith(b"failing")  # the upstream's own last answer
    text = mesh.proxy.prometheus()
    assert 'response_code="503",grpc_response_status="",response_flags="URX"' in text


def test_retriable_status_codes_only(mesh: Mesh, upstreams: dict[str, Upstream]) -> None:
    port = mesh.start(
        [
            vhost(
                "v",
                ["*"],
                route(
                    "a",
                    retry_policy={
                        "retry_on": "retriable-status-codes",
                        "num_retries": 3,
                        "retriable_status_codes": [503],
                    },
                ),
            )
        ],
        [cluster("a", upstreams["a"])],
    )
    assert rawhttp.get(port, "/?status=500").status == 500  # not listed: no retry
    assert stat(mesh.proxy, "cluster.a.upstream_rq_retry") == 0
    key = f"k{time.monotonic_ns()}"
    assert rawhttp.get(port, f"/?fail=1&key={key}").status == 200
    assert stat(mesh.proxy, "cluster.a.upstream_rq_retry") == 1


def test_route_timeout_is_504_ut(mesh: Mesh, upstreams: dict[str, Upstream]) -> None:
    port = mesh.start([vhost("v", ["*"], route("a", timeout="0.3s"))], [cluster("a", upstreams["a"])])
    started = time.monotonic()
    resp = rawhttp.get(port, "/?delay=3")
    assert resp.status == 504 and resp.body == b"upstream request timeout"
    assert time.monotonic() - started < 2.5
    assert 'response_code="504",grpc_response_status="",response_flags="UT"' in mesh.proxy.prometheus()


def test_per_try_timeout_retries_elsewhere(mesh: Mesh, upstreams: dict[str, Upstream]) -> None:
    port = mesh.start(
        [
            vhost(
                "v",
                ["*"],
                route(
                    "ab",
                    timeout="5s",
                    retry_policy={
                        "retry_on": "5xx",
                        "num_retries": 1,
                        "per_try_timeout": "0.3s",
                        "retry_host_predicate": [{"name": "envoy.retry_host_predicates.previous_hosts"}],
                    },
                ),
            )
        ],
        [cluster("ab", upstreams["a"], upstreams["b"], lb_policy="ROUND_ROBIN")],
    )
    # The first try goes to one host and times out; the retry must pick the other host.
    resp = rawhttp.get(port, "/?delay=1")
    assert resp.status == 504  # both slow: the retry times out as well
    assert stat(mesh.proxy, "cluster.ab.upstream_rq_retry") == 1


def test_connect_failure_is_503_uf(mesh: Mesh) -> None:
    dead = free_port()
    port = mesh.start(
        [vhost("v", ["*"], route("dead"))], [static_cluster("dead", ("127.0.0.1", dead), timeout="0.5s")]
    )
    resp = rawhttp.get(port, "/")
    assert resp.status == 503 and b"connection failure" in resp.body
    assert 'response_flags="UF"' in mesh.proxy.prometheus()


def test_upstream_reset_before_response_is_503_uc(mesh: Mesh, upstreams: dict[str, Upstream]) -> None:
    port = mesh.start([vhost("v", ["*"], route("a"))], [cluster("a", upstreams["a"])])
    resp = rawhttp.get(port, "/?reset=1")
    assert resp.status == 503 and b"connection termination" in resp.body
    assert 'response_flags="UC"' in mesh.proxy.prometheus()


def test_circuit_breaker_overflow_is_503_uo(mesh: Mesh, upstreams: dict[str, Upstream]) -> None:
    port = mesh.start(
        [vhost("v", ["*"], route("a"))],
        [cluster("a", upstreams["a"], circuit_breakers={"thresholds": [{"max_requests": 1}]})],
    )
    slow: list[rawhttp.Response] = []
    t = threading.Thread(target=lambda: slow.append(rawhttp.get(port, "/?delay=1")))
    t.start()
    time.sleep(0.4)
    resp = rawhttp.get(port, "/")
    t.join()
    assert slow[0].status == 200
    assert resp.status == 503 and b"overflow" in resp.body
    assert 'response_flags="UO"' in mesh.proxy.prometheus()


def test_unknown_cluster_is_503_nc_and_direct_responses(mesh: Mesh, upstreams: dict[str, Upstream]) -> None:
    port = mesh.start(
        [
            vhost(
                "v",
                ["*"],
                {
                    "match": {"prefix": "/direct"},
                    "direct_response": {"status": 418, "body": {"inline_string": "tea"}},
                },
                {
                    "match": {"prefix": "/old"},
                    "redirect": {"prefix_rewrite": "/new", "response_code": "FOUND"},
                },
                route("a"),
            )
        ],
        [cluster("a", upstreams["a"])],
    )
    direct = rawhttp.get(port, "/direct")
    assert direct.status == 418 and direct.body == b"tea"
    moved = rawhttp.get(port, "/old/page?q=1", host="shop")
    assert moved.status == 302 and moved.header("location") == "http://shop/new/page?q=1"


def test_rewrites(mesh: Mesh, upstreams: dict[str, Upstream]) -> None:
    port = mesh.start(
        [
            vhost(
                "v",
                ["*"],
                route(
                    "a",
                    prefix="/v1/",
                    prefix_rewrite="/internal/",
                    host_rewrite_literal="backend",
                ),
                request_headers_to_add=[{"header": {"key": "x-added", "value": "yes"}}],
                request_headers_to_remove=["x-secret"],
            )
        ],
        [cluster("a", upstreams["a"])],
    )
    seen = body(rawhttp.get(port, "/v1/items?x=1", headers={"x-secret": "s"}))
    assert seen["path"] == "/internal/items?x=1"
    assert seen["headers"]["host"] == "backend" and seen["headers"]["x-added"] == "yes"
    assert "x-secret" not in seen["headers"]


# -- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n folded\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x00b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"v" * 70000 + b"\r\n\r\n", 431),
        (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
        (b"GET / HTTP/3.0\r\nHost: h\r\n\r\n", 505),
    ],
    ids=["cl-and-te", "conflicting-cl", "obs-fold", "nul", "huge-header", "bad-chunk", "version"],
)
def test_malformed_requests_get_4xx_and_a_closed_connection(
    mesh: Mesh, upstreams: dict[str, Upstream], request_bytes: bytes, status: int
) -> None:
    port = mesh.start([vhost("v", ["*"], route("a"))], [cluster("a", upstreams["a"])])
    before = int(http_get(f"http://127.0.0.1:{upstreams['a'].port}/__count")[1])
    with rawhttp.Conn(port) as c:
        c.send(request_bytes + b"GET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n")
        resp = c.read_response()
        assert resp.status == status
        assert resp.header("connection") == "close"
        assert c.closed_by_peer()
    # Nothing reached the upstream: neither the bad request nor what followed it.
    assert int(http_get(f"http://127.0.0.1:{upstreams['a'].port}/__count")[1]) == before


def test_slow_head_times_out_with_408(mesh: Mesh, upstreams: dict[str, Upstream]) -> None:
    port = mesh.start(
        [vhost("v", ["*"], route("a"))], [cluster("a", upstreams["a"])], request_headers_timeout="0.5s"
    )
    with rawhttp.Conn(port) as c:
        c.send(b"GET / HTTP/1.1\r\nHost: h\r\n")  # and never the blank line
        resp = c.read_response()
        assert resp.status == 408
        assert c.closed_by_peer()


def test_http10_client(mesh: Mesh, upstreams: dict[str, Upstream]) -> None:
    port = mesh.start([vhost("v", ["*"], route("a"))], [cluster("a", upstreams["a"])])
    with rawhttp.Conn(port) as c:
        c.send(b"GET /old HTTP/1.0\r\n\r\n")
        resp = c.read_response()
        assert resp.status == 200 and body(resp)["path"] == "/old"
        assert c.closed_by_peer()


# -- telemetry ----------------------------------------------------------------------------------


def test_metrics_and_access_log(mesh: Mesh, upstreams: dict[str, Upstream], tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    port = mesh.start(
        [vhost("v", ["*"], route("outbound|9080||a.default.svc.cluster.local"))],
        [cluster("outbound|9080||a.default.svc.cluster.local", upstreams["a"])],
        access_log=[
            {
                "name": "envoy.access_loggers.file",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                    "path": str(log),
                },
            }
        ],
    )
    for _ in range(3):
        assert rawhttp.get(port, "/m", headers={"User-Agent": "tester"}).status == 200
    text = mesh.proxy.prometheus()
    line = next(x for x in text.splitlines() if x.startswith("istio_requests_total{"))
    assert 'reporter="source"' in line and 'destination_service="a.default.svc.cluster.local"' in line
    assert 'destination_service_name="a"' in line and 'destination_service_namespace="default"' in line
    assert 'response_code="200"' in line and line.endswith(" 3")
    assert "istio_request_duration_milliseconds_bucket{" in text and 'le="+Inf"} 3' in text
    deadline = time.monotonic() + 3
    while (not log.exists() or log.read_text().count("\n") < 3) and time.monotonic() < deadline:
        time.sleep(0.1)
    entries = log.read_text().splitlines()
    assert len(entries) == 3
    assert '"GET /m HTTP/1.1" 200 - via_upstream' in entries[0] and '"tester"' in entries[0]
    assert "outbound|9080||a.default.svc.cluster.local" in entries[0]


def test_websocket_upgrade_is_a_tunnel(mesh: Mesh) -> None:
    """A 101 switches the connection to raw bytes both ways (an upstream speaking its own protocol)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def serve() -> None:
        conn, _ = server.accept()
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(4096)
        conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
        while chunk := conn.recv(4096):
            conn.sendall(chunk.upper())
        conn.close()

    threading.Thread(target=serve, daemon=True).start()
    port = mesh.start(
        [vhost("v", ["*"], route("ws"))],
        [static_cluster("ws", ("127.0.0.1", server.getsockname()[1]))],
        upgrade_configs=[{"upgrade_type": "websocket"}],
    )
    try:
        with rawhttp.Conn(port) as c:
            c.send(b"GET /chat HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
            resp = c.read_response()
            assert resp.status == 101 and resp.header("upgrade") == "websocket"
            c.send(b"frames")
            got = c.buf
            while len(got) < 6:
                got += c.sock.recv(100)
            assert got == b"FRAMES"
    finally:
        server.close()


def test_connect_is_forwarded_and_becomes_a_tunnel(mesh: Mesh, upstreams: dict[str, Upstream]) -> None:
    """CONNECT with the connection manager's CONNECT upgrade: a connect_matcher route forwards it to an
    upstream that is itself a forward proxy; its 2xx opens a tunnel both ways, half-closes included."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    seen: list[bytes] = []

    def serve() -> None:
        conn, _ = server.accept()
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(4096)
        seen.append(data)
        conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        while chunk := conn.recv(4096):
            conn.sendall(chunk.upper())
        conn.sendall(b"BYE")  # after the client's half-close: the tunnel still carries this way
        conn.close()

    threading.Thread(target=serve, daemon=True).start()
    port = mesh.start(
        [
            vhost(
                "v",
                ["*"],
                route("fwd", match={"connect_matcher": {}}),
                route("a"),  # plain requests: a connect_matcher route never takes them
            )
        ],
        [static_cluster("fwd", ("127.0.0.1", server.getsockname()[1])), cluster("a", upstreams["a"])],
        upgrade_configs=[{"upgrade_type": "CONNECT"}],
    )
    try:
        assert rawhttp.get(port, "/x").status == 200
        with rawhttp.Conn(port) as c:
            c.send(b"CONNECT db.example:5432 HTTP/1.1\r\nHost: db.example:5432\r\n\r\n")
            resp = c.read_response(head_request=True)
            assert resp.status == 200
            c.send(b"select 1")
            got = c.buf
            while len(got) < 8:
                got += c.sock.recv(100)
            assert got == b"SELECT 1"
            c.sock.shutdown(socket.SHUT_WR)
            rest = b""
            while chunk := c.sock.recv(100):
                rest += chunk
            assert rest == b"BYE"
        assert seen[0].startswith(b"CONNECT db.example:5432 HTTP/1.1\r\n")
    finally:
        server.close()
    # Without the upgrade on the connection manager, CONNECT is refused (403), as Envoy does.
    plain = mesh.start([vhost("v", ["*"], route("a"))], [cluster("a", upstreams["a"])])
    with rawhttp.Conn(plain) as c:
        c.send(b"CONNECT db.example:5432 HTTP/1.1\r\nHost: db.example:5432\r\n\r\n")
        assert c.read_response(head_request=True).status == 403


def test_upgrade_not_configured_is_refused(mesh: Mesh, upstreams: dict[str, Upstream]) -> None:
    port = mesh.start([vhost("v", ["*"], route("a"))], [cluster("a", upstreams["a"])])
    with rawhttp.Conn(port) as c:
        c.send(b"GET /chat HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
        assert c.read_response().status == 403


def test_stream_idle_timeout_when_routes_have_none(mesh: Mesh, upstreams: dict[str, Upstream]) -> None:
    """Istio sets route timeouts to 0s: the stream idle timeout is then what ends a hung request."""
    port = mesh.start(
        [vhost("v", ["*"], route("a", timeout="0s"))],
        [cluster("a", upstreams["a"])],
        stream_idle_timeout="0.4s",
    )
    started = time.monotonic()
    resp = rawhttp.get(port, "/?delay=3")
    assert resp.status == 504 and time.monotonic() - started < 2.5
    assert 'response_flags="SI"' in mesh.proxy.prometheus()
    # A slow but steady stream is not idle: a 2 MB body arrives over several reads.
    assert len(rawhttp.get(port, "/?size=2000000").body) == 2000000
