"""L4 proxying (Envoy's TcpProxy filter): two linked asyncio protocols, bytes passed as they come.

Protocols rather than streams: no per-chunk task switch or buffer copy, which is
what a sidecar's L4 path costs. Flow control is the transports' own: when one
side's write buffer passes its high-water mark, the other side stops reading
until it drains, so memory stays bounded by the buffer limits. Half-close is
forwarded (EOF one way keeps the other way open), as TcpProxy does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, cast

# Per-connection record passed to the stats sink when a connection ends.
ConnectionDone = Callable[["TcpSession"], None]


class _Side(asyncio.Protocol):
    """One leg of a proxied connection; forwards what it reads to its peer leg."""

    __slots__ = (
        "eof",
        "linked",
        "on_made",
        "peer",
        "pending",
        "pending_size",
        "received",
        "session",
        "transport",
    )

    def __init__(self, session: TcpSession) -> None:
        self.session = session
        self.transport: asyncio.Transport | None = None
        self.peer: _Side | None = None
        self.eof = False
        self.linked = False  # the peer leg is connected and has had our pending bytes
        self.received = 0
        self.on_made: Callable[[TcpSession], None] | None = None
        # Bytes that arrive before the peer leg is connected; handed over, in order, on connect.
        self.pending: list[bytes] = []
        self.pending_size = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        if self.on_made is not None:
            self.on_made(self.session)

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        self.session.last_activity = time.monotonic()
        peer = self.peer
        if self.linked and peer is not None and peer.transport is not None:
            peer.transport.write(data)
            return
        # Not connected yet: keep it, and stop reading once a buffer's worth is waiting.
        self.pending.append(data)
        self.pending_size += len(data)
        if self.pending_size >= 65536 and self.transport is not None:
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self.eof = True
        peer = self.peer
        if self.linked and peer is not None and peer.transport is not None:
            if peer.transport.can_write_eof():
                peer.transport.write_eof()
        if peer is not None and peer.eof:
            self.session.close()
            return False
        return True  # keep the transport open: the other direction may still be sending

    def pause_writing(self) -> None:
        # Our outgoing buffer is full: stop reading from the side that fills it.
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.session.close(error=exc is not None)


class TcpSession:
    """A downstream connection and, once connected, its upstream, with the counts telemetry needs."""

    def __init__(self, info: dict[str, Any], on_done: ConnectionDone) -> None:
        self.info = info  # listener, cluster, upstream host, original destination...
        self.on_done = on_done
        self.downstream = _Side(self)
        self.upstream = _Side(self)
        self.downstream.peer, self.upstream.peer = self.upstream, self.downstream
        self.started = time.monotonic()
        self.start_wall = time.time()
        self.ended = 0.0
        self.last_activity = self.started
        self.response_flags = "-"
        self.closed = False
        self.idle_watch: asyncio.Task[None] | None = None
        self.chain: Any = None  # the filter chain it was accepted on (a listener update drains it)
        self.draining = False

    def close(self, *, error: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        self.ended = time.monotonic()
        if self.idle_watch is not None and self.idle_watch is not asyncio.current_task():
            self.idle_watch.cancel()
        for side in (self.downstream, self.upstream):
            if side.transport is not None and not side.transport.is_closing():
                if error:
                    side.transport.abort()
                else:
                    side.transport.close()
        self.on_done(self)

    @property
    def duration(self) -> float:
        """Seconds from accept to close (to now while open)."""
        return (self.ended or time.monotonic()) - self.started

    @property
    def bytes_received(self) -> int:
        """From downstream (Istio's istio_tcp_received_bytes_total)."""
        return self.downstream.received

    @property
    def bytes_sent(self) -> int:
        """To downstream (istio_tcp_sent_bytes_total)."""
        return self.upstream.received


class TcpRecord:
    """A finished connection as the access log formatter sees it (``fastpath.access_log.LogRecord``): the
    HTTP fields are absent, so Istio's format prints a TCP line (``"- - -" 0 -``...) as Envoy does."""

    __slots__ = (
        "bytes_received",
        "bytes_sent",
        "downstream_local_address",
        "downstream_remote_address",
        "duration_ms",
        "response_flags",
        "start_time",
        "upstream_cluster",
        "upstream_failure",
        "upstream_host",
    )

    response_code = 0
    response_code_details = None
    upstream_local_address = None
    route_name = None
    protocol = None
    upstream_service_time = None
    grpc_status = None

    def __init__(self, session: TcpSession) -> None:
        info = session.info
        self.start_time = session.start_wall
        self.duration_ms = int(session.duration * 1000)
        self.response_flags = session.response_flags
        self.bytes_received = session.bytes_received
        self.bytes_sent = session.bytes_sent
        self.upstream_host = info.get("upstream")
        self.upstream_cluster = info.get("cluster")
        self.upstream_failure = info.get("failure")
        self.downstream_local_address = info.get("original_dst")
        self.downstream_remote_address = info.get("peer")

    def request_header(self, name: str) -> str | None:
        return None

    def response_header(self, name: str) -> str | None:
        return None


async def connect_upstream(
    session: TcpSession,
    host: str,
    port: int,
    *,
    timeout: float,
    source_address: str | None = None,
    idle_timeout: float | None = None,
    tls: Any = None,
) -> bool:
    """Connect the session's upstream leg and start forwarding; False (with a response flag) on failure.

    ``tls``: an UpstreamTls to originate TLS with; the leg counts as connected once the handshake and
    the peer's identity check are done."""
    loop = asyncio.get_running_loop()
    local = (source_address, 0) if source_address else None
    layer = None
    try:
        if tls is None:
            await asyncio.wait_for(
                loop.create_connection(lambda: session.upstream, host, port, local_addr=local), timeout
            )
        else:
            layer = tls.layer(session.upstream, host, port)
            await asyncio.wait_for(_connect_tls(loop, layer, host, port, local), timeout)
    except (TimeoutError, OSError) as exc:
        if layer is not None:
            layer.abort()
        session.response_flags = "UF"  # upstream connection failure (refused, timeout, TLS)
        session.info["failure"] = str(exc) or type(exc).__name__
        return False
    except asyncio.CancelledError:
        if layer is not None:
            layer.abort()
        raise
    down = session.downstream.transport
    if down is None or (down.is_closing() and not session.downstream.eof):
        session.close()
        return False
    up = session.upstream.transport
    assert up is not None
    downstream = session.downstream
    if downstream.pending:
        up.writelines(downstream.pending)
        downstream.pending.clear()
        downstream.pending_size = 0
    upstream = session.upstream
    if upstream.pending:  # a server-first protocol may have spoken already
        down.writelines(upstream.pending)
        upstream.pending.clear()
        upstream.pending_size = 0
    downstream.linked = upstream.linked = True
    if downstream.eof and up.can_write_eof():
        up.write_eof()
    if upstream.eof and down.can_write_eof():
        down.write_eof()
    down.resume_reading()
    if idle_timeout:
        session.idle_watch = loop.create_task(_watch_idle(session, idle_timeout))
    return True


async def _connect_tls(loop: Any, layer: Any, host: str, port: int, local: Any) -> None:
    await loop.create_connection(lambda: layer, host, port, local_addr=local)
    await layer.handshake


async def _watch_idle(session: TcpSession, idle: float) -> None:
    while not session.closed:
        remaining = session.last_activity + idle - time.monotonic()
        if remaining <= 0:
            session.response_flags = "IT"
            session.close()
            return
        await asyncio.sleep(remaining)
