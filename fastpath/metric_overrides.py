"""Metric overrides (Telemetry API ``metrics.overrides``) applied to the Prometheus exposition at scrape.

Counting stays as it is on the request path (``fastpath.stats``); what a scrape shows is rewritten here:
a dropped metric's samples are left out, removed labels are taken off (series that become equal are
summed), and set labels get their value. Overrides are per reporter: an outbound HCM's ``istio.stats``
config speaks for ``reporter="source"``, an inbound one's for ``reporter="destination"``.

Label values that Istio computes per request from CEL (``request.host``, a request header) cannot be
derived from what was counted; a dimension is a string literal or a copy of a label the series has.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from fastpath.stats import _number

# stats.PluginConfig's metric names (the Prometheus family is ``istio_<name>``).
METRICS = (
    "requests_total",
    "request_duration_milliseconds",
    "request_bytes",
    "response_bytes",
    "tcp_sent_bytes_total",
    "tcp_received_bytes_total",
    "tcp_connections_opened_total",
    "tcp_connections_closed_total",
    "request_messages_total",
    "response_messages_total",
)

# CEL attributes whose value is a label every series already carries.
LABEL_ATTRIBUTES = {
    "request.protocol": "request_protocol",
    "response.code": "response_code",
    "response.grpc_status": "grpc_response_status",
    "response.flags": "response_flags",
    "destination.service.host": "destination_service",
    "destination.service.name": "destination_service_name",
    "destination.service.namespace": "destination_service_namespace",
    "source.workload.name": "source_workload",
    "source.workload.namespace": "source_workload_namespace",
    "destination.workload.name": "destination_workload",
    "destination.workload.namespace": "destination_workload_namespace",
    "source.principal": "source_principal",
    "destination.principal": "destination_principal",
}

_LITERAL = re.compile(r"""^\s*(?:'((?:[^'\\]|\\.)*)'|"((?:[^"\\]|\\.)*)")\s*$""")
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')
_SUFFIXES = ("_bucket", "_sum", "_count")


@dataclass(frozen=True, slots=True)
class Dimension:
    """A label value: a literal, or the value of another label of the same series."""

    literal: str | None = None
    label: str | None = None


@dataclass(frozen=True, slots=True)
class MetricConfig:
    """One entry of stats.PluginConfig.metrics (``name`` "" applies to every metric)."""

    name: str = ""
    drop: bool = False
    remove: tuple[str, ...] = ()
    upsert: tuple[tuple[str, Dimension], ...] = ()


def compile_dimension(expr: str) -> Dimension:
    m = _LITERAL.match(expr)
    if m is not None:
        text = m.group(1) if m.group(1) is not None else m.group(2)
        return Dimension(literal=bytes(text, "utf-8").decode("unicode_escape"))
    label = LABEL_ATTRIBUTES.get(expr.strip())
    if label is not None:
        return Dimension(label=label)
    raise ValueError(
        f"{expr!r}: a dimension is a string literal ('value') or one of {', '.join(sorted(LABEL_ATTRIBUTES))}"
        " (per-request attributes are not kept after counting)"
    )


@dataclass(slots=True)
class _Effective:
    drop: bool = False
    remove: frozenset[str] = frozenset()
    upsert: tuple[tuple[str, Dimension], ...] = ()


Overrides = dict[tuple[str, str], _Effective]  # (reporter, metric) -> what to do


def merge(reporter: str, configs: list[MetricConfig], into: Overrides) -> None:
    """Entries in order, each metric's later entries winning; the all-metrics ones first (Istio's)."""
    for metric in METRICS:
        eff = into.get((reporter, metric)) or _Effective()
        touched = False
        for cfg in sorted(configs, key=lambda c: c.name != ""):
            if cfg.name not in ("", metric):
                continue
            touched = True
            eff.drop = cfg.drop
            upserted = dict(eff.upsert)
            for tag in cfg.remove:
                upserted.pop(tag, None)
            eff.remove = (eff.remove | frozenset(cfg.remove)) - {t for t, _ in cfg.upsert}
            upserted.update(cfg.upsert)
            eff.upsert = tuple(upserted.items())
        if touched:
            into[(reporter, metric)] = eff


def collect(config: Any) -> Overrides:
    """The overrides a proxy config holds: its HCMs' ``istio.stats`` filters, by listener direction."""
    from fastpath.filters.istio_stats import IstioStatsFilter

    out: Overrides = {}
    for listener in config.listeners.values():
        reporter = "destination" if listener.direction == "INBOUND" else "source"
        for chain in listener.chains():
            hcm = chain.http
            if hcm is None:
                continue
            for f in hcm.all_filters:
                if isinstance(f, IstioStatsFilter):
                    merge(reporter, list(f.metrics), out)  # listeners share the config: idempotent
    return out


def _family(name: str) -> str:
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            base = name[: -len(suffix)]
            if base.removeprefix("istio_") in METRICS:
                return base
    return name


def apply(text: str, overrides: Overrides) -> str:
    """The exposition with the overrides applied (unchanged when there are none)."""
    if not overrides:
        return text
    out: list[str] = []
    sums: dict[str, float] = {}
    order: list[str] = []
    pending_type: str | None = None
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith("#"):
            _flush(out, order, sums)
            pending_type = line
            continue
        key, _, value = line.rpartition(" ")
        brace = key.find("{")
        name = key if brace < 0 else key[:brace]
        labels = _LABEL.findall(key[brace + 1 : -1]) if brace >= 0 else []
        family = _family(name)
        metric = family.removeprefix("istio_")
        reporter = next((v for k, v in labels if k == "reporter"), "")
        eff = overrides.get((reporter, metric))
        if eff is not None:
            if eff.drop:
                continue
            if eff.remove or eff.upsert:
                labels = _rewrite(labels, eff)
        if pending_type is not None:
            out.append(pending_type)
            pending_type = None
        rendered = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels) + "}" if labels else "")
        if rendered not in sums:
            order.append(rendered)
            sums[rendered] = 0.0
        sums[rendered] += float(value)
    _flush(out, order, sums)
    return "\n".join(out) + "\n"


def _rewrite(labels: list[tuple[str, str]], eff: _Effective) -> list[tuple[str, str]]:
    current = dict(labels)
    le = current.pop("le", None)  # a histogram bucket's bound stays last
    for tag in eff.remove:
        current.pop(tag, None)
    for tag, dim in eff.upsert:
        current[tag] = dim.literal if dim.literal is not None else labels_get(labels, dim.label)
    result = list(current.items())
    if le is not None:
        result.append(("le", le))
    return result


def labels_get(labels: list[tuple[str, str]], name: str | None) -> str:
    for k, v in labels:
        if k == name:
            return v
    return "unknown"


def _flush(out: list[str], order: list[str], sums: dict[str, float]) -> None:
    for key in order:
        out.append(f"{key} {_number(sums[key])}")
    order.clear()
    sums.clear()
