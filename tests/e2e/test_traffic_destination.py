"""DestinationRule end to end: outlier detection, load balancers (simple and consistent hash), connection
pool settings, port-level and subset-level policies, and locality load balancing -- Istio YAML through
mizzen-controller to the client's sidecar, over captured pods and real apps.

Counts that depend on chance are held to six standard deviations of their binomial distribution; a
connection's identity is the source port the app saw (apps outside the mesh see the client sidecar's).
"""

from __future__ import annotations

import math
import subprocess
import time
from collections import Counter
from collections.abc import Iterator

import pytest
from support.smallmesh import SmallMesh, small_mesh

pytestmark = pytest.mark.root


def within(count: int, n: int, p: float) -> bool:
    sd = math.sqrt(n * p * (1 - p))
    return n * p - 6 * sd <= count <= n * p + 6 * sd


@pytest.fixture(scope="module")
def mesh() -> Iterator[SmallMesh]:
    with small_mesh() as m:
        m.pod("client", {"app": "client"}, locality="/z1")
        m.pod("canary", {"app": "canary"})
        for i in (1, 2, 3):
            m.pod(f"flaky-{i}", {"app": "flaky"}, app=9080)
        m.pod("half-1", {"app": "half"}, app=9080)
        m.pod("half-2", {"app": "half"}, meshed=False)  # nothing listens: connections are refused
        for i in (1, 2, 3, 4):
            m.pod(f"hashy-{i}", {"app": "hashy", "version": "v1" if i <= 2 else "v2"}, app=(9080, 9081))
        m.pod("plain", {"app": "plain"}, meshed=False, app=9080)
        m.pod("geo-near", {"app": "geo", "site": "a"}, app=9080, locality="/z1")
        m.pod("geo-far", {"app": "geo", "site": "b"}, app=9080, locality="/z2")
        m.service("flaky", {"app": "flaky"}, {"http": 9080})
        m.service("half", {"app": "half"}, {"http": 9080})
        m.service("hashy", {"app": "hashy"}, {"http": 9080, "http-alt": 9081})
        m.service("plain", {"app": "plain"}, {"http": 9080})
        m.service("geo", {"app": "geo"}, {"http": 9080})
        m.start()
        # No retries: every failure the apps give must reach the client, so that the tests can count them.
        m.apply(
            "no-retries",
            "\n---\n".join(
                f"""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {svc}}}
spec:
  hosts: [{svc}]
  http: [{{route: [{{destination: {{host: {svc}}}}}], retries: {{attempts: 0}}}}]
"""
                for svc in ("flaky", "half", "geo")
            ),
        )
        yield m


def rule(mesh: SmallMesh, host: str, spec: str) -> None:
    mesh.apply(
        f"dr-{host}",
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
        f"metadata: {{name: {host}}}\nspec:\n  host: {host}\n{spec}",
    )


def served(mesh: SmallMesh, url: str, n: int, pod: str = "client", **kw: object) -> Counter[str]:
    return Counter(r.served_by or str(r.status) for r in mesh.http(pod, url, n=n, **kw))  # type: ignore[arg-type]


# --- outlier detection ------------------------------------------------------------------------------------


def test_a_failing_replica_is_ejected_then_brought_back(mesh: SmallMesh) -> None:
    rule(
        mesh,
        "flaky",
        """
  trafficPolicy:
    outlierDetection: {consecutive5xxErrors: 2, interval: 1s, baseEjectionTime: 2s, maxEjectionPercent: 100}
""",
    )
    got = served(mesh, "http://flaky:9080/?fail_on=flaky-3", 60)
    # Two failures in a row and flaky-3 is out: the rest of the requests go to the others.
    assert got["503"] == 2, got
    assert set(got) == {"flaky-1", "flaky-2", "503"}
    assert "outlier_detection.ejections_enforced_total: 1" in mesh.admin("client", "/stats")
    # The ejection is over after baseEjectionTime (at an interval's tick): flaky-3 serves again.
    mesh.wait(lambda: served(mesh, "http://flaky:9080/", 12)["flaky-3"] > 0, "flaky-3 back in service")


def test_gateway_errors_only_502_503_504(mesh: SmallMesh) -> None:
    rule(
        mesh,
        "flaky",
        """
  trafficPolicy:
    outlierDetection:
      {consecutive5xxErrors: 0, consecutiveGatewayErrors: 2, interval: 1s, baseEjectionTime: 30s}
""",
    )
    n = 90
    internal = served(mesh, "http://flaky:9080/?fail_on=flaky-2&fail_status=500", n)
    assert within(internal["500"], n, 1 / 3), internal  # 500 is no gateway error: never ejected
    gateway = served(mesh, "http://flaky:9080/?fail_on=flaky-2&fail_status=502", n)
    assert gateway["502"] == 2, gateway


