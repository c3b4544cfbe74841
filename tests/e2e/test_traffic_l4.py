"""TCP and TLS routes, ServiceEntries and the outbound traffic policy end to end: Istio YAML through
mizzen-controller to the client's sidecar, with real TCP and TLS servers (which answer with their name).

A TLS route never decrypts anything: the sidecar reads the SNI of the ClientHello and passes the bytes on;
the TLS session is between the client and the server it was routed to.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator

import pytest
from support.smallmesh import SmallMesh, small_mesh

pytestmark = pytest.mark.root


def within(count: int, n: int, p: float) -> bool:
    sd = math.sqrt(n * p * (1 - p))
    return n * p - 6 * sd <= count <= n * p + 6 * sd


def who(answer: str) -> str:
    return answer.split(" saw ")[0] if " saw " in answer else answer


@pytest.fixture(scope="module")
def mesh() -> Iterator[SmallMesh]:
    with small_mesh() as m:
        m.pod("client", {"app": "client"})
        m.pod("locked", {"app": "locked"}, namespace="locked")
        m.pod("tcp-a", {"app": "tcp-a"}, tcp=7000, meshed=False)
        m.pod("tcp-b", {"app": "tcp-b"}, tcp=7000)
        m.pod("tcp-c", {"app": "tcp-c"}, tcp=7000)
        m.pod("tcp-d", {"app": "tcp-d"}, tcp=7000, meshed=False)
        m.pod("ports", {"app": "ports"}, tcp=(7001, 7002))
        m.pod("tls-a", {"app": "tls-a"}, tls=8443)
        m.pod("tls-b", {"app": "tls-b"}, tls=443, meshed=False)
        m.pod("ext", {"app": "ext"}, app=(80, 9080), meshed=False)
        m.pod("web", {"app": "web"}, app=9080)
        m.pod("remap", {"app": "remap"}, app=9080)  # listens on 9080; its Service says 8082
        m.service("tcp-b", {"app": "tcp-b"}, {"tcp": 7000})
        m.service("tcp-c", {"app": "tcp-c"}, {"tcp": 7000})
        m.service("ports", {"app": "ports"}, {"tcp-one": 7001, "tcp-two": 7002})
        m.service("tls-a", {"app": "tls-a"}, {"tls": 8443})
        m.service("web", {"app": "web"}, {"http": 9080})
        m.service("remap", {"app": "remap"}, {"http": 8082})
        m.host("nowhere.test", m.unused_ip())  # resolves, but nothing is there: only the mesh can help
        for name in ("a.tls.test", "b.tls.test", "other.tls.test"):
            m.host(name, pod="tls-b")  # the client resolves all three alike; the SNI decides where they go
        m.host("ext-real.test", pod="ext")
        m.start()
        yield m


def test_tcp_routes_by_destination_subnet_with_weights(mesh: SmallMesh) -> None:
    a = mesh.ip("tcp-a")
    mesh.apply(
        "tcp",
        f"""
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: tcp-internal}}
spec:
  hosts: [tcp.internal]
  location: MESH_INTERNAL
  ports: [{{number: 7000, name: tcp, protocol: TCP}}]
  resolution: NONE
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: tcp-internal}}
spec:
  hosts: [tcp.internal]
  tcp:
  - match: [{{destinationSubnets: [{a}/32]}}]
    route:
    - {{destination: {{host: tcp-b, port: {{number: 7000}}}}, weight: 70}}
    - {{destination: {{host: tcp-c, port: {{number: 7000}}}}, weight: 30}}
  - route: [{{destination: {{host: tcp.internal}}}}]
""",
    )
    n = 200
    got = Counter(who(x) for x in mesh.stream("client", a, 7000, n=n))
    assert set(got) == {"tcp-b", "tcp-c"}, got
    assert within(got["tcp-c"], n, 0.3), got
    # Another address on the port: the catch-all rule, which is the original destination.
    assert {who(x) for x in mesh.stream("client", mesh.ip("tcp-d"), 7000, n=3)} == {"tcp-d"}
    mesh.remove("tcp")


def test_tcp_routes_by_port(mesh: SmallMesh) -> None:
    mesh.apply(
        "tcp-ports",
        """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ports}
spec:
  hosts: [ports]
  tcp:
  - match: [{port: 7001}]
    route: [{destination: {host: tcp-b, port: {number: 7000}}}]
  - match: [{port: 7002}]
    route: [{destination: {host: tcp-c, port: {number: 7000}}}]
""",
    )
    assert who(mesh.stream("client", "ports", 7001)[0]) == "tcp-b"
    assert who(mesh.stream("client", "ports", 7002)[0]) == "tcp-c"
    mesh.remove("tcp-ports")
    assert who(mesh.stream("client", "ports", 7002)[0]) == "ports"


def test_tls_passthrough_routed_by_sni(mesh: SmallMesh) -> None:
    mesh.apply(
        "tls",
        """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: tls-hosts}
spec:
  hosts: [a.tls.test, b.tls.test]
  location: MESH_EXTERNAL
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: NONE
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: tls-a}
spec:
  hosts: [a.tls.test]
  tls:
  - match: [{sniHosts: [a.tls.test], port: 443}]
    route: [{destination: {host: tls-a, port: {number: 8443}}}]
