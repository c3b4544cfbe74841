"""A small ADS server for the sidecar's tests: Envoy v3 over real gRPC, Delta and SotW.

Tests put resources in (``set``/``remove``) and the server pushes them to the connected proxies, the
way a control plane does: wildcard subscriptions get every resource of their type, named ones just
theirs; a Delta stream that comes back with ``initial_resource_versions`` gets only what changed.
It records every ACK and NACK. It runs on its own thread and event loop.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import any_pb2, json_format

from fastpath.config import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    MESSAGE_TYPES,
    registry,  # noqa: F401 - typed_config types, for ParseDict
)

WILDCARD_TYPES = (CLUSTER, LISTENER)


@dataclass
class Reply:
    type_url: str
    nonce: str
    error: str  # "" for an ACK


@dataclass
class _Stream:
    delta: bool
    queue: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    names: dict[str, set[str]] = field(default_factory=dict)  # named subscriptions per type
    sent: dict[str, dict[str, str]] = field(default_factory=dict)  # versions the client holds
    node_id: str = ""


class AdsServer:
    def __init__(self) -> None:
        self.resources: dict[str, dict[str, tuple[str, Any]]] = {t: {} for t in MESSAGE_TYPES}
        self.replies: list[Reply] = []
        self.streams: list[_Stream] = []
        self.connects = 0
        self.sent_resources: list[tuple[str, str]] = []  # (type, name) of every resource sent
        self._versions = itertools.count(1)
        self._nonces = itertools.count(1)
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    # -- control from tests -----------------------------------------------------------------------

    def set(self, type_url: str, resource: dict[str, Any] | Any) -> str:
        """Add or replace a resource (a dict in proto JSON form, or a message); returns its version."""
        msg = resource
        if isinstance(resource, dict):
            msg = MESSAGE_TYPES[type_url]()
            json_format.ParseDict(resource, msg)
        name = msg.cluster_name if type_url == ENDPOINT else msg.name
        version = f"v{next(self._versions)}"
        self._call(self._update, type_url, name, (version, msg))
        return version

    def remove(self, type_url: str, name: str) -> None:
        self._call(self._update, type_url, name, None)

    def disconnect(self) -> None:
        """Cut every stream (the control plane went away for a moment)."""
        self._call(self._cut)

    def nacks(self) -> list[Reply]:
        return [r for r in self.replies if r.error]

    def wait(self, cond: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if cond():
                return
            time.sleep(0.02)
        raise AssertionError(f"timed out waiting for {what or cond}; replies={self.replies[-5:]}")

    def stop(self) -> None:
        self._call(self._shutdown)
        self._thread.join(10)

    # -- inside ---------------------------------------------------------------------------------

    def _call(self, fn: Callable[..., Any], *args: Any) -> None:
        done = threading.Event()

        def run() -> None:
            try:
                fn(*args)
            finally:
                done.set()

        self._loop.call_soon_threadsafe(run)
        done.wait(10)

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._server = grpc.aio.server()
        ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(_Servicer(self), self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        await self._server.start()
        self._stopped = asyncio.Event()
        self._ready.set()
        await self._stopped.wait()
        await self._server.stop(0)

    def _shutdown(self) -> None:
        self._stopped.set()

    def _cut(self) -> None:
        for s in self.streams:
            s.queue.put_nowait(None)

    def _update(self, type_url: str, name: str, entry: tuple[str, Any] | None) -> None:
        if entry is None:
            self.resources[type_url].pop(name, None)
        else:
            self.resources[type_url][name] = entry
        for s in self.streams:
            self._push(s, type_url, [name])

    def _wants(self, s: _Stream, type_url: str, name: str) -> bool:
        if type_url in WILDCARD_TYPES and not s.names.get(type_url):
            return type_url in s.sent  # wildcard: once the type was asked for
        return name in s.names.get(type_url, set())

    def _push(self, s: _Stream, type_url: str, names: list[str]) -> None:
        held = s.sent.setdefault(type_url, {}) if (type_url in s.sent or type_url in s.names) else None
        if held is None:
            return
        if not s.delta:
            self._push_sotw(s, type_url)
            return
        resp = discovery_pb2.DeltaDiscoveryResponse(type_url=type_url, nonce=str(next(self._nonces)))
        for name in names:
            if not self._wants(s, type_url, name):
                continue
            entry = self.resources[type_url].get(name)
            if entry is None:
                if name in held:
                    del held[name]
                    resp.removed_resources.append(name)
                continue
            version, msg = entry
            if held.get(name) == version:
                continue
            held[name] = version
            packed = any_pb2.Any()
            packed.Pack(msg)
            resp.resources.append(discovery_pb2.Resource(name=name, version=version, resource=packed))
            self.sent_resources.append((type_url, name))
        if resp.resources or resp.removed_resources:
            s.queue.put_nowait(resp)

    def _push_sotw(self, s: _Stream, type_url: str) -> None:
        names = s.names.get(type_url)
        resp = discovery_pb2.DiscoveryResponse(
            type_url=type_url, nonce=str(next(self._nonces)), version_info=f"s{next(self._versions)}"
        )
        for name, (_, msg) in sorted(self.resources[type_url].items()):
            if (type_url in WILDCARD_TYPES and not names) or (names and name in names):
                packed = any_pb2.Any()
                packed.Pack(msg)
                resp.resources.append(packed)
        s.queue.put_nowait(resp)


class _Servicer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    def __init__(self, server: AdsServer) -> None:
        self.server = server

    async def DeltaAggregatedResources(
        self, requests: AsyncIterator[Any], context: Any
    ) -> AsyncIterator[Any]:
        async for item in self._run(requests, delta=True):
            yield item

    async def StreamAggregatedResources(
        self, requests: AsyncIterator[Any], context: Any
    ) -> AsyncIterator[Any]:
        async for item in self._run(requests, delta=False):
            yield item

    async def _run(self, requests: AsyncIterator[Any], delta: bool) -> AsyncIterator[Any]:
        srv = self.server
        s = _Stream(delta=delta)
        srv.streams.append(s)
        srv.connects += 1
        reader = asyncio.create_task(self._read(s, requests))
        try:
            while True:
                item = await s.queue.get()
                if item is None:
                    return
                yield item
        finally:
            reader.cancel()
            srv.streams.remove(s)

    async def _read(self, s: _Stream, requests: AsyncIterator[Any]) -> None:
        srv = self.server
        try:
            async for req in requests:
                if req.HasField("node"):
                    s.node_id = req.node.id
                if req.response_nonce:
                    srv.replies.append(Reply(req.type_url, req.response_nonce, req.error_detail.message))
                    if not s.delta:
                        # A SotW request also restates the names it wants.
                        s.names[req.type_url] = set(req.resource_names)
                    continue
                t = req.type_url
                if s.delta:
                    names = s.names.setdefault(t, set())
                    names.update(req.resource_names_subscribe)
                    names.difference_update(req.resource_names_unsubscribe)
                    held = s.sent.setdefault(t, {})
                    held.update(req.initial_resource_versions)
                    for n in req.resource_names_unsubscribe:
                        held.pop(n, None)
                    candidates = (
                        list(srv.resources[t])
                        if t in WILDCARD_TYPES and not names
                        else list(req.resource_names_subscribe) or list(names)
                    )
                    # Resources the client holds but the server no longer has are reported removed.
                    candidates += [n for n in req.initial_resource_versions if n not in candidates]
                    srv._push(s, t, candidates)
                else:
                    s.names[t] = set(req.resource_names)
                    s.sent.setdefault(t, {})
                    srv._push_sotw(s, t)
        except (asyncio.CancelledError, grpc.aio.AioRpcError):
            return
