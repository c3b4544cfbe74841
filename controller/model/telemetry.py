"""Istio's observability config as the mesh uses it: the MeshConfig parts that concern telemetry
(extension providers, default providers, tracing defaults, the legacy access log), the Telemetry API
(``telemetry.istio.io``), and their resolution for one workload and one direction.

Resolution follows Istio: mesh-wide settings (MeshConfig, then the root namespace's Telemetry without a
selector), then the workload's namespace's Telemetry without a selector, then one with a selector that
matches the workload; a narrower level overrides the fields it sets. Each rule applies to client
(outbound) or server (inbound) traffic or both (``match.mode``). The result is a small frozen value
(:class:`TelemetrySettings`) that translation turns into HCM fields, and that scopes compare.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from controller.model.hosts import ROOT_NAMESPACE
from controller.model.meta import ObjectMeta, object_meta, spec_of
from controller.model.values import FrozenMap, ResourceKey, parse_duration, str_map

CLIENT, SERVER, BOTH = "CLIENT", "SERVER", "CLIENT_AND_SERVER"
MESH_CONFIG_KEY = ResourceKey("MeshConfig", ROOT_NAMESPACE, "mesh")
DEFAULT_SAMPLING = 1.0  # percent, Istio's defaultConfig.tracing.sampling default
ENVOY_LOG = "envoy"  # the built-in access log provider: Istio's text format on stdout

# Telemetry metric names -> stats.PluginConfig names.
METRIC_NAMES = {
    "REQUEST_COUNT": "requests_total",
    "REQUEST_DURATION": "request_duration_milliseconds",
    "REQUEST_SIZE": "request_bytes",
    "RESPONSE_SIZE": "response_bytes",
    "TCP_OPENED_CONNECTIONS": "tcp_connections_opened_total",
    "TCP_CLOSED_CONNECTIONS": "tcp_connections_closed_total",
    "TCP_SENT_BYTES": "tcp_sent_bytes_total",
    "TCP_RECEIVED_BYTES": "tcp_received_bytes_total",
    "GRPC_REQUEST_MESSAGES": "request_messages_total",
    "GRPC_RESPONSE_MESSAGES": "response_messages_total",
}


# --- MeshConfig -------------------------------------------------------------------------------------------


class OtelProvider(msgspec.Struct, frozen=True, gc=False):
    """An ``extensionProviders[].opentelemetry`` entry: where spans go (OTLP/HTTP with ``http``, else
    OTLP/gRPC, as Istio)."""

    name: str
    service: str  # the collector's host name (FQDN), optionally "namespace/host"
    port: int
    http: bool = False
    path: str = "/v1/traces"
    timeout: float = 5.0
    headers: tuple[tuple[str, str], ...] = ()
    max_tag_length: int = 256

    @property
    def host(self) -> str:
        return self.service.split("/", 1)[-1]


class FileLogProvider(msgspec.Struct, frozen=True, gc=False):
    """An ``extensionProviders[].envoyFileAccessLog`` entry (or the built-in ``envoy`` provider)."""

    name: str
    path: str = "/dev/stdout"
    text: str | None = None  # Envoy format string; None with labels None: Istio's default format
    labels: FrozenMap[str] | None = None  # JSON: field -> Envoy format command


class MeshConfig(msgspec.Struct, frozen=True, gc=False):
    enable_tracing: bool = True
    sampling: float = DEFAULT_SAMPLING
    access_log_file: str = ""
    access_log_encoding: str = "TEXT"
    access_log_format: str = ""
    tracing_providers: tuple[OtelProvider, ...] = ()
    log_providers: tuple[FileLogProvider, ...] = ()
    default_tracing: tuple[str, ...] = ()
    default_logging: tuple[str, ...] = ()
    default_metrics: tuple[str, ...] = ()
    other_providers: tuple[str, ...] = ()  # names of providers of kinds Mizzen does not export to

    def tracing_provider(self, name: str) -> OtelProvider | None:
        return next((p for p in self.tracing_providers if p.name == name), None)

    def log_provider(self, name: str) -> FileLogProvider | None:
        if name == ENVOY_LOG:
            return self.builtin_log()
        return next((p for p in self.log_providers if p.name == name), None)

    def builtin_log(self) -> FileLogProvider:
        """``envoy``: the legacy access log (accessLogFile, accessLogEncoding, accessLogFormat)."""
        path = self.access_log_file or "/dev/stdout"
        if self.access_log_encoding == "JSON":
            return FileLogProvider(ENVOY_LOG, path, None, FrozenMap(_DEFAULT_JSON))
        return FileLogProvider(ENVOY_LOG, path, self.access_log_format or None, None)


# Istio's default JSON access log fields.
_DEFAULT_JSON = {
    "start_time": "%START_TIME%",
    "method": "%REQ(:METHOD)%",
    "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
    "protocol": "%PROTOCOL%",
    "response_code": "%RESPONSE_CODE%",
    "response_flags": "%RESPONSE_FLAGS%",
    "response_code_details": "%RESPONSE_CODE_DETAILS%",
    "bytes_received": "%BYTES_RECEIVED%",
    "bytes_sent": "%BYTES_SENT%",
    "duration": "%DURATION%",
    "upstream_service_time": "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
    "x_forwarded_for": "%REQ(X-FORWARDED-FOR)%",
    "user_agent": "%REQ(USER-AGENT)%",
    "request_id": "%REQ(X-REQUEST-ID)%",
    "authority": "%REQ(:AUTHORITY)%",
    "upstream_host": "%UPSTREAM_HOST%",
    "upstream_cluster": "%UPSTREAM_CLUSTER%",
    "downstream_local_address": "%DOWNSTREAM_LOCAL_ADDRESS%",
    "downstream_remote_address": "%DOWNSTREAM_REMOTE_ADDRESS%",
    "route_name": "%ROUTE_NAME%",
}


def build_mesh_config(raw: Mapping[str, Any]) -> MeshConfig:
    """The telemetry parts of a MeshConfig (``raw["spec"]``: the ``mesh`` key's YAML), validated before."""
    spec = spec_of(raw)
    tracing_providers: list[OtelProvider] = []
    log_providers: list[FileLogProvider] = []
    others: list[str] = []
    for p in spec.get("extensionProviders") or []:
        name = str(p.get("name") or "")
        if "opentelemetry" in p:
            o = p["opentelemetry"] or {}
            http = o.get("http")
            transport = (http if http is not None else o.get("grpc")) or {}
            tracing_providers.append(
                OtelProvider(
                    name=name,
                    service=str(o.get("service") or ""),
                    port=int(o.get("port") or 0),
                    http=http is not None,
                    path=str((http or {}).get("path") or "/v1/traces"),
                    timeout=parse_duration(transport.get("timeout") or "5s").nanos / 1e9,
                    headers=tuple(
                        (str(h.get("name")), str(h.get("value") or ""))
                        for h in transport.get("headers") or transport.get("initialMetadata") or []
                    ),
                    max_tag_length=int(o.get("maxTagLength") or 256),
                )
            )
        elif "envoyFileAccessLog" in p:
            f = p["envoyFileAccessLog"] or {}
            fmt = f.get("logFormat") or {}
            labels = fmt.get("labels")
            log_providers.append(
                FileLogProvider(
                    name=name,
                    path=str(f.get("path") or "/dev/stdout"),
                    text=str(fmt["text"]) if fmt.get("text") else None,
                    labels=FrozenMap({str(k): str(v) for k, v in labels.items()}) if labels else None,
                )
            )
        else:
            others.append(name)
    defaults = spec.get("defaultProviders") or {}
    sampling = ((spec.get("defaultConfig") or {}).get("tracing") or {}).get("sampling")
    enable = spec.get("enableTracing")
    return MeshConfig(
        enable_tracing=True if enable is None else bool(enable),
        sampling=float(sampling) if sampling is not None else DEFAULT_SAMPLING,
        access_log_file=str(spec.get("accessLogFile") or ""),
        access_log_encoding=str(spec.get("accessLogEncoding") or "TEXT"),
        access_log_format=str(spec.get("accessLogFormat") or ""),
        tracing_providers=tuple(tracing_providers),
        log_providers=tuple(log_providers),
        default_tracing=tuple(str(x) for x in defaults.get("tracing") or ()),
        default_logging=tuple(str(x) for x in defaults.get("accessLogging") or ()),
        default_metrics=tuple(str(x) for x in defaults.get("metrics") or ()),
        other_providers=tuple(others),
    )


def mesh_config_object(spec: Mapping[str, Any] | None) -> dict[str, Any]:
    """The raw object under which a MeshConfig travels through sources and the snapshot."""
    return {
        "kind": "MeshConfig",
        "metadata": {"name": MESH_CONFIG_KEY.name, "namespace": MESH_CONFIG_KEY.namespace},
        "spec": dict(spec or {}),
    }


# --- Telemetry --------------------------------------------------------------------------------------------


class CustomTag(msgspec.Struct, frozen=True, gc=False):
    name: str
    kind: str  # literal, header, environment
    value: str  # the literal, the header name, the environment variable
    default: str = ""


class TracingRule(msgspec.Struct, frozen=True, gc=False):
    mode: str = BOTH
    providers: tuple[str, ...] | None = None
    percent: float | None = None
    custom_tags: tuple[CustomTag, ...] = ()
    disable_reporting: bool | None = None


class TagOverride(msgspec.Struct, frozen=True, gc=False):
    tag: str
    remove: bool
    value: str = ""


class MetricOverride(msgspec.Struct, frozen=True, gc=False):
    metric: str  # a PluginConfig name, "" for ALL_METRICS
    mode: str = BOTH
    disabled: bool | None = None
    tags: tuple[TagOverride, ...] = ()


class MetricsRule(msgspec.Struct, frozen=True, gc=False):
    providers: tuple[str, ...] | None = None
    overrides: tuple[MetricOverride, ...] = ()


class LoggingRule(msgspec.Struct, frozen=True, gc=False):
    mode: str = BOTH
    providers: tuple[str, ...] | None = None
    disabled: bool | None = None
    filter: str | None = None


class Telemetry(msgspec.Struct, frozen=True, gc=False):
    meta: ObjectMeta
    selector: FrozenMap[str] | None
    tracing: tuple[TracingRule, ...] = ()
    metrics: tuple[MetricsRule, ...] = ()
    logging: tuple[LoggingRule, ...] = ()

    @property
    def key(self) -> ResourceKey:
        return ResourceKey("Telemetry", self.meta.namespace, self.meta.name)


def _mode(rule: Mapping[str, Any]) -> str:
    return str((rule.get("match") or {}).get("mode") or BOTH)


def _providers(rule: Mapping[str, Any]) -> tuple[str, ...] | None:
    providers = rule.get("providers")
    return tuple(str(p.get("name")) for p in providers) if providers else None


def build_telemetry(raw: Mapping[str, Any]) -> Telemetry:
    spec = spec_of(raw)
    selector = spec.get("selector")
    tracing = []
    for t in spec.get("tracing") or []:
        tags = []
        for name, tag in sorted((t.get("customTags") or {}).items()):
            if "literal" in tag:
                tags.append(CustomTag(str(name), "literal", str((tag["literal"] or {}).get("value") or "")))
            elif "header" in tag:
                h = tag["header"] or {}
                tags.append(
                    CustomTag(str(name), "header", str(h.get("name")), str(h.get("defaultValue") or ""))
                )
            elif "environment" in tag:
                e = tag["environment"] or {}
                tags.append(
                    CustomTag(str(name), "environment", str(e.get("name")), str(e.get("defaultValue") or ""))
                )
        percent = t.get("randomSamplingPercentage")
        disable = t.get("disableSpanReporting")
        tracing.append(
            TracingRule(
                mode=_mode(t),
                providers=_providers(t),
                percent=float(percent) if percent is not None else None,
                custom_tags=tuple(tags),
                disable_reporting=bool(disable) if disable is not None else None,
            )
        )
    metrics = []
    for m in spec.get("metrics") or []:
        overrides = []
        for o in m.get("overrides") or []:
            match = o.get("match") or {}
            metric = str(match.get("metric") or "ALL_METRICS")
            disabled = o.get("disabled")
            overrides.append(
                MetricOverride(
                    metric=METRIC_NAMES.get(metric, ""),
                    mode=str(match.get("mode") or BOTH),
                    disabled=bool(disabled) if disabled is not None else None,
                    tags=tuple(
                        TagOverride(
                            str(tag),
                            (v or {}).get("operation") == "REMOVE",
                            str((v or {}).get("value") or ""),
                        )
                        for tag, v in sorted((o.get("tagOverrides") or {}).items())
                    ),
                )
            )
        metrics.append(MetricsRule(providers=_providers(m), overrides=tuple(overrides)))
    logging = []
    for a in spec.get("accessLogging") or []:
        disabled = a.get("disabled")
        flt = (a.get("filter") or {}).get("expression")
        logging.append(
            LoggingRule(
                mode=_mode(a),
                providers=_providers(a),
                disabled=bool(disabled) if disabled is not None else None,
                filter=str(flt) if flt else None,
            )
        )
    return Telemetry(
        meta=object_meta(raw),
        selector=str_map(selector.get("matchLabels")) if selector else None,
        tracing=tuple(tracing),
        metrics=tuple(metrics),
        logging=tuple(logging),
    )


# --- resolution -------------------------------------------------------------------------------------------


class TracingSettings(msgspec.Struct, frozen=True, gc=False):
    """What an HCM's tracing is: sampling, tags, and the collector (None: decide and propagate only)."""

    percent: float
    provider: OtelProvider | None = None
    custom_tags: tuple[CustomTag, ...] = ()


class AccessLogSettings(msgspec.Struct, frozen=True, gc=False):
    provider: FileLogProvider
    filter: str | None = None


class MetricSettings(msgspec.Struct, frozen=True, gc=False):
    """One stats.PluginConfig metrics entry."""

    name: str  # "" for every metric
    drop: bool = False
    remove: tuple[str, ...] = ()
    upsert: tuple[tuple[str, str], ...] = ()


class TelemetrySettings(msgspec.Struct, frozen=True, gc=False):
    """Everything telemetry puts into one direction's HCMs of one workload."""

    tracing: TracingSettings | None = None
    access_logs: tuple[AccessLogSettings, ...] = ()
    metrics: tuple[MetricSettings, ...] = ()


def _applies(rule_mode: str, direction: str) -> bool:
    return rule_mode in (BOTH, direction)


def telemetry_chain(
    telemetries: Iterable[Telemetry], namespace: str, labels: Mapping[str, str]
) -> list[Telemetry]:
    """The Telemetry objects that apply to a workload, widest first: the root namespace's, the namespace's,
    the workload's (the oldest one at each level, as Istio picks when several compete)."""
    root: list[Telemetry] = []
    ns: list[Telemetry] = []
    workload: list[Telemetry] = []
    for t in telemetries:
        if t.selector is None:
            if t.meta.namespace == ROOT_NAMESPACE:
                root.append(t)
            if t.meta.namespace == namespace and namespace != ROOT_NAMESPACE:
                ns.append(t)
        elif t.meta.namespace == namespace and all(labels.get(k) == v for k, v in t.selector.items()):
            workload.append(t)
    out = []
    for level in (root, ns, workload):
        if level:
            out.append(min(level, key=lambda t: (t.meta.creation_timestamp, t.meta.name)))
    return out


def resolve(
    mesh: MeshConfig,
    telemetries: Iterable[Telemetry],
    namespace: str,
    labels: Mapping[str, str],
    direction: str,
) -> TelemetrySettings:
    """The settings of one workload's ``direction`` (CLIENT: outbound, SERVER: inbound)."""
    chain = telemetry_chain(telemetries, namespace, labels)
    return TelemetrySettings(
        tracing=_tracing(mesh, chain, direction),
        access_logs=_logging(mesh, chain, direction),
        metrics=_metrics(chain, direction),
    )


def _tracing(mesh: MeshConfig, chain: list[Telemetry], direction: str) -> TracingSettings | None:
    providers: tuple[str, ...] = mesh.default_tracing
    percent = mesh.sampling
    tags: dict[str, CustomTag] = {}
    disable: bool = False
    configured = False  # a Telemetry rule speaks about tracing for this direction
    for t in chain:
        for rule in t.tracing:
            if not _applies(rule.mode, direction):
                continue
            configured = True
            if rule.providers is not None:
                providers = rule.providers
            if rule.percent is not None:
                percent = rule.percent
            if rule.disable_reporting is not None:
                disable = rule.disable_reporting
            tags.update((tag.name, tag) for tag in rule.custom_tags)
    provider = None
    if not disable:
        for name in providers:
            provider = mesh.tracing_provider(name)
            if provider is not None:
                break  # one tracer per HCM (Envoy's): the first that Mizzen can export to
    if not configured and (provider is None or not mesh.enable_tracing):
        return None  # nothing to report to and no rule asking for it: requests pay nothing
    return TracingSettings(percent=percent, provider=provider, custom_tags=tuple(tags.values()))


def _logging(mesh: MeshConfig, chain: list[Telemetry], direction: str) -> tuple[AccessLogSettings, ...]:
    default_names = mesh.default_logging or ((ENVOY_LOG,) if mesh.access_log_file else ())
    # Mesh level: MeshConfig alone logs when accessLogFile or a default provider is set.
    chosen: dict[str, tuple[bool, str | None]] = {name: (False, None) for name in default_names}
    for t in chain:
        rules = [r for r in t.logging if _applies(r.mode, direction)]
        if not rules:
            continue
        chosen = {}  # the narrowest level that says anything about access logs decides
        for rule in rules:
            names = rule.providers or mesh.default_logging or (ENVOY_LOG,)
            for name in names:
                chosen[name] = (bool(rule.disabled), rule.filter)
    out = []
    for name, (disabled, flt) in chosen.items():
        provider = mesh.log_provider(name)
        if provider is not None and not disabled:
            out.append(AccessLogSettings(provider, flt))
    return tuple(out)


def _metrics(chain: list[Telemetry], direction: str) -> tuple[MetricSettings, ...]:
    merged: dict[str, dict[str, Any]] = {}
    for t in chain:
        for rule in t.metrics:
            if rule.providers is not None and "prometheus" not in rule.providers:
                continue
            for o in rule.overrides:
                if not _applies(o.mode, direction):
                    continue
                entry = merged.setdefault(o.metric, {"drop": False, "tags": {}})
                if o.disabled is not None:
                    entry["drop"] = o.disabled
                for tag in o.tags:
                    entry["tags"][tag.tag] = tag
    out = []
    for name in sorted(merged):
        entry = merged[name]
        tags: dict[str, TagOverride] = entry["tags"]
        out.append(
            MetricSettings(
                name=name,
                drop=entry["drop"],
                remove=tuple(sorted(t.tag for t in tags.values() if t.remove)),
                upsert=tuple(sorted((t.tag, t.value) for t in tags.values() if not t.remove)),
            )
        )
    return tuple(out)


_resolved: list[Any] = []  # [(the Telemetry map and mesh config it was computed from, {query: settings})]


def resolve_cached(
    snapshot: Any, namespace: str, labels: FrozenMap[str], direction: str
) -> TelemetrySettings:
    """:func:`resolve` on a snapshot, remembered while the snapshot's Telemetry objects and mesh config stay
    the same (snapshots share unchanged kind maps), so a thousand proxies resolve a handful of times."""
    items = snapshot.items("Telemetry")
    mesh = snapshot.mesh_config()
    if not _resolved or _resolved[0][0] is not items or _resolved[0][1] is not mesh:
        _resolved[:] = [(items, mesh, {})]
    cache: dict[Any, TelemetrySettings] = _resolved[0][2]
    relevant = [t for t in snapshot.telemetries() if t.selector is not None and t.meta.namespace == namespace]
    # Only the label keys some selector in the namespace names make workloads differ.
    keys = sorted({k for t in relevant for k in (t.selector or {})})
    query = (namespace, tuple((k, labels.get(k)) for k in keys), direction)
    found = cache.get(query)
    if found is None:
        if len(cache) > 4096:
            cache.clear()
        found = cache[query] = resolve(mesh, snapshot.telemetries(), namespace, labels, direction)
    return found
