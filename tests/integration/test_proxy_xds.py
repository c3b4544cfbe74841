"""mizzen-proxy configured over ADS from a test control plane: initial config, live updates under load,
NACKs that keep the last good config, reconnection with resume, and SotW."""

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
from support.ads import AdsServer
from support.envoy import HCM, ROUTER, addr, static_cluster, tcp_chain
from support.proxyproc import ProxyProcess, free_port, http_get
from support.upstream import Upstream

from fastpath.config import CLUSTER, ENDPOINT, LISTENER, ROUTE


@pytest.fixture(scope="module")
def upstreams() -> Iterator[dict[str, Upstream]]:
    ups = {name: Upstream(name) for name in ("a", "b")}
    yield ups
    for up in ups.values():
        up.stop()


@pytest.fixture
def ads() -> Iterator[AdsServer]:
    server = AdsServer()
    yield server
    server.stop()


def xds_bootstrap(ads: AdsServer, delta: bool = True) -> dict[str, Any]:
    return {
        "node": {
            "id": "sidecar~127.0.0.1~web-1.shop~shop.svc.cluster.local",
            "cluster": "web.shop",
            "metadata": {
                "NAMESPACE": "shop",
                "WORKLOAD_NAME": "web",
                "LABELS": {"app": "web", "version": "v1"},
            },
        },
        "dynamic_resources": {
            "ads_config": {
                "api_type": "DELTA_GRPC" if delta else "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}],
            },
            "cds_config": {"ads": {}, "resource_api_version": "V3"},
            "lds_config": {"ads": {}, "resource_api_version": "V3"},
        },
        "static_resources": {"clusters": [static_cluster("xds-grpc", ("127.0.0.1", ads.port))]},
    }


def eds_cluster(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "type": "EDS",
        "connect_timeout": "1s",
        "lb_policy": "ROUND_ROBIN",
        "eds_cluster_config": {"eds_config": {"ads": {}, "resource_api_version": "V3"}},
    }


def assignment(name: str, *ups: Upstream) -> dict[str, Any]:
    return {
        "cluster_name": name,
        "endpoints": [{"lb_endpoints": [{"endpoint": {"address": addr("127.0.0.1", u.port)}} for u in ups]}],
    }


def listener(port: int) -> dict[str, Any]:
    return {
        "name": "web",
        "address": addr("127.0.0.1", port),
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": {
                            "@type": HCM,
                            "stat_prefix": "web",
                            "rds": {
                                "config_source": {"ads": {}, "resource_api_version": "V3"},
                                "route_config_name": "web-routes",
                            },
                            "http_filters": [{"name": "router", "typed_config": {"@type": ROUTER}}],
                        },
                    }
                ]
            }
        ],
    }


def routes(cluster: str, regex: str | None = None) -> dict[str, Any]:
    match: dict[str, Any] = {"safe_regex": {"regex": regex}} if regex else {"prefix": "/"}
    return {
        "name": "web-routes",
        "virtual_hosts": [
            {"name": "all", "domains": ["*"], "routes": [{"match": match, "route": {"cluster": cluster}}]}
        ],
    }


def serve(ads: AdsServer, port: int, ups: dict[str, Upstream]) -> None:
    for name in ("a", "b"):
        ads.set(CLUSTER, eds_cluster(name))
        ads.set(ENDPOINT, assignment(name, ups[name]))
    ads.set(ROUTE, routes("a"))
    ads.set(LISTENER, listener(port))


def served_by(port: int) -> str:
    return json.loads(rawhttp.get(port, "/").body)["name"]  # type: ignore[no-any-return]


def test_initial_config_over_delta_then_ready(
    tmp_path: Path, ads: AdsServer, upstreams: dict[str, Upstream]
) -> None:
    port = free_port()
    proxy = ProxyProcess(tmp_path, xds_bootstrap(ads))
    try:
        # Nothing served yet: not ready.
        ads.wait(lambda: ads.connects == 1, what="the proxy to connect")
        assert http_get(proxy.url("/healthz/ready"))[0] == 503
        ads.set(CLUSTER, eds_cluster("a"))
        ads.set(LISTENER, listener(port))
        time.sleep(0.3)
        assert http_get(proxy.url("/healthz/ready"))[0] == 503  # endpoints and routes still missing
        ads.set(ENDPOINT, assignment("a", upstreams["a"]))
        ads.set(ROUTE, routes("a"))
        proxy.wait_ready()
        assert served_by(port) == "a"
        ads.wait(lambda: len(ads.replies) >= 4 and not ads.nacks(), what="4 ACKs")
        dump = json.loads(http_get(proxy.url("/config_dump", proxy.admin))[1])
        assert [r["name"] for r in dump["routes"]] == ["web-routes"]
    finally:
        assert proxy.stop() == 0


