"""The sidecar's endpoints: Envoy-style admin on 127.0.0.1:15000, readiness on 15021, metrics on 15020."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import time
from collections.abc import Mapping
from typing import Any

import orjson

import fastpath
from fastpath import app_health, metric_overrides, tap
from fastpath.app_health import Prober
from fastpath.config import SHORT
from fastpath.localhttp import Reply, Routes
from fastpath.proxy import Proxy
from fastpath.stats import merge_expositions
from fastpath.workers import ask_peers
from mizzen import logs
from mizzen.configdump import resource_dict

_LEVELS = {
    "trace": "DEBUG",
    "debug": "DEBUG",
    "info": "INFO",
    "warning": "WARNING",
    "error": "ERROR",
    "critical": "CRITICAL",
    "off": "CRITICAL",
}
TEXT = b"text/plain"
JSON = b"application/json"


def _state(proxy: Proxy) -> str:
    """Envoy's server states, as /ready and /server_info report them."""
    if proxy.draining:
        return "DRAINING"
    return "LIVE" if proxy.ready.is_set() else "PRE_INITIALIZING"


def _text(lines: list[str]) -> Reply:
    return 200, ("\n".join(lines) + "\n").encode(), TEXT


def admin_routes(
    proxy: Proxy, quit_event: asyncio.Event, worker: int = 0, workers: int = 1, supervisor: int = 0
) -> Routes:
    """Envoy's admin endpoints. With several workers, worker 0 speaks for all: metrics are summed and
    drains and stops reach every worker."""

    def ready(_: dict[str, str]) -> Reply:
        state = _state(proxy)
        return (200 if state == "LIVE" else 503), (state + "\n").encode(), TEXT

    def config_dump(_: dict[str, str]) -> Reply:
        dump: dict[str, Any] = {"version": proxy.config.version}
        for type_url, resources in proxy.config.raw.items():
            dump[SHORT.get(type_url, type_url)] = [resource_dict(m) for m in resources.values()]
        return 200, orjson.dumps(dump), JSON

    def stats(_: dict[str, str]) -> Reply:
        lines = [f"{k}: {v}" for k, v in sorted(proxy.stats.named.items())]
        for cluster in proxy.clusters.clusters.values():
            for stat, value in sorted(cluster.stats.items()):
                lines.append(f"cluster.{cluster.name}.{stat}: {value}")
        lines.append(f"server.total_connections: {proxy.active_connections}")
        lines.append(f"server.state: {0 if proxy.ready.is_set() and not proxy.draining else 1}")
        return _text(lines)

    def clusters(_: dict[str, str]) -> Reply:
        lines = []
        for name, cluster in sorted(proxy.clusters.clusters.items()):
            b = cluster.breakers
            lines.append(f"{name}::default_priority::max_connections::{b.max_connections}")
            lines.append(f"{name}::default_priority::max_pending_requests::{b.max_pending_requests}")
            lines.append(f"{name}::default_priority::max_requests::{b.max_requests}")
            lines.append(f"{name}::default_priority::max_retries::{b.max_retries}")
            for host in cluster.hosts.values():
                prefix = f"{name}::{host.label}"
                lines.append(f"{prefix}::cx_active::{host.connections}")
                lines.append(f"{prefix}::rq_active::{host.active_requests}")
                lines.append(f"{prefix}::weight::{host.weight}")
                # Out until the detector's interval tick brings it back, even past ejected_until.
                health = "/failed_outlier_check" if host.ejected_until else "healthy"
                lines.append(f"{prefix}::health_flags::{health}")
        return _text(lines)

    def server_info(_: dict[str, str]) -> Reply:
        xds = proxy.xds
        info = {
            "state": _state(proxy),
            "uptime_s": round(time.time() - proxy.stats.started, 3),
            "identity": dataclasses.asdict(proxy.stats.identity),
            "compiled": fastpath.compiled(),
            "config_version": proxy.config.version,
            "active_connections": proxy.active_connections,
            "xds": xds.status() if xds is not None else None,
            "taps": tap.active(),
        }
        return 200, orjson.dumps(info), JSON

    def tap_stream(params: dict[str, str]) -> Any:
        try:
            tap.parse_params(params)
        except tap.TapError as exc:
            return 400, f"{exc}\n".encode(), TEXT
        return tap.admin_stream(params)

    def quitquitquit(_: dict[str, str]) -> Reply:
        if workers > 1 and worker == 0:
            os.kill(supervisor, signal.SIGTERM)  # the supervisor stops every worker
        quit_event.set()
        return 200, b"OK\n", TEXT

    async def drain_listeners(_: dict[str, str]) -> Reply:
        proxy.stop_listening()
        if workers > 1 and worker == 0:
            await ask_peers(supervisor, workers, "POST", "/drain_listeners")
        return 200, b"OK\n", TEXT

    def logging_(params: dict[str, str]) -> Reply:
        level = params.get("level")
        if level is not None:
            if level not in _LEVELS:
                return 400, f"unknown level {level!r}\n".encode(), TEXT
            logs.setup(_LEVELS[level])
        active = logging.getLevelName(logging.getLogger().level).lower()
        return 200, f"active level: {active}\n".encode(), TEXT

    routes = Routes()
    routes.get("/ready", ready)
    routes.get("/server_info", server_info)
    routes.get("/config_dump", config_dump)
    routes.get("/stats", stats)
    routes.get("/stats/prometheus", lambda _: prometheus(proxy, workers if worker == 0 else 1, supervisor))
    routes.get("/clusters", clusters)
    routes.get("/tap", tap_stream)
    routes.post("/quitquitquit", quitquitquit)
    routes.post("/drain_listeners", drain_listeners)
    routes.post("/logging", logging_)
    return routes


async def prometheus(proxy: Proxy, workers: int = 1, supervisor: int = 0) -> Reply:
    text = proxy.stats.prometheus()
    if workers > 1:
        peers = await ask_peers(supervisor, workers, "GET", "/stats/prometheus")
        text = merge_expositions([text, *(b.decode() for b in peers)])
    # The Telemetry API's metric overrides (istio.stats configs in the HCMs), applied as it is scraped.
    text = metric_overrides.apply(text, metric_overrides.collect(proxy.config))
    return 200, text.encode(), b"text/plain; version=0.0.4"


def health_routes(proxy: Proxy) -> Routes:
    def ready(_: dict[str, str]) -> Reply:
        ok = proxy.ready.is_set() and not proxy.draining
        return (200, b"ok\n", TEXT) if ok else (503, b"not ready\n", TEXT)

    routes = Routes()
    routes.get("/healthz/ready", ready)
    return routes


def metrics_routes(
    proxy: Proxy, workers: int = 1, supervisor: int = 0, probers: Mapping[str, Prober] | None = None
) -> Routes:
    """Prometheus on 15020, and the app's rewritten probes (``/app-health/<container>/<kind>``)."""
    routes = Routes()
    routes.get("/stats/prometheus", lambda _: prometheus(proxy, workers, supervisor))
    for path, prober in (probers or {}).items():
        routes.get(path, _app_probe(prober))
    return routes


def _app_probe(prober: Prober) -> Any:
    async def handle(_: dict[str, str]) -> Reply:
        status, body = await app_health.run(prober)
        return status, body, TEXT

    return handle
