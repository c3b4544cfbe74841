"""The HttpConnectionManager network filter compiled into ``HcmConfig``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from envoy.extensions.access_loggers.file.v3 import file_pb2
from envoy.extensions.access_loggers.stream.v3 import stream_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from google.protobuf import json_format

from fastpath import filters
from fastpath.access_log import AccessLog, FormatError, open_log
from fastpath.config.errors import Resource, join
from fastpath.config.routes import compile_route_config, seconds
from fastpath.filters import HttpFilter, alpn
from fastpath.routing import RouteTable

_HCM_FIELDS = {
    "codec_type",
    "stat_prefix",
    "rds",
    "route_config",
    "http_filters",
    "common_http_protocol_options",
    "http_protocol_options",
    "server_name",
    "forward_client_cert_details",
    "set_current_client_cert_details",
    "max_request_headers_kb",
    "stream_idle_timeout",
    "request_timeout",
    "request_headers_timeout",
    "drain_timeout",
    "delayed_close_timeout",
    "access_log",
    "use_remote_address",
    "xff_num_trusted_hops",
    "skip_xff_append",
    "generate_request_id",
    "preserve_external_request_id",
    "always_set_request_id_in_response",
    "upgrade_configs",
    "normalize_path",
    "merge_slashes",
    "path_with_escaped_slashes_action",
    "server_header_transformation",
    "tracing",
}
FILE_LOG = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"
STDOUT_LOG = "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog"


@dataclass(frozen=True, slots=True)
class HcmConfig:
    stat_prefix: str
    rds_name: str | None  # routes from RDS by this name, else the inline table
    route_table: RouteTable | None
    filters: tuple[filters.HttpFilter, ...] = ()  # what every request runs: the filters that are not passive
    all_filters: tuple[HttpFilter, ...] = ()  # in HCM order, passive ones included
    request_timeout: float = 0.0  # whole request, 0 = none (Envoy's default)
    request_headers_timeout: float = 10.0  # slowloris: the head must arrive within this
    stream_idle_timeout: float = 300.0
    idle_timeout: float = 3600.0  # a downstream connection with no request in flight
    max_header_bytes: int = 60 * 1024
    max_headers_count: int = 100
    generate_request_id: bool = True
    preserve_external_request_id: bool = False
    always_set_request_id_in_response: bool = False
    use_remote_address: bool = False
    skip_xff_append: bool = False
    websocket: bool = False
    # CONNECT requests are forwarded (routes with connect_matcher), the tunnel opening on a 2xx; off,
    # they are refused with 403 as Envoy does.
    connect: bool = False
    access_logs: tuple[AccessLog, ...] = ()
    # The HCM's tracing (fastpath.filters.tracing): run by the exchange itself around the filters, as
    # Envoy's connection manager traces, so an untraced HCM pays nothing and a traced one no filter calls.
    tracer: Any = None
    alpn: dict[str, tuple[str, ...]] | None = None  # istio.alpn's overrides (fastpath.filters.alpn)
    server_name: bytes = b""  # "" keeps the upstream's Server header (Istio's PASS_THROUGH)
    drain_timeout: float = 5.0
    sanitize_client_cert: bool = True  # no forward_client_cert_details: x-forwarded-client-cert is removed
    # Per-route chains (the active filters plus the passive ones a route configures), made on first use.
    _chains: dict[Any, tuple[HttpFilter, ...]] = field(default_factory=dict, compare=False, repr=False)

    def chain_for(self, route: Any) -> tuple[HttpFilter, ...]:
        """The filters a request on ``route`` runs: the route's per-filter config may wake passive ones."""
        chain = self._chains.get(route)
        if chain is None:
            configured = route.typed_per_filter_config
            chain = tuple(f for f in self.all_filters if not f.passive or f.name in configured)
            if len(self._chains) >= 4096:
                self._chains.clear()  # routes of replaced RouteConfigurations are not kept alive forever
            self._chains[route] = chain
        return chain


