"""Bookinfo on the local mesh, end to end: each of Istio's traffic-management tasks (the YAML in
``examples/bookinfo/networking``) observed through the ingress gateway as a reader sees it, the sidecars'
metrics counting it with Istio's labels, and the command line (status, proxy-status, exec, logs) on it.

One mesh for the module (``mizzen local up`` of the platform and the gateway); each test sets exactly the
rules it needs. Weights are checked within six standard deviations of the binomial count.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from support.bookinfo import Bookinfo, Reader, bookinfo, request_id
from support.prom import value

pytestmark = pytest.mark.root

N = 40
REQUESTS = "istio_requests_total"


def within(count: int, n: int, p: float) -> bool:
    sd = math.sqrt(n * p * (1 - p))
    return n * p - 6 * sd <= count <= n * p + 6 * sd


@pytest.fixture(scope="module")
def app() -> Iterator[Bookinfo]:
    with bookinfo() as b:
        yield b


def versions(app: Bookinfo, n: int, user: str | None = None) -> Counter[str | None]:
    pages = app.pages(n, user)
    assert all(p.status == 200 for p in pages), Counter(p.status for p in pages)
    return Counter(p.version for p in pages)


def test_without_rules_every_version_answers(app: Bookinfo) -> None:
    app.rules()
    seen = versions(app, 60)
    assert set(seen) == {"v1", "v2", "v3"}, seen


def test_all_v1(app: Bookinfo) -> None:
    app.rules("destination-rule-all.yaml", "virtual-service-all-v1.yaml")
    assert versions(app, N) == Counter({"v1": N})


def test_header_routing_sends_jason_to_v2(app: Bookinfo) -> None:
    app.rules("destination-rule-all.yaml", "virtual-service-reviews-test-v2.yaml")
    assert versions(app, N, "jason") == Counter({"v2": N})
    assert versions(app, N, "someone") == Counter({"v1": N})
    assert versions(app, N) == Counter({"v1": N})
    # The user travels as a header from productpage to reviews: reviews v2 sees it in its own log.
    assert "user=jason" in app.log("reviews-v2", "reviews")


def test_weights_split_between_v1_and_v3(app: Bookinfo) -> None:
    app.rules("destination-rule-all.yaml", "virtual-service-reviews-50-v3.yaml")
    n = 200
    seen = versions(app, n)
    assert set(seen) <= {"v1", "v3"}, seen
    assert within(seen["v3"], n, 0.5), seen


def test_abort_fault_for_jason(app: Bookinfo) -> None:
    app.rules(
        "destination-rule-all.yaml",
        "virtual-service-reviews-test-v2.yaml",
        "virtual-service-ratings-test-abort.yaml",
    )
    before = app.metrics("reviews-v2")
    pages = app.pages(N, "jason")
    assert all(p.status == 200 and p.version == "v2" and p.ratings is False for p in pages)
    rating = pages[0].body["reviews"]["reviews"][0]["rating"]  # type: ignore[index]
    assert rating["error"] == "Ratings service is currently unavailable"
    others = app.pages(N)
    assert all(p.version == "v1" for p in others)
    after = app.metrics("reviews-v2")
    # reviews v2's sidecar answered for ratings (its destination labels are not filled for a fault yet).
    labels = {
        "reporter": "source",
        "source_workload": "reviews-v2",
        "response_code": "500",
        "response_flags": "FI",
    }
    assert value(after, REQUESTS, **labels) - value(before, REQUESTS, **labels) == N


def test_delay_fault_for_jason(app: Bookinfo) -> None:
    delay = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "ratings", "namespace": "default"},
        "spec": {
            "hosts": ["ratings"],
            "http": [
                {
                    "match": [{"headers": {"end-user": {"exact": "jason"}}}],
                    "fault": {"delay": {"fixedDelay": "1s", "percentage": {"value": 100.0}}},
                    "route": [{"destination": {"host": "ratings", "subset": "v1"}}],
                },
                {"route": [{"destination": {"host": "ratings", "subset": "v1"}}]},
            ],
        },
    }
    app.rules("destination-rule-all.yaml", "virtual-service-reviews-test-v2.yaml", extra=[delay])
    before = app.metrics("reviews-v2")
    slow = app.pages(3, "jason")
    # Below reviews' own 2.5 s timeout: the stars come, late.
    assert all(p.version == "v2" and p.ratings is True and p.seconds >= 1.0 for p in slow), slow
    assert 'response_flags="DI"' in app.metrics("reviews-v2") and 'response_flags="DI"' not in before
    # The 7 s delay of the example outlasts reviews' timeout: the page comes without stars.
    app.rules(
        "destination-rule-all.yaml",
        "virtual-service-reviews-test-v2.yaml",
        "virtual-service-ratings-test-delay.yaml",
    )
    page = app.pages(1, "jason")[0]
    assert page.version == "v2" and page.ratings is False and page.seconds >= 2.4


def test_route_timeout_answers_504(app: Bookinfo) -> None:
    app.rules("destination-rule-all.yaml", "virtual-service-reviews-v2-timeout.yaml")
    labels = {
        "reporter": "source",
        "destination_service_name": "reviews",
        "response_code": "504",
        "response_flags": "UT",
    }
    before = value(app.metrics("productpage-v1"), REQUESTS, **labels)
    pages = app.pages(3)
    for page in pages:
        assert page.status == 200 and page.version is None, page
        assert page.body["reviews"]["status"] == 504  # type: ignore[index]
        assert page.seconds < 2.0  # cut at 0.5 s, not the 2 s ratings delay
    reader = Reader(app.gateway)
    status, _, _ = reader.get("/api/v1/products/0/reviews")
    reader.close()
    assert status == 504
    assert value(app.metrics("productpage-v1"), REQUESTS, **labels) - before == 4


def test_mirroring_copies_each_request_to_v2(app: Bookinfo) -> None:
    app.rules("destination-rule-all.yaml", "virtual-service-reviews-mirror.yaml")
    reader = app.reader()
    ids = [request_id() for _ in range(10)]
    pages = [reader.page(request_id=rid) for rid in ids]
    reader.close()
    assert all(p.version == "v1" for p in pages)  # users are served by v1 only

    def mirrored() -> bool:
        log = app.log("reviews-v2", "reviews")
        return all(f"request_id={rid}" in log for rid in ids)

    app.wait(mirrored, "the mirrored requests in reviews v2's log", timeout=15)
    assert not any(f"request_id={rid}" in app.log("reviews-v3", "reviews") for rid in ids)


def test_metrics_count_requests_with_istio_labels(app: Bookinfo) -> None:
    app.rules("destination-rule-all.yaml", "virtual-service-all-v1.yaml")
    out_labels = {
        "reporter": "source",
        "source_workload": "productpage-v1",
        "source_workload_namespace": "default",
        "source_app": "productpage",
        "source_version": "v1",
        "source_principal": "spiffe://cluster.local/ns/default/sa/bookinfo-productpage",
        "destination_service": "reviews.default.svc.cluster.local",
        "destination_service_name": "reviews",
        "destination_service_namespace": "default",
        "request_protocol": "http",
        "response_code": "200",
    }
    in_labels = {
        "reporter": "destination",
        "source_principal": "spiffe://cluster.local/ns/default/sa/bookinfo-productpage",
        "source_workload_namespace": "default",
        "destination_workload": "reviews-v1",
        "destination_workload_namespace": "default",
        "destination_app": "reviews",
        "destination_version": "v1",
        "destination_principal": "spiffe://cluster.local/ns/default/sa/bookinfo-reviews",
        "destination_service": "reviews.default.svc.cluster.local",
        "connection_security_policy": "mutual_tls",
        "response_code": "200",
    }
    out0 = value(app.metrics("productpage-v1"), REQUESTS, **out_labels)
    in0 = value(app.metrics("reviews-v1"), REQUESTS, **in_labels)
    app.pages(N)
    assert value(app.metrics("productpage-v1"), REQUESTS, **out_labels) - out0 == N
    assert value(app.metrics("reviews-v1"), REQUESTS, **in_labels) - in0 == N
    histogram = value(
        app.metrics("reviews-v1"),
        "istio_request_duration_milliseconds_count",
        destination_workload="reviews-v1",
    )
    assert histogram >= N


def test_proxy_status_shows_every_sidecar_synced(app: Bookinfo) -> None:
    out = app.cli("proxy-status", "-o", "json")
    assert out.returncode == 0, out.stderr
    entries = json.loads(out.stdout)
    pods = app.status["pods"]
    expected = {(p["namespace"], p["name"]) for p in pods if p["meshed"] or p["gateway"]}
    assert sum(1 for p in pods if p["gateway"]) == 1 and sum(1 for p in pods if p["meshed"]) == 6
    assert {(e["namespace"], e["pod"]) for e in entries} == expected
    for entry in entries:
        assert {t["status"] for t in entry["types"].values()} == {"SYNCED"}, entry
    table = app.cli("proxy-status")
    # One row per xDS connection (the gateway's worker processes each follow the controller).
    assert table.returncode == 0 and table.stdout.count("SYNCED") == 4 * len(entries)


def test_status_exec_and_logs_from_the_command_line(app: Bookinfo) -> None:
    out = app.cli("local", "status", "-o", "json")
    assert out.returncode == 0, out.stderr
    mesh = json.loads(out.stdout)["mesh"]
    assert mesh["apiVersion"] == "local.mizzen.io/v1" and mesh["agentRunning"] is True
    assert mesh["controller"]["ready"] and mesh["controller"]["clusterSynced"]
    assert mesh["ingress"]["url"] == f"http://{app.gateway}:80"
    names = {(p["namespace"], p["name"].rsplit("-", 2)[0]) for p in mesh["pods"]}
    for workload in ("productpage-v1", "details-v1", "ratings-v1", "reviews-v1", "reviews-v2", "reviews-v3"):
        assert ("default", workload) in names
    for pod in mesh["pods"]:
        assert pod["ready"] and pod["phase"] == "Running", pod
        if pod["meshed"]:
            assert pod["proxy"] == "SYNCED" and [c["kind"] for c in pod["containers"]] == ["sidecar", "app"]
    services = {s["name"]: s for s in mesh["services"]}
    assert services["reviews"]["clusterIP"] and services["reviews"]["ports"][0]["port"] == 9080
    # A command in a pod reaches a Service by name, through its sidecar (the ClusterIP means nothing else).
    call = "import urllib.request as u; print(u.urlopen('http://reviews.default.svc.cluster.local:9080/reviews/0').read().decode())"
    out = app.cli("local", "exec", "deploy/productpage-v1", "--", "python3", "-c", call)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["version"] in ("v1", "v2", "v3")
    hosts = app.cli("local", "exec", "deploy/ratings-v1", "--", "cat", "/etc/hosts").stdout
    ip = services["details"]["clusterIP"]
    assert f"{ip}\tdetails details.default details.default.svc details.default.svc.cluster.local" in hosts
    logs = app.cli("local", "logs", "deploy/details-v1", "--tail", "5")
    assert logs.returncode == 0 and "details" in logs.stdout
    missing = app.cli("local", "logs", "deploy/nope")
    assert missing.returncode == 1 and "no pod 'deploy/nope'" in missing.stderr


def test_invalid_rule_is_refused_with_the_field(app: Bookinfo) -> None:
    bad = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "broken", "namespace": "default"},
        "spec": {
            "hosts": ["reviews"],
            "http": [{"route": [{"destination": {"host": "reviews"}, "weight": -5}]}],
        },
    }
    with pytest.raises(Exception, match="weight"):
        app.mesh.apply_objects([bad], timeout=20)
    app.mesh.delete_objects([bad])
    assert versions(app, 5)  # the mesh goes on


def test_circuit_breaking_refuses_the_overflow(app: Bookinfo) -> None:
    slow_ratings = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "ratings", "namespace": "default"},
        "spec": {
            "hosts": ["ratings"],
            "http": [
                {
                    "fault": {"delay": {"fixedDelay": "0.3s", "percentage": {"value": 100.0}}},
                    "route": [{"destination": {"host": "ratings"}}],
                }
            ],
        },
    }
    to_v2 = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "reviews", "namespace": "default"},
        "spec": {
            "hosts": ["reviews"],
            "http": [{"route": [{"destination": {"host": "reviews", "subset": "v2"}}]}],
        },
    }
    app.rules("destination-rule-reviews-circuit-breaker.yaml", extra=[slow_ratings, to_v2])
    before = value(
        app.metrics("productpage-v1"), REQUESTS, response_flags="UO", destination_service_name="reviews"
    )

    def burst(_: int) -> list[int]:
        reader = Reader(app.gateway)
        try:
            return [reader.get("/api/v1/products/0/reviews")[0] for _ in range(3)]
        finally:
            reader.close()

    with ThreadPoolExecutor(max_workers=16) as pool:
        codes = Counter(c for batch in pool.map(burst, range(16)) for c in batch)
    assert codes[200] > 0 and codes[503] > 0 and set(codes) <= {200, 503}, codes
    overflow = value(
        app.metrics("productpage-v1"), REQUESTS, response_flags="UO", destination_service_name="reviews"
    )
    # At least one per refused request (the sidecar's retries of an overflow are counted too).
    assert overflow - before >= codes[503], (overflow - before, codes)
    # Once the burst is over, a request at a time goes through again.
    time.sleep(0.5)
    app.rules("destination-rule-all.yaml")
    assert versions(app, 5)


def test_the_mesh_config_reaches_the_sidecars(app: Bookinfo) -> None:
    """ConfigMap mizzen-system/istio is the mesh config locally too: access logs turned on for the whole
    mesh show up in a sidecar's log, and go quiet again when it is deleted."""
    mesh_config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "istio", "namespace": "mizzen-system"},
        "data": {"mesh": "accessLogFile: /dev/stdout\naccessLogEncoding: JSON\n"},
    }

    def logged(*markers: str) -> bool:
        out = app.cli("local", "logs", "deploy/details-v1", "-c", "istio-proxy", "--tail", "200")
        assert out.returncode == 0, out.stderr
        return any(m in out.stdout for m in markers)

    def diagnosis(statuses: list[int]) -> str:
        """What to look at when the line does not come: the answers, the log's end, and whether details'
        sidecar holds any access log config at all (its admin config_dump)."""
        dump = (
            "import urllib.request; "
            "print(urllib.request.urlopen('http://127.0.0.1:15000/config_dump', timeout=5).read().decode())"
        )
        out = app.cli("local", "exec", "deploy/details-v1", "--", "python3", "-c", dump)
        tail = app.cli("local", "logs", "deploy/details-v1", "-c", "istio-proxy", "--tail", "15").stdout
        return (
            f"statuses {statuses}; access_log in details' config_dump: {out.stdout.count('access_log')} "
            f"({out.returncode} {out.stderr[-300:]}); the log's end:\n{tail}"
        )

    app.mesh.apply_objects([mesh_config], timeout=30)
    try:
        deadline = time.monotonic() + 30
        markers: list[str] = []
        statuses: list[int] = []
        while time.monotonic() < deadline:
            markers.append(request_id())
            statuses.append(app.reader().get("/productpage", {"x-request-id": markers[-1]})[0])
            # Access logs are written out within a second (as Envoy's flush interval): any request since
            # the change may be the first one seen.
            if logged(*markers):
                break
            time.sleep(0.5)
        else:
            why = diagnosis(statuses)
            raise AssertionError(f"no access log line for the request in details' sidecar: {why}")
    finally:
        app.mesh.delete_objects([mesh_config])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        quiet = request_id()
        app.reader().get("/productpage", {"x-request-id": quiet})
        time.sleep(2.5)  # past the flush interval: a line for it would be in the log by now
        if not logged(quiet):
            break
    else:
        raise AssertionError("access logs stayed on after the mesh config was deleted")
