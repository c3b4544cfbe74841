"""The debug and monitoring endpoint (istiod's 15014): readiness, Prometheus metrics, proxy status, the push
log, invalid config, and what each proxy was sent."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from controller import dashboard
from controller.sources.base import KINDS
from controller.xds.dump import dump
from controller.xds.server import resources_of

if TYPE_CHECKING:
    from controller.app import Controller


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS),
        status=status,
        content_type="application/json",
    )


class DebugServer:
    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self._runner: web.AppRunner | None = None
        app = web.Application()
        app.router.add_get("/ready", self.ready)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/debug/syncz", self.syncz)
        app.router.add_get("/debug/push_log", self.push_log)
        app.router.add_get("/debug/invalid", self.invalid)
        app.router.add_get("/debug/warnings", self.warnings)
        app.router.add_get("/debug/config_dump", self.config_dump)
        dashboard.register(app, controller)  # /dashboard, /debug/graph, /debug/tap
        app.router.add_get("/debug/configz", self.configz)
        self.app = app

    async def start(self, host: str, port: int) -> int:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        addresses = self._runner.addresses
        return int(addresses[0][1]) if addresses else port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def ready(self, request: web.Request) -> web.Response:
        if self.controller.ready.is_set():
            return web.Response(text="ready\n")
        return web.Response(text="not synced yet\n", status=503)

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.controller.metrics.render(), content_type="text/plain", charset="utf-8")

    async def syncz(self, request: web.Request) -> web.Response:
        """Per proxy and type: SYNCED / STALE / NOT SENT / NACKED (with the proxy's error)."""
        return _json(self.controller.ads.status())

    async def push_log(self, request: web.Request) -> web.Response:
        limit = int(request.query.get("limit", "200"))
        return _json(self.controller.push_log.tail(limit, request.query.get("proxy")))

    async def invalid(self, request: web.Request) -> web.Response:
        return _json(self.controller.invalid())

    async def warnings(self, request: web.Request) -> web.Response:
        return _json(self.controller.warnings())

    async def configz(self, request: web.Request) -> web.Response:
        """The config in force: the snapshot version, the last one translated and pushed to every proxy,
        and each object with the version at which it last changed."""
        snapshot = self.controller.state.snapshot
        objects = {
            str(key): stamped.revision for kind in KINDS for key, stamped in snapshot.items(kind).items()
        }
        return _json(
            {"version": snapshot.version, "pushed": self.controller.settled_version, "objects": objects}
        )

    async def config_dump(self, request: web.Request) -> web.Response:
        proxy = request.query.get("proxy")
        matches = [
            c for c in self.controller.ads.connections.values() if proxy in (c.node.id, c.id, c.node.pod)
        ]
        if not matches:
            return _json({"error": f"no connected proxy {proxy!r}"}, status=404)
        return _json(dump(resources_of(matches[0])))
