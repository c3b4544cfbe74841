"""The service graph: workloads and services as nodes, requests between them as edges with their rate,
success rate and p99 latency, computed from Istio's metrics.

The counters come from the sidecars' own exposition (the controller scrapes each connected sidecar's
15020 ``/stats/prometheus``, see :class:`Scraper`) or from a Prometheus server (``prometheus_graph``).
Rates are differences between two scrapes; the p99 is read from the histogram buckets' increase, as
Prometheus' ``histogram_quantile`` does. Clients report the workload -> service edges
(``reporter="source"``), servers the service -> workload ones (``reporter="destination"``).
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
UNKNOWN = "unknown"

EdgeKey = tuple[str, str]  # (source node id, target node id)


@dataclass
class EdgeCounts:
    requests: float = 0.0
    errors: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)  # le -> cumulative count


def _labels(text: str | None) -> dict[str, str]:
    return {k: v.replace('\\"', '"').replace("\\\\", "\\") for k, v in _LABEL.findall(text or "")}


def workload_id(namespace: str, workload: str) -> str:
    return f"workload:{namespace}/{workload}"


def service_id(host: str) -> str:
    return f"service:{host}"


def _edge(labels: Mapping[str, str]) -> EdgeKey | None:
    reporter = labels.get("reporter")
    service = labels.get("destination_service", UNKNOWN)
    if reporter == "source":
        src = workload_id(
            labels.get("source_workload_namespace", UNKNOWN), labels.get("source_workload", UNKNOWN)
        )
        return src, service_id(service)
    if reporter == "destination":
        dst = workload_id(
            labels.get("destination_workload_namespace", UNKNOWN), labels.get("destination_workload", UNKNOWN)
        )
        return service_id(service), dst
    return None


def parse_exposition(text: str) -> dict[EdgeKey, EdgeCounts]:
    """Istio's request counters and duration histograms of one exposition, summed per edge."""
    out: dict[EdgeKey, EdgeCounts] = defaultdict(EdgeCounts)
    for line in text.splitlines():
        if not line.startswith("istio_request"):
            continue
        m = _SAMPLE.match(line)
        if m is None:
            continue
        name, labels_text, value_text = m.groups()
        try:
            value = float(value_text)
        except ValueError:
            continue
        labels = _labels(labels_text)
        key = _edge(labels)
        if key is None:
            continue
        if name == "istio_requests_total":
            counts = out[key]
            counts.requests += value
            code = labels.get("response_code", "")
            if code.startswith("5") or code == "0":
                counts.errors += value
        elif name == "istio_request_duration_milliseconds_bucket":
            le = labels.get("le", "+Inf")
            bound = math.inf if le == "+Inf" else float(le)
            counts = out[key]
            counts.buckets[bound] = counts.buckets.get(bound, 0.0) + value
    return dict(out)


def quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """``histogram_quantile``: linear interpolation inside the bucket holding the q-th observation."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    total = buckets[bounds[-1]]
    rank = q * total
    previous_bound, previous_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return previous_bound  # beyond the last finite bucket: its bound, as Prometheus says
            if count == previous_count:
                return bound
            return previous_bound + (bound - previous_bound) * (rank - previous_count) / (
                count - previous_count
            )
        previous_bound, previous_count = bound, count
    return previous_bound


def _merge(parts: Iterable[Mapping[EdgeKey, EdgeCounts]]) -> dict[EdgeKey, EdgeCounts]:
    out: dict[EdgeKey, EdgeCounts] = defaultdict(EdgeCounts)
    for part in parts:
        for key, counts in part.items():
            target = out[key]
            target.requests += counts.requests
            target.errors += counts.errors
            for le, n in counts.buckets.items():
                target.buckets[le] = target.buckets.get(le, 0.0) + n
    return dict(out)


def _node(node_id: str) -> dict[str, Any]:
    kind, _, rest = node_id.partition(":")
    if kind == "workload":
        namespace, _, name = rest.partition("/")
        return {"id": node_id, "kind": kind, "namespace": namespace, "name": name}
    parts = rest.split(".")
    namespace = parts[1] if len(parts) > 2 and parts[2] == "svc" else ""
    return {"id": node_id, "kind": kind, "namespace": namespace, "name": parts[0], "host": rest}


def build_graph(
    current: Mapping[EdgeKey, EdgeCounts], previous: Mapping[EdgeKey, EdgeCounts] | None, window: float
) -> dict[str, Any]:
    """Nodes and edges; rates over ``window`` seconds when a previous reading is given."""
    nodes: dict[str, dict[str, Any]] = {}
    edges = []
    for (src, dst), now in sorted(current.items()):
        before = (previous or {}).get((src, dst), EdgeCounts())
        delta = max(0.0, now.requests - before.requests)
        errors = max(0.0, now.errors - before.errors)
        if previous is not None and delta > 0:
            buckets = {le: max(0.0, n - before.buckets.get(le, 0.0)) for le, n in now.buckets.items()}
            base = delta
        else:  # no increase yet (or a first reading): the figures since the sidecars started
            buckets, base, errors = now.buckets, now.requests, now.errors
        p99 = quantile(0.99, buckets)
        for node_id in (src, dst):
            nodes.setdefault(node_id, _node(node_id))
        edges.append(
            {
                "source": src,
                "target": dst,
                "requests": now.requests,
                "rps": round(delta / window, 3) if previous is not None and window > 0 else 0.0,
                "success_rate": round(1.0 - errors / base, 4) if base else None,
                "p99_ms": round(p99, 2) if p99 is not None else None,
            }
        )
    return {"nodes": list(nodes.values()), "edges": edges}


class Scraper:
    """Reads every connected sidecar's 15020 exposition (concurrently, bounded) and keeps the last two
    readings, so that rates come from their difference. Scrapes happen when the graph is asked for, at
    most once per ``min_interval``: nothing is scraped while no one looks."""

    def __init__(self, port: int = 15020, min_interval: float = 1.0, timeout: float = 2.0) -> None:
        self.port = port
        self.min_interval = min_interval
        self.timeout = timeout
        self.readings: list[tuple[float, dict[EdgeKey, EdgeCounts], int]] = []
        self._lock = asyncio.Lock()

    async def graph(self, addresses: Iterable[str]) -> dict[str, Any]:
        async with self._lock:
            if not self.readings or time.monotonic() - self.readings[-1][0] >= self.min_interval:
                await self._scrape(list(addresses))
        at, current, proxies = self.readings[-1]
        previous = self.readings[0] if len(self.readings) > 1 else None
        window = at - previous[0] if previous is not None else 0.0
        graph = build_graph(current, previous[1] if previous is not None else None, window)
        graph.update({"window_s": round(window, 3), "proxies_scraped": proxies, "source": "sidecars"})
        return graph

    async def _scrape(self, addresses: list[str]) -> None:
        import aiohttp

        limit = asyncio.Semaphore(32)
        timeout = aiohttp.ClientTimeout(total=self.timeout)

        async def one(session: aiohttp.ClientSession, ip: str) -> dict[EdgeKey, EdgeCounts] | None:
            host = f"[{ip}]" if ":" in ip else ip
            async with limit:
                try:
                    async with session.get(f"http://{host}:{self.port}/stats/prometheus") as resp:
                        if resp.status != 200:
                            return None
                        return parse_exposition(await resp.text())
                except (aiohttp.ClientError, TimeoutError, OSError):
                    return None

        async with aiohttp.ClientSession(timeout=timeout) as session:
            results = await asyncio.gather(*(one(session, ip) for ip in addresses))
        parts = [r for r in results if r is not None]
        self.readings.append((time.monotonic(), _merge(parts), len(parts)))
        del self.readings[:-2]


async def prometheus_graph(url: str, window: str = "1m") -> dict[str, Any]:
    """The same graph from a Prometheus server that scrapes the sidecars (Istio's metric names)."""
    import aiohttp

    queries = {
        "rps": f"sum by (reporter, source_workload, source_workload_namespace, destination_service, "
        f"destination_workload, destination_workload_namespace) (rate(istio_requests_total[{window}]))",
        "errors": f"sum by (reporter, source_workload, source_workload_namespace, destination_service, "
        f"destination_workload, destination_workload_namespace) "
        f'(rate(istio_requests_total{{response_code=~"5.."}}[{window}]))',
        "p99": "histogram_quantile(0.99, sum by (le, reporter, source_workload, source_workload_namespace, "
        "destination_service, destination_workload, destination_workload_namespace) "
        f"(rate(istio_request_duration_milliseconds_bucket[{window}])))",
    }
    results: dict[str, dict[EdgeKey, float]] = {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        for name, query in queries.items():
            async with session.get(f"{url.rstrip('/')}/api/v1/query", params={"query": query}) as resp:
                body = await resp.json(content_type=None)
            if resp.status != 200 or body.get("status") != "success":
                raise LookupError(f"Prometheus at {url}: {body.get('error') or resp.status}")
            values: dict[EdgeKey, float] = {}
            for item in body["data"]["result"]:
                key = _edge(item.get("metric") or {})
                value = float(item["value"][1])
                if key is not None and not math.isnan(value):
                    values[key] = values.get(key, 0.0) + value
            results[name] = values
    nodes: dict[str, dict[str, Any]] = {}
    edges = []
    for key, rps in sorted(results["rps"].items()):
        for node_id in key:
            nodes.setdefault(node_id, _node(node_id))
        errors = results["errors"].get(key, 0.0)
        p99 = results["p99"].get(key)
        edges.append(
            {
                "source": key[0],
                "target": key[1],
                "requests": None,
                "rps": round(rps, 3),
                "success_rate": round(1.0 - errors / rps, 4) if rps else None,
                "p99_ms": round(p99, 2) if p99 is not None else None,
            }
        )
    return {"nodes": list(nodes.values()), "edges": edges, "window_s": None, "source": "prometheus"}
