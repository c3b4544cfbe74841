"""Telemetry into Envoy config: a workload's resolved :class:`TelemetrySettings` written into the HTTP
connection managers of its listeners - ``tracing`` (the OpenTelemetry tracer and its collector's
cluster, sampling, custom tags), ``access_log`` entries (file loggers with Envoy's CEL filter; into the
TCP proxies too), and the ``istio.stats`` filter (stats.PluginConfig in a TypedStruct, as Istio sends
it) for metric overrides.

Outbound listeners get the client settings (they are shared by the scope, whose key carries them), the
inbound listener the server settings of its pod.
"""

from __future__ import annotations

from typing import Any

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.core.v3 import base_pb2, http_service_pb2, http_uri_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.trace.v3 import http_tracer_pb2, opentelemetry_pb2
from envoy.extensions.access_loggers.file.v3 import file_pb2
from envoy.extensions.access_loggers.filters.cel.v3 import cel_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.type.tracing.v3 import custom_tag_pb2
from google.protobuf import struct_pb2
from xds.type.v3 import typed_struct_pb2

from controller.model.telemetry import AccessLogSettings, TelemetrySettings, TracingSettings
from controller.xds.clusters import outbound_name
from controller.xds.resources import LISTENER, Resource, any_of, make_resource, proto_duration

HCM_TYPE = (
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
)
TCP_PROXY_TYPE = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
OTEL = "envoy.tracers.opentelemetry"
STATS_FILTER = "istio.stats"
PLUGIN_CONFIG = "type.googleapis.com/stats.PluginConfig"
CEL_FILTER = "envoy.access_loggers.extension_filters.cel"
FILE_LOGGER = "envoy.access_loggers.file"


def decorate(listener: listener_pb2.Listener, settings: TelemetrySettings | None) -> listener_pb2.Listener:
    """``listener`` with ``settings`` written into each of its HTTP connection managers (in place)."""
    if settings is None or settings == _NOTHING:
        return listener
    chains = list(listener.filter_chains)
    if listener.HasField("default_filter_chain"):
        chains.append(listener.default_filter_chain)
    for chain in chains:
        for f in chain.filters:
            if f.typed_config.type_url == HCM_TYPE:
                hcm = hcm_pb2.HttpConnectionManager()
                f.typed_config.Unpack(hcm)
                apply(hcm, settings)
                f.typed_config.CopyFrom(any_of(hcm))
            elif f.typed_config.type_url == TCP_PROXY_TYPE and settings.access_logs:
                # Istio logs TCP connections too: the same loggers on every TCP proxy.
                tcp = tcp_proxy_pb2.TcpProxy()
                f.typed_config.Unpack(tcp)
                tcp.access_log.extend(access_log(log) for log in settings.access_logs)
                f.typed_config.CopyFrom(any_of(tcp))
    return listener


_NOTHING = TelemetrySettings()


def decorate_resources(
    listeners: dict[str, Resource], settings: TelemetrySettings | None
) -> dict[str, Resource]:
    """Already encoded listeners (a gateway's) with ``settings`` written into their HCMs."""
    if settings is None or settings == _NOTHING:
        return listeners
    out = {}
    for name, resource in listeners.items():
        listener = decorate(listener_pb2.Listener.FromString(resource.body), settings)
        out[name] = make_resource(LISTENER, name, listener)
    return out


def apply(hcm: hcm_pb2.HttpConnectionManager, settings: TelemetrySettings) -> None:
    if settings.tracing is not None:
        hcm.tracing.CopyFrom(tracing(settings.tracing))
    for log in settings.access_logs:
        hcm.access_log.append(access_log(log))
    if settings.metrics:
        stats = hcm_pb2.HttpFilter(name=STATS_FILTER, typed_config=any_of(stats_config(settings)))
        hcm.http_filters.insert(len(hcm.http_filters) - 1, stats)  # just before the router, as Istio


def tracing(t: TracingSettings) -> hcm_pb2.HttpConnectionManager.Tracing:
    out = hcm_pb2.HttpConnectionManager.Tracing()
    out.random_sampling.value = t.percent
    out.client_sampling.value = 100.0
    out.overall_sampling.value = 100.0
    for tag in t.custom_tags:
        ct = custom_tag_pb2.CustomTag(tag=tag.name)
        if tag.kind == "literal":
            ct.literal.value = tag.value
        elif tag.kind == "header":
            ct.request_header.name = tag.value
            ct.request_header.default_value = tag.default
        else:
            ct.environment.name = tag.value
            ct.environment.default_value = tag.default
        out.custom_tags.append(ct)
    p = t.provider
    if p is not None:
        out.max_path_tag_length.value = p.max_tag_length
        # service_name left empty: each sidecar names itself (<canonical service>.<namespace>), since
        # outbound listeners are shared by the workloads of a scope.
        config = opentelemetry_pb2.OpenTelemetryConfig()
        cluster = outbound_name(p.port, None, p.host)
        if p.http:
            service = http_service_pb2.HttpService(
                http_uri=http_uri_pb2.HttpUri(
                    uri=f"http://{p.host}:{p.port}{p.path}",
                    cluster=cluster,
                    timeout=proto_duration(p.timeout),
                )
            )
            for name, value in p.headers:
                service.request_headers_to_add.append(
                    base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=name, value=value))
                )
            config.http_service.CopyFrom(service)
        else:  # Istio's default for an opentelemetry provider: OTLP over gRPC
            config.grpc_service.envoy_grpc.cluster_name = cluster
            config.grpc_service.envoy_grpc.authority = f"{p.host}:{p.port}"
            config.grpc_service.timeout.CopyFrom(proto_duration(p.timeout))
            for name, value in p.headers:
                config.grpc_service.initial_metadata.append(base_pb2.HeaderValue(key=name, value=value))
        out.provider.CopyFrom(http_tracer_pb2.Tracing.Http(name=OTEL, typed_config=any_of(config)))
    return out


def access_log(log: AccessLogSettings) -> accesslog_pb2.AccessLog:
    provider = log.provider
    cfg = file_pb2.FileAccessLog(path=provider.path)
    if provider.labels is not None:
        fields = struct_pb2.Struct()
        fields.update(dict(provider.labels))
        cfg.log_format.json_format.CopyFrom(fields)
    elif provider.text is not None:
        cfg.log_format.text_format_source.inline_string = provider.text
    out = accesslog_pb2.AccessLog(name=FILE_LOGGER, typed_config=any_of(cfg))
    if log.filter is not None:
        out.filter.extension_filter.name = CEL_FILTER
        out.filter.extension_filter.typed_config.CopyFrom(
            any_of(cel_pb2.ExpressionFilter(expression=log.filter))
        )
    return out


def stats_config(settings: TelemetrySettings) -> typed_struct_pb2.TypedStruct:
    metrics: list[dict[str, Any]] = []
    for m in settings.metrics:
        entry: dict[str, Any] = {}
        if m.name:
            entry["name"] = m.name
        if m.drop:
            entry["drop"] = True
        if m.remove:
            entry["tags_to_remove"] = list(m.remove)
        if m.upsert:
            entry["dimensions"] = dict(m.upsert)
        metrics.append(entry)
    value = struct_pb2.Struct()
    value.update({"metrics": metrics})
    return typed_struct_pb2.TypedStruct(type_url=PLUGIN_CONFIG, value=value)
