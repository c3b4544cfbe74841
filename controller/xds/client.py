"""A small ADS client (Delta and SotW) over grpcio: for tests, benchmarks and debugging a controller.

It keeps what a proxy would keep (the resources it holds, per type) and leaves the decisions a proxy makes
(what to subscribe to, whether to ACK or NACK) to its caller.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import struct_pb2
from google.rpc import status_pb2


def make_node(node_id: str, metadata: Mapping[str, Any] | None = None) -> base_pb2.Node:
    """An Envoy Node with Istio-style metadata (``NAMESPACE``, ``LABELS``, ``GENERATOR``...)."""
    node = base_pb2.Node(id=node_id, cluster="mizzen")
    if metadata:
        struct = struct_pb2.Struct()
        struct.update(dict(metadata))
        node.metadata.CopyFrom(struct)
    return node


class _Stream:
    def __init__(self, target: str, node: base_pb2.Node, delta: bool) -> None:
        self.target = target
        self.node = node
        self.delta = delta
        self._outbox: asyncio.Queue[Any] = asyncio.Queue()
        self._inbox: asyncio.Queue[Any] = asyncio.Queue()
        self._channel: grpc.aio.Channel | None = None
        self._reader: asyncio.Task[None] | None = None
        self._node_sent = False
        self.received = 0
        self.received_bytes = 0

    async def start(self) -> None:
        self._channel = grpc.aio.insecure_channel(
            self.target, options=[("grpc.max_receive_message_length", 256 * 1024 * 1024)]
        )
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self._channel)
        method = stub.DeltaAggregatedResources if self.delta else stub.StreamAggregatedResources
        call = method(self._requests())
        self._reader = asyncio.create_task(self._read(call))

    async def _requests(self) -> AsyncIterator[Any]:
        while True:
            request = await self._outbox.get()
            if request is None:
                return
            yield request

    async def _read(self, call: Any) -> None:
        try:
            async for response in call:
                self.received += 1
                self.received_bytes += response.ByteSize()
                self._inbox.put_nowait(response)
        except grpc.aio.AioRpcError as exc:
            self._inbox.put_nowait(exc)
        except asyncio.CancelledError:
            return
        self._inbox.put_nowait(None)

    def _send(self, request: Any) -> None:
        if not self._node_sent:
            request.node.CopyFrom(self.node)
            self._node_sent = True
        self._outbox.put_nowait(request)

    async def recv(self, timeout: float = 10.0) -> Any:
        """The next response; raises TimeoutError, or the stream's error, or EOFError when it ended."""
        item = await asyncio.wait_for(self._inbox.get(), timeout)
        if item is None:
            raise EOFError("stream closed by the server")
        if isinstance(item, Exception):
            raise item
        return item

    def pending(self) -> int:
        """Responses received but not yet read with recv()."""
        return self._inbox.qsize()

    async def close(self) -> None:
        self._outbox.put_nowait(None)
        if self._reader is not None:
            self._reader.cancel()
        if self._channel is not None:
            await self._channel.close(grace=None)


class DeltaClient(_Stream):
    """Incremental xDS: subscribe by type (empty = wildcard for LDS/CDS), ACK/NACK each response."""

    def __init__(self, target: str, node: base_pb2.Node) -> None:
        super().__init__(target, node, delta=True)
        self.held: dict[str, dict[str, str]] = {}
        self.bodies: dict[str, dict[str, bytes]] = {}

    def subscribe(
        self, type_url: str, names: Iterable[str] = (), initial_versions: Mapping[str, str] | None = None
    ) -> None:
        request = discovery_pb2.DeltaDiscoveryRequest(type_url=type_url, resource_names_subscribe=list(names))
        for name, version in (initial_versions or {}).items():
            request.initial_resource_versions[name] = version
        self._send(request)

    def unsubscribe(self, type_url: str, names: Iterable[str]) -> None:
        self._send(
            discovery_pb2.DeltaDiscoveryRequest(type_url=type_url, resource_names_unsubscribe=list(names))
        )

    def apply(self, response: Any) -> None:
        """Take a response's resources as a proxy would (after deciding to ACK it)."""
        held = self.held.setdefault(response.type_url, {})
        bodies = self.bodies.setdefault(response.type_url, {})
        for r in response.resources:
            held[r.name] = r.version
            bodies[r.name] = r.resource.value
        for name in response.removed_resources:
            held.pop(name, None)
            bodies.pop(name, None)

    def ack(self, response: Any) -> None:
        self.apply(response)
        self._send(
            discovery_pb2.DeltaDiscoveryRequest(type_url=response.type_url, response_nonce=response.nonce)
        )

    def nack(self, response: Any, message: str) -> None:
        self._send(
            discovery_pb2.DeltaDiscoveryRequest(
                type_url=response.type_url,
                response_nonce=response.nonce,
                error_detail=status_pb2.Status(code=3, message=message),
            )
        )


class SotwClient(_Stream):
    """State-of-the-world xDS: each response is the full set for its type."""

    def __init__(self, target: str, node: base_pb2.Node) -> None:
        super().__init__(target, node, delta=False)
        self.versions: dict[str, str] = {}
        self.names: dict[str, list[str]] = {}

    def request(
        self, type_url: str, names: Iterable[str] = (), *, nonce: str = "", version: str = ""
    ) -> None:
        self.names[type_url] = list(names)
        self._send(
            discovery_pb2.DiscoveryRequest(
                type_url=type_url, resource_names=list(names), response_nonce=nonce, version_info=version
            )
        )

    def ack(self, response: Any) -> None:
        self.versions[response.type_url] = response.version_info
        self.request(
            response.type_url,
            self.names.get(response.type_url, ()),
            nonce=response.nonce,
            version=response.version_info,
        )
