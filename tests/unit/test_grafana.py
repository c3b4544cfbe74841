"""The Grafana dashboards in deploy/grafana/: well-formed dashboard JSON whose every query names a metric
and labels that our sidecars actually export (read from a real exposition of fastpath.stats)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from fastpath.stats import Identity, Stats

DASHBOARDS = sorted((Path(__file__).resolve().parents[2] / "deploy" / "grafana").glob("*.json"))
METRIC = re.compile(r"\b(istio_[a-z_]+)")
SELECTOR = re.compile(r"istio_[a-z_]+\{([^}]*)\}")
MATCHER = re.compile(r"([a-z_]+)\s*(?:=~|!~|!=|=)")
BY = re.compile(r"by \(([^)]*)\)")
LABEL_VALUES = re.compile(r"label_values\((?:[a-z_]+(?:\{[^}]*\})?,\s*)?([a-z_]+)\)")


def exported() -> tuple[set[str], set[str]]:
    """Metric names and label names of a sidecar's exposition with HTTP and TCP traffic in it."""
    stats = Stats(Identity(workload="web", namespace="default", app="web"))
    exchange = SimpleNamespace(
        cluster=SimpleNamespace(name="outbound|80||api.default.svc.cluster.local"),
        head=SimpleNamespace(host=b"api"),
        grpc_status=None,
        conn=SimpleNamespace(peer_principal=""),
        status=200,
        flags="-",
        start=time.monotonic(),
        bytes_received=10,
        bytes_sent=20,
    )
    stats.http_done("source", exchange)
    stats.http_done("destination", exchange)
    for metric in (
        "istio_tcp_sent_bytes_total",
        "istio_tcp_received_bytes_total",
        "istio_tcp_connections_opened_total",
        "istio_tcp_connections_closed_total",
    ):
        stats.tcp_add(metric, "source", "outbound|5432||db.default.svc.cluster.local", "-", 1.0)
    names: set[str] = set()
    labels: set[str] = {"le"}
    for line in stats.prometheus().splitlines():
        if line.startswith("#") or not line:
            continue
        name, _, rest = line.partition("{")
        names.add(name)
        labels.update(re.findall(r'([a-z_]+)="', rest))
    return names, labels


NAMES, LABELS = exported()


def queries(dashboard: dict[str, Any]) -> list[str]:
    out = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    out += [v["definition"] for v in dashboard["templating"]["list"] if v.get("type") == "query"]
    return out


@pytest.mark.parametrize("path", DASHBOARDS, ids=[p.stem for p in DASHBOARDS])
def test_dashboard_is_well_formed(path: Path) -> None:
    d = json.loads(path.read_text())
    assert d["uid"].startswith("mizzen-") and d["title"].startswith("Mizzen / ")
    assert isinstance(d["schemaVersion"], int) and d["panels"]
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    for p in d["panels"]:
        assert p["type"] in ("timeseries", "stat") and p["title"]
        assert set(p["gridPos"]) == {"x", "y", "w", "h"} and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
        assert p["targets"] and all(t["refId"] and t["expr"] for t in p["targets"])
        assert p["datasource"]["uid"] == "${datasource}"
    names = {v["name"] for v in d["templating"]["list"]}
    assert "datasource" in names
    for q in queries(d):
        for var in re.findall(r"\$([a-z_]+)", q):
            assert var in names, f"{path.name}: {q} uses ${var}, which the dashboard does not define"


@pytest.mark.parametrize("path", DASHBOARDS, ids=[p.stem for p in DASHBOARDS])
def test_every_query_names_what_our_sidecars_export(path: Path) -> None:
    for q in queries(json.loads(path.read_text())):
        metrics = METRIC.findall(q)
        assert metrics, q
        for m in metrics:
            assert m in NAMES, f"{path.name}: {m} is not exported by mizzen-proxy ({q})"
        used = {name for sel in SELECTOR.findall(q) for name in MATCHER.findall(sel)}
        used |= {label.strip() for group in BY.findall(q) for label in group.split(",")}
        used |= set(LABEL_VALUES.findall(q))
        assert used <= LABELS, f"{path.name}: labels {sorted(used - LABELS)} are not exported ({q})"


def test_the_three_views_are_there() -> None:
    assert [p.stem for p in DASHBOARDS] == ["mizzen-mesh", "mizzen-service", "mizzen-workload"]
