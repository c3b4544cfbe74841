"""The sidecar's admin (127.0.0.1 only), readiness and metrics endpoints, and its process life."""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from pathlib import Path

from support.envoy import bootstrap, http_chain, http_listener, route, route_config, static_cluster, vhost
from support.proxyproc import ProxyProcess, free_port, http_get


def post(url: str) -> int:
    req = urllib.request.Request(url, method="POST")
    with urllib.request.urlopen(req, timeout=5) as resp:
        return resp.status  # type: ignore[no-any-return]


def start(tmp_path: Path, env: dict[str, str] | None = None) -> tuple[ProxyProcess, int]:
    port = free_port()
    boot = bootstrap(
        [
            http_listener(
                "http", "127.0.0.1", port, http_chain(route_config("r", vhost("v", ["*"], route("up"))))
            )
        ],
        [static_cluster("up", ("127.0.0.1", free_port()))],
    )
    proxy = ProxyProcess(tmp_path, boot, env=env)
    proxy.wait_ready()
    return proxy, port


def test_admin_endpoints(tmp_path: Path) -> None:
    proxy, port = start(tmp_path)
    admin = f"http://127.0.0.1:{proxy.admin}"
    try:
        assert http_get(admin + "/ready") == (200, "LIVE\n")
        info = json.loads(http_get(admin + "/server_info")[1])
        assert info["state"] == "LIVE" and all(info["compiled"].values()), info["compiled"]
        dump = json.loads(http_get(admin + "/config_dump")[1])
        assert [x["name"] for x in dump["listeners"]] == ["http"] and [
            x["name"] for x in dump["clusters"]
        ] == ["up"]
        clusters = http_get(admin + "/clusters")[1]
        assert (
            "up::default_priority::max_requests::1024" in clusters and "::health_flags::healthy" in clusters
        )
        assert "server.total_connections: 0" in http_get(admin + "/stats")[1]
        assert post(admin + "/logging?level=warning") == 200
        # Bound to 127.0.0.1 only: not reachable on another local address.
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.2", proxy.admin)) != 0
        # Drain: readiness goes, the listeners close, the process is still up.
        assert post(admin + "/drain_listeners") == 200
        assert http_get(proxy.url("/healthz/ready"))[0] == 503
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0
        assert post(admin + "/quitquitquit") == 200
        assert proxy.proc.wait(timeout=10) == 0
    finally:
        proxy.stop()


def test_pure_python_twins_are_what_runs_when_asked(tmp_path: Path) -> None:
    proxy, _ = start(tmp_path, env={"MIZZEN_NO_EXTENSIONS": "1"})
    try:
        info = json.loads(http_get(f"http://127.0.0.1:{proxy.admin}/server_info")[1])
        assert info["compiled"] and not any(info["compiled"].values()), info["compiled"]
    finally:
        proxy.stop()


def test_max_connections_limit(tmp_path: Path) -> None:
    port = free_port()
    boot = bootstrap(
        [
            http_listener(
                "http", "127.0.0.1", port, http_chain(route_config("r", vhost("v", ["*"], route("up"))))
            )
        ],
        [static_cluster("up", ("127.0.0.1", free_port()))],
    )
    proxy = ProxyProcess(tmp_path, boot, args=["--max-connections", "2"])
    try:
        proxy.wait_ready()
        held = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
        time.sleep(0.2)
        extra = socket.create_connection(("127.0.0.1", port))
        extra.settimeout(3)
        try:
            assert extra.recv(10) == b""  # closed at once: over the limit
        except ConnectionResetError:
            pass  # or reset: either way, not served
        extra.close()
        for s in held:
            s.close()
        stats = http_get(proxy.url("/stats", proxy.admin))[1]
        assert "downstream_cx_overflow: 1" in stats
    finally:
        proxy.stop()
