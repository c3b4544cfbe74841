"""The HttpConnectionManager's ``tracing`` (Envoy's OpenTelemetry tracer), compiled.

``compile_tracing`` reads the HCM's Tracing message (refusing, with the field named, what the proxy cannot
honour) into a ``TracingFilter`` the HCM keeps as its tracer (``HcmConfig.tracer``). As in Envoy, tracing
belongs to the connection manager rather than to its filter chain: the exchange makes the decision when a
request has been routed (``fastpath.tracing.start``, compiled) and finishes a sampled span when it completes
(``fastpath.tracing.finish``), with no filter calls in between. The filter methods do the same, for callers
that drive a tracer as a filter. Without a provider the decision is still made and the context propagated,
but no span is reported (Istio's ``disableSpanReporting``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from envoy.config.trace.v3 import opentelemetry_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from fastpath import filters, otlp, tracing
from fastpath.config.errors import Resource, join
from fastpath.config.routes import seconds

if TYPE_CHECKING:
    from fastpath.exchange import Exchange

OTEL = "envoy.tracers.opentelemetry"
OTEL_TYPE = "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig"

_TRACING_FIELDS = {
    "client_sampling",
    "random_sampling",
    "overall_sampling",
    "verbose",
    "max_path_tag_length",
    "custom_tags",
    "provider",
    "spawn_upstream_span",
}


class TracingFilter(filters.HttpFilter):
    name = "mizzen.tracing"

    def __init__(self, config: tracing.TraceConfig) -> None:
        self.config = config

    def on_request(self, exchange: Exchange) -> int:
        tracing.start(exchange, self.config)
        return filters.CONTINUE

    def on_complete(self, exchange: Exchange) -> None:
        trace = exchange.trace
        if trace is not None and trace.sampled:
            tracing.finish(exchange, trace)  # type: ignore[arg-type]


def _percent(res: Resource, path: str, value: object) -> float:
    percent = float(getattr(value, "value", 100.0))
    if not 0.0 <= percent <= 100.0:
        raise res.error(path, f"{percent} is not a percentage (0-100)")
    return percent


def compile_tracing(res: Resource, path: str, t: hcm_pb2.HttpConnectionManager.Tracing) -> TracingFilter:
    res.reject_unsupported(t, path, _TRACING_FIELDS)
    if t.verbose:
        raise res.error(join(path, "verbose"), "span logs are not recorded")
    if t.spawn_upstream_span.value:
        raise res.error(join(path, "spawn_upstream_span"), "one span per sidecar and request (false only)")
    if t.HasField("client_sampling") and t.client_sampling.value != 100.0:
        # It only scales x-client-trace-id forced traces, which the proxy does not offer.
        raise res.error(join(path, "client_sampling"), "only 100 (x-client-trace-id is not supported)")
    random_percent = (
        _percent(res, join(path, "random_sampling"), t.random_sampling)
        if t.HasField("random_sampling")
        else 100.0
    )
    overall = (
        _percent(res, join(path, "overall_sampling"), t.overall_sampling)
        if t.HasField("overall_sampling")
        else 100.0
    )
    tags = []
    for i, tag in enumerate(t.custom_tags):
        tpath = f"{path}.custom_tags[{i}]"
        if not tag.tag:
            raise res.error(join(tpath, "tag"), "required")
        kind = tag.WhichOneof("type")
        if kind == "literal":
            tags.append(tracing.CustomTag(tag.tag, tag.literal.value))
        elif kind == "request_header":
            header = tag.request_header.name.lower().encode()
            if not header:
                raise res.error(join(tpath, "request_header.name"), "required")
            tags.append(tracing.CustomTag(tag.tag, None, header, tag.request_header.default_value))
        elif kind == "environment":
            env = tag.environment
            tags.append(tracing.environment_tag(tag.tag, env.name, env.default_value))
        else:
            raise res.error(tpath, f"{kind or 'a type'!r}: only literal, request_header and environment tags")
    max_path = t.max_path_tag_length.value if t.HasField("max_path_tag_length") else 256
    exporter = None
    service_name = ""
    if t.HasField("provider"):
        exporter, service_name = _provider(res, join(path, "provider"), t.provider)
    return TracingFilter(
        tracing.TraceConfig(
            random_percent=random_percent,
            overall_percent=overall,
            custom_tags=tuple(tags),
            max_path_tag_length=max_path,
            exporter=exporter,
            service_name=service_name,
        )
    )


def _grpc_target(res: Resource, path: str, g: object) -> otlp.GrpcTarget:
    res.reject_unsupported(g, path, {"envoy_grpc", "timeout", "initial_metadata"})  # type: ignore[arg-type]
    if not g.HasField("envoy_grpc"):  # type: ignore[attr-defined]
        raise res.error(join(path, "envoy_grpc"), "required (google_grpc is not supported)")
    eg = g.envoy_grpc  # type: ignore[attr-defined]
    res.reject_unsupported(eg, join(path, "envoy_grpc"), {"cluster_name", "authority"})
    if not eg.cluster_name:
        raise res.error(
            join(path, "envoy_grpc.cluster_name"), "required: the cluster that reaches the collector"
        )
    timeout = seconds(g.timeout) if g.HasField("timeout") else 5.0  # type: ignore[attr-defined]
    headers = tuple((h.key.lower(), h.value) for h in g.initial_metadata)  # type: ignore[attr-defined]
    return otlp.GrpcTarget(eg.cluster_name, timeout, headers, eg.authority)


def _provider(res: Resource, path: str, provider: object) -> tuple[otlp.SpanExporter, str]:
    name = provider.name  # type: ignore[attr-defined]
    typed = provider.typed_config  # type: ignore[attr-defined]
    if typed.type_url != OTEL_TYPE:
        raise res.error(
            join(path, "typed_config"),
            f"{typed.type_url.rsplit('/', 1)[-1] or name!r}: only {OTEL} (OpenTelemetryConfig)",
        )
    cfg = opentelemetry_pb2.OpenTelemetryConfig()
    typed.Unpack(cfg)
    cpath = join(path, "typed_config")
    res.reject_unsupported(cfg, cpath, {"http_service", "grpc_service", "service_name"})
    if cfg.HasField("grpc_service"):
        if cfg.HasField("http_service"):
            raise res.error(cpath, "http_service or grpc_service, not both")
        return otlp.exporter_for(
            _grpc_target(res, join(cpath, "grpc_service"), cfg.grpc_service)
        ), cfg.service_name
    if not cfg.HasField("http_service"):
        raise res.error(join(cpath, "http_service"), "http_service or grpc_service is required")
    http = cfg.http_service
    uri = http.http_uri
    upath = join(cpath, "http_service.http_uri")
    if not uri.cluster:
        raise res.error(join(upath, "cluster"), "required: the cluster that reaches the collector")
    headers = []
    for i, option in enumerate(http.request_headers_to_add):
        headers.append((option.header.key, option.header.value))
        if not option.header.key:
            raise res.error(f"{cpath}.http_service.request_headers_to_add[{i}].header.key", "required")
    try:
        target = otlp.HttpTarget(
            uri.uri,
            uri.cluster,
            seconds(uri.timeout) if uri.HasField("timeout") else 5.0,
            tuple(headers),
        )
    except ValueError as exc:
        raise res.error(join(upath, "uri"), str(exc)) from None
    return otlp.exporter_for(target), cfg.service_name
