"""Tracing in mizzen-proxy as a real process: spans exported over OTLP/HTTP to a receiver in the suite,
trace context (W3C, B3 multi and single) continued or started, upstream sampling decisions honoured,
random sampling within statistical bounds, a failing collector costing spans but never requests."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import rawhttp
from support.envoy import bootstrap, http_chain, http_listener, route, route_config, static_cluster, vhost
from support.otlp import OtlpGrpcReceiver, OtlpReceiver
from support.proxyproc import ProxyProcess, free_port, http_get
from support.upstream import Upstream

OTEL = "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    up = Upstream("app")
    yield up
    up.stop()


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    r = OtlpReceiver()
    yield r
    r.stop()


def tracing(receiver_port: int, percent: float = 100.0, **extra: Any) -> dict[str, Any]:
    return {
        "random_sampling": {"value": percent},
        "provider": {
            "name": "envoy.tracers.opentelemetry",
            "typed_config": {
                "@type": OTEL,
                "http_service": {
                    "http_uri": {
                        "uri": "http://otel-collector:4318/v1/traces",
                        "cluster": "otel",
                        "timeout": "2s",
                    }
                },
                "service_name": "reviews.default",
            },
        },
        **extra,
    }


class TracedProxy:
    def __init__(self, tmp: Path, upstream: Upstream, receiver_port: int, trace: dict[str, Any]) -> None:
        self.port = free_port()
        boot = bootstrap(
            [
                http_listener(
                    "http",
                    "127.0.0.1",
                    self.port,
                    http_chain(route_config("local", vhost("v", ["*"], route("app"))), tracing=trace),
                )
            ],
            [
                static_cluster("app", ("127.0.0.1", upstream.port)),
                static_cluster("otel", ("127.0.0.1", receiver_port)),
            ],
        )
        self.proxy = ProxyProcess(tmp, boot)
        self.proxy.wait_ready()

    def get(self, path: str = "/r", headers: dict[str, str] | None = None) -> dict[str, Any]:
        resp = rawhttp.get(self.port, path, headers=headers or {})
        assert resp.status == 200, resp.body
        return json.loads(resp.body)["headers"]  # type: ignore[no-any-return]

    def stat(self, name: str) -> int:
        for line in http_get(self.proxy.url("/stats", self.proxy.admin))[1].splitlines():
            key, _, value = line.partition(": ")
            if key == name:
                return int(value)
        return 0


@pytest.fixture
def traced(tmp_path: Path, upstream: Upstream, receiver: OtlpReceiver) -> Iterator[Any]:
    made: list[TracedProxy] = []

    def make(trace: dict[str, Any]) -> TracedProxy:
        p = TracedProxy(tmp_path, upstream, receiver.port, trace)
        made.append(p)
        return p

    yield make
    for p in made:
        p.proxy.stop()


def test_a_new_trace_is_started_and_exported(traced: Any, receiver: OtlpReceiver) -> None:
    proxy = traced(
        tracing(
            receiver.port,
            custom_tags=[
                {"tag": "team", "literal": {"value": "blue"}},
                {"tag": "user", "request_header": {"name": "x-user", "default_value": "nobody"}},
            ],
        )
    )
    seen = proxy.get("/r?q=1", {"x-user": "ada", "user-agent": "tester"})
    version, trace_id, span_id, flags = seen["traceparent"].split("-")
    assert version == "00" and flags == "01" and len(trace_id) == 32 and len(span_id) == 16
    [span] = receiver.wait_for(lambda s: len(s) == 1)
    assert span["trace_id"] == trace_id and span["span_id"] == span_id and span["parent_span_id"] == ""
    assert span["kind"] == 3  # CLIENT: the listener is not an inbound one
    assert span["service"] == "reviews.default"
    attrs = span["attributes"]
    assert attrs["http.status_code"] == "200" and attrs["http.method"] == "GET"
    assert attrs["http.url"] == "http://svc/r?q=1"  # rawhttp sends Host: svc
    assert attrs["upstream_cluster"] == "app" and attrs["response_flags"] == "-"
    assert attrs["guid:x-request-id"] == seen["x-request-id"]
    assert attrs["node_id"].startswith("sidecar~") and attrs["user_agent"] == "tester"
    assert attrs["team"] == "blue" and attrs["user"] == "ada"
    assert span["end"] >= span["start"] > 0 and not span["error"]
    assert receiver.requests[0] == {"path": "/v1/traces", "content-type": "application/x-protobuf"}


def test_w3c_context_is_continued(traced: Any, receiver: OtlpReceiver) -> None:
    proxy = traced(tracing(receiver.port, percent=0.0))  # the caller's decision wins over ours
    seen = proxy.get(headers={"traceparent": f"00-{TRACE}-{PARENT}-01", "tracestate": "vendor=1"})
    _, trace_id, span_id, flags = seen["traceparent"].split("-")
    assert trace_id == TRACE and span_id != PARENT and flags == "01"
    assert seen["tracestate"] == "vendor=1"
    [span] = receiver.wait_for(lambda s: len(s) == 1)
    assert span["trace_id"] == TRACE and span["parent_span_id"] == PARENT and span["span_id"] == span_id
    assert span["trace_state"] == "vendor=1"


def test_not_sampled_upstream_is_honoured_and_passed_on(traced: Any, receiver: OtlpReceiver) -> None:
    proxy = traced(tracing(receiver.port, percent=100.0))
    sent = f"00-{TRACE}-{PARENT}-00"
    seen = proxy.get(headers={"traceparent": sent})
    assert seen["traceparent"] == sent  # untouched: the next hop keeps the decision
    proxy.get(headers={"x-b3-traceid": TRACE, "x-b3-spanid": PARENT, "x-b3-sampled": "0"})
    proxy.get(headers={"b3": "0"})
    proxy.get()  # a sampled one, so that we know the exporter ran
    spans = receiver.wait_for(lambda s: len(s) >= 1)
    assert len(spans) == 1 and spans[0]["trace_id"] != TRACE


def test_b3_multi_and_single_are_continued(traced: Any, receiver: OtlpReceiver) -> None:
    proxy = traced(tracing(receiver.port, percent=0.0))
    seen = proxy.get(headers={"X-B3-TraceId": TRACE, "X-B3-SpanId": PARENT, "X-B3-Sampled": "1"})
    assert seen["x-b3-traceid"] == TRACE and seen["x-b3-parentspanid"] == PARENT
    assert seen["x-b3-sampled"] == "1" and seen["x-b3-spanid"] != PARENT
    assert seen["traceparent"] == f"00-{TRACE}-{seen['x-b3-spanid']}-01"
    short = TRACE[16:]
    single = proxy.get(headers={"b3": f"{short}-{PARENT}-1"})
    trace_id, span_id, sampled, parent = single["b3"].split("-")
    assert trace_id == short and sampled == "1" and parent == PARENT and span_id != PARENT
    spans = receiver.wait_for(lambda s: len(s) == 2)
    by_trace = {s["trace_id"]: s for s in spans}
    assert by_trace[TRACE]["span_id"] == seen["x-b3-spanid"]
    assert by_trace["0" * 16 + short]["parent_span_id"] == PARENT


def test_unsampled_first_hop_carries_the_decision(traced: Any, receiver: OtlpReceiver) -> None:
    proxy = traced(tracing(receiver.port, percent=0.0))
    seen = proxy.get()
    version, trace_id, _, flags = seen["traceparent"].split("-")
    assert version == "00" and flags == "00" and int(trace_id, 16)
    assert proxy.stat("tracing.opentelemetry.spans_sent") == 0


def test_force_trace_samples_whatever_the_percentage(traced: Any, receiver: OtlpReceiver) -> None:
    proxy = traced(tracing(receiver.port, percent=0.0))
    resp = rawhttp.get(proxy.port, "/r", headers={"X-Envoy-Force-Trace": "true", "x-request-id": "req-1"})
    assert resp.status == 200 and resp.headers["x-request-id"] == "req-1"  # Envoy returns it when forced
    _, trace_id, span_id, flags = json.loads(resp.body)["headers"]["traceparent"].split("-")
    assert flags == "01"
    [span] = receiver.wait_for(lambda s: len(s) == 1)
    assert (span["trace_id"], span["span_id"]) == (trace_id, span_id)
    # A caller's explicit "not sampled" still stands.
    sent = f"00-{TRACE}-{PARENT}-00"
    assert proxy.get(headers={"traceparent": sent, "x-envoy-force-trace": "true"})["traceparent"] == sent
    assert "x-request-id" not in rawhttp.get(proxy.port, "/r").headers  # only forced requests get it back


def test_sampling_percentage_within_binomial_bounds(traced: Any, receiver: OtlpReceiver) -> None:
    n, p = 400, 0.25
    proxy = traced(tracing(receiver.port, percent=p * 100))
    sampled = sum(proxy.get()["traceparent"].endswith("-01") for _ in range(n))
    sigma = math.sqrt(n * p * (1 - p))
    assert abs(sampled - n * p) < 5 * sigma, (sampled, n * p)  # ~1 in 1.7 million false alarms
    spans = receiver.wait_for(lambda s: len(s) == sampled)
    assert len({s["trace_id"] for s in spans}) == sampled


def test_a_failing_collector_drops_spans_not_requests(traced: Any, receiver: OtlpReceiver) -> None:
    receiver.status = 503
    proxy = traced(tracing(receiver.port))
    for _ in range(5):
        proxy.get()
    deadline_ok = False
    for _ in range(100):
        if proxy.stat("tracing.opentelemetry.spans_dropped") == 5:
            deadline_ok = True
            break
        import time

        time.sleep(0.1)
    assert deadline_ok, proxy.proxy.log.read_text()[-2000:]
    assert proxy.stat("tracing.opentelemetry.http_reports_failed") >= 1
    receiver.status = 200
    proxy.get()
    receiver.wait_for(lambda s: len(s) == 1)


def test_export_over_grpc(tmp_path: Path, upstream: Upstream) -> None:
    receiver = OtlpGrpcReceiver()
    try:
        trace = {
            "random_sampling": {"value": 100},
            "provider": {
                "name": "envoy.tracers.opentelemetry",
                "typed_config": {
                    "@type": OTEL,
                    "grpc_service": {
                        "envoy_grpc": {"cluster_name": "otel", "authority": "otel-collector:4317"},
                        "timeout": "2s",
                        "initial_metadata": [{"key": "X-Tenant", "value": "blue"}],
                    },
                },
            },
        }
        proxy = TracedProxy(tmp_path, upstream, receiver.port, trace)
        try:
            seen = proxy.get()
            [span] = receiver.wait_for(lambda s: len(s) == 1)
            assert span["trace_id"] == seen["traceparent"].split("-")[1]
            assert receiver.metadata[0]["x-tenant"] == "blue"
            assert proxy.stat("tracing.opentelemetry.grpc_reports_sent") >= 1
        finally:
            proxy.proxy.stop()
    finally:
        receiver.stop()