def test_local_origin_failures_counted_apart(mesh: SmallMesh) -> None:
    rule(
        mesh,
        "half",
        """
  trafficPolicy:
    outlierDetection:
      consecutive5xxErrors: 100
      splitExternalLocalOriginErrors: true
      consecutiveLocalOriginFailures: 1
      interval: 1s
      baseEjectionTime: 30s
      maxEjectionPercent: 100
""",
    )
    got = served(mesh, "http://half:9080/", 40)
    # half-2 refuses the connection (locally originated: no response at all): one refusal ejects it.
    assert got["503"] == 1 and got["half-1"] == 39, got


# --- load balancers ---------------------------------------------------------------------------------------


def test_simple_load_balancers(mesh: SmallMesh) -> None:
    rule(mesh, "hashy", "  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}")
    rr = served(mesh, "http://hashy:9080/", 40)
    assert (
        sorted(rr) == ["hashy-1", "hashy-2", "hashy-3", "hashy-4"]
        and max(rr.values()) - min(rr.values()) <= 1
    )
    rule(mesh, "hashy", "  trafficPolicy: {loadBalancer: {simple: RANDOM}}")
    n = 400
    rnd = served(mesh, "http://hashy:9080/", n)
    assert all(within(rnd[f"hashy-{i}"], n, 0.25) for i in (1, 2, 3, 4)), rnd
    rule(mesh, "hashy", "  trafficPolicy: {loadBalancer: {simple: LEAST_CONN}}")
    assert len(served(mesh, "http://hashy:9080/", 40)) == 4


def test_passthrough_keeps_the_callers_destination(mesh: SmallMesh) -> None:
    rule(mesh, "hashy", "  trafficPolicy: {loadBalancer: {simple: PASSTHROUGH}}")
    for target in ("hashy-2", "hashy-4"):
        got = served(mesh, f"http://{mesh.ip(target)}:9080/", 8, headers={"host": "hashy:9080"})
        assert got == Counter({target: 8}), got


def test_consistent_hash_by_header_with_ring_hash(mesh: SmallMesh) -> None:
    rule(mesh, "hashy", "  trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x-user}}}")
    owners = {}
    for user in range(12):
        got = served(mesh, "http://hashy:9080/", 5, headers={"x-user": f"user-{user}"})
        assert len(got) == 1, got  # every request of a user on one pod
        owners[user] = next(iter(got))
    assert len(set(owners.values())) >= 2
    # A second client with its own sidecar agrees on every user's pod (the ring is the same everywhere).
    again = {
        u: next(iter(served(mesh, "http://hashy:9080/", 1, pod="canary", headers={"x-user": f"user-{u}"})))
        for u in owners
    }
    assert again == owners


def test_consistent_hash_by_query_parameter_with_maglev(mesh: SmallMesh) -> None:
    rule(
        mesh,
        "hashy",
        """
  trafficPolicy:
    loadBalancer: {consistentHash: {httpQueryParameterName: cart, maglev: {tableSize: 251}}}
""",
    )
    owners = set()
    for cart in range(12):
        got = served(mesh, f"http://hashy:9080/checkout?cart={cart}&x=1", 4)
        assert len(got) == 1, got
        owners |= set(got)
    assert len(owners) >= 2


def test_consistent_hash_by_cookie_sets_it_when_absent(mesh: SmallMesh) -> None:
    rule(
        mesh,
        "hashy",
        """
  trafficPolicy:
    loadBalancer: {consistentHash: {httpCookie: {name: sticky, path: /, ttl: 3600s}}}
""",
    )
    owners = set()
    for _ in range(8):
        first = mesh.http("client", "http://hashy:9080/")[0]
        cookie = first.header("set-cookie")
        assert (
            cookie is not None
            and cookie.startswith("sticky=")
            and "Max-Age=3600" in cookie
            and "Path=/" in cookie
        )
        value = cookie.split(";")[0]
        got = served(mesh, "http://hashy:9080/", 5, headers={"cookie": value})
        assert got == Counter({first.served_by: 5}), (got, first.served_by)
        owners.add(first.served_by)
    assert len(owners) >= 2


def test_consistent_hash_by_source_ip(mesh: SmallMesh) -> None:
    rule(mesh, "hashy", "  trafficPolicy: {loadBalancer: {consistentHash: {useSourceIp: true}}}")
    assert len(served(mesh, "http://hashy:9080/", 10)) == 1
    assert len(served(mesh, "http://hashy:9080/", 10, pod="canary")) == 1