""",
    )
    # Both names resolve to tls-b; the SNI of the first goes where its VirtualService says.
    assert who(mesh.stream("client", "a.tls.test", 443, sni="a.tls.test")[0]) == "tls-a"
    assert who(mesh.stream("client", "b.tls.test", 443, sni="b.tls.test")[0]) == "tls-b"
    # A server name no ServiceEntry knows passes through to where the client was going (ALLOW_ANY).
    assert who(mesh.stream("client", "other.tls.test", 443, sni="other.tls.test")[0]) == "tls-b"
    mesh.remove("tls")


def test_service_entry_resolutions(mesh: SmallMesh) -> None:
    ext = mesh.ip("ext")
    mesh.apply(
        "entries",
        f"""
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: by-dns}}
spec:
  hosts: [dns.test]
  location: MESH_EXTERNAL
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: DNS
  endpoints: [{{address: ext-real.test}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: static}}
spec:
  hosts: [static.test]
  location: MESH_EXTERNAL
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: {ext}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: internal}}
spec:
  hosts: [internal.test]
  location: MESH_INTERNAL
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: {ext}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: passthrough}}
spec:
  hosts: [none.test]
  location: MESH_EXTERNAL
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: NONE
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: selected}}
spec:
  hosts: [selected.test]
  location: MESH_INTERNAL
  ports: [{{number: 80, name: http, protocol: HTTP, targetPort: 9080}}]
  resolution: STATIC
  workloadSelector: {{labels: {{app: web}}}}
""",
    )
    # The client resolves these names to an address where nothing listens: the sidecar routes by Host to
    # the entry's endpoints (a name it resolves itself for DNS, an address for STATIC).
    for host in ("dns.test", "static.test", "internal.test"):
        reply = mesh.http("client", "http://nowhere.test/", headers={"host": host})[0]
        assert (reply.status, reply.served_by, reply.json["headers"]["host"]) == (200, "ext", host), host
    # workloadSelector: the pods it selects are its endpoints, on the port's target port.
    reply = mesh.http("client", "http://nowhere.test/", headers={"host": "selected.test"})[0]
    assert (reply.status, reply.served_by) == (200, "web"), reply
    # NONE: the original destination the client connected to.
    reply = mesh.http("client", f"http://{ext}/", headers={"host": "none.test"})[0]
    assert reply.served_by == "ext"
    stats = mesh.proxy_stats("client")
    assert 'destination_service="dns.test"' in stats and 'destination_service="static.test"' in stats
    mesh.remove("entries")


def test_outbound_traffic_policy(mesh: SmallMesh) -> None:
    ext = mesh.ip("ext")
    # ALLOW_ANY (the default): a destination outside the registry is reached directly.
    assert mesh.http("locked", f"http://{ext}/", headers={"host": "unknown.example"})[0].served_by == "ext"
    assert who(mesh.stream("locked", mesh.ip("tcp-d"), 7000)[0]) == "tcp-d"
    mesh.apply(
        "locked-down",
        """
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: locked}
spec:
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
""",
    )
    # On a port the mesh has HTTP services on, an unknown host is answered 502 (Istio's block_all); on
    # any other port the connection goes to the black hole.
    blocked = mesh.http("locked", f"http://{ext}:9080/", headers={"host": "unknown.example"})[0]
    assert (blocked.status, blocked.served_by) == (502, "")
    assert mesh.http("locked", f"http://{ext}/", headers={"host": "unknown.example"})[0].status == 0
    assert "saw" not in mesh.stream("locked", mesh.ip("tcp-d"), 7000)[0]
    # Registered services are still reachable from the locked namespace.
    assert who(mesh.stream("locked", "tcp-b.default", 7000)[0]) == "tcp-b"
    # A ServiceEntry puts the outside host in the registry: reachable again.
    mesh.apply(
        "allow-ext",
        f"""
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: ext, namespace: locked}}
spec:
  hosts: [unknown.example]
  location: MESH_EXTERNAL
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: {ext}}}]
""",
    )
    assert mesh.http("locked", f"http://{ext}/", headers={"host": "unknown.example"})[0].served_by == "ext"
    mesh.remove("allow-ext")
    mesh.remove("locked-down")


def test_sidecar_ingress_sends_a_port_to_its_default_endpoint(mesh: SmallMesh) -> None:
    # The app listens on 9080 while its Service (and so its callers) use 8082: nothing answers there...
    assert mesh.http("client", "http://remap:8082/")[0].status == 503
    mesh.apply(
        "remap-ingress",
        """
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: remap}
spec:
  workloadSelector: {labels: {app: remap}}
  ingress:
  - port: {number: 8082, protocol: HTTP, name: http}
    defaultEndpoint: 127.0.0.1:9080
""",
    )
    # ...until its Sidecar's ingress listener takes port 8082 to the app on loopback, live.
    reply = mesh.http("client", "http://remap:8082/")[0]
    assert (reply.status, reply.served_by) == (200, "remap"), reply
    assert reply.json["peer"] == "127.0.0.6"  # from its own sidecar, as every inbound request
    mesh.remove("remap-ingress")
    assert mesh.http("client", "http://remap:8082/")[0].status == 503
