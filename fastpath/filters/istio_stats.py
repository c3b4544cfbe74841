"""Istio's stats filter config (``istio.stats``, ``stats.PluginConfig`` in a TypedStruct): the metric
overrides of the Telemetry API, per HCM.

The filter does nothing per request (it is passive: no route names it, so the connection never runs it).
Its config says which Istio metrics to drop and which labels to remove or set; ``fastpath.metric_overrides``
applies that to the Prometheus exposition when it is scraped, for the reporter of the HCM's listener
(outbound listeners report as ``source``, inbound ones as ``destination``).
"""

from __future__ import annotations

from typing import Any

from fastpath import filters
from fastpath.config.errors import Resource, join
from fastpath.metric_overrides import METRICS, MetricConfig, compile_dimension

PLUGIN_CONFIG = "type.googleapis.com/stats.PluginConfig"


class IstioStatsFilter(filters.HttpFilter):
    name = "istio.stats"
    passive = True

    def __init__(self, metrics: tuple[MetricConfig, ...]) -> None:
        self.metrics = metrics


def compile_plugin_config(res: Resource, path: str, value: dict[str, Any]) -> IstioStatsFilter:
    unknown = sorted(set(value) - {"metrics"})
    if unknown:
        raise res.error(join(path, unknown[0]), "not supported by mizzen-proxy")
    out = []
    for i, m in enumerate(value.get("metrics") or []):
        mpath = f"{path}.metrics[{i}]"
        if not isinstance(m, dict):
            raise res.error(mpath, "must be an object")
        extra = sorted(set(m) - {"name", "dimensions", "tags_to_remove", "drop"})
        if extra:
            raise res.error(join(mpath, extra[0]), "not supported by mizzen-proxy")
        name = str(m.get("name") or "")
        if name and name not in METRICS:
            raise res.error(
                join(mpath, "name"), f"{name!r} is not one of Istio's metrics ({', '.join(METRICS)})"
            )
        dims: dict[str, Any] = {}
        for tag, expr in (m.get("dimensions") or {}).items():
            try:
                dims[str(tag)] = compile_dimension(str(expr))
            except ValueError as exc:
                raise res.error(f"{mpath}.dimensions[{tag}]", str(exc)) from None
        out.append(
            MetricConfig(
                name=name,
                drop=bool(m.get("drop", False)),
                remove=tuple(str(t) for t in m.get("tags_to_remove") or ()),
                upsert=tuple(sorted(dims.items())),  # a deterministic label order
            )
        )
    return IstioStatsFilter(tuple(out))


filters.register_struct(PLUGIN_CONFIG)(compile_plugin_config)
