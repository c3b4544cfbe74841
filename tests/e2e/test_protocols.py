"""Protocol selection end to end (controller, captured pods, sidecars): a Service port that declares no
protocol is sniffed (HTTP is routed and measured as HTTP on both sidecars), and a gRPC port is spoken as
HTTP/2 all the way (unary and streaming calls, gRPC status in both sidecars' metrics). The same choice under
mutual TLS, by ALPN, is tested on two proxies in tests/integration/test_proxy_alpn.py."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from support.prom import value
from support.smallmesh import SUPPORT, SmallMesh, small_mesh

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def mesh() -> Iterator[SmallMesh]:
    with small_mesh() as m:
        m.pod("client", {"app": "client"})
        m.pod("web-v1", {"app": "web"}, app=8080)
        m.pod("greeter", {"app": "greeter"})
        m.service("web", {"app": "web"}, {"web": 8080})  # "web" names no protocol: sniffed
        m.service("greeter", {"app": "greeter"}, {"grpc": 50051})
        # An HTTP forward proxy in the mesh (an application's HTTPS_PROXY), and a TCP service behind it.
        m.pod("fwd", {"app": "fwd"})
        m.pod("db", {"app": "db"}, tcp=7000)
        m.service("fwd", {"app": "fwd"}, {"http-proxy": 3128})
        m.service("db", {"app": "db"}, {"tcp": 7000})
        m.start()
        m._run(
            m.pods["greeter"], [sys.executable, str(SUPPORT / "grpcapp.py"), "50051", "greeter", "0.0.0.0"]
        )
        m._run(m.pods["fwd"], [sys.executable, str(SUPPORT / "forwardproxy.py"), "3128"])
        yield m


def settle(mesh: SmallMesh, pod: str, name: str, want: float, **labels: str) -> float:
    deadline = time.monotonic() + 10
    got = 0.0
    while time.monotonic() < deadline:
        got = value(mesh.proxy_stats(pod), name, **labels)
        if got >= want:
            break
        time.sleep(0.1)
    return got


def test_a_port_without_a_protocol_is_sniffed_and_routed_as_http(mesh: SmallMesh) -> None:
    mesh.apply(
        "teapot",
        """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web}
spec:
  hosts: [web]
  http:
  - match: [{headers: {x-brew: {exact: tea}}}]
    directResponse: {status: 418, body: {string: "short and stout"}}
  - route: [{destination: {host: web}}]
""",
    )
    replies = mesh.http("client", "http://web:8080/", n=5)
    assert [r.status for r in replies] == [200] * 5 and replies[0].served_by == "web-v1"
    # L7 routing on a sniffed port: the client's sidecar answered this itself.
    tea = mesh.http("client", "http://web:8080/", headers={"x-brew": "tea"})[0]
    assert (tea.status, tea.body) == (418, "short and stout")
    # The server's sidecar took the HTTP chain of the sniffed port too.
    served = settle(mesh, "web-v1", "istio_requests_total", 5, reporter="destination", response_code="200",
                    request_protocol="http")  # fmt: skip
    assert served == 5
    mesh.remove("teapot")


GRPC_CLIENT = """
import json, sys, grpc
channel = grpc.insecure_channel("greeter:50051")
who = channel.unary_unary("/mizzen.test.Echo/Who")
count = channel.unary_stream("/mizzen.test.Echo/Count")
out = {"who": [who(b"hi", timeout=10).decode() for _ in range(3)],
       "count": [m.decode() for m in count(b"50", timeout=10)]}
try:
    who(b"x", metadata=(("status", "5"),), timeout=10)
except grpc.RpcError as err:
    out["error"] = [err.code().name, err.details()]
print(json.dumps(out))
"""


def test_grpc_is_http2_end_to_end(mesh: SmallMesh) -> None:
    proc = mesh.node.spawn("client", [sys.executable, "-c", GRPC_CLIENT], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)  # fmt: skip
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    got = json.loads(out)
    assert got["who"] == ["greeter:hi"] * 3
    assert got["count"] == [f"greeter:{i}" for i in range(50)]
    assert got["error"] == ["NOT_FOUND", "asked"]
    ok = settle(mesh, "client", "istio_requests_total", 4, reporter="source", request_protocol="grpc",
                grpc_response_status="0")  # fmt: skip
    assert ok == 4
    assert settle(mesh, "client", "istio_requests_total", 1, reporter="source", grpc_response_status="5") == 1
    served = settle(
        mesh, "greeter", "istio_requests_total", 5, reporter="destination", request_protocol="grpc"
    )
    assert served == 5


GRPC_POLICY_CLIENT = """
import json, sys, time, grpc
channel = grpc.insecure_channel("greeter:50051")
who = channel.unary_unary("/mizzen.test.Echo/Who")
out = {}
try:
    who(b"x", metadata=(("x-fault", "yes"),), timeout=10)