def test_route_swaps_under_load_lose_no_request(
    tmp_path: Path, ads: AdsServer, upstreams: dict[str, Upstream]
) -> None:
    port = free_port()
    serve(ads, port, upstreams)
    proxy = ProxyProcess(tmp_path, xds_bootstrap(ads))
    failures: list[str] = []
    seen: set[str] = set()
    stop = threading.Event()

    def load(keepalive: bool) -> None:
        conn = rawhttp.Conn(port) if keepalive else None
        while not stop.is_set():
            try:
                if conn is not None:
                    conn.send(b"GET / HTTP/1.1\r\nHost: web\r\n\r\n")
                    resp = conn.read_response()
                else:
                    resp = rawhttp.get(port, "/")
                if resp.status != 200:
                    failures.append(f"{resp.status} {resp.body[:80]!r}")
                else:
                    seen.add(json.loads(resp.body)["name"])
            except OSError as exc:
                failures.append(repr(exc))
        if conn is not None:
            conn.close()

    try:
        proxy.wait_ready()
        workers = [threading.Thread(target=load, args=(k,)) for k in (True, True, False)]
        for w in workers:
            w.start()
        for i in range(10):
            ads.set(ROUTE, routes("b" if i % 2 == 0 else "a"))
            time.sleep(0.1)
        stop.set()
        for w in workers:
            w.join(10)
        assert failures == []
        assert seen == {"a", "b"}
        assert not ads.nacks()
    finally:
        stop.set()
        proxy.stop()


def test_broken_config_is_nacked_and_the_last_good_one_keeps_serving(
    tmp_path: Path, ads: AdsServer, upstreams: dict[str, Upstream]
) -> None:
    port = free_port()
    serve(ads, port, upstreams)
    proxy = ProxyProcess(tmp_path, xds_bootstrap(ads))
    try:
        proxy.wait_ready()
        ads.set(ROUTE, routes("b", regex="/(?=lookahead)"))  # RE2 has no lookaround: unusable
        ads.wait(lambda: bool(ads.nacks()), what="a NACK")
        nack = ads.nacks()[0]
        assert nack.type_url == ROUTE
        assert nack.error.startswith(
            'RouteConfiguration "web-routes": virtual_hosts[0].routes[0].match.safe_regex'
        )
        assert "lookaround" in nack.error
        assert served_by(port) == "a"  # still the last good routes
        ads.set(ROUTE, routes("b"))  # a good one is taken again
        ads.wait(lambda: served_by(port) == "b", what="the fixed routes")
    finally:
        proxy.stop()


def test_reconnect_resumes_without_resending(
    tmp_path: Path, ads: AdsServer, upstreams: dict[str, Upstream]
) -> None:
    port = free_port()
    serve(ads, port, upstreams)
    proxy = ProxyProcess(tmp_path, xds_bootstrap(ads))
    try:
        proxy.wait_ready()
        sent = len(ads.sent_resources)
        ads.disconnect()
        assert served_by(port) == "a"  # the control plane is away: the proxy serves on
        ads.wait(lambda: ads.connects == 2, what="a reconnect")
        time.sleep(0.3)
        assert len(ads.sent_resources) == sent  # it said which versions it holds: nothing re-sent
        ads.set(ENDPOINT, assignment("a", upstreams["b"]))  # and updates flow again
        ads.wait(lambda: served_by(port) == "b", what="the new endpoint")
        assert ads.sent_resources[sent:] == [(ENDPOINT, "a")]
    finally:
        proxy.stop()


def test_removed_listener_and_cluster(tmp_path: Path, ads: AdsServer, upstreams: dict[str, Upstream]) -> None:
    port = free_port()
    serve(ads, port, upstreams)
    proxy = ProxyProcess(tmp_path, xds_bootstrap(ads))
    try:
        proxy.wait_ready()
        ads.remove(CLUSTER, "a")
        ads.wait(lambda: rawhttp.get(port, "/").status == 503, what="503 NC for a removed cluster")
        ads.remove(LISTENER, "web")

        def refused() -> bool:
            try:
                rawhttp.get(port, "/")
            except OSError:
                return True
            return False

        ads.wait(refused, what="the listener to close")
    finally:
        proxy.stop()


