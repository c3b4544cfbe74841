"""mizzen-proxy processes speaking mutual TLS to each other from static bootstraps: SDS names resolved to
the bootstrap's static secrets, HTTP and TCP (with half-close) over mTLS, the peer's SPIFFE ID checked
both ways, network RBAC on a TCP chain, and the failures named (UF with the TLS reason)."""

from __future__ import annotations

import json
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.envoy import addr, bootstrap, http_chain, route, route_config, static_cluster, tcp_chain, vhost
from support.proxyproc import ProxyProcess, free_port, http_get
from support.upstream import Upstream

from controller.ca.authority import CaMaterial, CertificateAuthority, key_pem, make_csr, new_key, spiffe_id

UPSTREAM_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
DOWNSTREAM_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
NETWORK_RBAC = "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC"
CLIENT = spiffe_id("cluster.local", "default", "client")
SERVER = spiffe_id("cluster.local", "default", "server")


class Pki:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        self.ca = CertificateAuthority(CaMaterial.self_signed())
        self.root = tmp / "root.pem"
        self.root.write_bytes(self.ca.root_pem)

    def issue(self, name: str, identity: str, ca: CertificateAuthority | None = None) -> tuple[str, str]:
        key = new_key()
        chain = (ca or self.ca).sign(make_csr(key, identity), identity, ttl=600)
        cert, keyfile = self.tmp / f"{name}.pem", self.tmp / f"{name}.key"
        cert.write_text("".join(chain[:-1]))
        keyfile.write_bytes(key_pem(key))
        return str(cert), str(keyfile)


def secrets(pki: Pki, files: tuple[str, str]) -> list[dict[str, Any]]:
    """The bootstrap's static secrets under Istio's SDS names."""
    return [
        {
            "name": "default",
            "tls_certificate": {
                "certificate_chain": {"filename": files[0]},
                "private_key": {"filename": files[1]},
            },
        },
        {"name": "ROOTCA", "validation_context": {"trusted_ca": {"filename": str(pki.root)}}},
    ]


def mesh_tls(alpn: list[str], san: str | None = None) -> dict[str, Any]:
    validation: dict[str, Any] = {}
    if san:
        validation["match_subject_alt_names"] = [{"exact": san}]
    return {
        "tls_certificate_sds_secret_configs": [{"name": "default", "sds_config": {"ads": {}}}],
        "combined_validation_context": {
            "default_validation_context": validation,
            "validation_context_sds_secret_config": {"name": "ROOTCA", "sds_config": {"ads": {}}},
        },
        "alpn_protocols": alpn,
    }


def originate(cluster: dict[str, Any], san: str) -> dict[str, Any]:
    cluster["transport_socket"] = {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {"@type": UPSTREAM_TLS, "common_tls_context": mesh_tls(["istio"], san), "sni": "x"},
    }
    return cluster


def terminate(chain: dict[str, Any]) -> dict[str, Any]:
    chain["transport_socket"] = {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": DOWNSTREAM_TLS,
            "common_tls_context": mesh_tls(["istio"]),
            "require_client_certificate": True,
        },
    }
    return chain


class Pair:
    """client proxy (HTTP 'front' and TCP 'tfront') -> server proxy (mTLS 'in' and 'tin') -> apps."""

    def __init__(self, tmp: Path, pki: Pki, app: int, tcp_app: int, client_id: str, server_id: str) -> None:
        self.http_in, self.tcp_in = free_port(), free_port()
        self.front, self.tfront = free_port(), free_port()
        server_boot = bootstrap(
            [
                {
                    "name": "in",
                    "address": addr("127.0.0.1", self.http_in),
                    "traffic_direction": "INBOUND",
                    "filter_chains": [
                        terminate(http_chain(route_config("in", vhost("in", ["*"], route("app")))))
                    ],
                },
                {
                    "name": "tin",
                    "address": addr("127.0.0.1", self.tcp_in),
                    "traffic_direction": "INBOUND",
                    "filter_chains": [terminate(self.rbac(tcp_chain("tapp")))],
                },
            ],
            [static_cluster("app", ("127.0.0.1", app)), static_cluster("tapp", ("127.0.0.1", tcp_app))],
        )
        server_boot["static_resources"]["secrets"] = secrets(pki, pki.issue("server", server_id))
        client_boot = bootstrap(
            [
                {
                    "name": "front",
                    "address": addr("127.0.0.1", self.front),
                    "filter_chains": [http_chain(route_config("f", vhost("f", ["*"], route("server"))))],
                },
                {
                    "name": "tfront",
                    "address": addr("127.0.0.1", self.tfront),
                    "filter_chains": [tcp_chain("tserver")],
                },
            ],
            [
                originate(static_cluster("server", ("127.0.0.1", self.http_in)), SERVER),
                originate(static_cluster("tserver", ("127.0.0.1", self.tcp_in)), SERVER),
            ],
        )
        client_boot["static_resources"]["secrets"] = secrets(pki, pki.issue("client", client_id))
        self.server = ProxyProcess(tmp, server_boot)
        self.client = ProxyProcess(tmp, client_boot)
        ProxyProcess.wait_all_ready(self.server, self.client)

    @staticmethod
    def rbac(chain: dict[str, Any]) -> dict[str, Any]:
        """Network RBAC on the TCP chain: only the client's SPIFFE ID may connect."""
        rule = {
            "@type": NETWORK_RBAC,
            "stat_prefix": "tcp",
            "rules": {
                "action": "ALLOW",
                "policies": {
                    "client-only": {
                        "permissions": [{"any": True}],
                        "principals": [{"authenticated": {"principal_name": {"exact": CLIENT}}}],
                    }
                },
            },
        }
        chain["filters"].insert(0, {"name": "envoy.filters.network.rbac", "typed_config": rule})
        return chain

    def stop(self) -> None:
        self.client.stop()
        self.server.stop()