except grpc.RpcError as err:
    out["fault"] = [err.code().name, err.details()]
key = "k%d" % time.monotonic_ns()
out["retried"] = who(b"r", metadata=(("fail-until", "2"), ("key", key)), timeout=10).decode()
print(json.dumps(out))
"""


def test_grpc_fault_abort_and_retry_from_istio_yaml(mesh: SmallMesh) -> None:
    mesh.apply(
        "greeter-policy",
        """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: greeter}
spec:
  hosts: [greeter]
  http:
  - match: [{headers: {x-fault: {exact: "yes"}}}]
    fault: {abort: {grpcStatus: PERMISSION_DENIED, percentage: {value: 100}}}
    route: [{destination: {host: greeter}}]
  - route: [{destination: {host: greeter}}]
    retries: {attempts: 3, retryOn: unavailable, perTryTimeout: 2s}
""",
    )
    try:
        proc = mesh.node.spawn("client", [sys.executable, "-c", GRPC_POLICY_CLIENT], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)  # fmt: skip
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode()
        got = json.loads(out)
        # The client's sidecar answered the faulted call itself, with the configured gRPC status.
        assert got["fault"][0] == "PERMISSION_DENIED"
        # UNAVAILABLE twice from the app, then served: the sidecar retried (retryOn unavailable).
        assert got["retried"] == "greeter:r"
        assert settle(mesh, "client", "istio_requests_total", 1, reporter="source", grpc_response_status="7",
                      response_flags="FI") == 1  # fmt: skip
    finally:
        mesh.remove("greeter-policy")


WS_CLIENT = """
import base64, os, socket, sys
s = socket.create_connection(("web", 8080), timeout=10)
key = base64.b64encode(os.urandom(16)).decode()
s.sendall(("GET /__ws HTTP/1.1\\r\\nHost: web:8080\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\n"
           "Sec-WebSocket-Key: " + key + "\\r\\nSec-WebSocket-Version: 13\\r\\n\\r\\n").encode())
head = b""
while b"\\r\\n\\r\\n" not in head:
    head += s.recv(1)
print(head.split(b"\\r\\n")[0].decode())
def frame(text):
    data, mask = text.encode(), os.urandom(4)
    return bytes([0x81, 0x80 | len(data)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data))
def read():
    first = s.recv(2)
    n = first[1] & 0x7F
    data = b""
    while len(data) < n:
        data += s.recv(n - len(data))
    return data.decode()
for word in sys.argv[1:]:
    s.sendall(frame(word))
    print(read())
"""


def test_websocket_through_both_sidecars(mesh: SmallMesh) -> None:
    proc = mesh.node.spawn("client", [sys.executable, "-c", WS_CLIENT, "one", "two"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)  # fmt: skip
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    assert out.decode().splitlines() == ["HTTP/1.1 101 Switching Protocols", "web-v1:one", "web-v1:two"]


CONNECT_CLIENT = """
import socket, sys
s = socket.create_connection((sys.argv[1], 3128), timeout=10)
s.sendall(b"CONNECT db:7000 HTTP/1.1\\r\\nHost: db:7000\\r\\n\\r\\n")
head = b""
while b"\\r\\n\\r\\n" not in head:
    head += s.recv(1)
print(head.split(b"\\r\\n")[0].decode())
s.sendall(b"hello")
s.shutdown(socket.SHUT_WR)
rest = b""
while chunk := s.recv(4096):
    rest += chunk
print(rest.decode())
"""


def test_connect_through_both_sidecars(mesh: SmallMesh) -> None:
    # The client's sidecar takes CONNECT on the proxy's HTTP port and, the authority naming no virtual
    # host there, passes it to the address the client connected to; the forward proxy's sidecar hands it
    # to the application; the 200 opens the tunnel on both. (The pod address: a cluster's kube-proxy would
    # take a ClusterIP there, and the local node has none.)
    argv = [sys.executable, "-c", CONNECT_CLIENT, mesh.ip("fwd")]
    proc = mesh.node.spawn("client", argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    status, echoed = out.decode().splitlines()
    assert status == "HTTP/1.1 200 Connection established"
    assert echoed.startswith("db saw "), echoed
    # Both sidecars saw a CONNECT at L7 (their request metrics), not bytes they could not read.
    assert settle(mesh, "client", "istio_requests_total", 1, reporter="source", response_code="200",
                  destination_service_name="PassthroughCluster", request_protocol="http") == 1  # fmt: skip
    assert settle(mesh, "fwd", "istio_requests_total", 1, reporter="destination", response_code="200") == 1
