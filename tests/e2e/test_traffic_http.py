"""VirtualService HTTP policies end to end: Istio YAML -> mizzen-controller -> the client's sidecar (and the
server's), through captured pods, real sockets and real apps.

Statistical behaviour is checked with bounds of six standard deviations of the binomial count for the
sample size; a fault delay by its response flag and by the request having taken at least the delay.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from collections.abc import Iterator

import pytest
from support.smallmesh import SmallMesh, get, small_mesh

pytestmark = pytest.mark.root

WEB = "http://web:9080"


def within(count: int, n: int, p: float) -> bool:
    """``count`` successes of ``n`` tries at probability ``p`` lies within six sigma of the mean."""
    sd = math.sqrt(n * p * (1 - p))
    return n * p - 6 * sd <= count <= n * p + 6 * sd


@pytest.fixture(scope="module")
def mesh() -> Iterator[SmallMesh]:
    with small_mesh() as m:
        m.pod("client", {"app": "client", "version": "v1"})
        m.pod("canary", {"app": "canary", "version": "canary"})
        m.pod("outsider-ns", {"app": "other"}, namespace="other")
        m.pod("web-v1", {"app": "web", "version": "v1"}, app=9080)
        m.pod("web-v2", {"app": "web", "version": "v2"}, app=9080)
        m.pod("shadow", {"app": "shadow"}, app=9080)
        m.pod("hang", {"app": "hang"}, silent=9080)
        m.service("web", {"app": "web"}, {"http": 9080})
        m.service("shadow", {"app": "shadow"}, {"http": 9080})
        m.service("hang", {"app": "hang"}, {"http": 9080})
        m.start()
        m.apply(
            "subsets",
            """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web}
spec:
  host: web
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
""",
        )
        yield m


def routing(mesh: SmallMesh, http: str) -> None:
    """The VirtualService for ``web`` with these ``http`` rules (YAML, indented under ``http:``)."""
    head = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: web}\n"
    mesh.apply("routing", head + "spec:\n  hosts: [web]\n  http:\n" + http)


def test_abort_percentage_and_status(mesh: SmallMesh) -> None:
    routing(
        mesh,
        """
  - fault: {abort: {httpStatus: 418, percentage: {value: 30}}}
    route: [{destination: {host: web, subset: v1}}]
""",
    )
    replies = mesh.http("client", WEB + "/", n=400)
    codes = Counter(r.status for r in replies)
    assert set(codes) == {200, 418}, codes
    assert within(codes[418], 400, 0.3), codes
    aborted = next(r for r in replies if r.status == 418)
    assert aborted.body == "fault filter abort" and aborted.served_by == ""
    assert 'response_flags="FI"' in mesh.proxy_stats("client")


def test_grpc_abort_answers_a_grpc_status(mesh: SmallMesh) -> None:
    routing(
        mesh,
        """
  - fault: {abort: {grpcStatus: UNAVAILABLE, percentage: {value: 100}}}
    route: [{destination: {host: web}}]
""",
    )
    grpc = mesh.http(
        "client", WEB + "/pkg.Svc/Call", method="POST", body="", headers={"content-type": "application/grpc"}
    )[0]
    assert (grpc.status, grpc.header("grpc-status"), grpc.header("content-type")) == (
        200,
        "14",
        "application/grpc",
    )
    plain = mesh.http("client", WEB + "/")[0]
    assert plain.status == 503  # UNAVAILABLE in HTTP terms, for a client that does not speak gRPC


def test_delay_holds_requests_then_lets_them_through(mesh: SmallMesh) -> None:
    routing(
        mesh,
        """
  - match: [{headers: {x-slow: {exact: "1"}}}]
    fault: {delay: {fixedDelay: 0.4s, percentage: {value: 100}}}
    route: [{destination: {host: web, subset: v1}}]
  - route: [{destination: {host: web, subset: v1}}]
""",
    )
    slow = mesh.http("client", WEB + "/", n=3, headers={"x-slow": "1"})
    assert [r.status for r in slow] == [200, 200, 200]
    assert all(r.served_by == "web-v1" for r in slow)
    assert min(r.ms for r in slow) >= 400  # each waited at least the injected delay
    assert 'response_flags="DI"' in mesh.proxy_stats("client")


def test_headers_per_route_and_per_destination(mesh: SmallMesh) -> None:
    routing(
        mesh,
        """
  - headers:
      request: {set: {x-env: prod}, add: {x-trace: a}, remove: [x-secret]}
      response: {set: {x-served: mesh}, remove: [content-type]}
    route:
    - destination: {host: web, subset: v1}
      weight: 50
      headers: {request: {set: {x-dest: v1}}, response: {add: {x-via: v1}}}
    - destination: {host: web, subset: v2}
      weight: 50
      headers: {request: {set: {x-dest: v2}}}
