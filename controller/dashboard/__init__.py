"""The dashboard and the observability endpoints on the controller's debug port (15014).

- ``/dashboard``: one page (plain HTML, JS and SVG from ``static/``, no build step): the service graph,
  per-proxy sync status with the push log, and a live tap view.
- ``/debug/graph``: the service graph as JSON (from the sidecars' Istio metrics, see ``graph``).
- ``/debug/tap?target=deploy/NAME&namespace=NS[&to=&path=&method=&rate=&duration=]``: a live tap, as
  JSON lines, relayed from the target's sidecars (``controller.tap``); ``/debug/taps``: the sidecars'
  tap channels.

``mizzen dashboard`` serves the same page from the user's machine and forwards these paths to the
controller (or answers ``/debug/graph`` from a Prometheus server).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from controller.dashboard.graph import Scraper

if TYPE_CHECKING:
    from controller.app import Controller

STATIC = Path(__file__).parent / "static"
TAP_PARAMS = ("to", "path", "method", "rate", "duration")


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS),
        status=status,
        content_type="application/json",
    )


def register(app: web.Application, controller: Controller) -> None:
    """Add the dashboard's routes to the debug server's application."""
    scraper = Scraper()

    async def index(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html")

    async def graph(request: web.Request) -> web.Response:
        addresses = {
            c.node.ip for c in controller.ads.connections.values() if c.node.ip and not c.node.proxyless
        }
        return _json(await scraper.graph(sorted(addresses)))

    async def taps(request: web.Request) -> web.Response:
        return _json(controller.tap.status())

    async def tap(request: web.Request) -> web.StreamResponse:
        from controller.tap import TapError

        query = request.query
        target = query.get("target", "")
        namespace = query.get("namespace", "default")
        if not target:
            return _json({"error": "target is required (deploy/NAME, workload/NAME or pod/NAME)"}, 400)
        try:
            channels = controller.tap.targets(target, namespace)
        except TapError as exc:
            return _json({"error": str(exc)}, 400)
        if not channels:
            return _json({"error": f"no connected sidecar of {target} in namespace {namespace}"}, 404)
        params = {k: query[k] for k in TAP_PARAMS if query.get(k)}
        resp = web.StreamResponse(
            headers={"content-type": "application/x-ndjson", "cache-control": "no-cache"}
        )
        await resp.prepare(request)
        await resp.write(
            orjson.dumps({"tap": target, "namespace": namespace, "proxies": [c.id for c in channels]}) + b"\n"
        )
        events = controller.tap.tap(channels, params)
        try:
            while True:
                nxt = asyncio.ensure_future(events.__anext__())
                # Wake up every second to notice a watcher that left while nothing was tapped.
                while not nxt.done():
                    await asyncio.wait({nxt}, timeout=1.0)
                    transport = request.transport
                    if not nxt.done() and (transport is None or transport.is_closing()):
                        nxt.cancel()
                        await asyncio.gather(nxt, return_exceptions=True)
                        return resp
                try:
                    event = nxt.result()
                except StopAsyncIteration:
                    break
                except TapError as exc:
                    await resp.write(orjson.dumps({"error": str(exc)}) + b"\n")
                    break
                await resp.write(orjson.dumps(event) + b"\n")
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            await events.aclose()  # stops the sessions in the sidecars
        await resp.write_eof()
        return resp

    app.router.add_get("/dashboard", index)
    app.router.add_get("/dashboard/", index)
    app.router.add_static("/dashboard/static", STATIC)
    app.router.add_get("/debug/graph", graph)
    app.router.add_get("/debug/taps", taps)
    app.router.add_get("/debug/tap", tap)
