"""The sidecar's xDS client: one ADS stream (Delta by default, SotW when the bootstrap asks) over grpcio.

It runs on its own thread and event loop, so protobuf decoding and config compilation never sit inside
a data-path callback, and grpcio's poller never shares the proxy's uvloop. Each accepted update becomes
a new compiled ``ProxyConfig`` handed to the proxy's loop; each response is ACKed, or NACKed with an
error naming the resource and the field, in which case the proxy keeps serving its last good config.

Subscriptions follow Envoy: clusters and listeners by wildcard; endpoints for the EDS clusters the
current clusters name, routes for the RDS names the current listeners name. The first config is
applied only once it is whole (clusters, listeners, and the endpoints and routes they name), or when
``initial_fetch_timeout`` passes; that is when the proxy becomes ready. After a lost stream it
reconnects with jittered backoff and resumes: a Delta stream tells the server which versions it already
holds, so nothing unchanged is sent again; meanwhile the proxy serves with what it has.

Once live, a cluster that arrives before its endpoints warms: the responses that follow it (listeners,
routes, further clusters) wait, in order, until its endpoints come, so no route is switched to a cluster
that cannot take traffic yet; endpoint responses pass meanwhile. The wait is bounded by the same timeout
(the bootstrap's ``cds_config.initial_fetch_timeout`` when positive, else 15 s).
"""

from __future__ import annotations

import asyncio
import collections
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.rpc import status_pb2

from fastpath import config as cfgmod
from fastpath.config import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    MESSAGE_TYPES,
    ROUTE,
    ConfigError,
    registry,  # noqa: F401 - every typed_config type known to the decoder
)
from fastpath.loopthread import LoopThread
from mizzen import logs

if TYPE_CHECKING:
    from fastpath.bootstrap import Bootstrap
    from fastpath.proxy import Proxy

log = logs.get("xds")

USER_AGENT = "mizzen-proxy"
ORDER = (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    ROUTE,
)  # Envoy's: clusters before endpoints before listeners before routes
_INVALID_ARGUMENT = 3


