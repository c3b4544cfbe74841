"""gRPC (HTTP/2) through one and two mizzen-proxy hops: unary, streaming both ways, status codes and
trailers carried, retries on UNAVAILABLE, grpc-status in the metrics; and an HTTP/2 client reaching an
HTTP/1.1 upstream."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import h2.config
import h2.connection
import h2.events
import pytest
from support.envoy import HCM, ROUTER, addr, bootstrap, static_cluster
from support.grpcapp import GrpcApp
from support.h2client import h2_get
from support.meshcerts import mesh_identities
from support.prom import value
from support.proxyproc import ProxyProcess, free_port
from support.upstream import Upstream

H2_OPTIONS = {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
    "explicit_http_config": {"http2_protocol_options": {}}}}


FILE_LOG = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"
UPSTREAM_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
DOWNSTREAM_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"


def hop(port: int, cluster: str, upstream_port: int, http2: bool = True, *, log: Path | None = None,
        originate: dict[str, Any] | None = None, terminate: dict[str, Any] | None = None,
        **route: Any) -> dict[str, Any]:  # fmt: skip
    """One proxy: a listener (TLS-terminating with ``terminate``, a CommonTlsContext) routing everything to
    ``cluster`` (HTTP/2 with ``http2``, TLS-originating with ``originate``)."""
    c = static_cluster(cluster, ("127.0.0.1", upstream_port))
    if http2:
        c["typed_extension_protocol_options"] = H2_OPTIONS
    if originate is not None:
        c["transport_socket"] = {"name": "tls", "typed_config": {"@type": UPSTREAM_TLS,
                                                                 "common_tls_context": originate}}
    manager: dict[str, Any] = {
        "@type": HCM, "stat_prefix": "grpc",
        "http_filters": [{"name": "router", "typed_config": {"@type": ROUTER}}],
        "route_config": {"name": "r", "virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [
            {"match": {"prefix": "/"}, "route": {"cluster": cluster, **route}}]}]}}
    if log is not None:
        manager["access_log"] = [{"name": "file", "typed_config": {"@type": FILE_LOG, "path": str(log),
            "log_format": {"text_format_source": {"inline_string":
                "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% %PROTOCOL% %RESPONSE_CODE% %GRPC_STATUS%\n"}}}}]
    chain: dict[str, Any] = {"filters": [{"name": "hcm", "typed_config": manager}]}
    if terminate is not None:
        chain["transport_socket"] = {"name": "tls", "typed_config": {
            "@type": DOWNSTREAM_TLS, "common_tls_context": terminate, "require_client_certificate": True}}
    listener = {"name": "grpc", "address": addr("127.0.0.1", port), "filter_chains": [chain]}
    return bootstrap([listener], [c])


@pytest.fixture(params=["compiled", "python"])
def env(request: pytest.FixtureRequest) -> dict[str, str]:
    return {} if request.param == "compiled" else {"MIZZEN_NO_EXTENSIONS": "1"}


@pytest.fixture(scope="module")
def app() -> Iterator[GrpcApp]:
    a = GrpcApp("greeter")
    yield a
    a.stop()


class TwoHops:
    def __init__(
        self, tmp: Path, env: dict[str, str], app: GrpcApp, mtls: bool = False, **route: Any
    ) -> None:
        self.server_port, self.client_port = free_port(), free_port()
        self.log = tmp / "server-access.log"
        tls: dict[str, Any] = {}
        if mtls:
            files = mesh_identities(tmp)
            tls = {"terminate": files("greeter"), "originate": files("client", peer="greeter")}
        self.server = ProxyProcess(tmp, hop(self.server_port, "inbound|50051||", app.port, log=self.log,
                                            terminate=tls.get("terminate")), env=env)
        cluster = "outbound|50051||greeter.default.svc.cluster.local"
        self.client = ProxyProcess(tmp, hop(self.client_port, cluster, self.server_port,
                                            originate=tls.get("originate"), **route), env=env)
        ProxyProcess.wait_all_ready(self.server, self.client)
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.client_port}")

    def stop(self) -> None:
        self.channel.close()
        self.client.stop()
        self.server.stop()


@pytest.fixture(params=["plaintext", "mtls"])
def hops(
    request: pytest.FixtureRequest, tmp_path: Path, env: dict[str, str], app: GrpcApp
) -> Iterator[TwoHops]:
    h = TwoHops(tmp_path, env, app, mtls=request.param == "mtls",
                retry_policy={"retry_on": "unavailable", "num_retries": 3})
    yield h
    h.stop()


def test_unary_and_metadata_through_two_sidecars(hops: TwoHops) -> None:
    who = hops.channel.unary_unary("/mizzen.test.Echo/Who")
    reply, call = who.with_call(b"hello", metadata=(("x-user", "jason"),), timeout=10)
    assert reply == b"greeter:hello"
    assert ("served-by", "greeter") in call.trailing_metadata()  # trailers crossed both hops
    for _ in range(20):  # many calls multiplexed over the pooled HTTP/2 connections
        assert who(b"x", timeout=10) == b"greeter:x"
    deadline = time.monotonic() + 5
    while value(hops.client.prometheus(), "istio_requests_total", grpc_response_status="0") < 21 and (
        time.monotonic() < deadline
    ):
        time.sleep(0.1)
    text = hops.client.prometheus()
    assert value(text, "istio_requests_total", response_code="200", grpc_response_status="0",
                 request_protocol="grpc") == 21
    # The server hop saw each stream as HTTP/2 from the client hop's address (not an empty peer).
    deadline = time.monotonic() + 5
    while (not hops.log.exists() or hops.log.read_text().count("\n") < 21) and time.monotonic() < deadline:
        time.sleep(0.1)
    lines = hops.log.read_text().splitlines()
    assert len(lines) == 21 and set(lines) == {"127.0.0.1 HTTP/2 200 OK"}


def test_streaming_both_ways(hops: TwoHops) -> None:
    count = hops.channel.unary_stream("/mizzen.test.Echo/Count")
    assert list(count(b"200", timeout=10)) == [f"greeter:{i}".encode() for i in range(200)]
    join = hops.channel.stream_unary("/mizzen.test.Echo/Join")
    assert join(iter([b"a", b"b" * 100000, b"c"]), timeout=10) == b"a," + b"b" * 100000 + b",c"
    chat = hops.channel.stream_stream("/mizzen.test.Echo/Chat")
    assert list(chat(iter([b"x", b"y", b"z"]), timeout=10)) == [b"X", b"Y", b"Z"]


def test_status_codes_and_retries(hops: TwoHops) -> None:
    who = hops.channel.unary_unary("/mizzen.test.Echo/Who")
    with pytest.raises(grpc.RpcError) as err:
        who(b"x", metadata=(("status", "5"),), timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND and err.value.details() == "asked"
    # UNAVAILABLE twice, then served: the client sidecar's retry policy absorbs it.
    key = f"k{time.monotonic_ns()}"
    assert who(b"r", metadata=(("fail-until", "2"), ("key", key)), timeout=10) == b"greeter:r"
    key = f"k{time.monotonic_ns()}"
    with pytest.raises(grpc.RpcError) as err:
        who(b"r", metadata=(("fail-until", "9"), ("key", key)), timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    time.sleep(0.3)
    assert value(hops.client.prometheus(), "istio_requests_total", grpc_response_status="14",
                 response_flags="URX") == 1


def test_http2_client_to_an_http1_upstream(tmp_path: Path, env: dict[str, str]) -> None:
    up = Upstream("web")
    port = free_port()
    proxy = ProxyProcess(tmp_path, hop(port, "web", up.port, http2=False), env=env)
    try:
        proxy.wait_ready()
        status, body = h2_get(port, "/hello?x=1")
        assert status == 200 and b'"path": "/hello?x=1"' in body and b'"name": "web"' in body
        status, body = h2_get(port, "/?size=300000")  # more than the default windows: flow control works
        assert status == 200 and body == b"x" * 300000
    finally:
        proxy.stop()
        up.stop()


def test_streams_whose_bodies_arrive_later_keep_their_own_upstream_streams(
    tmp_path: Path, env: dict[str, str], app: GrpcApp
) -> None:
    """Several requests' HEADERS first, their bodies afterwards and out of order (as h2load and busy gRPC
    clients send them): each upstream stream is opened in order and each reply matches its request."""
    port = free_port()
    proxy = ProxyProcess(tmp_path, hop(port, "greeter", app.port), env=env)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    try:
        proxy.wait_ready()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            conn.initiate_connection()
            sids = []
            for _ in range(6):
                sid = conn.get_next_available_stream_id()
                sids.append(sid)
                head = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/mizzen.test.Echo/Who"),
                        (b":authority", b"greeter"), (b"content-type", b"application/grpc"),
                        (b"te", b"trailers")]  # fmt: skip
                conn.send_headers(sid, head)
            s.sendall(conn.data_to_send())
            time.sleep(0.2)
            for sid in reversed(sids):
                message = f"m{sid}".encode()
                conn.send_data(sid, b"\x00" + len(message).to_bytes(4, "big") + message, end_stream=True)
                s.sendall(conn.data_to_send())
            bodies: dict[int, bytes] = {sid: b"" for sid in sids}
            ended: set[int] = set()
            while len(ended) < len(sids):
                data = s.recv(65536)
                assert data, f"connection closed with streams {sorted(set(sids) - ended)} open"
                for ev in conn.receive_data(data):
                    if isinstance(ev, h2.events.DataReceived):
                        bodies[ev.stream_id] += ev.data
                        conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    elif isinstance(ev, h2.events.StreamEnded):
                        ended.add(ev.stream_id)
                    elif isinstance(ev, h2.events.StreamReset):
                        raise AssertionError(f"stream {ev.stream_id} reset: {ev.error_code}")
                s.sendall(conn.data_to_send())
        expected = {sid: f"greeter:m{sid}".encode() for sid in sids}
        assert {sid: body[5:] for sid, body in bodies.items()} == expected
    finally:
        proxy.stop()
