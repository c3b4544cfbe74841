"""The agent's probes: ``/readyz`` (plugin installed and chained) and ``/healthz`` (loop alive).

Readiness gates the DaemonSet's rollout and, through it, anything that waits for
capture to be in place before scheduling meshed pods on the node.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from aiohttp import web

from cni.agent.reconcile import Status


class Health:
    """What the probes answer, fed by the watch loop."""

    def __init__(self, stale_after: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.status = Status(False, "starting")
        self.stale_after = stale_after
        self._clock = clock
        self._beat = clock()

    def record(self, status: Status) -> None:
        """A pass of the loop finished with ``status``."""
        self.status = status
        self._beat = self._clock()

    def alive(self) -> tuple[bool, str]:
        """Alive while passes keep finishing; a pass stuck on I/O (a hung mount) makes it fail."""
        age = self._clock() - self._beat
        if age > self.stale_after:
            return False, f"no pass of the watch loop finished for {age:.0f}s"
        return True, "ok"


def make_app(health: Health) -> web.Application:
    """The probe endpoints as an aiohttp application."""

    async def readyz(_: web.Request) -> web.Response:
        status = health.status
        return web.Response(status=200 if status.ready else 503, text=status.reason + "\n")

    async def healthz(_: web.Request) -> web.Response:
        ok, reason = health.alive()
        return web.Response(status=200 if ok else 503, text=reason + "\n")

    app = web.Application()
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/healthz", healthz)
    return app


class HealthServer:
    """Serves :func:`make_app` on ``host:port`` (port 0 picks a free one, see :attr:`port`)."""

    def __init__(self, health: Health, host: str, port: int) -> None:
        self._runner = web.AppRunner(make_app(health), access_log=None)
        self.host = host
        self.port = port

    async def start(self) -> int:
        """Start listening; returns the bound port."""
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        if self._runner.addresses:
            self.port = self._runner.addresses[0][1]
        return self.port

    async def stop(self) -> None:
        """Stop listening and close open connections."""
        await self._runner.cleanup()
