"""The controller core: a source feeding the model, translation, the ADS server and the debug endpoint."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

import grpc

from controller.ca.service import CaMetrics
from controller.metrics import Metrics
from controller.model.snapshot import MeshState, SnapshotUpdate
from controller.model.values import ResourceKey
from controller.sources.base import KINDS, Change, Source
from controller.tap import TapHub
from controller.validation import Issue
from controller.validation.analyze import analyze
from controller.xds.debounce import Debouncer
from controller.xds.generator import Translator
from controller.xds.pushlog import PushLog
from controller.xds.server import AdsServer
from mizzen import logs

log = logs.get("controller")

_ROUTING_KINDS = frozenset({"VirtualService", "DestinationRule", "Service", "ServiceEntry"})


class Controller:
    """The control plane on one source. Ports may be 0 (tests): read the bound ones after start."""

    def __init__(
        self,
        source: Source,
        *,
        host: str = "0.0.0.0",
        xds_port: int = 15010,
        debug_port: int | None = 15014,
        debounce_after: float = 0.1,
        debounce_max: float = 10.0,
        push_throttle: int = 100,
        allow_any: bool = True,
        ca: Any = None,
        secure_port: int | None = None,
        mesh_config: Any = None,
    ) -> None:
        self.source = source
        # controller.meshconfig: the mesh config's source (file or ConfigMap); None keeps Istio's defaults
        self.mesh_config = mesh_config
        self.host = host
        self.xds_port = xds_port
        self.debug_port = debug_port
        self.allow_any = allow_any
        self.ca = ca  # controller.ca.setup.CaRuntime: certificates for sidecars, on the xDS ports
        self.secure_port = secure_port  # xDS + CA over TLS (15012), with the CA's serving certificate
        self.metrics = Metrics()
        if ca is not None:
            # The CA's counters (citadel_server_*) on the controller's metrics port, as istiod's.
            ca.service.metrics = CaMetrics(self.metrics.registry)
        self.push_log = PushLog()
        self.tap = TapHub()  # sidecars' tap channels: `mizzen tap` and the dashboard's tap view
        self.state = MeshState()
        self.ready = asyncio.Event()
        self.translator: Translator | None = None
        self.ads = AdsServer(
            self._current_translator, self.metrics, self.push_log, self.ready, push_throttle=push_throttle
        )
        self.debouncer = Debouncer(self._flush, after=debounce_after, max_wait=debounce_max)
        self._grpc: grpc.aio.Server | None = None
        self._debug: Any = None
        self.pushes_done = 0
        self.settled_version = 0  # the last snapshot version fully translated and pushed
        self.analysis: Mapping[ResourceKey, tuple[Issue, ...]] = {}
        self.last_flush_started = 0.0  # monotonic; when the latest debounced batch began translating

    def _current_translator(self) -> Translator:
        assert self.translator is not None, "streams wait for the controller to be ready"
        return self.translator

    async def start(self) -> None:
        self.source.subscribe(self.debouncer.add)
        await self.source.start()
        self._grpc = grpc.aio.server(
            options=[
                ("grpc.max_send_message_length", 256 * 1024 * 1024),
                ("grpc.max_receive_message_length", 16 * 1024 * 1024),
                ("grpc.keepalive_time_ms", 30_000),
                ("grpc.http2.max_pings_without_data", 0),
                ("grpc.keepalive_permit_without_calls", 1),
            ]
        )
        self._grpc.add_generic_rpc_handlers((self.ads.handler(),))
        self._grpc.add_generic_rpc_handlers((self.tap.handler(),))
        if self.ca is not None:
            self._grpc.add_generic_rpc_handlers((self.ca.service.handler(),))
            await self.ca.start()
            if self.secure_port is not None:
                try:
                    self.secure_port = self._grpc.add_secure_port(
                        f"{self.host}:{self.secure_port}", self.ca.server_credentials()
                    )
                except RuntimeError as exc:  # the plaintext port still serves both
                    log.error("cannot listen on the TLS port", port=self.secure_port, error=str(exc))
                    self.secure_port = None
        self.xds_port = self._grpc.add_insecure_port(f"{self.host}:{self.xds_port}")
        await self._grpc.start()
        if self.debug_port is not None:
            from controller.debug import DebugServer

            self._debug = DebugServer(self)
            self.debug_port = await self._debug.start(self.host, self.debug_port)
        log.info(
            "controller listening",
            xds_port=self.xds_port,
            secure_port=self.secure_port if self.ca is not None else None,
            debug_port=self.debug_port,
        )
        await self.source.wait_synced()
        listed = {kind: self.source.list(kind) for kind in KINDS}
        if self.mesh_config is not None:
            listed["MeshConfig"] = [self.mesh_config.current()]
            await self.mesh_config.start(self.debouncer.add)
        update = self.state.load(listed)
        self._account(update)
        self._analyze(update, initial=True)
        self.translator = Translator(update.snapshot, allow_any=self.allow_any)
        self.settled_version = update.snapshot.version
        self.debouncer.start()
        self.ready.set()
        log.info(
            "mesh synced",
            version=update.snapshot.version,
            objects=sum(update.snapshot.count(k) for k in KINDS),
        )

    async def _flush(self, batch: list[Change], first_seen: float) -> None:
        translator = self._current_translator()
        self.last_flush_started = time.monotonic()
        update = self.state.apply(batch)
        self._account(update)
        self._analyze(update)
        if not update.changes:
            self.settled_version = update.snapshot.version
            return
        translator.retain({conn.scope_key for conn in self.ads.connections.values()})
        summary = translator.update(update.snapshot, update.changes)
        self.metrics.debounce_batches.inc()
        pushed = await self.ads.push(summary, first_seen)
        self.pushes_done += 1
        self.settled_version = update.snapshot.version
        log.info(
            "pushed",
            version=update.snapshot.version,
            changes=len(update.changes),
            proxies=pushed,
            causes=[str(c.key) for c in update.changes[:10]],
            translate_ms=round((time.monotonic() - first_seen) * 1000, 1),
        )

    def _analyze(self, update: SnapshotUpdate, initial: bool = False) -> None:
        """Cross-object checks (istioctl analyze's IST0101), redone when routing objects changed."""
        if not initial and not any(c.key.kind in _ROUTING_KINDS for c in update.changes):
            return
        before = self.analysis
        self.analysis = analyze(update.snapshot)
        for key, issues in self.analysis.items():
            if before.get(key) != issues:
                log.warning(
                    "config routes nowhere", object=str(key), warnings=[i.format(key) for i in issues]
                )
        self.metrics.analysis.set(sum(len(v) for v in self.analysis.values()))

    def _account(self, update: SnapshotUpdate) -> None:
        for change in update.changes:
            self.metrics.config_changes.labels(change.key.kind).inc()
        for rejected in update.rejected:
            self.metrics.rejected.labels(rejected.key.kind).inc()
        by_kind = Counter(key.kind for key in update.snapshot.invalid)
        for kind in KINDS:
            self.metrics.invalid.labels(kind).set(by_kind.get(kind, 0))
        self.metrics.snapshot_version.set(update.snapshot.version)

    async def stop(self, grace: float = 1.0) -> None:
        await self.debouncer.stop()
        if self.mesh_config is not None:
            await self.mesh_config.stop()
        if self._grpc is not None:
            await self._grpc.stop(grace)
        if self._debug is not None:
            await self._debug.stop()
        if self.ca is not None:
            await self.ca.stop()
        await self.source.stop()

    def warnings(self) -> list[dict[str, Any]]:
        """Objects in force whose fields Mizzen partly ignores (unsupported) or does not enforce."""
        snapshot = self.state.snapshot
        merged: dict[ResourceKey, list[Issue]] = {}
        for source in (snapshot.warnings, self.analysis):
            for key, issues in source.items():
                merged.setdefault(key, []).extend(issues)
        return [
            {"object": str(key), "warnings": [issue.format(key) for issue in issues]}
            for key, issues in sorted(merged.items())
        ]

    def invalid(self) -> list[dict[str, Any]]:
        snapshot = self.state.snapshot
        return [
            {
                "object": str(key),
                "kept_previous": rejected.kept_previous,
                "errors": [issue.format(key) for issue in rejected.issues],
            }
            for key, rejected in sorted(snapshot.invalid.items())
        ]