def compile_hcm(res: Resource, path: str, h: hcm_pb2.HttpConnectionManager) -> HcmConfig:
    res.reject_unsupported(h, path, _HCM_FIELDS)
    if h.codec_type not in (hcm_pb2.HttpConnectionManager.AUTO, hcm_pb2.HttpConnectionManager.HTTP1):
        raise res.error(join(path, "codec_type"), "mizzen-proxy serves HTTP/1.1 downstream")
    if h.normalize_path.value or h.merge_slashes:
        raise res.error(
            join(path, "normalize_path" if h.normalize_path.value else "merge_slashes"),
            "path normalization is not supported",
        )
    if h.path_with_escaped_slashes_action not in (0, 1):  # IMPLEMENTATION_SPECIFIC_DEFAULT, KEEP_UNCHANGED
        raise res.error(join(path, "path_with_escaped_slashes_action"), "only KEEP_UNCHANGED")
    which = h.WhichOneof("route_specifier")
    rds_name, table = None, None
    if which == "rds":
        src = h.rds.config_source
        if src.WhichOneof("config_source_specifier") not in ("ads", None):
            raise res.error(join(path, "rds.config_source"), "only ADS is supported")
        if not h.rds.route_config_name:
            raise res.error(join(path, "rds.route_config_name"), "required")
        rds_name = h.rds.route_config_name
    elif which == "route_config":
        try:
            table = compile_route_config(h.route_config)
        except ValueError as exc:
            raise res.error(join(path, "route_config"), str(exc)) from None
    else:
        raise res.error(path, "rds or route_config is required")
    chain: list[filters.HttpFilter] = []
    names = [f.name for f in h.http_filters]
    if not h.http_filters or h.http_filters[-1].typed_config.type_url != filters.ROUTER:
        raise res.error(join(path, "http_filters"), f"the router must be the last filter (got {names})")
    for i, f in enumerate(h.http_filters[:-1]):
        fpath = f"{path}.http_filters[{i}]"
        if f.WhichOneof("config_type") != "typed_config":
            raise res.error(fpath, "a typed_config is required")
        if f.typed_config.type_url == filters.ROUTER:
            raise res.error(fpath, "the router must be the last filter")
        if not filters.known(f.typed_config.type_url) and f.is_optional:
            continue  # Envoy skips unknown optional filters too
        chain.append(filters.build(res, fpath, f.typed_config.type_url, f.typed_config, f.name))
    # Without the field Envoy sanitizes (SANITIZE): a request's x-forwarded-client-cert is removed. That
    # costs nothing per request here: the exchange removes the header when the parser saw one.
    sanitize_client_cert = True
    if h.forward_client_cert_details or h.HasField("set_current_client_cert_details"):
        from fastpath.filters import xfcc

        sanitize_client_cert = False  # the filter does what the mode says

        details = h.set_current_client_cert_details
        res.reject_unsupported(
            details, join(path, "set_current_client_cert_details"), {"subject", "uri", "dns"}
        )
        chain.insert(0, xfcc.build(h.forward_client_cert_details, details))
    common = h.common_http_protocol_options
    res.reject_unsupported(
        common,
        join(path, "common_http_protocol_options"),
        {"idle_timeout", "max_headers_count", "headers_with_underscores_action"},
    )
    if common.headers_with_underscores_action != 0:
        raise res.error(
            join(path, "common_http_protocol_options.headers_with_underscores_action"), "only ALLOW"
        )
    res.reject_unsupported(h.http_protocol_options, join(path, "http_protocol_options"), {"accept_http_10"})
    websocket = connect = False
    for i, up in enumerate(h.upgrade_configs):
        kind = up.upgrade_type.lower()
        if kind not in ("websocket", "connect"):
            raise res.error(
                f"{path}.upgrade_configs[{i}].upgrade_type", f"{up.upgrade_type!r}: websocket or CONNECT"
            )
        res.reject_unsupported(up, f"{path}.upgrade_configs[{i}]", {"upgrade_type", "enabled"})
        enabled = up.enabled.value if up.HasField("enabled") else True
        if kind == "websocket":
            websocket = enabled
        else:
            connect = enabled
    if h.server_header_transformation not in (0, 2):  # OVERWRITE (server_name) or PASS_THROUGH
        raise res.error(join(path, "server_header_transformation"), "only OVERWRITE and PASS_THROUGH")
    server = b""
    if h.server_header_transformation == 0:
        server = (h.server_name or "envoy").encode()
    logs = tuple(compile_access_log(res, f"{path}.access_log[{i}]", a) for i, a in enumerate(h.access_log))
    tracer = None
    if h.HasField("tracing"):
        from fastpath.filters.tracing import compile_tracing

        tracer = compile_tracing(res, join(path, "tracing"), h.tracing)
    max_kb = h.max_request_headers_kb.value if h.HasField("max_request_headers_kb") else 60
    if not 1 <= max_kb <= 8192:
        raise res.error(join(path, "max_request_headers_kb"), "must be 1-8192")
    return HcmConfig(
        stat_prefix=h.stat_prefix,
        rds_name=rds_name,
        route_table=table,
        filters=tuple(f for f in chain if not f.passive),
        all_filters=tuple(chain),
        request_timeout=seconds(h.request_timeout) if h.HasField("request_timeout") else 0.0,
        request_headers_timeout=seconds(h.request_headers_timeout)
        if h.HasField("request_headers_timeout")
        else 10.0,
        stream_idle_timeout=seconds(h.stream_idle_timeout) if h.HasField("stream_idle_timeout") else 300.0,
        idle_timeout=seconds(common.idle_timeout) if common.HasField("idle_timeout") else 3600.0,
        max_header_bytes=max_kb * 1024,
        max_headers_count=common.max_headers_count.value if common.HasField("max_headers_count") else 100,
        generate_request_id=h.generate_request_id.value if h.HasField("generate_request_id") else True,
        preserve_external_request_id=h.preserve_external_request_id,
        always_set_request_id_in_response=h.always_set_request_id_in_response,
        use_remote_address=h.use_remote_address.value,
        skip_xff_append=h.skip_xff_append,
        websocket=websocket,
        connect=connect,
        access_logs=logs,
        tracer=tracer,
        alpn=alpn.overrides_of(chain),
        server_name=server,
        drain_timeout=seconds(h.drain_timeout) if h.HasField("drain_timeout") else 5.0,
        sanitize_client_cert=sanitize_client_cert,
    )


