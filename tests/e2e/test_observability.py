"""Observability end to end through captured pods: mizzen-controller with a mesh config naming an
OpenTelemetry collector, sidecars following it, a tiny app forwarding trace headers between two services.

Traces join across sidecars (client span -> server span -> the app's call -> server span, one trace id);
Telemetry changes apply live (sampling off, a metric disabled and back, access logs on, filtered, off);
``mizzen tap`` through the controller sees exactly the matching requests and leaves nothing running.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.smallmesh import BIN, SUPPORT, SmallMesh, get, small_mesh

pytestmark = pytest.mark.root

MESH_CONFIG = {
    "extensionProviders": [
        {
            "name": "otel",
            "opentelemetry": {
                "service": "otel-collector.default.svc.cluster.local",
                "port": 4318,
                "http": {"path": "/v1/traces", "timeout": "2s"},
            },
        },
        {
            "name": "errors-log",
            "envoyFileAccessLog": {
                "path": "ACCESS_LOG",
                "logFormat": {"text": "%REQ(:PATH)% %RESPONSE_CODE%\n"},
            },
        },
        {
            "name": "connections-log",
            "envoyFileAccessLog": {
                "path": "ACCESS_LOG.tcp",
                "logFormat": {
                    "text": "%UPSTREAM_CLUSTER% %BYTES_RECEIVED% %BYTES_SENT% %RESPONSE_FLAGS% %PROTOCOL%\n"
                },
            },
        },
    ],
    "defaultProviders": {"tracing": ["otel"]},
    "defaultConfig": {"tracing": {"sampling": 100.0}},
}


class TelemetryMesh(SmallMesh):
    """A small mesh whose controller reads a mesh config file."""

    mesh_config: Path

    def _controller(self) -> None:
        log = open(self.work / "controller.log", "wb")  # closed with the process
        self.procs.append(
            subprocess.Popen(
                [
                    str(BIN / "mizzen-controller"),
                    "--files",
                    str(self.manifests),
                    "--mesh-config",
                    str(self.mesh_config),
                    "--xds-port",
                    str(self.xds_port),
                    "--debug-port",
                    str(self.debug_port),
                    "--no-ca",
                    "--poll-interval",
                    "0.1",
                    "--debounce-after",
                    "0.02",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        self.wait(lambda: get(f"http://127.0.0.1:{self.debug_port}/ready")[0] == 200, "the controller")


@pytest.fixture(scope="module")
def mesh() -> Iterator[TelemetryMesh]:
    with small_mesh() as base:
        base.__class__ = TelemetryMesh  # the same mesh, its controller started with the mesh config
        m: TelemetryMesh = base  # type: ignore[assignment]
        logs = m.work / "logs"
        logs.mkdir()
        logs.chmod(0o777)  # the sidecars (UID 1337) write access logs here
        m.access_log = logs / "access.log"  # type: ignore[attr-defined]
        m.spans_file = m.work / "spans.jsonl"  # type: ignore[attr-defined]
        config = json.loads(json.dumps(MESH_CONFIG).replace("ACCESS_LOG", str(m.access_log)))
        m.mesh_config = m.work / "mesh.yaml"
        m.mesh_config.write_text(yaml.safe_dump(config))
        m.pod("client", {"app": "client"})
        m.pod("frontend", {"app": "frontend"})
        m.pod("backend", {"app": "backend"}, app=9080)
        m.pod("db", {"app": "db"}, tcp=7000)
        m.pod("collector", {"app": "otel-collector"}, meshed=False)
        m.service("frontend", {"app": "frontend"}, {"http": 9080})
        m.service("backend", {"app": "backend"}, {"http": 9080})
        m.service("db", {"app": "db"}, {"tcp": 7000})
        m.service("otel-collector", {"app": "otel-collector"}, {"http-otlp": 4318})
        try:
            m.start()
            for pod, argv in (
                ("collector", [sys.executable, str(SUPPORT / "otlpserver.py"), "4318", str(m.spans_file)]),
                (
                    "frontend",
                    [sys.executable, str(SUPPORT / "traceapp.py"), "9080", "frontend", "http://backend:9080"],
                ),
            ):
                proc = m.node.spawn(pod, argv, stdout=subprocess.PIPE)
                assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready", argv
                m.procs.append(proc)
            yield m
        finally:
            m.stop()


def spans(mesh: TelemetryMesh) -> list[dict[str, Any]]:
    path: Path = mesh.spans_file  # type: ignore[attr-defined]
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def wait_spans(mesh: TelemetryMesh, trace_id: str, n: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    def enough() -> bool:
        found[:] = [s for s in spans(mesh) if s["trace_id"] == trace_id]
        return len(found) >= n

    mesh.wait(enough, f"{n} spans of trace {trace_id}")
    return found


def call(
    mesh: TelemetryMesh, path: str = "/call", n: int = 1, headers: dict[str, str] | None = None
) -> list[Any]:
    replies = mesh.http("client", f"http://frontend:9080{path}", n=n, headers=headers)
    assert all(r.status == 200 for r in replies), [(r.status, r.body[:200]) for r in replies]
    return [r.json for r in replies]


def test_one_trace_across_two_sidecars_and_an_app(mesh: TelemetryMesh) -> None:
    [answer] = call(mesh)
    at_frontend = answer["headers"]["traceparent"]
    at_backend = answer["backend"]["headers"]["traceparent"]
    trace_id = at_frontend.split("-")[1]
    assert at_backend.split("-")[1] == trace_id and at_backend.endswith("-01")
    got = wait_spans(mesh, trace_id, 4)
    by_id = {s["span_id"]: s for s in got}
    roots = [s for s in got if not s["parent_span_id"]]
    assert len(roots) == 1 and roots[0]["kind"] == 3  # the client's sidecar: a CLIENT span starts it
    chain = [roots[0]]
    while True:
        children = [s for s in got if s["parent_span_id"] == chain[-1]["span_id"]]
        if not children:
            break
        assert len(children) == 1
        chain.append(children[0])
    kinds = [(s["service"], s["kind"]) for s in chain]
    assert kinds == [
        ("client.default", 3),
        ("frontend.default", 2),
        ("frontend.default", 3),
        ("backend.default", 2),
    ]
    assert all(s["parent_span_id"] in by_id for s in chain[1:])
    # What each app saw is the span of its own sidecar: the next hop's parent.
    assert at_frontend.split("-")[2] == chain[1]["span_id"]
    assert at_backend.split("-")[2] == chain[3]["span_id"]
    server = chain[3]["attributes"]
    assert server["http.status_code"] == "200" and server["istio.canonical_service"] == "backend"
    assert server["istio.namespace"] == "default" and server["node_id"].startswith("sidecar~")
    assert chain[0]["attributes"]["upstream_cluster"] == "outbound|9080||frontend.default.svc.cluster.local"


def test_sampling_off_by_telemetry_is_honoured_downstream(mesh: TelemetryMesh) -> None:
    mesh.apply(
        "telemetry",
        "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: sampling}\n"
        "spec:\n  tracing:\n  - randomSamplingPercentage: 0\n",
    )
    try:
        before = len(spans(mesh))
        answers = call(mesh, n=5)
        for a in answers:
            assert a["headers"]["traceparent"].endswith("-00")  # decided at the first hop, carried on
            assert a["backend"]["headers"]["traceparent"].endswith("-00")
        [marker] = call(
            mesh, headers={"traceparent": "00-0123456789abcdef0123456789abcdef-0123456789abcdef-01"}
        )
        wait_spans(mesh, "0123456789abcdef0123456789abcdef", 4)  # a caller's "sampled" still wins
        assert all(s["trace_id"] == "0123456789abcdef0123456789abcdef" for s in spans(mesh)[before:])
        assert marker["backend"]["headers"]["traceparent"].startswith("00-0123456789abcdef0123456789abcdef-")
    finally:
        mesh.remove("telemetry")


def test_a_disabled_metric_vanishes_from_15020_and_comes_back(mesh: TelemetryMesh) -> None:
    call(mesh, n=2)
    assert "istio_requests_total{" in mesh.proxy_stats("backend")
    mesh.apply(
        "metrics",
        "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: backend-metrics}\nspec:\n"
        "  selector: {matchLabels: {app: backend}}\n  metrics:\n  - providers: [{name: prometheus}]\n"
        "    overrides:\n    - match: {metric: REQUEST_COUNT, mode: SERVER}\n      disabled: true\n"
        "    - match: {metric: REQUEST_DURATION}\n      tagOverrides:\n        team: {value: \"'core'\"}\n",
    )
    try:
        stats = mesh.proxy_stats("backend")
        assert "istio_requests_total{" not in stats
        assert 'team="core"' in stats and "istio_request_bytes_bucket{" in stats
        assert "istio_requests_total{" in mesh.proxy_stats("frontend")  # not selected: unchanged
    finally:
        mesh.remove("metrics")
    assert "istio_requests_total{" in mesh.proxy_stats("backend")


def test_access_logs_turned_on_filtered_and_off(mesh: TelemetryMesh) -> None:
    log: Path = mesh.access_log  # type: ignore[attr-defined]
    rule = (
        "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: logs}\nspec:\n"
        "  selector: {matchLabels: {app: backend}}\n  accessLogging:\n  - providers: [{name: errors-log}]\n"
        "    match: {mode: SERVER}\n"
    )
    mesh.apply("logs", rule + "    filter: {expression: 'response.code >= 400'}\n")
    call(mesh, "/call?ok=1")
    call(mesh, "/call?status=404")  # the backend answers 404, the frontend 200
    mesh.wait(lambda: log.exists() and "/call?status=404 404" in log.read_text(), "the access log line")
    assert "/call?ok=1" not in log.read_text()
    mesh.apply("logs", rule)
    call(mesh, "/call?ok=2")
    mesh.wait(lambda: "/call?ok=2 200" in log.read_text(), "an unfiltered access log line")
    mesh.apply("logs", rule + "    disabled: true\n")
    call(mesh, "/call?ok=3")
    call(mesh, "/call?ok=4")
    time.sleep(1.5)  # the log buffer flushes every second: give a line that should not exist the chance
    assert "/call?ok=3" not in log.read_text() and "/call?ok=4" not in log.read_text()
    mesh.remove("logs")


def test_tcp_connections_are_access_logged(mesh: TelemetryMesh) -> None:
    log = Path(f"{mesh.access_log}.tcp")  # type: ignore[attr-defined]
    mesh.apply(
        "tcp-logs",
        "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: tcp-logs}\nspec:\n"
        "  selector: {matchLabels: {app: db}}\n  accessLogging:\n  - providers: [{name: connections-log}]\n",
    )
    answer = mesh.stream("client", "db", 7000, send="hello")[0]
    assert answer.startswith("db saw "), answer
    # One line when the connection closes, its bytes both ways; no HTTP fields (Envoy prints "-").
    line = f"inbound|7000|| 5 {len(answer)} - -"
    mesh.wait(lambda: log.exists() and line in log.read_text().splitlines(), f"the line {line!r}")
    mesh.remove("tcp-logs")


def tap_sessions(mesh: TelemetryMesh, pod: str) -> list[Any]:
    return json.loads(mesh.admin(pod, "/server_info"))["taps"]  # type: ignore[no-any-return]


def test_mizzen_tap_through_the_controller(mesh: TelemetryMesh) -> None:
    mesh.wait(
        lambda: len(json.loads(get(f"http://127.0.0.1:{mesh.debug_port}/debug/taps")[1])) >= 3,
        "the sidecars' tap channels",
    )
    proc = subprocess.Popen(
        [
            str(BIN / "mizzen"),
            "tap",
            "deploy/backend",
            "--path",
            "/tapme",
            "--method",
            "GET",
            "--duration",
            "60",
            "--controller-address",
            f"127.0.0.1:{mesh.debug_port}",
            "-o",
            "json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        mesh.wait(lambda: len(tap_sessions(mesh, "backend")) == 1, "the tap session in backend's sidecar")
        call(mesh, "/tapme/1")
        call(mesh, "/other")
        call(mesh, "/tapme/2?status=503")
        assert proc.stdout is not None
        lines = [json.loads(proc.stdout.readline()) for _ in range(2)]
        assert [(e["path"], e["status"], e["direction"]) for e in lines] == [
            ("/tapme/1", 200, "inbound"),
            ("/tapme/2?status=503", 503, "inbound"),
        ]
        assert lines[0]["destination"] == "backend" and len(lines[0]["trace_id"]) == 32
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    # The watcher left: the controller stops the sessions, the sidecar keeps nothing running.
    mesh.wait(lambda: tap_sessions(mesh, "backend") == [], "the tap session to end")
    text = subprocess.run(
        [
            str(BIN / "mizzen"),
            "tap",
            "deploy/nothing-here",
            "--controller-address",
            f"127.0.0.1:{mesh.debug_port}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert text.returncode == 1 and "no connected sidecar of deploy/nothing-here" in text.stderr