def test_sotw_stream(tmp_path: Path, ads: AdsServer, upstreams: dict[str, Upstream]) -> None:
    port = free_port()
    serve(ads, port, upstreams)
    proxy = ProxyProcess(tmp_path, xds_bootstrap(ads, delta=False))
    try:
        proxy.wait_ready()
        assert served_by(port) == "a"
        ads.set(ROUTE, routes("b"))
        ads.wait(lambda: served_by(port) == "b", what="the SotW update")
        assert not ads.nacks()
    finally:
        proxy.stop()


@pytest.mark.parametrize("delta", [True, False], ids=["delta", "sotw"])
def test_a_route_to_a_new_cluster_waits_for_its_endpoints(
    tmp_path: Path, ads: AdsServer, upstreams: dict[str, Upstream], delta: bool
) -> None:
    """A new cluster warms: the routes that follow it are applied once its endpoints have come, so the
    switch never sends a request to a cluster that has none yet (no 503 window); endpoints that never
    come stop holding the rest after cds_config.initial_fetch_timeout."""
    port = free_port()
    serve(ads, port, upstreams)
    boot = xds_bootstrap(ads, delta=delta)
    boot["dynamic_resources"]["cds_config"]["initial_fetch_timeout"] = "3s"
    proxy = ProxyProcess(tmp_path, boot)
    try:
        proxy.wait_ready()
        ads.set(CLUSTER, eds_cluster("c"))  # endpoints held back by the server for now
        ads.set(ROUTE, routes("c"))
        time.sleep(1.0)
        assert [served_by(port) for _ in range(5)] == ["a"] * 5  # the old route still serves
        ads.set(ENDPOINT, assignment("c", upstreams["b"]))
        ads.wait(lambda: served_by(port) == "b", what="the route to c once c has endpoints")
        assert not ads.nacks()

        ads.set(CLUSTER, eds_cluster("d"))  # whose endpoints never come
        ads.set(ROUTE, routes("d"))
        time.sleep(1.0)
        assert served_by(port) == "b"
        # After the timeout the route is applied anyway, as Envoy would: d has no endpoints, so 503.
        ads.wait(lambda: rawhttp.get(port, "/").status == 503, what="the held route after the timeout")
    finally:
        proxy.stop()


def test_tcp_connections_of_a_changed_listener_close_after_the_drain_time(
    tmp_path: Path, ads: AdsServer, upstreams: dict[str, Upstream]
) -> None:
    """A listener update ends the TCP connections opened under the old one after --drain-time-s (as
    Envoy's drain), so a policy change does not live on in long connections; a resend of the same
    listener, or a change to another listener, leaves them alone."""
    port, other = free_port(), free_port()

    def tcp_listener(name: str, at: int, prefix: str) -> dict[str, Any]:
        chain = tcp_chain("a")
        chain["filters"][0]["typed_config"]["stat_prefix"] = prefix
        return {"name": name, "address": addr("127.0.0.1", at), "filter_chains": [chain]}

    ads.set(CLUSTER, eds_cluster("a"))
    ads.set(ENDPOINT, assignment("a", upstreams["a"]))
    ads.set(LISTENER, tcp_listener("tcp", port, "v1"))
    ads.set(LISTENER, tcp_listener("other", other, "v1"))
    proxy = ProxyProcess(tmp_path, xds_bootstrap(ads), args=["--drain-time-s", "1"])

    def exchange(sock: socket.socket) -> bytes:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        return sock.recv(65536)

    def open_conn() -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        assert exchange(sock).startswith(b"HTTP/1.1 200")
        return sock

    try:
        proxy.wait_ready()
        sock = open_conn()
        ads.set(LISTENER, tcp_listener("other", other, "v2"))  # another listener changes
        ads.set(LISTENER, tcp_listener("tcp", port, "v1"))  # the same content again
        time.sleep(2.0)
        assert exchange(sock).startswith(b"HTTP/1.1 200")  # still open

        ads.set(LISTENER, tcp_listener("tcp", port, "v2"))  # this one changes
        ads.wait(lambda: len(ads.replies) > 0 and not ads.nacks(), what="the ACK")
        assert exchange(sock).startswith(b"HTTP/1.1 200")  # within the drain time it still works
        started = time.monotonic()
        sock.settimeout(10)
        rest = b""
        while chunk := sock.recv(65536):  # ... then the proxy closes it
            rest += chunk
        assert rest == b"" and time.monotonic() - started < 5
        sock.close()
        assert exchange(open_conn()).startswith(b"HTTP/1.1 200")  # new connections are served
    finally:
        proxy.stop()
