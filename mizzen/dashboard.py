"""``mizzen dashboard``: the controller's dashboard page, served from this machine.

A small local web server (127.0.0.1, a free port unless ``--port``) serves the page and forwards its API
calls (``/debug/...``, the tap stream included) to the controller: at ``--controller-address``, the
local mesh's, or through the API server's pod proxy. With ``--prometheus URL`` the service graph comes
from that Prometheus instead of the sidecars. The controller serves the same page itself at
``http://<controller>:15014/dashboard``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import webbrowser
from typing import Any

from aiohttp import ClientSession, ClientTimeout, web

from controller.dashboard import STATIC
from controller.dashboard.graph import prometheus_graph


def add_parser(top: Any) -> None:
    p = top.add_parser("dashboard", help="open the mesh dashboard (service graph, proxies, tap)")
    p.add_argument("--address", default="127.0.0.1", help="where the local server listens")
    p.add_argument("--port", type=int, default=0, help="local port (default: a free one)")
    p.add_argument("--prometheus", default=None, metavar="URL", help="take the service graph from Prometheus")
    p.add_argument("--no-browser", action="store_true", help="print the URL, do not open a browser")
    p.add_argument(
        "--controller-address", help="HOST:PORT of a controller's debug port (default: via the API)"
    )
    p.add_argument("--mesh-namespace", default="mizzen-system")
    p.add_argument("--kubeconfig", default=None)
    p.add_argument("--context", default=None)


class Upstream:
    """Where ``/debug/...`` goes: the controller's debug port, directly or through the API server."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.session: ClientSession | None = None
        self.kube: Any = None
        self.base = f"http://{args.controller_address}" if args.controller_address else ""
        self.proxied = ""  # through the API server: the controller pod's proxy path

    async def start(self) -> None:
        self.session = ClientSession(timeout=ClientTimeout(total=None, sock_read=4000))
        if not self.base:
            from mizzen import kube

            self.kube = await kube.connect(self.args.kubeconfig, self.args.context)
            pods = await self.kube.request(
                "GET",
                f"/api/v1/namespaces/{self.args.mesh_namespace}/pods",
                query=[("labelSelector", "app=mizzen-controller")],
            )
            running = [
                p for p in pods.get("items") or () if (p.get("status") or {}).get("phase") == "Running"
            ]
            if not running:
                raise LookupError(f"no running mizzen-controller pod in namespace {self.args.mesh_namespace}")
            # One replica's view (each knows the sidecars connected to it); `mizzen tap` merges them all.
            name = running[0]["metadata"]["name"]
            self.proxied = f"/api/v1/namespaces/{self.args.mesh_namespace}/pods/{name}:15014/proxy"

    async def forward(self, request: web.Request) -> web.StreamResponse:
        query = tuple(request.query.items())
        if self.kube is not None:
            return await self._forward_kube(request, query)
        assert self.session is not None
        async with self.session.get(f"{self.base}{request.path}", params=list(query)) as upstream:
            resp = web.StreamResponse(
                status=upstream.status,
                headers={"content-type": upstream.headers.get("content-type", "application/json")},
            )
            await resp.prepare(request)
            async for chunk in upstream.content.iter_any():
                await resp.write(chunk)
            await resp.write_eof()
            return resp

    async def _forward_kube(
        self, request: web.Request, query: tuple[tuple[str, str], ...]
    ) -> web.StreamResponse:
        from mizzen.kube import ApiError

        path = f"{self.proxied}{request.path}"
        try:
            if request.path != "/debug/tap":
                return web.json_response(await self.kube.request("GET", path, query=list(query)))
            resp = web.StreamResponse(headers={"content-type": "application/x-ndjson"})
            await resp.prepare(request)
            async for line in self.kube.stream_lines(path, query, read_timeout=4000):
                await resp.write(line if line.endswith(b"\n") else line + b"\n")
            await resp.write_eof()
            return resp
        except ApiError as exc:
            return web.json_response({"error": str(exc)}, status=exc.code or 502)

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
        if self.kube is not None:
            await self.kube.close()


def make_app(upstream: Upstream, prometheus: str | None = None) -> web.Application:
    app = web.Application()

    async def index(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html")

    async def graph(request: web.Request) -> web.StreamResponse:
        if prometheus is None:
            return await upstream.forward(request)
        try:
            return web.json_response(await prometheus_graph(prometheus))
        except (LookupError, OSError) as exc:
            return web.json_response({"error": str(exc)}, status=502)

    async def root(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/dashboard")

    app.router.add_get("/", root)
    app.router.add_get("/dashboard", index)
    app.router.add_static("/dashboard/static", STATIC)
    app.router.add_get("/debug/graph", graph)
    for path in ("/debug/syncz", "/debug/push_log", "/debug/tap", "/debug/taps"):
        app.router.add_get(path, upstream.forward)
    return app


async def serve(args: argparse.Namespace) -> None:
    upstream = Upstream(args)
    await upstream.start()
    runner = web.AppRunner(make_app(upstream, args.prometheus), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, args.address, args.port)
    await site.start()
    port = runner.addresses[0][1]
    url = f"http://{args.address}:{port}/dashboard"
    print(f"Mizzen dashboard: {url}  (Ctrl-C to stop)", flush=True)
    if not args.no_browser:
        webbrowser.open(url)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        await upstream.close()


def run(args: argparse.Namespace) -> int:
    try:
        asyncio.run(serve(args))
    except KeyboardInterrupt:
        return 0
    except (LookupError, OSError) as exc:
        print(f"mizzen dashboard: {exc}", file=sys.stderr)
        return 1
    return 0
