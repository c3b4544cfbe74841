"""The ADS server: DeltaAggregatedResources (our proxy's default) and StreamAggregatedResources (SotW, for
gRPC proxyless clients), over grpcio's asyncio API.

Each stream has a reader task that handles requests (subscriptions, ACKs, NACKs) and a writer (the handler
itself) that sends what the reader or a push queued. Pushes come from :meth:`AdsServer.push` with the
summary of one translated config change; a connection sends only the resources of its scope that the
change touched and that it subscribed to.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import grpc
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2

from controller.metrics import Metrics
from controller.xds.connection import Connection, Pending, Watch, is_wildcard_request
from controller.xds.generator import ChangeSummary, Translator
from controller.xds.held import HeldVersions
from controller.xds.node import NodeError, parse_node
from controller.xds.pushlog import PushLog
from controller.xds.resources import CLUSTER, ENDPOINT, PUSH_ORDER, SHORT_NAMES, Resource
from mizzen import logs

log = logs.get("xds.server")

DELTA, SOTW = "delta", "sotw"
SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"


def _short(type_url: str) -> str:
    return SHORT_NAMES.get(type_url, type_url.rsplit(".", 1)[-1]).lower()


class AdsServer:
    def __init__(
        self,
        translator: Callable[[], Translator],
        metrics: Metrics,
        push_log: PushLog,
        ready: asyncio.Event,
        *,
        push_throttle: int = 100,
    ) -> None:
        self._translator = translator
        self.metrics = metrics
        self.push_log = push_log
        self.ready = ready
        self.push_throttle = max(1, push_throttle)
        self.connections: dict[str, Connection] = {}
        self._bodies: dict[tuple[Any, ...], tuple[str, bytes]] = {}
        self._nonces = itertools.count(1)
        self._names: dict[frozenset[str], frozenset[str]] = {}
        self._counters: dict[str, tuple[Any, Any]] = {}
        # Called with (connection, type URL, acknowledged response); benchmarks and tests observe with it.
        self.ack_observers: list[Callable[[Connection, str, Pending], None]] = []

    # -- streams --
    async def StreamAggregatedResources(self, request_iterator: Any, context: Any) -> AsyncIterator[Any]:
        async for response in self._serve(request_iterator, context, SOTW):
            yield response

    async def DeltaAggregatedResources(self, request_iterator: Any, context: Any) -> AsyncIterator[Any]:
        async for response in self._serve(request_iterator, context, DELTA):
            yield response

    async def _serve(self, requests: Any, context: Any, protocol: str) -> AsyncIterator[Any]:
        queue: asyncio.Queue[Any] = asyncio.Queue()
        conn: Connection | None = None

        async def read() -> None:
            nonlocal conn
            try:
                async for request in requests:
                    if conn is None:
                        await self.ready.wait()
                        node = parse_node(request.node)
                        conn = Connection(node, self._translator(), protocol, context.peer())
                        conn.queue = queue
                        self.connections[conn.id] = conn
                        self.metrics.connected.labels(protocol).inc()
                        log.info("proxy connected", proxy=node.id, protocol=protocol, connection=conn.id)
                    if protocol == DELTA:
                        self._on_delta_request(conn, request)
                    else:
                        self._on_sotw_request(conn, request)
            except NodeError as exc:
                queue.put_nowait(exc)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug must end this stream, not the server
                log.exception("xds stream failed", connection=conn.id if conn else None)
                queue.put_nowait(exc)
                return
            queue.put_nowait(None)

        reader = asyncio.create_task(read())
        try:
            while True:
                item = await queue.get()
                if item is None:
                    return
                if isinstance(item, NodeError):
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(item))
                if isinstance(item, Exception):
                    await context.abort(grpc.StatusCode.INTERNAL, f"controller error: {item!r}")
                yield item
        finally:
            reader.cancel()
            if conn is not None and self.connections.pop(conn.id, None) is not None:
                self.metrics.connected.labels(protocol).dec()
                log.info("proxy disconnected", proxy=conn.node.id, connection=conn.id)

    # -- ACK / NACK --
    def _on_response_nonce(self, conn: Connection, w: Watch, nonce: str, error: Any | None) -> None:
        if error is not None:
            message = error.message or f"code {error.code}"
            conn.on_nack(w, nonce, message)
            self.metrics.nacks.labels(_short(w.type_url)).inc()
            log.warning(
                "proxy rejected config",
                proxy=conn.node.id,
                type=_short(w.type_url),
                nonce=nonce,
                error=message,
            )
            return
        pending = conn.on_ack(w, nonce)
        if pending is None:
            return
        if pending.changed_at is not None:
            self.metrics.convergence.observe(time.monotonic() - pending.changed_at)
        for observer in self.ack_observers:
            observer(conn, w.type_url, pending)

    # -- Delta --
    def _on_delta_request(self, conn: Connection, req: Any) -> None:
        type_url = req.type_url
        first = type_url not in conn.watches
        w = conn.watch(type_url)
        if req.response_nonce:
            self._on_response_nonce(
                conn, w, req.response_nonce, req.error_detail if req.HasField("error_detail") else None
            )
        subscribe = list(req.resource_names_subscribe)
        added: set[str] = set()
        if first:
            w.wildcard = is_wildcard_request(type_url, subscribe, True)
            # Resume: the proxy already holds these versions (after a reconnect); send only what differs.
            for name, version in req.initial_resource_versions.items():
                w.held[name] = version
        elif "*" in subscribe and not w.wildcard:
            w.wildcard = True
            added.add("*")
        fresh = {name for name in subscribe if name != "*" and name not in w.names}
        if fresh:
            added |= fresh
            w.names = self._intern(w.names | fresh)
        gone = set(req.resource_names_unsubscribe)
        if gone:
            if "*" in gone:
                w.wildcard = False
            w.names = self._intern(w.names - gone)
            for name in gone:
                w.held.pop(name, None)  # the proxy drops what it unsubscribed from
        if first:
            self._send_delta(conn, w, None, changed_at=None, always=True)
        elif added:
            self._send_delta(conn, w, None if "*" in added else added, changed_at=None)

    def _send_delta(
        self,
        conn: Connection,
        w: Watch,
        names: Iterable[str] | None,
        *,
        changed_at: float | None,
        always: bool = False,
        causes: tuple[object, ...] = (),
        updates: bool = True,
        removals: bool = True,
    ) -> None:
        send, removed = conn.delta_for(w, names)
        if not updates:
            send = []
        if not removals:
            removed = []
        if not send and not removed and not always:
            return
        version = str(conn.translator.snapshot.version)
        key = (DELTA, w.type_url, version, tuple((r.name, r.version) for r in send), tuple(removed))
        nonce, encoded = self._shared(key, w)
        if encoded is None:
            response = discovery_pb2.DeltaDiscoveryResponse(
                type_url=w.type_url, system_version_info=version, nonce=nonce
            )
            for r in send:
                response.resources.append(
                    discovery_pb2.Resource(
                        name=r.name,
                        version=r.version,
                        resource=any_pb2.Any(type_url=r.type_url, value=r.body),
                    )
                )
            response.removed_resources.extend(removed)
            encoded = self._remember(key, nonce, response.SerializeToString())
        conn.record_sent(w, nonce, send, removed, changed_at)
        self._account(conn, w, nonce, sum(len(r.body) for r in send), [r.name for r in send], removed, causes)
        conn.queue.put_nowait(encoded)

    def _shared(self, key: tuple[Any, ...], w: Watch) -> tuple[str, bytes | None]:
        """The nonce and encoding of a response with this content, if one was built already.

        A response is encoded once per content and the same bytes go to every proxy that gets it, nonce
        included: nonces only need to be distinct within one stream, and each encoding gets a fresh one
        from a controller-wide counter. A stream never gets the same encoding twice in a row for a type.
        """
        found = self._bodies.get(key)
        if found is not None and found[0] != w.last_nonce:
            return found
        return str(next(self._nonces)), None

    def _remember(self, key: tuple[Any, ...], nonce: str, body: bytes) -> bytes:
        if len(self._bodies) >= 256:
            self._bodies.clear()
        self._bodies[key] = (nonce, body)
        return body

    def _intern(self, names: frozenset[str]) -> frozenset[str]:
        """One shared set per distinct subscription (a thousand proxies subscribe to the same EDS names)."""
        found = self._names.get(names)
        if found is None:
            if len(self._names) >= 4096:
                self._names.clear()
            found = self._names[names] = names
        return found

    # -- SotW --
    def _on_sotw_request(self, conn: Connection, req: Any) -> None:
        type_url = req.type_url
        first = type_url not in conn.watches
        w = conn.watch(type_url)
        if req.response_nonce:
            if req.response_nonce != w.last_nonce:
                return  # answers an older response; a newer one is on its way
            self._on_response_nonce(
                conn, w, req.response_nonce, req.error_detail if req.HasField("error_detail") else None
            )
        names = set(req.resource_names)
        wildcard = "*" in names or (
            not names and (first or w.wildcard) and is_wildcard_request(type_url, (), True)
        )
        names.discard("*")
        if first or names != w.names or wildcard != w.wildcard:
            w.names, w.wildcard = self._intern(frozenset(names)), wildcard
            self._send_sotw(conn, w, changed_at=None, force=True)

    def _send_sotw(
        self,
        conn: Connection,
        w: Watch,
        *,
        changed_at: float | None,
        force: bool = False,
        causes: tuple[object, ...] = (),
    ) -> None:
        state = conn.sotw_state(w)
        digest = hashlib.blake2b(digest_size=8)
        for r in state:
            digest.update(r.name.encode())
            digest.update(r.version.encode())
        version = digest.hexdigest()
        if version == w.sotw_version and not force:
            return
        key = (SOTW, w.type_url, version)
        nonce, encoded = self._shared(key, w)
        if encoded is None:
            response = discovery_pb2.DiscoveryResponse(type_url=w.type_url, version_info=version, nonce=nonce)
            for r in state:
                response.resources.append(any_pb2.Any(type_url=r.type_url, value=r.body))
            encoded = self._remember(key, nonce, response.SerializeToString())
        current = {r.name: r.version for r in state}
        changed = [n for n, v in current.items() if w.held.get(n) != v]
        removed = [n for n in w.held if n not in current]
        # What the proxy holds now is exactly this state: kept as a difference from the scope's shared map.
        w.held = HeldVersions(conn.translator.view(conn.scope_key).version_map(w.type_url))
        for name in [n for n in w.held.base if n not in current]:
            w.held.pop(name)
        conn.record_sent(w, nonce, state, (), changed_at)
        w.sotw_version = version
        self._account(conn, w, nonce, sum(len(r.body) for r in state), changed, removed, causes)
        conn.queue.put_nowait(encoded)

    def _account(
        self,
        conn: Connection,
        w: Watch,
        nonce: str,
        size: int,
        changed: list[str],
        removed: list[str],
        causes: tuple[object, ...],
    ) -> None:
        counters = self._counters.get(w.type_url)
        if counters is None:
            short = _short(w.type_url)
            counters = self._counters[w.type_url] = (
                self.metrics.pushes.labels(short),
                self.metrics.sent_bytes.labels(short),
            )
        counters[0].inc()
        counters[1].inc(size)
        self.push_log.record(
            conn.node.id, w.type_url, nonce, changed, removed, causes, conn.translator.snapshot.version
        )

    # -- pushes --
    async def push(self, summary: ChangeSummary, changed_at: float | None) -> int:
        """Send one change to every connection that depends on it; returns how many proxies got something.

        At most ``push_throttle`` proxies are prepared per turn of the event loop, so streams keep flowing
        (and ACKs keep being read) during a large fan-out.
        """
        pushed = 0
        self._bodies.clear()
        for i, conn in enumerate(list(self.connections.values())):
            if i and i % self.push_throttle == 0:
                await asyncio.sleep(0)
            if conn.id not in self.connections:
                continue
            if self._push_one(conn, summary, changed_at):
                pushed += 1
        return pushed

    def _push_one(self, conn: Connection, summary: ChangeSummary, changed_at: float | None) -> bool:
        sent = False
        # Make before break: clusters and endpoints that went away are removed only after the listeners
        # and routes that stop naming them, so no request meets a route to a cluster already gone.
        deferred: list[tuple[Watch, set[str] | None]] = []
        for type_url, names in conn.changed_names(summary):
            w = conn.watches[type_url]
            before = w.last_nonce
            if conn.protocol == DELTA:
                if names is not None:
                    names = {n for n in names if w.wants(n) or n in w.held}
                    if not names:
                        continue
                later = type_url in (CLUSTER, ENDPOINT)
                if later:
                    deferred.append((w, names))
                self._send_delta(
                    conn, w, names, changed_at=changed_at, causes=summary.causes, removals=not later
                )
            else:
                if names is not None and not any(w.wants(n) or n in w.held for n in names):
                    continue
                self._send_sotw(conn, w, changed_at=changed_at, causes=summary.causes)
            sent = sent or w.last_nonce != before
        for w, names in deferred:
            before = w.last_nonce
            self._send_delta(conn, w, names, changed_at=changed_at, causes=summary.causes, updates=False)
            sent = sent or w.last_nonce != before
        return sent

    def status(self) -> list[dict[str, Any]]:
        return [c.status() for c in self.connections.values()]

    def handler(self) -> grpc.GenericRpcHandler:
        """The ADS service with pre-encoded responses (the streams yield bytes, see ``_remember``)."""
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
                    self.StreamAggregatedResources,
                    request_deserializer=discovery_pb2.DiscoveryRequest.FromString,
                    response_serializer=_identity,
                ),
                "DeltaAggregatedResources": grpc.stream_stream_rpc_method_handler(
                    self.DeltaAggregatedResources,
                    request_deserializer=discovery_pb2.DeltaDiscoveryRequest.FromString,
                    response_serializer=_identity,
                ),
            },
        )


def _identity(body: bytes) -> bytes:
    return body


def resources_of(conn: Connection) -> dict[str, dict[str, Resource]]:
    """What the proxy holds according to our bookkeeping, as current resources (for config dumps)."""
    out: dict[str, dict[str, Resource]] = {}
    for type_url in PUSH_ORDER:
        w = conn.watches.get(type_url)
        if w is None:
            continue
        names = w.held.keys() if conn.protocol == DELTA else [r.name for r in conn.sotw_state(w)]
        out[type_url] = {n: r for n in names if (r := conn.current(type_url, n)) is not None}
    return out
