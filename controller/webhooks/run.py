"""The webhooks as one piece the controller starts and stops: server, certificate keeper, leader."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path

from controller.informer.kubeclient import KubeClient
from controller.informer.listwatch import ApiError, TransportError
from controller.inject import config as inject_config
from controller.inject.webhook import Injector
from controller.webhooks.keeper import FileKeeper, SecretKeeper
from controller.webhooks.leader import LeaseElector
from controller.webhooks.server import WebhookOptions, WebhookServer, resolve_native
from mizzen import logs

log = logs.get("webhooks")


class Webhooks:
    """``/inject`` and ``/validate`` over HTTPS, with their certificate kept current."""

    def __init__(self, options: WebhookOptions, client: KubeClient | None, *, host: str = "0.0.0.0") -> None:
        self.options = options
        self.client = client
        self.host = host
        self.server: WebhookServer | None = None
        self.elector: LeaseElector | None = None
        self.keeper: SecretKeeper | FileKeeper | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._config_path = options.inject_config
        self._config = inject_config.InjectConfig()
        self._config_stamp: float | None = None

    def _current_config(self) -> inject_config.InjectConfig:
        """The injection config, re-read when its file changes (a ConfigMap update); a bad edit keeps the
        last good config and is logged."""
        path = self._config_path
        if path is None:
            return self._config
        try:
            stamp = path.stat().st_mtime
        except OSError:
            return self._config
        if stamp != self._config_stamp:
            self._config_stamp = stamp
            try:
                self._config = inject_config.load(path)
                log.info("injection config loaded", path=str(path))
            except inject_config.ConfigError as exc:
                log.error("injection config rejected; keeping the previous one", error=str(exc))
        return self._config

    async def start(self) -> None:
        options = self.options
        config = self._current_config()
        git_version = None
        if self.client is not None:
            try:
                git_version = (await self.client.request("GET", "/version")).get("gitVersion")
            except (ApiError, TransportError, AttributeError) as exc:
                log.warning("cannot read the cluster's version; assuming native sidecars", error=str(exc))
        native = resolve_native(config, git_version)
        injector = Injector(self._current_config, native=native)
        self.server = WebhookServer(injector, host=self.host, port=options.port)
        if options.cert_mode == "files":
            self.keeper = FileKeeper(Path(options.cert_dir or "/etc/mizzen/webhook-certs"), self.server.use)
        else:
            if self.client is None:
                raise ValueError("self-managed webhook certificates need the Kubernetes API")
            self.keeper = SecretKeeper(
                self.client,
                namespace=options.namespace,
                secret=options.secret,
                service=options.service,
                webhook_configurations=(options.mutating, options.validating),
                on_change=self.server.use,
                cluster_domain=config.cluster_domain,
            )
            keeper = self.keeper

            def leading(now_leader: bool) -> None:
                keeper.leader = now_leader
                if now_leader:
                    self._tasks.append(
                        asyncio.create_task(self._sync_now(), name="webhook certs (new leader)")
                    )

            self.elector = LeaseElector(
                self.client,
                namespace=options.namespace,
                name=options.lease,
                identity=options.identity or socket.gethostname(),
                on_change=leading,
            )
            self._tasks.append(asyncio.create_task(self.elector.run(), name="webhook leader election"))
        self._tasks.append(asyncio.create_task(self.keeper.run(), name="webhook certs"))
        self._tasks.append(asyncio.create_task(self._serve(), name="webhook server"))
        log.info(
            "webhooks starting",
            native_sidecars=native,
            cluster_version=git_version,
            cert_mode=options.cert_mode,
        )

    async def _sync_now(self) -> None:
        assert self.keeper is not None
        await self.keeper.sync()

    async def _serve(self) -> None:
        assert self.server is not None
        await self.server.serve()

    @property
    def port(self) -> int:
        return self.server.port if self.server is not None else self.options.port

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.elector is not None:
            await self.elector.release()
        if self.server is not None:
            await self.server.stop()
