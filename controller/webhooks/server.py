"""The webhook server: HTTPS (istiod's 15017, the Service's 443) serving ``/inject`` and ``/validate``.

Started from the controller in a few lines (:func:`start_webhooks`); it serves once a certificate is at
hand and swaps certificates in place as they are renewed (new handshakes get the new one).
"""

from __future__ import annotations

import asyncio
import os
import ssl
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson
from aiohttp import web

from controller.inject.config import InjectConfig
from controller.inject.webhook import Injector
from controller.webhooks import admission, validate
from controller.webhooks.keeper import Serving
from mizzen import logs

log = logs.get("webhooks")

DEFAULT_PORT = 15017


def _load_chain(context: ssl.SSLContext, serving: Serving) -> None:
    # ssl only loads certificates from files: a private temporary directory, removed at once.
    with tempfile.TemporaryDirectory(prefix="mizzen-webhook-") as tmp:
        cert, key = Path(tmp) / "tls.crt", Path(tmp) / "tls.key"
        cert.write_bytes(serving.cert)
        fd = os.open(key, os.O_WRONLY | os.O_CREAT, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(serving.key)
        context.load_cert_chain(cert, key)


class WebhookServer:
    """Answers AdmissionReviews. ``port`` may be 0 (tests): read the bound one after :meth:`serve`."""

    def __init__(self, injector: Injector, *, host: str = "0.0.0.0", port: int = DEFAULT_PORT) -> None:
        self.injector = injector
        self.host = host
        self.port = port
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.loaded = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.reviews = 0
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_post("/inject", self._inject)
        app.router.add_post("/validate", self._validate)
        app.router.add_get("/healthz", self._healthz)
        self.app = app

    def use(self, serving: Serving) -> None:
        """Present this certificate from the next handshake on (the keepers call it)."""
        _load_chain(self.context, serving)
        self.loaded.set()

    async def serve(self) -> int:
        """Listen once a certificate is loaded; returns the bound port."""
        await self.loaded.wait()
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=self.context)
        await site.start()
        addresses = self._runner.addresses
        self.port = int(addresses[0][1]) if addresses else self.port
        log.info("webhooks serving", port=self.port, paths=["/inject", "/validate"])
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _inject(self, request: web.Request) -> web.Response:
        return await self._answer(request, self.injector.review)

    async def _validate(self, request: web.Request) -> web.Response:
        return await self._answer(request, validate.review)

    async def _answer(
        self, request: web.Request, handler: Callable[[admission.Request], admission.Verdict]
    ) -> web.Response:
        self.reviews += 1
        try:
            review = admission.parse(await request.read())
        except admission.ReviewError as exc:
            return web.Response(status=400, text=f"{request.path}: {exc}\n")
        verdict = handler(review)
        return web.Response(
            body=orjson.dumps(admission.respond(review, verdict)), content_type="application/json"
        )


@dataclass
class WebhookOptions:
    """How the controller runs its webhooks (from mizzen-controller's flags)."""

    port: int = DEFAULT_PORT
    inject_config: Path | None = None
    cert_mode: str = "secret"  # "secret" (self-managed) or "files" (cert-manager)
    cert_dir: Path | None = None
    namespace: str = "mizzen-system"
    secret: str = "mizzen-webhook-certs"
    service: str = "mizzen-controller"
    mutating: str = "mizzen-sidecar-injector"
    validating: str = "mizzen-validator"
    lease: str = "mizzen-controller-leader"
    identity: str = ""


def native_sidecars_supported(git_version: str) -> bool:
    """Native sidecars (restartable init containers) are on by default from Kubernetes 1.29."""
    digits = git_version.lstrip("v").split("-")[0].split("+")[0].split(".")
    try:
        major, minor = int(digits[0]), int(digits[1])
    except (IndexError, ValueError):
        return False
    return (major, minor) >= (1, 29)


def resolve_native(config: InjectConfig, git_version: str | None) -> bool:
    if config.native_sidecar != "auto":
        return bool(config.native_sidecar)
    return native_sidecars_supported(git_version) if git_version else True
