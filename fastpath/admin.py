"""The sidecar's HTTP endpoints: Envoy-style admin on 127.0.0.1:15000, readiness on 15021, metrics on 15020.

None of this is on the data path, so it is plain aiohttp.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import Any

from aiohttp import web
from google.protobuf import json_format

import fastpath
from fastpath.config import SHORT
from fastpath.proxy import Proxy
from mizzen import logs

_LEVELS = {
    "trace": "DEBUG",
    "debug": "DEBUG",
    "info": "INFO",
    "warning": "WARNING",
    "error": "ERROR",
    "critical": "CRITICAL",
    "off": "CRITICAL",
}


def _state(proxy: Proxy) -> str:
    """Envoy's server states, as /ready and /server_info report them."""
    if proxy.draining:
        return "DRAINING"
    return "LIVE" if proxy.ready.is_set() else "PRE_INITIALIZING"


def admin_app(proxy: Proxy, quit_event: asyncio.Event) -> web.Application:
    async def ready(_: web.Request) -> web.Response:
        state = _state(proxy)
        return web.Response(status=200 if state == "LIVE" else 503, text=state + "\n")

    async def config_dump(_: web.Request) -> web.Response:
        dump: dict[str, Any] = {"version": proxy.config.version}
        for type_url, resources in proxy.config.raw.items():
            kind = SHORT.get(type_url, type_url)
            dump[kind] = [
                json_format.MessageToDict(m, preserving_proto_field_name=True) for m in resources.values()
            ]
        return web.json_response(dump)

    async def stats(_: web.Request) -> web.Response:
        lines = [f"{k}: {v}" for k, v in sorted(proxy.stats.named.items())]
        for cluster in proxy.clusters.clusters.values():
            for stat, value in sorted(cluster.stats.items()):
                lines.append(f"cluster.{cluster.name}.{stat}: {value}")
        lines.append(f"server.total_connections: {proxy.active_connections}")
        lines.append(f"server.state: {0 if proxy.ready.is_set() and not proxy.draining else 1}")
        return web.Response(text="\n".join(lines) + "\n")

    async def clusters(_: web.Request) -> web.Response:
        now = time.monotonic()
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
                health = "/failed_outlier_check" if host.ejected_until > now else "healthy"
                lines.append(f"{prefix}::health_flags::{health}")
        return web.Response(text="\n".join(lines) + "\n")

    async def server_info(_: web.Request) -> web.Response:
        xds = getattr(proxy, "xds", None)
        info = {
            "state": _state(proxy),
            "uptime_s": round(time.time() - proxy.stats.started, 3),
            "identity": dataclasses.asdict(proxy.stats.identity),
            "compiled": fastpath.compiled(),
            "config_version": proxy.config.version,
            "active_connections": proxy.active_connections,
            "xds": xds.status() if xds is not None else None,
        }
        return web.json_response(info)

    async def quitquitquit(_: web.Request) -> web.Response:
        quit_event.set()
        return web.Response(text="OK\n")

    async def drain_listeners(_: web.Request) -> web.Response:
        proxy.stop_listening()
        return web.Response(text="OK\n")

    async def logging_(request: web.Request) -> web.Response:
        level = request.query.get("level")
        if level is not None:
            if level not in _LEVELS:
                return web.Response(status=400, text=f"unknown level {level!r}\n")
            logs.setup(_LEVELS[level])
        return web.Response(text=f"active level: {logging.getLevelName(logging.getLogger().level).lower()}\n")

    app = web.Application()
    app.router.add_get("/ready", ready)
    app.router.add_get("/server_info", server_info)
    app.router.add_get("/config_dump", config_dump)
    app.router.add_get("/stats", stats)
    app.router.add_get("/stats/prometheus", lambda _: _prometheus(proxy))
    app.router.add_get("/clusters", clusters)
    app.router.add_post("/quitquitquit", quitquitquit)
    app.router.add_post("/drain_listeners", drain_listeners)
    app.router.add_post("/logging", logging_)
    return app


async def _prometheus(proxy: Proxy) -> web.Response:
    return web.Response(text=proxy.stats.prometheus(), content_type="text/plain")


def health_app(proxy: Proxy) -> web.Application:
    async def ready(_: web.Request) -> web.Response:
        ok = proxy.ready.is_set() and not proxy.draining
        return web.Response(status=200 if ok else 503, text="ok\n" if ok else "not ready\n")

    app = web.Application()
    app.router.add_get("/healthz/ready", ready)
    return app


def metrics_app(proxy: Proxy) -> web.Application:
    app = web.Application()
    app.router.add_get("/stats/prometheus", lambda _: _prometheus(proxy))
    return app


async def serve(app: web.Application, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, reuse_address=True).start()
    return runner