def http(port: int, path: str = "/") -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def tcp(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)  # half-close: the server answers once it sees our end
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


class HalfCloseServer:
    """Reads until the client's EOF, then answers ``pong:<what it read>`` and closes."""

    def __init__(self) -> None:
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
            data = b""
            while chunk := conn.recv(65536):
                data += chunk
            conn.sendall(b"pong:" + data)
            conn.close()


@pytest.fixture
def apps() -> Iterator[tuple[Upstream, Any]]:
    app = Upstream("app")
    half = HalfCloseServer()
    yield app, half
    app.stop()
    half.sock.close()


def test_http_and_tcp_over_mutual_tls(tmp_path: Path, pki: Pki, apps: Any) -> None:
    app, half = apps
    pair = Pair(tmp_path, pki, app.port, half.port, CLIENT, SERVER)
    try:
        status, body = http(pair.front, "/hello")
        assert status == 200 and json.loads(body)["path"] == "/hello"
        assert tcp(pair.tfront, b"ping" * 5000) == b"pong:" + b"ping" * 5000
        text = pair.server.prometheus()
        assert f'source_principal="{CLIENT}"' in text and 'connection_security_policy="mutual_tls"' in text
        assert 'istio_tcp_connections_opened_total{reporter="destination"' not in text or CLIENT in text
    finally:
        pair.stop()


def test_a_server_with_the_wrong_identity_is_refused(tmp_path: Path, pki: Pki, apps: Any) -> None:
    app, half = apps
    pair = Pair(tmp_path, pki, app.port, half.port, CLIENT, spiffe_id("cluster.local", "default", "impostor"))
    try:
        status, body = http(pair.front)
        assert status == 503
        assert b"transport failure reason: peer certificate names" in body, body
        assert b"spiffe://cluster.local/ns/default/sa/impostor match none of " + SERVER.encode() in body
        assert tcp(pair.tfront, b"x") == b""  # the TCP leg is not connected either
    finally:
        pair.stop()


def test_network_rbac_refuses_another_identity(tmp_path: Path, pki: Pki, apps: Any) -> None:
    app, half = apps
    pair = Pair(tmp_path, pki, app.port, half.port, spiffe_id("cluster.local", "default", "other"), SERVER)
    try:
        assert http(pair.front)[0] == 200  # no HTTP policy on the HTTP chain
        assert tcp(pair.tfront, b"ping") == b""  # the TCP chain's RBAC closes it
        stats = http_get(f"http://127.0.0.1:{pair.server.admin}/stats")[1]
        assert "rbac.denied: 1" in stats, stats
    finally:
        pair.stop()


def test_a_client_without_a_mesh_certificate_is_refused(tmp_path: Path, pki: Pki, apps: Any) -> None:
    app, half = apps
    pair = Pair(tmp_path, pki, app.port, half.port, CLIENT, SERVER)
    try:
        for cert in (None, Pki(tmp_path / "other").issue("foreign", CLIENT)):
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            if cert:
                ctx.load_cert_chain(*cert)
            with socket.create_connection(("127.0.0.1", pair.http_in), timeout=5) as raw:
                with pytest.raises((ssl.SSLError, ConnectionError)):
                    s = ctx.wrap_socket(raw)
                    s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
                    assert s.recv(100)  # TLS 1.3: the refusal of the client's certificate arrives here
    finally:
        pair.stop()
