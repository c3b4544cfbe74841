"""The sidecar's live tap on its admin port, as a real process: exactly the requests matching the filter,
a rate bound, a session that ends at its deadline, and a watcher that disconnects leaving nothing running."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import rawhttp
from support.envoy import (
    addr,
    bootstrap,
    http_chain,
    http_listener,
    route,
    route_config,
    static_cluster,
    tcp_chain,
    vhost,
)
from support.proxyproc import ProxyProcess, free_port, http_get
from support.upstream import Upstream


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    up = Upstream("app")
    yield up
    up.stop()


@pytest.fixture
def proxy(tmp_path: Path, upstream: Upstream) -> Iterator[tuple[ProxyProcess, int]]:
    port = free_port()
    boot = bootstrap(
        [
            http_listener(
                "http", "127.0.0.1", port, http_chain(route_config("r", vhost("v", ["*"], route("app"))))
            )
        ],
        [static_cluster("app", ("127.0.0.1", upstream.port))],
    )
    p = ProxyProcess(tmp_path, boot)
    p.wait_ready()
    yield p, port
    p.stop()


class Watcher:
    """A tap client: reads the stream's lines on a thread until it ends or is closed."""

    def __init__(self, proxy: ProxyProcess, query: str) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", proxy.admin, timeout=30)
        self.conn.request("GET", f"/tap?{query}")
        self.sock = self.conn.sock
        self.resp = self.conn.getresponse()
        self.lines: list[dict[str, Any]] = []
        self.ended = threading.Event()
        if self.resp.status == 200:
            self.hello = json.loads(self.resp.readline())
            self.thread = threading.Thread(target=self._read, daemon=True)
            self.thread.start()

    def _read(self) -> None:
        try:
            while True:
                line = self.resp.readline()
                if not line:
                    break
                self.lines.append(json.loads(line))
        except Exception:  # the stream cut mid-chunk by close(): the end of this watcher
            pass
        self.ended.set()

    def wait_lines(self, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.lines) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        return list(self.lines)

    def close(self) -> None:
        try:  # a disconnect as the proxy sees it: the blocked reader thread is woken too
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.conn.close()


def sessions(proxy: ProxyProcess) -> list[dict[str, Any]]:
    return json.loads(http_get(proxy.url("/server_info", proxy.admin))[1])["taps"]  # type: ignore[no-any-return]


def wait_sessions(proxy: ProxyProcess, n: int) -> None:
    deadline = time.monotonic() + 10
    while len(sessions(proxy)) != n:
        assert time.monotonic() < deadline, sessions(proxy)
        time.sleep(0.05)


def test_tap_sees_exactly_the_matching_requests(proxy: tuple[ProxyProcess, int]) -> None:
    p, port = proxy
    assert sessions(p) == []
    w = Watcher(p, "path=/match&method=GET&duration=60")
    assert w.hello["tap"] >= 1
    wait_sessions(p, 1)
    rawhttp.get(port, "/match/1?q=1")
    rawhttp.get(port, "/match/2", method="POST", body=b"x")
    rawhttp.get(port, "/other")
    rawhttp.get(
        port, "/match/3", headers={"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
    )
    rawhttp.get(port, "/match/4?status=503")
    lines = w.wait_lines(3)
    assert [(e["method"], e["path"], e["status"]) for e in lines] == [
        ("GET", "/match/1?q=1", 200),
        ("GET", "/match/3", 200),
        ("GET", "/match/4?status=503", 503),
    ]
    first = lines[0]
    assert first["direction"] == "outbound" and first["upstream"].startswith("127.0.0.1:")
    assert first["latency_ms"] >= 0 and first["flags"] == "-" and len(first["request_id"]) == 36
    assert lines[1]["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    w.close()
    wait_sessions(p, 0)  # the watcher went away: nothing left recording


def test_destination_filter_and_rate_bound(proxy: tuple[ProxyProcess, int]) -> None:
    p, port = proxy
    w = Watcher(p, "to=svc&rate=2&duration=60")
    wait_sessions(p, 1)
    for _ in range(30):
        rawhttp.get(port, "/r")  # rawhttp's Host is svc: matched by authority
    [info] = sessions(p)  # requests are tapped before they are answered: the counts are final
    assert info["seen"] == 30 and info["dropped"] >= 20
    assert len(w.wait_lines(30 - info["dropped"])) == 30 - info["dropped"]
    other = Watcher(p, "to=elsewhere&duration=60")
    wait_sessions(p, 2)
    rawhttp.get(port, "/r")
    by_name = {s["id"]: s for s in sessions(p)}
    assert by_name[other.hello["tap"]]["seen"] == 0 and by_name[w.hello["tap"]]["seen"] == 31
    w.close()
    other.close()
    wait_sessions(p, 0)


def test_session_ends_at_its_deadline(proxy: tuple[ProxyProcess, int]) -> None:
    p, _ = proxy
    w = Watcher(p, "duration=0.5")
    assert w.ended.wait(10)  # the stream ends by itself
    wait_sessions(p, 0)
    w.close()


def test_bad_parameters_are_refused(proxy: tuple[ProxyProcess, int]) -> None:
    p, _ = proxy
    for query in ("rate=0", "duration=100000", "path=nope", "rate=x"):
        w = Watcher(p, query)
        assert w.resp.status == 400, query
        w.close()
    assert sessions(p) == []


def test_tcp_connections_are_tapped_as_lines(tmp_path: Path) -> None:
    echo = socket.socket()
    echo.bind(("127.0.0.1", 0))
    echo.listen(4)

    def serve() -> None:
        while True:
            try:
                conn, _ = echo.accept()
            except OSError:
                return
            with conn:
                conn.sendall(conn.recv(100)[::-1])

    threading.Thread(target=serve, daemon=True).start()
    port = free_port()
    listener = {"name": "tcp", "address": addr("127.0.0.1", port), "filter_chains": [tcp_chain("echo")]}
    p = ProxyProcess(
        tmp_path, bootstrap([listener], [static_cluster("echo", ("127.0.0.1", echo.getsockname()[1]))])
    )
    try:
        p.wait_ready()
        http_only = Watcher(p, "path=/x&duration=60")  # asks for HTTP paths: a connection has none
        everything = Watcher(p, "duration=60")
        wait_sessions(p, 2)
        with socket.create_connection(("127.0.0.1", port)) as c:
            c.sendall(b"hello")
            assert c.recv(100) == b"olleh"
        [line] = everything.wait_lines(1)
        assert (line["method"], line["status"], line["flags"]) == ("TCP", 0, "-")
        assert (line["bytes_received"], line["bytes_sent"]) == (5, 5)
        assert line["upstream"] == f"127.0.0.1:{echo.getsockname()[1]}" and line["latency_ms"] >= 0
        time.sleep(0.3)
        assert http_only.lines == []
        http_only.close()
        everything.close()
        wait_sessions(p, 0)
    finally:
        p.stop()
        echo.close()
