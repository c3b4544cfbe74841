"""The controller's tap relay: sidecars keep a tap channel open to the controller (a gRPC stream on the xDS
port, JSON messages); ``mizzen tap`` and the dashboard ask the controller's API for a tap, and the
controller starts a session on each sidecar of the target, merges their events, and stops the sessions
when the watcher leaves or the duration is over.

Who may tap is whoever may reach the controller's debug API (15014): on Kubernetes, through the API
server's pod proxy (RBAC: ``get`` on ``pods/proxy`` in the controller's namespace) or a port-forward; the
sidecars only act on the controller's requests, over the channel they opened themselves.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import orjson

from mizzen import logs

log = logs.get("tap")

SERVICE = "mizzen.tap.v1.Tap"
EVENTS_BUFFER = 4096  # events waiting for a slow watcher; beyond it they are dropped


@dataclass
class ProxyChannel:
    """One sidecar's open tap channel."""

    node: dict[str, Any]
    peer: str
    outbox: asyncio.Queue[bytes] = field(default_factory=asyncio.Queue)
    sessions: dict[str, asyncio.Queue[Any]] = field(default_factory=dict)
    connected_at: float = field(default_factory=time.time)

    @property
    def id(self) -> str:
        return str(self.node.get("id") or "")

    def describe(self) -> dict[str, Any]:
        return {**self.node, "peer": self.peer, "connected_at": self.connected_at, "taps": len(self.sessions)}


class TapError(ValueError):
    pass


class TapHub:
    def __init__(self) -> None:
        self.channels: dict[str, ProxyChannel] = {}
        self._ids = itertools.count(1)

    # -- the sidecars' side --
    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Connect": grpc.stream_stream_rpc_method_handler(
                    self.connect, request_deserializer=_identity, response_serializer=_identity
                )
            },
        )

    async def connect(self, requests: Any, context: Any) -> AsyncIterator[bytes]:
        """A sidecar's channel: its hello, then events in; session commands out."""
        iterator = requests.__aiter__()
        try:
            hello = orjson.loads(await iterator.__anext__()).get("hello") or {}
        except (StopAsyncIteration, orjson.JSONDecodeError):
            return
        channel = ProxyChannel(dict(hello), context.peer())
        previous = self.channels.get(channel.id)
        if previous is not None:
            self._close(previous)  # the sidecar reconnected: its old channel is gone
        self.channels[channel.id] = channel
        log.debug("tap channel open", proxy=channel.id)
        reader = asyncio.create_task(self._read(channel, iterator))
        try:
            while not reader.done():
                get = asyncio.ensure_future(channel.outbox.get())
                await asyncio.wait({get, reader}, return_when=asyncio.FIRST_COMPLETED)
                if not get.done():
                    get.cancel()
                    break
                yield get.result()
        finally:
            reader.cancel()
            if self.channels.get(channel.id) is channel:
                del self.channels[channel.id]
            self._close(channel)

    async def _read(self, channel: ProxyChannel, iterator: Any) -> None:
        async for raw in iterator:
            message = orjson.loads(raw)
            queue = channel.sessions.get(str(message.get("id")))
            if queue is None:
                continue
            if "event" in message:
                if queue.qsize() < EVENTS_BUFFER:
                    queue.put_nowait(message["event"])
            elif "error" in message:
                queue.put_nowait(TapError(f"{channel.id}: {message['error']}"))
            elif message.get("end"):
                queue.put_nowait(None)

    def _close(self, channel: ProxyChannel) -> None:
        for queue in channel.sessions.values():
            queue.put_nowait(None)  # its sidecar is gone: that part of each tap is over
        channel.sessions.clear()

    # -- the watchers' side --
    def targets(self, target: str, namespace: str) -> list[ProxyChannel]:
        """The sidecars of ``deploy/NAME``, ``workload/NAME``, ``pod/NAME`` or ``NAME`` in ``namespace``."""
        kind, _, name = target.rpartition("/")
        kind = kind.lower()
        if kind not in ("", "deploy", "deployment", "deployments", "workload", "pod", "pods", "po"):
            raise TapError(f"{target!r}: tap a deploy/NAME, workload/NAME or pod/NAME")
        out = []
        for ch in self.channels.values():
            node = ch.node
            if node.get("namespace") != namespace:
                continue
            pod = str(node.get("pod") or "")
            workload = str(node.get("workload") or "")
            by_pod = pod == name
            by_workload = workload == name or pod.startswith(name + "-")
            if (kind in ("pod", "pods", "po") and by_pod) or (
                kind in ("deploy", "deployment", "deployments", "workload") and by_workload
            ):
                out.append(ch)
            elif not kind and (by_pod or by_workload):
                out.append(ch)
        return sorted(out, key=lambda c: c.id)

    async def tap(
        self, channels: list[ProxyChannel], params: dict[str, str]
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Events from a session on each of ``channels`` until all end (deadline) or the caller stops."""
        sid = f"t{next(self._ids)}"
        queue: asyncio.Queue[Any] = asyncio.Queue()
        start = orjson.dumps({"start": {"id": sid, "params": params}})
        for ch in channels:
            ch.sessions[sid] = queue
            ch.outbox.put_nowait(start)
        remaining = len(channels)
        try:
            while remaining:
                item = await queue.get()
                if item is None:
                    remaining -= 1
                elif isinstance(item, TapError):
                    raise item
                else:
                    yield item
        finally:
            stop = orjson.dumps({"stop": sid})
            for ch in channels:
                if ch.sessions.pop(sid, None) is not None:
                    ch.outbox.put_nowait(stop)

    def status(self) -> list[dict[str, Any]]:
        return [ch.describe() for ch in sorted(self.channels.values(), key=lambda c: c.id)]


def _identity(data: bytes) -> bytes:
    return data
