"""App probes rewritten through the sidecar's 15020, and read back by the sidecar: HTTP, TCP and gRPC."""

from __future__ import annotations

import json

import pytest

from controller.inject.probes import rewrite
from fastpath import app_health


def test_grpc_probes_go_through_the_sidecar_like_http_and_tcp() -> None:
    containers = [
        {
            "name": "greeter",
            "ports": [{"name": "grpc", "containerPort": 50051}],
            "readinessProbe": {"grpc": {"port": 50051}, "periodSeconds": 5},
            "livenessProbe": {"grpc": {"port": 50051, "service": "liveness"}, "timeoutSeconds": 3},
            "startupProbe": {"exec": {"command": ["true"]}},
        }
    ]
    out, probers = rewrite(containers)
    ready = out[0]["readinessProbe"]
    assert ready == {"periodSeconds": 5, "httpGet": {"path": "/app-health/greeter/readyz", "port": 15020,
                                                      "scheme": "HTTP"}}  # fmt: skip
    assert out[0]["startupProbe"] == {"exec": {"command": ["true"]}}  # exec needs no network: unchanged
    assert probers == {
        "/app-health/greeter/readyz": {"grpc": {"port": 50051}, "timeoutSeconds": 1},
        "/app-health/greeter/livez": {"grpc": {"port": 50051, "service": "liveness"}, "timeoutSeconds": 3},
    }
    parsed = app_health.parse(json.dumps(probers))
    live = parsed["/app-health/greeter/livez"]
    assert (live.kind, live.port, live.service, live.timeout) == ("grpc", 50051, "liveness", 3.0)


def test_probes_on_the_sidecars_own_ports_are_left_alone() -> None:
    out, probers = rewrite([{"name": "c", "readinessProbe": {"grpc": {"port": 15020}}}])
    assert out[0]["readinessProbe"] == {"grpc": {"port": 15020}} and probers == {}


@pytest.mark.parametrize(
    ("spec", "field"),
    [({"grpc": {"port": "grpc"}}, "grpc.port"), ({"exec": {}}, "needs httpGet, tcpSocket or grpc")],
)
def test_bad_probers_name_the_field(spec: dict[str, object], field: str) -> None:
    with pytest.raises(app_health.ProberError, match=field.replace(".", r"\.")):
        app_health.parse(json.dumps({"/app-health/c/readyz": spec}))


def test_health_messages_by_hand() -> None:
    assert app_health._health_request("") == b""
    assert app_health._health_request("a.b") == b"\x0a\x03a.b"
    assert app_health._health_request("x" * 200)[:3] == b"\x0a\xc8\x01"  # a two-byte length varint
    assert app_health._health_status(b"\x08\x01") == 1 and app_health._health_status(b"") == 0