def compile_access_log(res: Resource, path: str, a: object) -> AccessLog:
    from envoy.config.accesslog.v3 import accesslog_pb2

    assert isinstance(a, accesslog_pb2.AccessLog)
    res.reject_unsupported(a, path, {"name", "typed_config", "filter"})
    url = a.typed_config.type_url
    text: str | None = None
    fields: dict[str, str] | None = None
    if url == FILE_LOG:
        cfg = file_pb2.FileAccessLog()
        a.typed_config.Unpack(cfg)
        target = cfg.path
        fmt = cfg.log_format if cfg.HasField("log_format") else None
        if cfg.WhichOneof("access_log_format") not in (None, "log_format"):
            raise res.error(join(path, "typed_config"), "use log_format for the format")
    elif url == STDOUT_LOG:
        cfg2 = stream_pb2.StdoutAccessLog()
        a.typed_config.Unpack(cfg2)
        target = "/dev/stdout"
        fmt = cfg2.log_format if cfg2.HasField("log_format") else None
    else:
        raise res.error(join(path, "typed_config"), f"unsupported access logger {url.rsplit('/', 1)[-1]!r}")
    if fmt is not None:
        res.reject_unsupported(
            fmt, join(path, "typed_config.log_format"), {"text_format", "text_format_source", "json_format"}
        )
        kind = fmt.WhichOneof("format")
        if kind == "text_format":
            text = fmt.text_format
        elif kind == "text_format_source":
            if fmt.text_format_source.WhichOneof("specifier") != "inline_string":
                raise res.error(
                    join(path, "typed_config.log_format.text_format_source"), "only inline_string"
                )
            text = fmt.text_format_source.inline_string
        elif kind == "json_format":
            fields = {k: str(v) for k, v in json_format.MessageToDict(fmt.json_format).items()}
    from fastpath import cel

    predicate = cel.log_filter(res, join(path, "filter"), a.filter) if a.HasField("filter") else None
    try:
        log = open_log(target, text, fields)
    except FormatError as exc:
        raise res.error(join(path, "typed_config"), str(exc)) from None
    return log if predicate is None else cel.filtered(log, predicate)
