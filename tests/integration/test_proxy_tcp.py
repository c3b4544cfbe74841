"""mizzen-proxy as a real process proxying TCP from a static bootstrap."""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.envoy import addr, bootstrap, static_cluster, tcp_chain
from support.prom import value
from support.proxyproc import ProxyProcess, free_port, http_get


class HalfCloseServer:
    """Reads until the client's EOF, then answers ``pong:<what it read>`` and closes."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
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
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
        conn.sendall(b"pong:" + data)
        conn.close()


@pytest.fixture
def upstream() -> Iterator[HalfCloseServer]:
    server = HalfCloseServer()
    yield server
    server.sock.close()


def one_hop(port: int, upstream_port: int) -> dict:  # type: ignore[type-arg]
    return bootstrap(
        [
            {
                "name": "tcp",
                "address": addr("127.0.0.1", port),
                "filter_chains": [tcp_chain("outbound|9000||up")],
            }
        ],
        [static_cluster("outbound|9000||up", ("127.0.0.1", upstream_port))],
    )


def exchange(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def test_tcp_proxy_with_half_close_and_metrics(tmp_path: Path, upstream: HalfCloseServer) -> None:
    port = free_port()
    proxy = ProxyProcess(tmp_path, one_hop(port, upstream.port))
    try:
        proxy.wait_ready()
        big = bytes(range(256)) * 4096  # 1 MiB each way: flow control, not one write
        assert exchange(port, b"ping") == b"pong:ping"
        assert exchange(port, big) == b"pong:" + big
        deadline = time.monotonic() + 5
        while "istio_tcp_connections_closed_total" not in proxy.prometheus() and time.monotonic() < deadline:
            time.sleep(0.05)
        text = proxy.prometheus()
        assert (
            value(text, "istio_tcp_connections_opened_total", reporter="source", destination_service="up")
            == 2
        )
        assert (
            value(
                text, "istio_tcp_connections_closed_total", response_flags="-", destination_service_name="up"
            )
            == 2
        )
        assert value(text, "istio_tcp_received_bytes_total", reporter="source") == len(big) + 4
        assert value(text, "istio_tcp_sent_bytes_total", reporter="source") == len(big) + 4 + 10
        status, body = http_get(proxy.url("/clusters", proxy.admin))
        assert status == 200 and f"outbound|9000||up::127.0.0.1:{upstream.port}" in body
    finally:
        assert proxy.stop() == 0


def test_upstream_down_closes_the_downstream_with_uf(tmp_path: Path) -> None:
    port, dead = free_port(), free_port()
    proxy = ProxyProcess(tmp_path, one_hop(port, dead))
    try:
        proxy.wait_ready()
        assert exchange(port, b"x") == b""
        deadline = time.monotonic() + 5
        while not value(proxy.prometheus(), "istio_tcp_connections_closed_total", response_flags="UF") and (
            time.monotonic() < deadline
        ):
            time.sleep(0.05)
        assert value(proxy.prometheus(), "istio_tcp_connections_closed_total", response_flags="UF") == 1
    finally:
        proxy.stop()


def test_sigterm_drains_open_connections(tmp_path: Path, upstream: HalfCloseServer) -> None:
    port = free_port()
    proxy = ProxyProcess(tmp_path, one_hop(port, upstream.port))
    proxy.wait_ready()
    conn = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        conn.sendall(b"in flight")
        time.sleep(0.2)  # let the proxy connect upstream before the signal
        proxy.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        while http_get(proxy.url("/healthz/ready"))[0] != 503 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert http_get(proxy.url("/healthz/ready"))[0] == 503  # draining: no longer ready
        with pytest.raises(OSError):  # and no longer accepting
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        conn.shutdown(socket.SHUT_WR)
        assert conn.recv(100) == b"pong:in flight"  # the connection in flight finished
        assert proxy.proc.wait(timeout=10) == 0
    finally:
        conn.close()
        proxy.stop()


def test_invalid_bootstrap_is_refused_with_the_field_named(tmp_path: Path) -> None:
    boot = one_hop(free_port(), 1)
    boot["static_resources"]["clusters"][0]["lb_policy"] = "LOAD_BALANCING_POLICY_CONFIG"
    proxy = ProxyProcess(tmp_path, boot)
    assert proxy.proc.wait(timeout=20) == 1
    assert 'outbound|9000||up\\": lb_policy: LOAD_BALANCING_POLICY_CONFIG is not supported' in proxy.log.read_text()
    proxy.stop()
