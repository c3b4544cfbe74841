"""Istio's istio.alpn filter between two proxies over mutual TLS: the client's HTTP pools offer the ALPN of
the protocol they speak inside (istio-http/1.1, istio-h2), which is how a server whose port declares no
protocol picks its HTTP filter chain before decrypting anything; without the filter, or towards TLS that is
not the mesh's, the cluster's own ALPN goes out unchanged."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.envoy import HCM, ROUTER, addr, bootstrap, static_cluster
from support.h2client import h2_get
from support.meshcerts import mesh_identities
from support.proxyproc import ProxyProcess, free_port
from support.upstream import Upstream

TCP_PROXY = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
DOWNSTREAM_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
UPSTREAM_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
TLS_INSPECTOR = "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"
TYPED_STRUCT = "type.googleapis.com/xds.type.v3.TypedStruct"
ALPN_CONFIG = "type.googleapis.com/istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig"
H2 = {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
    "explicit_http_config": {"http2_protocol_options": {}}}}  # fmt: skip
ALPN_FILTER = {"name": "istio.alpn", "typed_config": {
    "@type": TYPED_STRUCT, "type_url": ALPN_CONFIG, "value": {"alpn_override": [
        {"upstream_protocol": "HTTP10", "alpn_override": ["istio-http/1.0", "istio", "http/1.0"]},
        {"upstream_protocol": "HTTP11", "alpn_override": ["istio-http/1.1", "istio", "http/1.1"]},
        {"upstream_protocol": "HTTP2", "alpn_override": ["istio-h2", "istio", "h2"]}]}}}  # fmt: skip


def hcm(cluster: str, filters: list[dict[str, Any]]) -> dict[str, Any]:
    return {"name": "hcm", "typed_config": {
        "@type": HCM, "stat_prefix": "t",
        "http_filters": [*filters, {"name": "router", "typed_config": {"@type": ROUTER}}],
        "route_config": {"name": "r", "virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [
            {"match": {"prefix": "/"}, "route": {"cluster": cluster}}]}]}}}  # fmt: skip


def tcp(cluster: str) -> dict[str, Any]:
    return {"name": "tcp", "typed_config": {"@type": TCP_PROXY, "stat_prefix": cluster, "cluster": cluster}}


class Pair:
    """A server proxy sniffing by ALPN like a sidecar's port with no protocol (HTTP chain to app ``http``,
    TCP chain to app ``tcp``, TLS without the mesh's ALPN to app ``other``), and client proxies in front."""

    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        self.tmp, self.env = tmp, env
        self.apps = {name: Upstream(name) for name in ("http", "tcp", "other")}
        self.files = mesh_identities(tmp)
        server_tls = self.files("server")

        def chain(filters: dict[str, Any], alpn: list[str]) -> dict[str, Any]:
            match: dict[str, Any] = {"transport_protocol": "tls"}
            if alpn:
                match["application_protocols"] = alpn
            return {"filter_chain_match": match, "filters": [filters], "transport_socket": {
                "name": "tls", "typed_config": {"@type": DOWNSTREAM_TLS, "common_tls_context": server_tls,
                                                "require_client_certificate": True}}}  # fmt: skip

        self.port = free_port()
        listener = {
            "name": "in", "address": addr("127.0.0.1", self.port),
            "listener_filters": [{"name": "envoy.filters.listener.tls_inspector",
                                  "typed_config": {"@type": TLS_INSPECTOR}}],
            "filter_chains": [
                chain(hcm("http", []), ["istio-http/1.0", "istio-http/1.1", "istio-h2"]),
                chain(tcp("tcp"), ["istio-peer-exchange", "istio"]),
                chain(tcp("other"), []),
            ],
        }  # fmt: skip
        clusters = [static_cluster(n, ("127.0.0.1", a.port)) for n, a in self.apps.items()]
        self.server = ProxyProcess(tmp, bootstrap([listener], clusters), env=env)
        self.server.wait_ready()
        self.clients: list[ProxyProcess] = []

    def client(self, *, alpn_filter: bool, http2: bool = False, alpn: list[str] | None = None) -> int:
        """A client proxy; returns its port."""
        port = free_port()
        cluster = static_cluster("mesh", ("127.0.0.1", self.port))
        tls = self.files(f"client{len(self.clients)}", peer="server", alpn=alpn)
        cluster["transport_socket"] = {"name": "tls", "typed_config": {"@type": UPSTREAM_TLS,
                                                                       "common_tls_context": tls}}
        if http2:
            cluster["typed_extension_protocol_options"] = H2
        listener = {"name": "out", "address": addr("127.0.0.1", port),
                    "filter_chains": [{"filters": [hcm("mesh", [ALPN_FILTER] if alpn_filter else [])]}]}
        proxy = ProxyProcess(self.tmp, bootstrap([listener], [cluster]), env=self.env)
        self.clients.append(proxy)
        proxy.wait_ready()
        return port

    def stop(self) -> None:
        for proxy in [*self.clients, self.server]:
            proxy.stop()
        for app in self.apps.values():
            app.stop()


@pytest.fixture(params=["compiled", "python"])
def pair(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Pair]:
    p = Pair(tmp_path, {} if request.param == "compiled" else {"MIZZEN_NO_EXTENSIONS": "1"})
    yield p
    p.stop()


def served_by(port: int, *, h2: bool = False) -> str:
    import json
    import urllib.request

    if h2:
        status, body = h2_get(port, "/")
    else:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
            status, body = r.status, r.read()
    assert status == 200
    return str(json.loads(body)["name"])


def test_http_pools_offer_the_alpn_of_what_they_carry(pair: Pair) -> None:
    assert served_by(pair.client(alpn_filter=True)) == "http"  # istio-http/1.1
    assert served_by(pair.client(alpn_filter=True, http2=True), h2=True) == "http"  # istio-h2


def test_without_the_filter_the_clusters_alpn_goes_out(pair: Pair) -> None:
    assert served_by(pair.client(alpn_filter=False)) == "tcp"  # istio-peer-exchange, istio


def test_tls_that_is_not_the_meshs_keeps_its_alpn(pair: Pair) -> None:
    # A DestinationRule's own TLS (no "istio" in its ALPN) is never rewritten.
    assert served_by(pair.client(alpn_filter=True, alpn=["h2-custom"])) == "other"