class AdsClient:
    def __init__(
        self,
        proxy: Proxy,
        boot: Bootstrap,
        *,
        initial_fetch_timeout: float = 15.0,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
    ) -> None:
        assert boot.ads is not None
        self.proxy = proxy
        self.boot = boot
        self.target = f"{boot.ads.host}:{boot.ads.port}"
        self.delta = boot.proto.dynamic_resources.ads_config.api_type == 3  # DELTA_GRPC
        self.node = boot.proto.node.__class__()
        self.node.CopyFrom(boot.proto.node)
        self.node.user_agent_name = USER_AGENT
        cds = boot.proto.dynamic_resources.cds_config
        configured = cds.initial_fetch_timeout.ToTimedelta().total_seconds()
        if cds.HasField("initial_fetch_timeout") and configured > 0:
            initial_fetch_timeout = configured
        self.initial_fetch_timeout = initial_fetch_timeout
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.main_loop = asyncio.get_event_loop()
        # What has been accepted: the config, and per type the versions the server gave.
        self.config = boot.static
        self.static_names = {t: set(getattr(boot.static, cfgmod.SHORT[t])) for t in ORDER}
        self.versions: dict[str, dict[str, str]] = {t: {} for t in ORDER}
        self.sotw_versions: dict[str, str] = {}
        self.subscribed: dict[str, set[str]] = {ENDPOINT: set(), ROUTE: set()}
        self.received: set[str] = set()
        self.warm = False
        self.connected = False
        self.acks = 0
        self.nacks = 0
        self.last_nack = ""
        self._runner = LoopThread("xds", self._run)
        self._outbox: asyncio.Queue[Any] | None = None
        self._started = 0.0
        # Cluster warming, once live: a cluster that arrives with its endpoints still to come is not
        # routed to until they do. Responses after it (other than endpoints) wait in ``_held``, in order,
        # so a route naming the new cluster is not applied before the cluster can take traffic (else
        # requests meet an empty cluster and get 503s for a round trip). ``_gave_up``: clusters whose
        # endpoints did not come within initial_fetch_timeout, no longer waited for.
        self._held: collections.deque[Any] = collections.deque()
        self._gave_up: set[str] = set()
        self._handling = asyncio.Lock()
        self._warming_timer: asyncio.TimerHandle | None = None
        self._expiry: asyncio.Task[None] | None = None

    # -- life -------------------------------------------------------------------------------------

    def start(self) -> None:
        self.main_loop = asyncio.get_running_loop()
        self._runner.start()

    async def stop(self) -> None:
        """End the stream and the thread (the proxy is shutting down)."""
        await self._runner.stop()

    def status(self) -> dict[str, Any]:
        """For the admin endpoint: the stream, what was accepted, and the last NACK."""
        return {
            "server": self.target,
            "protocol": "delta" if self.delta else "sotw",
            "connected": self.connected,
            "warm": self.warm,
            "acks": self.acks,
            "nacks": self.nacks,
            "last_nack": self.last_nack,
            "versions": {cfgmod.SHORT[t]: dict(v) for t, v in self.versions.items()},
        }

    # -- the stream -------------------------------------------------------------------------------

    async def _run(self) -> None:
        self._started = time.monotonic()
        warm_timer = asyncio.get_running_loop().call_later(self.initial_fetch_timeout, self._warm_timeout)
        attempt = 0
        try:
            while not self._runner.stopping:
                try:
                    await self._stream()
                    attempt = 0  # it ran; the server ended it
                except asyncio.CancelledError:
                    raise
                except grpc.aio.AioRpcError as exc:
                    log.warning(
                        "xds stream failed", server=self.target, code=exc.code().name, details=exc.details()
                    )
                except Exception as exc:  # keep serving whatever happens to the control plane
                    log.error("xds stream error", server=self.target, error=repr(exc))
                self.connected = False
                attempt += 1
                delay = random.uniform(0, min(self.backoff_max, self.backoff_base * (2 ** min(attempt, 10))))
                await asyncio.sleep(delay)
        finally:
            warm_timer.cancel()

    async def _stream(self) -> None:
        outbox: asyncio.Queue[Any] = asyncio.Queue()
        self._outbox = outbox
        async with grpc.aio.insecure_channel(
            self.target,
            options=[
                ("grpc.max_receive_message_length", 256 * 1024 * 1024),
                ("grpc.keepalive_time_ms", 30000),
                ("grpc.keepalive_timeout_ms", 10000),
            ],
        ) as channel:
            stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)

            async def requests() -> AsyncIterator[Any]:
                while True:
                    yield await outbox.get()

            if self.delta:
                call = stub.DeltaAggregatedResources(requests())
                self._delta_subscribe_all()
                handler = self._on_delta
            else:
                call = stub.StreamAggregatedResources(requests())
                self._sotw_request_all()
                handler = self._on_sotw
            self._held.clear()
            try:
                async for response in call:
                    if not self.connected:
                        self.connected = True
                        log.info(
                            "xds connected", server=self.target, protocol="delta" if self.delta else "sotw"
                        )
                    async with self._handling:
                        if response.type_url != ENDPOINT and (self._held or self._warming()):
                            self._held.append(response)
                            self._arm_warming_timer(handler)
                            continue
                        await handler(response)
                        await self._release_held(handler)
            finally:
                # What this stream held is dropped unacknowledged: the next stream gets it again.
                if self._warming_timer is not None:
                    self._warming_timer.cancel()
                    self._warming_timer = None
                if self._expiry is not None and not self._expiry.done():
                    self._expiry.cancel()

    def _warming(self) -> set[str]:
        """Clusters accepted while live whose endpoints have not arrived yet."""
        if not self.warm:
            return set()  # before the first config is whole, _whole() is the gate
        waiting = {n for n in self._wanted(ENDPOINT) if f"{ENDPOINT}:{n}" not in self.received}
        return waiting - self._gave_up

    async def _release_held(self, handler: Callable[[Any], Awaitable[None]]) -> None:
        """Handle the held responses, in the order they came, for as long as no cluster is warming."""
        while self._held and not self._warming():
            await handler(self._held.popleft())
        if not self._held and self._warming_timer is not None:
            self._warming_timer.cancel()
            self._warming_timer = None

    def _arm_warming_timer(self, handler: Callable[[Any], Awaitable[None]]) -> None:
        if self._warming_timer is not None:
            return
        loop = asyncio.get_running_loop()

        def expired() -> None:
            self._warming_timer = None
            self._expiry = loop.create_task(self._warming_expired(handler))

        self._warming_timer = loop.call_later(self.initial_fetch_timeout, expired)

    async def _warming_expired(self, handler: Callable[[Any], Awaitable[None]]) -> None:
        async with self._handling:
            late = self._warming()
            if late:
                log.warning(
                    "cluster endpoints did not arrive, going on without them",
                    clusters=sorted(late),
                    waited_s=self.initial_fetch_timeout,
                )
                self._gave_up |= late
            await self._release_held(handler)

    def _send(self, request: Any) -> None:
        assert self._outbox is not None
        self._outbox.put_nowait(request)

    # -- Delta ------------------------------------------------------------------------------------

    def _delta_subscribe_all(self) -> None:
        """A new stream: wildcard clusters and listeners, the named endpoints and routes we need, each
        with the versions already held so the server sends only what changed."""
        first = True
        for type_url in ORDER:
            names = sorted(self.subscribed[type_url]) if type_url in self.subscribed else []
            if type_url in self.subscribed and not names:
                continue
            req = discovery_pb2.DeltaDiscoveryRequest(type_url=type_url, resource_names_subscribe=names)
            for name, version in self.versions[type_url].items():
                req.initial_resource_versions[name] = version
            if first:
                req.node.CopyFrom(self.node)
                first = False
            self._send(req)

    async def _on_delta(self, resp: discovery_pb2.DeltaDiscoveryResponse) -> None:
        type_url = resp.type_url
        if type_url not in MESSAGE_TYPES:
            self._delta_nack(resp, f"mizzen-proxy does not take {type_url}")
            return
        updated, versions = [], {}
        try:
            for r in resp.resources:
                msg = MESSAGE_TYPES[type_url]()
                if not r.resource.Unpack(msg):
                    raise ConfigError(
                        type_url.rsplit(".", 1)[-1],
                        r.name,
                        "resource",
                        f"expected {type_url}, got {r.resource.type_url}",
                    )
                updated.append(msg)
                versions[r.name or _name(type_url, msg)] = r.version
            removed = [n for n in resp.removed_resources if n not in self.static_names[type_url]]
            new = self.config.with_changes(type_url, updated, removed)
        except (ConfigError, ValueError) as exc:
            self._delta_nack(resp, str(exc))
            return
        if not await self._activate(type_url, new):
            self._delta_nack(resp, self.last_nack)
            return
        held = self.versions[type_url]
        for name in removed:
            held.pop(name, None)
        held.update(versions)
        self.acks += 1
        self._send(discovery_pb2.DeltaDiscoveryRequest(type_url=type_url, response_nonce=resp.nonce))
        self._delta_follow(type_url)

    def _delta_nack(self, resp: discovery_pb2.DeltaDiscoveryResponse, error: str) -> None:
        self.nacks += 1
        self.last_nack = error
        log.warning("config rejected", type=cfgmod.SHORT.get(resp.type_url, resp.type_url), error=error)
        self._send(
            discovery_pb2.DeltaDiscoveryRequest(
                type_url=resp.type_url,
                response_nonce=resp.nonce,
                error_detail=status_pb2.Status(code=_INVALID_ARGUMENT, message=error),
            )
        )

    def _delta_follow(self, type_url: str) -> None:
        """Subscribe to the endpoints and routes the accepted clusters and listeners name."""
        dependent = {CLUSTER: ENDPOINT, LISTENER: ROUTE}.get(type_url)
        if dependent is None:
            return
        wanted = self._wanted(dependent)
        have = self.subscribed[dependent]
        add, drop = sorted(wanted - have), sorted(have - wanted)
        if not add and not drop:
            return
        self.subscribed[dependent] = wanted
        if drop:
            # Unsubscribed resources are ours to forget (the server will not send removals for them).
            self.config = self.config.with_changes(dependent, [], drop)
            for name in drop:
                self.versions[dependent].pop(name, None)
                self.received.discard(f"{dependent}:{name}")
        self._send(
            discovery_pb2.DeltaDiscoveryRequest(
                type_url=dependent, resource_names_subscribe=add, resource_names_unsubscribe=drop
            )
        )

    def _wanted(self, type_url: str) -> set[str]:
        if type_url == ENDPOINT:
            return {c.eds_service_name for c in self.config.clusters.values() if c.discovery == "EDS"}
        names = set()
        for lst in self.config.listeners.values():
            for chain in lst.chains():
                if chain.http is not None and chain.http.rds_name:
                    names.add(chain.http.rds_name)
        return names

    # -- SotW -------------------------------------------------------------------------------------

    def _sotw_request_all(self) -> None:
        first = True
        for type_url in ORDER:
            if type_url in self.subscribed and not self.subscribed[type_url]:
                continue
            req = discovery_pb2.DiscoveryRequest(
                type_url=type_url,
                resource_names=sorted(self.subscribed.get(type_url, ())),
                version_info=self.sotw_versions.get(type_url, ""),
            )
            if first:
                req.node.CopyFrom(self.node)
                first = False
            self._send(req)

    async def _on_sotw(self, resp: discovery_pb2.DiscoveryResponse) -> None:
        type_url = resp.type_url
        error = ""
        new = None
        if type_url not in MESSAGE_TYPES:
            error = f"mizzen-proxy does not take {type_url}"
        else:
            try:
                msgs = []
                for any_msg in resp.resources:
                    msg = MESSAGE_TYPES[type_url]()
                    if not any_msg.Unpack(msg):
                        raise ConfigError(
                            type_url.rsplit(".", 1)[-1],
                            "?",
                            "resources",
                            f"expected {type_url}, got {any_msg.type_url}",
                        )
                    msgs.append(msg)
                static = [self.boot.static.raw.get(type_url, {})[n] for n in self.static_names[type_url]]
                new = self.config.with_changes(type_url, [*static, *msgs], replace_all=True)
            except (ConfigError, ValueError) as exc:
                error = str(exc)
        if new is not None and not await self._activate(type_url, new):
            error = self.last_nack
        req = discovery_pb2.DiscoveryRequest(
            type_url=type_url,
            response_nonce=resp.nonce,
            resource_names=sorted(self.subscribed.get(type_url, ())),
        )
        if error:
            self.nacks += 1
            self.last_nack = error
            log.warning("config rejected", type=cfgmod.SHORT.get(type_url, type_url), error=error)
            req.version_info = self.sotw_versions.get(type_url, "")
            req.error_detail.CopyFrom(status_pb2.Status(code=_INVALID_ARGUMENT, message=error))
            self._send(req)
            return
        self.acks += 1
        self.sotw_versions[type_url] = resp.version_info
        req.version_info = resp.version_info
        self._send(req)
        dependent = {CLUSTER: ENDPOINT, LISTENER: ROUTE}.get(type_url)
        if dependent is not None:
            wanted = self._wanted(dependent)
            if wanted != self.subscribed[dependent]:
                self.subscribed[dependent] = wanted
                self._send(
                    discovery_pb2.DiscoveryRequest(
                        type_url=dependent,
                        resource_names=sorted(wanted),
                        version_info=self.sotw_versions.get(dependent, ""),
                    )
                )

    # -- applying ---------------------------------------------------------------------------------

    async def _activate(self, type_url: str, new: cfgmod.ProxyConfig) -> bool:
        """Make ``new`` the accepted config; hand it to the proxy once the first config is whole."""
        self.received.add(type_url)
        for name in getattr(new, cfgmod.SHORT[type_url]):
            self.received.add(f"{type_url}:{name}")
            if type_url == ENDPOINT:
                self._gave_up.discard(name)
        previous = self.config
        self.config = new
        if not self.warm:
            if not self._whole():
                return True
            self.warm = True
            log.info(
                "initial config complete",
                listeners=len(new.listeners),
                clusters=len(new.clusters),
                seconds=round(time.monotonic() - self._started, 3),
            )
        fut: Future[None] = asyncio.run_coroutine_threadsafe(self.proxy.apply(new), self.main_loop)
        try:
            await asyncio.wrap_future(fut)
        except Exception as exc:  # e.g. a listener port that cannot be bound
            self.config = previous
            self.last_nack = f"{cfgmod.SHORT[type_url]}: cannot apply: {exc}"
            return False
        return True

    def _whole(self) -> bool:
        if CLUSTER not in self.received or LISTENER not in self.received:
            return False
        for dependent in (ENDPOINT, ROUTE):
            for name in self._wanted(dependent):
                if f"{dependent}:{name}" not in self.received:
                    return False
        return True

    def _warm_timeout(self) -> None:
        """initial_fetch_timeout passed: go live with what has arrived (Envoy does the same)."""
        if self.warm or self._runner.loop is None:
            return
        log.warning(
            "initial config incomplete, starting with what arrived", waited_s=self.initial_fetch_timeout
        )
        self.warm = True
        fut = asyncio.run_coroutine_threadsafe(self.proxy.apply(self.config), self.main_loop)
        fut.add_done_callback(
            lambda f: f.exception() and log.error("apply failed", error=repr(f.exception()))
        )


def _name(type_url: str, msg: Any) -> str:
    return msg.cluster_name if type_url == ENDPOINT else msg.name
