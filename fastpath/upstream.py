"""HTTP/1.1 connections to upstream hosts, pooled per host with keep-alive.

A connection carries one request at a time (no upstream pipelining, as Envoy). ``acquire`` hands an
exchange an idle connection, opens a new one, or parks the exchange when the cluster's connection
breaker is at its limit (bounded by max_pending_requests; beyond it the request overflows, flag UO).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, cast

from fastpath import http1
from fastpath.clusters import Cluster, Host
from fastpath.filters import alpn
from fastpath.outbox import OUTBOX, Outbox
from fastpath.sockets import set_keepalive

if TYPE_CHECKING:
    from fastpath.exchange import Exchange

NEED_DATA = http1.NEED_DATA
HEAD = http1.HEAD
BODY = http1.BODY
END = http1.END
TUNNEL = http1.TUNNEL


class UpstreamConnection:
    """The protocol of one upstream connection (an asyncio protocol, duck-typed for uvloop)."""

    __slots__ = (
        "born",
        "closed",
        "cluster",
        "discarding",
        "exchange",
        "host",
        "idle_since",
        "keep_alive",
        "out",
        "outbox",
        "parser",
        "requests",
        "transport",
    )

    def __init__(self, host: Host) -> None:
        self.host = host
        self.cluster: Cluster = host.cluster
        self.transport: asyncio.Transport | None = None
        self.parser = http1.ResponseParser()
        self.exchange: Exchange | None = None
        self.requests = 0
        self.idle_since = 0.0
        self.born = time.monotonic()  # max_connection_duration counts from here
        self.closed = False
        self.keep_alive = True
        self.discarding = (
            False  # reading a response nobody will see (a retried attempt), to reuse the connection
        )
        self.outbox: Outbox = OUTBOX
        self.out: list[bytes] = []
        host.connections += 1
        self.cluster.connections += 1

    # -- asyncio protocol -----------------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self.transport = cast(asyncio.Transport, transport)
        keepalive = self.cluster.config.tcp_keepalive
        if keepalive is not None:
            set_keepalive(transport.get_extra_info("socket"), *keepalive)

    def data_received(self, data: bytes) -> None:
        ex = self.exchange
        if ex is None and not self.discarding:
            self.close()  # bytes nobody asked for on an idle connection: it cannot be trusted again
            return
        batch = self.outbox.begin()
        try:
            self._read(data, ex)
        finally:
            if batch:
                self.outbox.end()

    def _read(self, data: bytes, ex: Exchange | None) -> None:
        parser = self.parser
        try:
            parser.set_data(data)
            while True:
                ev = parser.next()
                if ev == NEED_DATA:
                    return
                if self.discarding:
                    if ev == END:
                        self.discarding = False
                        self._done_discarding()
                        return
                    continue
                assert ex is not None
                if ev == HEAD:
                    ex.on_response_head(self, parser.head)
                elif ev == BODY:
                    ex.on_response_data(data, parser.start, parser.end)
                elif ev == END:
                    ex.on_response_end(self)
                    return
                else:
                    ex.on_tunnel_data(data, parser.start, parser.end, upstream=True)
                if self.exchange is not ex:
                    return  # the exchange let go of this connection (retry, reset, local reply)
        except http1.HttpParseError as exc:
            self.keep_alive = False
            if self.exchange is not None:
                self.exchange.on_upstream_protocol_error(self, exc)
            self.close()

    def eof_received(self) -> bool:
        self.keep_alive = False  # never handed out again, even before connection_lost says it is gone
        try:
            if self.parser.finish() and self.exchange is not None and not self.discarding:
                self.keep_alive = False
                self.exchange.on_response_end(self)
                return False
        except http1.HttpParseError:
            pass
        if self.exchange is not None and self.exchange.tunnel:
            self.exchange.on_tunnel_eof(upstream=True)
            return True
        return False  # closes the transport; connection_lost reports a reset if a response was due

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.closed:
            return
        self.closed = True
        self._forget()
        ex = self.exchange
        if ex is not None:
            self.exchange = None
            ex.on_upstream_reset(self)

    def pause_writing(self) -> None:
        # The upstream reads slower than the client sends: stop reading from the client.
        if self.exchange is not None:
            self.exchange.conn.pause_reading(2)  # PAUSE_BACKPRESSURE

    def resume_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.conn.resume_reading(2)

    # -- use ------------------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        if self.outbox.active:
            if not self.out:
                self.outbox.dirty.append(self)
            self.out.append(data)
            return
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def flush(self) -> None:
        out = self.out
        if not out:
            return
        t = self.transport
        if t is not None and not self.closed:
            if len(out) == 1:
                t.write(out[0])
            else:
                t.writelines(out)  # the transport keeps the buffers, not the list: it can be reused
        out.clear()

    def start(self, exchange: Exchange, head: bytes, method: bytes, upgrade: bool) -> None:
        self.exchange = exchange
        self.requests += 1
        self.parser.expect(method, upgrade)
        self.send(head)

    def release(self) -> None:
        """The exchange is done with the connection: back to the pool, or closed."""
        ex = self.exchange
        self.exchange = None
        host = self.host
        cfg = self.cluster.config
        if (
            self.closed
            or not self.keep_alive
            or self.discarding
            or self.cluster.removed
            or (ex is not None and ex.tunnel)
            or (cfg.max_requests_per_connection and self.requests >= cfg.max_requests_per_connection)
            or (cfg.max_connection_duration and time.monotonic() - self.born >= cfg.max_connection_duration)
            or self.transport is None
            or self.transport.is_closing()
            or not self.parser.idle
        ):
            if not self.discarding:
                self.close()
            return
        if host.waiting:
            self._serve(host.waiting.popleft())
            return
        self.idle_since = time.monotonic()
        host.idle.append(self)

    def discard_response(self) -> None:
        """Read the rest of the current response and drop it, then pool the connection (a retry's
        attempt that got a retriable status)."""
        self.exchange = None
        if not self.keep_alive:
            self.close()
            return
        self.discarding = True

    def _done_discarding(self) -> None:
        if self.keep_alive:
            self.release()
        else:
            self.close()

    def _serve(self, ex: Exchange) -> None:
        self.cluster.pending_requests -= 1
        ex.waiting_on = None
        ex.on_pool_ready(self)

    def close(self) -> None:
        self.flush()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
        if not self.closed:
            self.closed = True
            self._forget()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
        if not self.closed:
            self.closed = True
            self._forget()

    def _forget(self) -> None:
        host = self.host
        host.connections -= 1
        self.cluster.connections -= 1
        try:
            host.idle.remove(self)
        except ValueError:
            pass
        # A connection slot freed: someone parked on this cluster may connect now.
        _unpark(self.cluster)


def acquire(host: Host, ex: Exchange) -> None:
    """Give ``ex`` a connection to ``host`` (now or later), or fail it with a response flag."""
    cluster = host.cluster
    if cluster.http2 or (cluster.use_downstream_protocol and ex.conn.http2):
        from fastpath import upstream_h2  # HTTP/2 upstreams: a stream on a shared connection

        upstream_h2.acquire(host, ex)
        return
    idle = host.idle
    while idle:
        conn = idle.pop()
        if conn.keep_alive and not conn.closed:
            ex.on_pool_ready(conn)
            return
        conn.close()
    if cluster.pending_requests >= cluster.max_pending_requests:
        cluster.bump("upstream_rq_pending_overflow")
        ex.on_pool_failure("UO", "overflow")
        return
    cluster.pending_requests += 1
    if cluster.connections >= cluster.max_connections:
        cluster.bump("upstream_cx_overflow")
        host.waiting.append(ex)
        ex.waiting_on = host
        return
    _connect(host, ex)


def cancel_wait(host: Host, ex: Exchange) -> None:
    try:
        host.waiting.remove(ex)
    except ValueError:
        return
    host.cluster.pending_requests -= 1


def _unpark(cluster: Cluster) -> None:
    if cluster.connections >= cluster.max_connections:
        return
    for host in cluster.hosts.values():
        if host.waiting:
            _connect(host, host.waiting.popleft())
            return


def _connect(host: Host, ex: Exchange) -> None:
    ex.waiting_on = None
    loop = asyncio.get_running_loop()
    task = loop.create_task(_open(host, ex))
    ex.connecting = task


async def _open(host: Host, ex: Exchange) -> None:
    cluster = host.cluster
    cfg = cluster.config
    loop = asyncio.get_running_loop()
    conn = UpstreamConnection(host)
    local = (cfg.source_address, 0) if cfg.source_address else None
    layer = None
    try:
        try:
            if host.tls is None:
                await asyncio.wait_for(
                    loop.create_connection(lambda: conn, host.address, host.port, local_addr=local),
                    cfg.connect_timeout,
                )
            else:
                # TLS origination: the connection is usable once the handshake (and the peer's
                # identity check) is done, so either failure is a connect failure.
                tls = alpn.upstream_tls(host.tls, ex, "HTTP11")
                layer = tls.layer(conn, host.address, host.port)
                await asyncio.wait_for(_open_tls(loop, layer, host, local), cfg.connect_timeout)
        finally:
            cluster.pending_requests -= 1
            ex.connecting = None
    except asyncio.CancelledError:
        conn.abort()  # the exchange went away while we were connecting
        if layer is not None:
            layer.abort()
        raise
    except (OSError, TimeoutError) as exc:
        if layer is not None:
            layer.abort()
        conn.closed = True
        conn._forget()
        cluster.bump("upstream_cx_connect_fail")
        reason = "connection timeout" if isinstance(exc, TimeoutError) else "connection failure"
        ex.on_connect_failure(host, reason, str(exc))
        return
    cluster.bump("upstream_cx_total")
    if ex.done:
        conn.release()
        return
    ex.on_pool_ready(conn)


async def _open_tls(loop: Any, layer: Any, host: Host, local: Any) -> None:
    await loop.create_connection(lambda: layer, host.address, host.port, local_addr=local)
    await layer.handshake
