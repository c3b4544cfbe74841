"""Schemas for Telemetry (telemetry.istio.io v1/v1alpha1) and the telemetry parts of MeshConfig.

What the sidecar cannot do is an error naming the field (an access-log filter outside the supported CEL
subset, a tag value computed per request), never a silent no-op. MeshConfig is Istio's whole mesh config:
fields that do not concern the parts Mizzen reads are warnings ("ignored"), not errors, so an existing
Istio mesh config loads as it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from controller.model.telemetry import METRIC_NAMES
from controller.validation.schema import (
    Field,
    Issues,
    Unsupported,
    anything,
    boolean,
    duration,
    integer,
    list_of,
    map_of,
    number,
    obj,
    port_number,
    string,
)
from fastpath.cel import CelError, compile_expression
from fastpath.metric_overrides import compile_dimension

MODES = ("CLIENT_AND_SERVER", "CLIENT", "SERVER")
SELECTOR = obj({"matchLabels": Field(map_of(string()), required=True)})
PROVIDER_REF = obj({"name": Field(string(non_empty=True), required=True)})
MATCH = obj({"mode": string(enum=MODES)})


def _cel() -> Any:
    def check(value: Any, path: str, out: Issues) -> None:
        if not isinstance(value, str):
            out.error(path, "must be a string")
            return
        try:
            compile_expression(value)
        except CelError as exc:
            out.error(
                path,
                f"{value!r}: {exc} (Mizzen supports comparisons, && || !, in, string methods "
                "and Istio's request/response attributes)",
            )

    return check


def _tag_value() -> Any:
    def check(value: Any, path: str, out: Issues) -> None:
        if not isinstance(value, str):
            out.error(path, "must be a string")
            return
        try:
            compile_dimension(value)
        except ValueError as exc:
            out.error(path, str(exc))

    return check


def _check_tag_override(value: Mapping[str, Any], path: str, out: Issues) -> None:
    if value.get("operation", "UPSERT") == "UPSERT" and not value.get("value"):
        out.error(f"{path}.value" if path else "value", "is required with operation UPSERT")


CUSTOM_TAG = obj(
    {
        "literal": obj({"value": Field(string(), required=True)}),
        "environment": obj({"name": Field(string(non_empty=True), required=True), "defaultValue": string()}),
        "header": obj({"name": Field(string(non_empty=True), required=True), "defaultValue": string()}),
    },
    one_of=(("literal", "environment", "header"),),
)

TRACING = obj(
    {
        "match": MATCH,
        "providers": list_of(PROVIDER_REF),
        "randomSamplingPercentage": number(minimum=0.0, maximum=100.0),
        "disableSpanReporting": boolean(),
        "customTags": map_of(CUSTOM_TAG),
        "useRequestIdForTraceSampling": Unsupported("the sampling decision is random or the caller's"),
        "enableIstioTags": Unsupported(),
    }
)

METRICS = obj(
    {
        "providers": list_of(PROVIDER_REF),
        "overrides": list_of(
            obj(
                {
                    "match": obj(
                        {
                            "metric": string(enum=("ALL_METRICS", *METRIC_NAMES)),
                            "mode": string(enum=MODES),
                            "customMetric": Unsupported("custom metrics"),
                        }
                    ),
                    "disabled": boolean(),
                    "tagOverrides": map_of(
                        obj(
                            {"operation": string(enum=("UPSERT", "REMOVE")), "value": _tag_value()},
                            extra=_check_tag_override,
                        )
                    ),
                }
            )
        ),
        "reportingInterval": Unsupported("metrics are counted as requests finish and read at scrape"),
    }
)

ACCESS_LOGGING = obj(
    {
        "match": MATCH,
        "providers": list_of(PROVIDER_REF),
        "disabled": boolean(),
        "filter": obj({"expression": Field(_cel(), required=True)}),
    }
)


def _check_telemetry(spec: Mapping[str, Any], path: str, out: Issues) -> None:
    for i, m in enumerate(spec.get("metrics") or []):
        names = [p.get("name") for p in m.get("providers") or []]
        if names and "prometheus" not in names:
            out.warn(
                f"metrics[{i}].providers", f"{names}: Mizzen's sidecars export metrics to Prometheus only"
            )


TELEMETRY = obj(
    {
        "selector": SELECTOR,
        "targetRef": Unsupported("waypoints and gateways by reference"),
        "targetRefs": Unsupported("waypoints and gateways by reference"),
        "tracing": list_of(TRACING),
        "metrics": list_of(METRICS),
        "accessLogging": list_of(ACCESS_LOGGING),
    },
    extra=_check_telemetry,
)


# --- MeshConfig -------------------------------------------------------------------------------------------


OPENTELEMETRY = obj(
    {
        "service": Field(string(non_empty=True), required=True),
        "port": Field(port_number(), required=True),
        "maxTagLength": integer(minimum=1),
        "http": obj(
            {
                "path": string(),
                "timeout": duration(positive=True),
                "headers": list_of(
                    obj({"name": Field(string(non_empty=True), required=True), "value": string()})
                ),
            }
        ),
        "grpc": obj(
            {
                "timeout": duration(positive=True),
                "initialMetadata": list_of(
                    obj({"name": Field(string(non_empty=True), required=True), "value": string()})
                ),
            }
        ),
        "resourceDetectors": Unsupported(),
        "dynatraceSampler": Unsupported(),
    }
)

FILE_ACCESS_LOG = obj(
    {
        "path": string(),
        "logFormat": obj({"text": string(), "labels": map_of(anything())}, one_of=(("text", "labels"),)),
    }
)


def _check_provider(value: Mapping[str, Any], path: str, out: Issues) -> None:
    kinds = [k for k in value if k != "name"]
    if len(kinds) != 1:
        out.error(path, f"exactly one provider kind is needed (got {kinds or 'none'})")
    elif kinds[0] not in ("opentelemetry", "envoyFileAccessLog", "prometheus"):
        out.warn(
            f"{path}.{kinds[0]}" if path else kinds[0],
            "Mizzen exports traces over OpenTelemetry and logs to files; this provider is ignored",
        )


PROVIDER = obj(
    {
        "name": Field(string(non_empty=True), required=True),
        "opentelemetry": OPENTELEMETRY,
        "envoyFileAccessLog": FILE_ACCESS_LOG,
        "prometheus": obj({}),
    },
    extra=_check_provider,
)


def _mesh_fields(spec: Any, path: str, out: Issues) -> None:
    """MeshConfig: the fields Mizzen reads are checked; the many others are reported as ignored."""
    if not isinstance(spec, Mapping):
        out.error(path, "must be an object")
        return
    known = {
        "extensionProviders": list_of(PROVIDER),
        "defaultProviders": obj(
            {"tracing": list_of(string()), "accessLogging": list_of(string()), "metrics": list_of(string())}
        ),
        "enableTracing": boolean(),
        "accessLogFile": string(),
        "accessLogEncoding": string(enum=("TEXT", "JSON")),
        "accessLogFormat": string(),
        "defaultConfig": anything(),
        "rootNamespace": string(enum=("istio-system",)),
    }
    for name, value in spec.items():
        sub = f"{path}.{name}" if path else str(name)
        check = known.get(name)
        if check is None:
            out.warn(sub, "not read by Mizzen; ignored")
        elif value is not None:
            check(value, sub, out)
    sampling = ((spec.get("defaultConfig") or {}).get("tracing") or {}).get("sampling")
    if sampling is not None:
        number(minimum=0.0, maximum=100.0)(sampling, "defaultConfig.tracing.sampling", out)
    names = {p.get("name") for p in spec.get("extensionProviders") or [] if isinstance(p, Mapping)}
    for field in ("tracing", "accessLogging", "metrics"):
        for i, name in enumerate((spec.get("defaultProviders") or {}).get(field) or []):
            if (
                name not in names
                and not (field == "accessLogging" and name == "envoy")
                and name != "prometheus"
            ):
                out.error(f"defaultProviders.{field}[{i}]", f"{name!r} is not one of the extensionProviders")


MESH_CONFIG = _mesh_fields