def test_port_level_and_subset_level_policies(mesh: SmallMesh) -> None:
    rule(
        mesh,
        "hashy",
        """
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN}
    portLevelSettings:
    - port: {number: 9081}
      loadBalancer: {consistentHash: {httpHeaderName: x-user}}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x-user}}}
  - name: v2
    labels: {version: v2}
""",
    )
    mesh.apply(
        "hashy-subsets",
        """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: hashy}
spec:
  hosts: [hashy]
  http:
  - match: [{port: 9080, headers: {x-subset: {exact: v1}}}]
    route: [{destination: {host: hashy, subset: v1, port: {number: 9080}}}]
  - match: [{port: 9080, headers: {x-subset: {exact: v2}}}]
    route: [{destination: {host: hashy, subset: v2, port: {number: 9080}}}]
  - match: [{port: 9080}]
    route: [{destination: {host: hashy, port: {number: 9080}}}]
  - match: [{port: 9081}]
    route: [{destination: {host: hashy, port: {number: 9081}}}]
""",
    )
    same = {"x-user": "alice"}
    assert len(served(mesh, "http://hashy:9080/", 8, headers=same)) == 4  # top level: round robin
    assert len(served(mesh, "http://hashy:9081/", 8, headers=same)) == 1  # port 9081: hashed
    assert (
        len(served(mesh, "http://hashy:9080/", 8, headers={**same, "x-subset": "v1"})) == 1
    )  # subset v1: hashed
    assert served(mesh, "http://hashy:9080/", 8, headers={**same, "x-subset": "v2"}) == Counter(
        {"hashy-3": 4, "hashy-4": 4}
    )  # subset v2 inherits round robin
    mesh.remove("hashy-subsets")


# --- connection pool --------------------------------------------------------------------------------------


def ports(mesh: SmallMesh, n: int, pause: float = 0.0) -> list[int]:
    """The source ports the app outside the mesh saw for ``n`` requests (``pause`` seconds apart)."""
    out = []
    for _ in range(n):
        out.append(mesh.http("client", "http://plain:9080/")[0].json["peer_port"])
        time.sleep(pause)
    return out


def test_max_requests_per_connection(mesh: SmallMesh) -> None:
    rule(mesh, "plain", "  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}")
    assert len(set(ports(mesh, 6))) == 1  # pooled keep-alive: one connection carries them all
    rule(mesh, "plain", "  trafficPolicy: {connectionPool: {http: {maxRequestsPerConnection: 2}}}")
    assert len(set(ports(mesh, 6))) == 3


def test_idle_timeout_and_max_connection_duration(mesh: SmallMesh) -> None:
    rule(mesh, "plain", "  trafficPolicy: {connectionPool: {http: {idleTimeout: 0.5s}}}")
    seen = ports(mesh, 2, pause=2.5)  # the pool is swept every second: 2.5 s covers 0.5 s idle
    assert seen[0] != seen[1]
    rule(mesh, "plain", "  trafficPolicy: {connectionPool: {tcp: {maxConnectionDuration: 1s}}}")
    seen = ports(mesh, 2, pause=2.5)
    assert seen[0] != seen[1]


def test_tcp_keepalive_on_upstream_connections(mesh: SmallMesh) -> None:
    rule(
        mesh,
        "plain",
        "  trafficPolicy: {connectionPool: {tcp: {tcpKeepalive: {time: 7s, interval: 3s, probes: 2}}}}",
    )
    ports(mesh, 1)  # leaves a pooled connection to plain open
    out = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            mesh.node.netns_name("client"),
            "ss",
            "-tnoH",
            "state",
            "established",
            "dst",
            mesh.ip("plain"),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "timer:(keepalive" in out, out


# --- locality ---------------------------------------------------------------------------------------------


def test_locality_failover(mesh: SmallMesh) -> None:
    rule(
        mesh,
        "geo",
        "  trafficPolicy: {outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 30s}}",
    )
    assert served(mesh, "http://geo:9080/", 20) == Counter({"geo-near": 20})  # the client's own zone first
    got = served(mesh, "http://geo:9080/?fail_on=geo-near", 20)
    assert got == Counter({"503": 1, "geo-far": 19}), got  # the near one failed: over to the next zone


def test_failover_priority_by_labels(mesh: SmallMesh) -> None:
    rule(
        mesh,
        "geo",
        "  trafficPolicy:\n"
        "    outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 30s}\n"
        "    loadBalancer: {localityLbSetting: {failoverPriority: [site=b, topology.kubernetes.io/zone]}}",
    )
    # From another client than the locality test's (whose sidecar still has geo-near ejected): site=b
    # first, whatever the zones; then the rest.
    assert served(mesh, "http://geo:9080/", 20, pod="canary") == Counter({"geo-far": 20})
    got = served(mesh, "http://geo:9080/?fail_on=geo-far", 20, pod="canary")
    assert got == Counter({"503": 1, "geo-near": 19}), got


def test_locality_distribute(mesh: SmallMesh) -> None:
    rule(
        mesh,
        "geo",
        """
  trafficPolicy:
    loadBalancer:
      localityLbSetting:
        distribute: [{from: "/z1/*", to: {"/z1/*": 75, "/z2/*": 25}}]
""",
    )
    n = 400
    got = served(mesh, "http://geo:9080/", n)
    assert within(got["geo-far"], n, 0.25), got
