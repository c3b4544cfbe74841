"""Listener filters through a real proxy: SNI routing of TLS passed through untouched, HTTP told from
other protocols on one port, and server-first protocols carried after the inspection timeout."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.envoy import addr, bootstrap, http_chain, route, route_config, static_cluster, tcp_chain, vhost
from support.proxyproc import ProxyProcess, free_port, http_get
from support.upstream import Upstream
from unit.test_sniff import client_hello


class Named:
    """A TCP server that says its name: first (server-first), or after reading what the client sent."""

    def __init__(self, name: str, first: bool = False) -> None:
        self.name = name
        self.first = first
        self.seen: list[bytes] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                if self.first:
                    conn.sendall(f"220 {self.name}\r\n".encode())
                data = conn.recv(65536)
                self.seen.append(data)
                if not self.first:
                    conn.sendall(self.name.encode())

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(params=["compiled", "python"])
def env(request: pytest.FixtureRequest) -> dict[str, str]:
    return {} if request.param == "compiled" else {"MIZZEN_NO_EXTENSIONS": "1"}


@pytest.fixture
def servers() -> Iterator[dict[str, Named]]:
    s = {"a": Named("a"), "b": Named("b"), "other": Named("other"), "smtp": Named("smtp", first=True)}
    yield s
    for srv in s.values():
        srv.close()


def start(
    tmp: Path, env: dict[str, str], listener: dict[str, Any], clusters: list[dict[str, Any]]
) -> ProxyProcess:
    proxy = ProxyProcess(tmp, bootstrap([listener], clusters), env=env)
    proxy.wait_ready()
    return proxy


def exchange(port: int, data: bytes, read_first: bool = False) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        if read_first:
            return s.recv(100)
        s.sendall(data)
        return s.recv(100)


def test_sni_routes_tls_passed_through(
    tmp_path: Path, env: dict[str, str], servers: dict[str, Named]
) -> None:
    port = free_port()
    chains = [
        {**tcp_chain("a"), "filter_chain_match": {"server_names": ["a.example.com"]}},
        {**tcp_chain("b"), "filter_chain_match": {"server_names": ["*.b.example.com"]}},
    ]
    lst = {
        "name": "tls",
        "address": addr("127.0.0.1", port),
        "filter_chains": chains,
        "default_filter_chain": tcp_chain("other"),
        "listener_filters": [{"name": "envoy.filters.listener.tls_inspector"}],
    }
    clusters = [static_cluster(n, ("127.0.0.1", servers[n].port)) for n in ("a", "b", "other")]
    proxy = start(tmp_path, env, lst, clusters)
    try:
        hello = client_hello("a.example.com")
        assert exchange(port, hello) == b"a"
        assert servers["a"].seen[-1] == hello  # passed through byte for byte
        assert exchange(port, client_hello("x.b.example.com")) == b"b"
        assert exchange(port, client_hello("c.example.com")) == b"other"
        assert exchange(port, b"not tls at all") == b"other"
    finally:
        proxy.stop()


def test_http_and_other_protocols_share_a_port(
    tmp_path: Path, env: dict[str, str], servers: dict[str, Named]
) -> None:
    up = Upstream("web")
    port = free_port()
    http = http_chain(route_config("r", vhost("v", ["*"], route("web"))))
    http["filter_chain_match"] = {"application_protocols": ["http/1.1", "h2c"]}
    lst = {
        "name": "auto",
        "address": addr("127.0.0.1", port),
        "filter_chains": [http],
        "default_filter_chain": tcp_chain("other"),
        "listener_filters": [{"name": "envoy.filters.listener.http_inspector"}],
        "listener_filters_timeout": "0.3s",
        "continue_on_listener_filters_timeout": True,
    }
    clusters = [
        static_cluster("web", ("127.0.0.1", up.port)),
        static_cluster("other", ("127.0.0.1", servers["other"].port)),
        static_cluster("smtp", ("127.0.0.1", servers["smtp"].port)),
    ]
    proxy = start(tmp_path, env, lst, clusters)
    try:
        reply = exchange(port, b"GET /x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 200")
        assert exchange(port, b"EHLO client\r\n") == b"other"
    finally:
        proxy.stop()
        up.stop()


def test_server_first_protocol_after_the_inspection_timeout(
    tmp_path: Path, env: dict[str, str], servers: dict[str, Named]
) -> None:
    port = free_port()
    lst = {
        "name": "auto",
        "address": addr("127.0.0.1", port),
        "filter_chains": [],
        "default_filter_chain": tcp_chain("smtp"),
        "listener_filters": [{"name": "envoy.filters.listener.http_inspector"}],
        "listener_filters_timeout": "0.3s",
        "continue_on_listener_filters_timeout": True,
    }
    proxy = start(tmp_path, env, lst, [static_cluster("smtp", ("127.0.0.1", servers["smtp"].port))])
    try:
        assert exchange(port, b"", read_first=True) == b"220 smtp\r\n"
    finally:
        proxy.stop()
    # Without continue_on_listener_filters_timeout the connection is closed instead.
    lst["continue_on_listener_filters_timeout"] = False
    proxy = start(tmp_path, env, lst, [static_cluster("smtp", ("127.0.0.1", servers["smtp"].port))])
    try:
        assert exchange(port, b"", read_first=True) == b""
        assert "downstream_pre_cx_timeout: 1" in http_get(proxy.url("/stats", proxy.admin))[1]
    finally:
        proxy.stop()