""",
    )
    replies = mesh.http("client", WEB + "/", n=40, headers={"x-secret": "s", "x-env": "dev"})
    seen = set()
    for r in replies:
        sent = r.json["headers"]
        assert (sent["x-env"], sent["x-trace"], "x-secret" in sent) == ("prod", "a", False)
        version = r.served_by.split("-")[1]
        seen.add(version)
        assert sent["x-dest"] == version
        assert r.header("x-served") == "mesh" and r.header("content-type") is None
        assert r.header("x-via") == ("v1" if version == "v1" else None)
    assert seen == {"v1", "v2"}


def test_rewrites_redirects_and_direct_responses(mesh: SmallMesh) -> None:
    routing(
        mesh,
        """
  - match: [{uri: {prefix: /old/}}]
    redirect: {uri: /new, authority: web.example, redirectCode: 302}
  - match: [{uri: {exact: /teapot}}]
    directResponse: {status: 418, body: {string: "short and stout"}}
  - match: [{uri: {prefix: /api/v1/}}]
    rewrite: {uri: /v1/, authority: inner.web}
    route: [{destination: {host: web, subset: v1}}]
  - match: [{uri: {regex: "/users/[0-9]+/profile"}}]
    rewrite: {uriRegexRewrite: {match: "^/users/([0-9]+)/profile$", rewrite: "/profiles/\\\\1"}}
    route: [{destination: {host: web, subset: v1}}]
""",
    )
    redirect = mesh.http("client", WEB + "/old/x?y=1")[0]
    assert (redirect.status, redirect.header("location")) == (302, "http://web.example/new?y=1")
    direct = mesh.http("client", WEB + "/teapot")[0]
    assert (direct.status, direct.body, direct.served_by) == (418, "short and stout", "")
    api = mesh.http("client", WEB + "/api/v1/items?a=b")[0].json
    assert (api["path"], api["headers"]["host"]) == ("/v1/items?a=b", "inner.web")
    profile = mesh.http("client", WEB + "/users/42/profile")[0].json
    assert profile["path"] == "/profiles/42"
    assert mesh.http("client", WEB + "/elsewhere")[0].status == 404  # no rule matches: NR


def test_cors_preflight_is_answered_by_the_proxy(mesh: SmallMesh) -> None:
    routing(
        mesh,
        """
  - corsPolicy:
      allowOrigins: [{exact: "https://app.example"}, {regex: "https://.*\\\\.trusted\\\\.example"}]
      allowMethods: [GET, POST]
      allowHeaders: [x-custom]
      exposeHeaders: [x-total]
      maxAge: 1h
      allowCredentials: true
    route: [{destination: {host: web, subset: v1}}]
""",
    )
    before = int(get_count(mesh, "web-v1"))
    pre = mesh.http(
        "client",
        WEB + "/data",
        method="OPTIONS",
        headers={"origin": "https://app.example", "access-control-request-method": "POST"},
    )[0]
    assert pre.status == 200 and pre.served_by == ""
    assert pre.header("access-control-allow-origin") == "https://app.example"
    assert pre.header("access-control-allow-methods") == "GET,POST"
    assert pre.header("access-control-allow-headers") == "x-custom"
    assert pre.header("access-control-max-age") == "3600"
    assert pre.header("access-control-allow-credentials") == "true"
    assert int(get_count(mesh, "web-v1")) == before  # the app never saw the preflight
    simple = mesh.http("client", WEB + "/data", headers={"origin": "https://a.trusted.example"})[0]
    assert simple.served_by == "web-v1"
    assert simple.header("access-control-allow-origin") == "https://a.trusted.example"
    assert simple.header("access-control-expose-headers") == "x-total"
    stranger = mesh.http("client", WEB + "/data", headers={"origin": "https://evil.example"})[0]
    assert stranger.served_by == "web-v1" and stranger.header("access-control-allow-origin") is None
    forwarded = mesh.http(
        "client",
        WEB + "/data",
        method="OPTIONS",
        headers={"origin": "https://evil.example", "access-control-request-method": "POST"},
    )[0]
    assert forwarded.served_by == "web-v1"  # unmatched preflights go upstream (Istio's FORWARD)


def get_count(mesh: SmallMesh, pod: str) -> str:
    """The requests a pod's app has served, asked from the host (not through any sidecar's routes)."""
    return get(f"http://{mesh.ip(pod)}:9080/__count")[1]


def shadow_log(mesh: SmallMesh) -> list[dict[str, object]]:
    return json.loads(get(f"http://{mesh.ip('shadow')}:9080/__log")[1])  # type: ignore[no-any-return]


def test_mirror_copies_requests_with_a_shadow_host(mesh: SmallMesh) -> None:
    routing(
        mesh,
        """
  - route: [{destination: {host: web, subset: v1}}]
    mirror: {host: shadow}
