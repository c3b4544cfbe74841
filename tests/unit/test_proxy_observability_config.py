"""The sidecar's observability config compiled from Envoy's messages: tracing (what is refused and why),
the CEL access-log filter, the istio.stats metric overrides and how they rewrite the exposition, and trace
context parsing."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from google.protobuf import json_format

from fastpath import cel, metric_overrides, tracing
from fastpath.config import registry  # noqa: F401 - the typed configs the JSON names
from fastpath.config.errors import ConfigError, Resource
from fastpath.config.hcm import compile_hcm
from fastpath.filters.istio_stats import IstioStatsFilter
from fastpath.filters.tracing import TracingFilter

RES = Resource("Listener", "test")
ROUTER = {
    "name": "r",
    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
}
OTEL = "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig"
CEL_FILTER = "type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter"


def hcm(**fields: Any) -> Any:
    body = {"stat_prefix": "x", "route_config": {"name": "r"}, "http_filters": [ROUTER], **fields}
    msg = hcm_pb2.HttpConnectionManager()
    json_format.ParseDict(body, msg)
    return compile_hcm(RES, "", msg)


def provider(**cfg: Any) -> dict[str, Any]:
    return {"name": "envoy.tracers.opentelemetry", "typed_config": {"@type": OTEL, **cfg}}


HTTP_SERVICE = {
    "http_service": {"http_uri": {"uri": "http://c:4318/v1/traces", "cluster": "otel", "timeout": "1s"}}
}


def test_tracing_compiles_into_the_hcms_tracer() -> None:
    cfg = hcm(
        tracing={
            "random_sampling": {"value": 2.5},
            "overall_sampling": {"value": 50},
            "provider": provider(**HTTP_SERVICE),
        }
    )
    tracer = cfg.tracer
    assert isinstance(tracer, TracingFilter) and not cfg.filters  # the HCM's own hook, not a filter
    assert tracer.config.percent == pytest.approx(1.25) and tracer.config.exporter is not None
    assert hcm(tracing={}).tracer.config.exporter is None  # no provider: propagate, do not report


@pytest.mark.parametrize(
    ("tracing_cfg", "field"),
    [
        ({"verbose": True}, "tracing.verbose"),
        ({"spawn_upstream_span": True}, "tracing.spawn_upstream_span"),
        ({"random_sampling": {"value": 120}}, "tracing.random_sampling"),
        ({"custom_tags": [{"tag": "m", "metadata": {"kind": {"request": {}}}}]}, "tracing.custom_tags[0]"),
        (
            {
                "provider": provider(
                    grpc_service={"google_grpc": {"target_uri": "c:4317", "stat_prefix": "s"}}
                )
            },
            "tracing.provider.typed_config.grpc_service.google_grpc",
        ),
        (
            {"provider": provider(http_service={"http_uri": {"uri": "https://c/v1/traces", "cluster": "o"}})},
            "tracing.provider.typed_config.http_service.http_uri.uri",
        ),
        (
            {"provider": provider(http_service={"http_uri": {"uri": "http://c/v1/traces"}})},
            "tracing.provider.typed_config.http_service.http_uri.cluster",
        ),
    ],
)
def test_tracing_config_the_proxy_cannot_honour_is_refused(tracing_cfg: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as err:
        hcm(tracing=tracing_cfg)
    assert err.value.field.lstrip(".") == field


class Rec(SimpleNamespace):
    def request_header(self, name: str) -> str | None:
        return self.headers.get(name)  # type: ignore[no-any-return]

    def response_header(self, name: str) -> str | None:
        return None


def rec(code: int = 200, flags: str = "-", path: str = "/api/v1", method: str = "GET", **headers: str) -> Rec:
    return Rec(
        response_code=code,
        response_flags=flags,
        protocol="HTTP/1.1",
        headers={"path": path, "method": method, **headers},
        upstream_cluster="outbound|80||a",
    )


@pytest.mark.parametrize(
    ("expr", "record", "expected"),
    [
        ("response.code >= 400", rec(503), True),
        ("response.code >= 400", rec(200), False),
        ("response.code >= 500 || response.flags != '-'", rec(200, "UF"), True),
        ("request.url_path.startsWith('/api') && request.method == \"GET\"", rec(path="/api/x?y"), True),
        ("!(request.headers['x-user'] == 'bot')", rec(**{"x-user": "bot"}), False),
        ("request.method in ['POST', 'PUT']", rec(method="PUT"), True),
        ("xds.cluster_name.contains('||a') && request.path.matches('^/api/v[0-9]')", rec(), True),
        ("response.code == '200'", rec(200), False),  # CEL does not convert types
    ],
)
def test_cel_filters(expr: str, record: Rec, expected: bool) -> None:
    assert cel.compile_expression(expr)(record) is expected


@pytest.mark.parametrize(
    "expr", ["size(request.path) > 3", "response.cod == 1", "request.path +", "a.b.c", ""]
)
def test_cel_outside_the_subset_is_refused(expr: str) -> None:
    with pytest.raises(cel.CelError):
        cel.compile_expression(expr)


def test_access_log_filter_writes_only_matching_requests(tmp_path: Any) -> None:
    path = tmp_path / "access.log"
    log_cfg = {
        "name": "envoy.access_loggers.file",
        "filter": {
            "extension_filter": {
                "name": "envoy.access_loggers.extension_filters.cel",
                "typed_config": {
                    "@type": CEL_FILTER,
                    "expression": "response.code >= 400",
                },
            }
        },
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": str(path),
            "log_format": {"text_format": "%RESPONSE_CODE%\n"},
        },
    }
    [log] = hcm(access_log=[log_cfg]).access_logs
    for code in (200, 404, 201, 503):
        log.log(rec(code))
    log.flush()
    assert path.read_text().split() == ["404", "503"]
    bad = dict(
        log_cfg,
        filter={
            "status_code_filter": {
                "comparison": {"op": "GE", "value": {"default_value": 400, "runtime_key": "k"}}
            }
        },
    )
    with pytest.raises(ConfigError) as err:
        hcm(access_log=[bad])
    assert err.value.field.endswith("access_log[0].filter")


def stats_filter(value: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "istio.stats",
        "typed_config": {
            "@type": "type.googleapis.com/xds.type.v3.TypedStruct",
            "type_url": "type.googleapis.com/stats.PluginConfig",
            "value": value,
        },
    }


EXPOSITION = """# TYPE istio_requests_total counter
istio_requests_total{reporter="source",destination_service="a",response_code="200",grpc_response_status=""} 3
istio_requests_total{reporter="source",destination_service="a",response_code="503",grpc_response_status=""} 1
istio_requests_total{reporter="destination",destination_service="a",response_code="200"} 2
# TYPE istio_request_duration_milliseconds histogram
istio_request_duration_milliseconds_bucket{reporter="source",response_code="200",le="5"} 3
istio_request_duration_milliseconds_count{reporter="source",response_code="200"} 3
"""


def test_istio_stats_overrides_rewrite_the_exposition() -> None:
    value = {
        "metrics": [
            {
                "name": "requests_total",
                "tags_to_remove": ["response_code"],
                "dimensions": {"team": "'blue'", "svc": "destination.service.host"},
            },
            {"name": "request_duration_milliseconds", "drop": True},
        ]
    }
    cfg = hcm(http_filters=[stats_filter(value), ROUTER])
    [f] = [f for f in cfg.all_filters if isinstance(f, IstioStatsFilter)]
    assert f not in cfg.filters  # passive: it costs nothing per request
    overrides: metric_overrides.Overrides = {}
    metric_overrides.merge("source", list(f.metrics), overrides)
    text = metric_overrides.apply(EXPOSITION, overrides)
    assert "istio_request_duration_milliseconds" not in text
    assert (
        'istio_requests_total{reporter="source",destination_service="a",grpc_response_status="",'
        'svc="a",team="blue"} 4' in text
    )
    assert (
        'istio_requests_total{reporter="destination",destination_service="a",response_code="200"} 2' in text
    )


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ({"metrics": [{"name": "nope"}]}, "http_filters[0].value.metrics[0].name"),
        (
            {"metrics": [{"dimensions": {"h": "request.host"}}]},
            "http_filters[0].value.metrics[0].dimensions[h]",
        ),
        ({"reporter": "SERVER_GATEWAY"}, "http_filters[0].value.reporter"),
    ],
)
def test_istio_stats_config_refused_with_the_field(value: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as err:
        hcm(http_filters=[stats_filter(value), ROUTER])
    assert err.value.field.lstrip(".") == field


def test_trace_context_parsing() -> None:
    ctx = tracing.extract(
        b"GET / HTTP/1.1\r\nTraceParent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\r\n"
    )
    assert ctx is not None and ctx.sampled and ctx.w3c and ctx.parent_id == 0x00F067AA0BA902B7
    assert tracing.extract(b"GET / HTTP/1.1\r\ntraceparent: 00-0000-00f067aa0ba902b7-01\r\n\r\n") is None
    b3 = tracing.extract(b"GET / HTTP/1.1\r\nb3: a3ce929d0e0e4736-00f067aa0ba902b7-d\r\n\r\n")
    assert b3 is not None and b3.sampled is True and b3.b3_single
    undecided = tracing.extract(
        b"GET / HTTP/1.1\r\nX-B3-TraceId: a3ce929d0e0e4736\r\nX-B3-SpanId: 00f067aa0ba902b7\r\n\r\n"
    )
    assert undecided is not None and undecided.sampled is None and undecided.b3_multi
    assert tracing.extract(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n") is None