""",
    )
    start = len(shadow_log(mesh))
    replies = mesh.http("client", WEB + "/m?id=7", n=5, method="POST", body="payload")
    assert {r.served_by for r in replies} == {"web-v1"}
    mesh.wait(lambda: len(shadow_log(mesh)) >= start + 5, "the mirror to get the copies")
    copies = shadow_log(mesh)[start:]
    assert len(copies) == 5
    assert {c["path"] for c in copies} == {"/m?id=7"}  # type: ignore[index]
    assert {c["headers"]["host"] for c in copies} == {"web-shadow:9080"}  # type: ignore[index]
    assert {c["method"] for c in copies} == {"POST"}


def test_mirror_percentage(mesh: SmallMesh) -> None:
    routing(
        mesh,
        """
  - route: [{destination: {host: web, subset: v1}}]
    mirrors:
    - destination: {host: shadow}
      percentage: {value: 25}
""",
    )
    start = int(get_count(mesh, "shadow"))
    n = 400
    assert {r.status for r in mesh.http("client", WEB + "/", n=n)} == {200}
    # Copies are fire and forget: wait until the count stops moving, then judge it.
    last = -1
    for _ in range(50):
        now = int(get_count(mesh, "shadow")) - start
        if now == last:
            break
        last = now
        time.sleep(0.2)
    assert within(last, n, 0.25), last


def test_mirror_that_never_answers_never_holds_the_request(mesh: SmallMesh) -> None:
    routing(
        mesh,
        """
  - route: [{destination: {host: web, subset: v1}}]
    mirror: {host: hang}
""",
    )
    replies = mesh.http("client", WEB + "/", n=20)
    assert [r.status for r in replies] == [200] * 20


def test_match_conditions(mesh: SmallMesh) -> None:
    routing(
        mesh,
        """
  - match: [{queryParams: {user: {exact: jason}}}]
    route: [{destination: {host: web, subset: v2}}]
  - match: [{sourceLabels: {version: canary}}]
    route: [{destination: {host: web, subset: v2}}]
  - match: [{sourceNamespace: other}]
    route: [{destination: {host: web, subset: v2}}]
  - match: [{uri: {exact: /CaseLess}, ignoreUriCase: true}]
    route: [{destination: {host: web, subset: v2}}]
  - match: [{gateways: [istio-system/ingressgateway]}]
    route: [{destination: {host: web, subset: v2}}]
  - match: [{withoutHeaders: {x-stable: {}}}]
    directResponse: {status: 412}
  - route: [{destination: {host: web, subset: v1}}]
""",
    )
    stable = {"x-stable": "1"}

    def who(pod: str, path: str = "/", headers: dict[str, str] | None = None) -> str:
        base = "http://web.default:9080" if pod == "outsider-ns" else WEB
        r = mesh.http(pod, base + path, headers=stable if headers is None else headers)[0]
        return r.served_by or str(r.status)

    assert who("client", "/?user=jason") == "web-v2"
    assert who("client", "/?user=jasonx") == "web-v1"
    assert who("canary") == "web-v2"  # its labels pick the rule; the client's do not
    assert who("client") == "web-v1"
    assert who("outsider-ns") == "web-v2"
    assert who("client", "/caseless") == "web-v2"
    assert who("client", "/", {}) == "412"  # the header is absent: withoutHeaders holds


def test_delegate_virtual_service(mesh: SmallMesh) -> None:
    mesh.apply(
        "delegate",
        """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web-api}
spec:
  http:
  - match: [{uri: {prefix: /api/v2}}]
    route: [{destination: {host: web, subset: v2}}]
  - route: [{destination: {host: web, subset: v1}}]
""",
    )
    routing(
        mesh,
        """
  - match: [{uri: {prefix: /api}}]
    delegate: {name: web-api}
  - directResponse: {status: 404, body: {string: not here}}
""",
    )
    assert mesh.http("client", WEB + "/api/v2/x")[0].served_by == "web-v2"
    assert mesh.http("client", WEB + "/api/other")[0].served_by == "web-v1"
    assert mesh.http("client", WEB + "/other")[0].body == "not here"
    # The delegate changes on its own: the root's routes follow.
    mesh.apply(
        "delegate",
        """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web-api}
spec:
  http:
  - route: [{destination: {host: web, subset: v2}}]
""",
    )
    assert mesh.http("client", WEB + "/api/other")[0].served_by == "web-v2"
    mesh.remove("delegate")


def test_weighted_destinations(mesh: SmallMesh) -> None:
    routing(
        mesh,
        """
  - route:
    - {destination: {host: web, subset: v1}, weight: 80}
    - {destination: {host: web, subset: v2}, weight: 20}
""",
    )
    n = 400
    got = Counter(r.served_by for r in mesh.http("client", WEB + "/", n=n))
    assert set(got) == {"web-v1", "web-v2"} and within(got["web-v2"], n, 0.2), got
