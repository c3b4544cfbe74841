"""HTTP/2 to upstreams (gRPC servers, HTTP/2 clusters): streams multiplexed over pooled connections.

The exchange talks HTTP/1.1 to its upstream connection (see ``fastpath.http2``). ``H2Upstream`` is an
``UpstreamConnection`` that takes that HTTP/1.1 request and sends it as a stream on a shared HTTP/2
connection to the host, and turns the stream's response (headers, data, trailers) back into HTTP/1.1 —
chunked, trailers included — for the exchange's response parser. One connection per host carries up to
the server's SETTINGS_MAX_CONCURRENT_STREAMS (and the cluster's limit); more streams open another.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastpath import h2codec, http1
from fastpath.clusters import Host
from fastpath.filters import alpn
from fastpath.http2 import CONNECTION_SPECIFIC, _Dechunker, send_windowed
from fastpath.outbox import OUTBOX
from fastpath.upstream import UpstreamConnection
from mizzen import logs

log = logs.get("proxy")

# Per host (cluster, address, port): the live HTTP/2 connections.
_POOLS: dict[tuple[str, str, int], list[H2ClientConnection]] = {}


def acquire(host: Host, ex: Any) -> None:
    """Give the exchange a stream to ``host``: on a connection with room, or a new connection."""
    cluster = host.cluster
    key = (cluster.name, host.address, host.port)
    conns = _POOLS.setdefault(key, [])
    limit = cluster.config.h2_max_concurrent_streams
    for conn in conns:
        if conn.usable and conn.open_streams < min(limit, conn.peer_max_streams):
            conn.open_stream(ex)
            return
    if cluster.connections >= cluster.max_connections and conns:
        conns[0].open_stream(ex)  # at the connection limit: queue on an existing connection
        return
    conn = H2ClientConnection(host, key)
    conns.append(conn)
    conn.waiting.append(ex)
    cluster.pending_requests += 1
    # The connection, not the exchange, owns the connect: other exchanges may come to wait on it.
    conn.task = asyncio.get_running_loop().create_task(conn.connect())


async def _open_tls(loop: Any, layer: Any, host: Host, local: Any) -> None:
    await loop.create_connection(lambda: layer, host.address, host.port, local_addr=local)
    await layer.handshake


class H2ClientConnection:
    """One HTTP/2 connection to an upstream host, shared by many streams."""

    def __init__(self, host: Host, key: tuple[str, str, int]) -> None:
        self.host = host
        self.cluster = host.cluster
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.h2 = h2codec.Connection(client_side=True)
        self.streams: dict[int, H2Upstream] = {}
        self.queued = False  # in the outbox, to be flushed when the current read is handled
        self.waiting: list[Any] = []  # exchanges waiting for the connection to be made
        self.usable = True
        self.closed = False
        self.peer_max_streams = 100
        self.task: asyncio.Task[None] | None = None
        host.connections += 1
        self.cluster.connections += 1

    @property
    def open_streams(self) -> int:
        return len(self.streams) + len(self.waiting)

    async def connect(self) -> None:
        cfg = self.cluster.config
        loop = asyncio.get_running_loop()
        local = (cfg.source_address, 0) if cfg.source_address else None
        waiting = self.waiting
        host = self.host
        layer = None
        try:
            if host.tls is None:
                await asyncio.wait_for(
                    # An asyncio protocol by its methods (not by inheritance: it is a plain class).
                    loop.create_connection(lambda: self, host.address, host.port, local_addr=local),  # type: ignore[type-var]
                    cfg.connect_timeout,
                )
            else:
                # TLS origination (mutual TLS between sidecars, or a DestinationRule's): as in the HTTP/1
                # pool, the handshake and the peer's identity check are part of connecting.
                tls = alpn.upstream_tls(host.tls, waiting[0] if waiting else None, "HTTP2")
                layer = tls.layer(self, host.address, host.port)
                await asyncio.wait_for(_open_tls(loop, layer, host, local), cfg.connect_timeout)
        except asyncio.CancelledError:
            if layer is not None:
                layer.abort()
            self._fail_waiting("cancelled")
            self._gone()
            raise
        except (OSError, TimeoutError) as exc:
            if layer is not None:
                layer.abort()
            self.cluster.bump("upstream_cx_connect_fail")
            reason = "connection timeout" if isinstance(exc, TimeoutError) else "connection failure"
            self._gone()
            self.cluster.pending_requests -= len(waiting)
            for ex in waiting:
                ex.on_connect_failure(self.host, reason, str(exc))
            waiting.clear()
            return
        self.cluster.bump("upstream_cx_total")
        self.cluster.pending_requests -= len(waiting)
        waiting_now = list(waiting)
        waiting.clear()
        for ex in waiting_now:
            if not ex.done:
                self.open_stream(ex)

    def _fail_waiting(self, why: str) -> None:
        self.cluster.pending_requests -= len(self.waiting)
        self.waiting.clear()

    # -- asyncio protocol -----------------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.h2.initiate_connection()
        self.flush()

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except h2codec.ProtocolError as exc:
            log.debug("upstream http2 protocol error", host=self.host.label, error=str(exc))
            self.close()
            return
        # The responses of several streams in one read reach their clients in one write per client.
        batch = OUTBOX.begin()
        try:
            self._events(events)
        finally:
            if batch:
                OUTBOX.end()

    def _events(self, events: list[Any]) -> None:
        for ev in events:
            stream = self.streams.get(getattr(ev, "stream_id", 0) or 0)
            if isinstance(ev, h2codec.ResponseReceived):
                if stream is not None:
                    stream.response_headers(ev.headers, ev.stream_ended is not None)
            elif isinstance(ev, h2codec.DataReceived):
                if stream is not None and stream.held:
                    stream.unacked += ev.flow_controlled_length  # the client is slow: its window closes
                else:
                    self.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                if stream is not None:
                    stream.response_data(ev.data)
            elif isinstance(ev, h2codec.TrailersReceived):
                if stream is not None:
                    stream.response_trailers(ev.headers)
            elif isinstance(ev, h2codec.StreamEnded):
                if stream is not None:
                    stream.response_end()
            elif isinstance(ev, h2codec.StreamReset):
                if stream is not None:
                    self.streams.pop(ev.stream_id, None)
                    stream.reset(ev.error_code)
            elif isinstance(ev, h2codec.WindowUpdated):
                targets = list(self.streams.values()) if ev.stream_id == 0 else ([stream] if stream else [])
                for s in targets:
                    s.send_pending()
            elif isinstance(ev, h2codec.RemoteSettingsChanged):
                setting = ev.changed_settings.get(h2codec.SettingCodes.MAX_CONCURRENT_STREAMS)
                if setting is not None:
                    self.peer_max_streams = setting.new_value
                # A new initial window opens every stream at once, with no WINDOW_UPDATE to say so.
                for s in list(self.streams.values()):
                    s.send_pending()
            elif isinstance(ev, h2codec.ConnectionTerminated):
                self.usable = False  # GOAWAY: no new streams; those below last_stream_id finish
        self.flush()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        self._gone()
        for stream in list(self.streams.values()):
            stream.reset(h2codec.ErrorCodes.CONNECT_ERROR)
        self.streams.clear()

    def pause_writing(self) -> None:
        for stream in list(self.streams.values()):
            if stream.exchange is not None:
                stream.exchange.conn.pause_reading(2)

    def resume_writing(self) -> None:
        for stream in list(self.streams.values()):
            if stream.exchange is not None:
                stream.exchange.conn.resume_reading(2)

    # -- streams --------------------------------------------------------------------------------

    def open_stream(self, ex: Any) -> None:
        if self.transport is None:
            self.waiting.append(ex)
            self.cluster.pending_requests += 1
            return
        stream = H2Upstream(self)
        ex.on_pool_ready(stream)

    def flush(self) -> None:
        if OUTBOX.active:  # sent when the read being handled is done
            if not self.queued:
                self.queued = True
                OUTBOX.dirty.append(self)
            return
        self.queued = False
        t = self.transport
        if t is not None and not t.is_closing():
            out = self.h2.data_to_send()
            if out:
                t.write(out)

    def close(self) -> None:
        self.usable = False
        t = self.transport
        if t is not None and not t.is_closing():
            out = self.h2.data_to_send()  # a GOAWAY or resets still queued go out first
            if out:
                t.write(out)
            t.close()

    def _gone(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.usable = False
        self.host.connections -= 1
        self.cluster.connections -= 1
        conns = _POOLS.get(self.key)
        if conns is not None and self in conns:
            conns.remove(self)
            if not conns:
                _POOLS.pop(self.key, None)


class H2Upstream(UpstreamConnection):
    """One stream on an ``H2ClientConnection``, as the exchange's upstream connection."""

    def __init__(self, conn: H2ClientConnection) -> None:
        # Not UpstreamConnection.__init__: a stream is not a connection to count.
        self.conn = conn
        self.host = conn.host
        self.cluster = conn.cluster
        self.transport = conn.transport
        self.parser = http1.ResponseParser()
        self.exchange = None
        self.requests = 0
        self.idle_since = 0.0
        self.closed = False
        self.keep_alive = False  # streams are not pooled; their connection is
        self.discarding = False
        self.outbox = OUTBOX
        self.out = []
        self.sid = 0
        self.request = http1.RequestParser()
        self.req_chunked = False
        self.dechunk: Any = None
        self.pending: list[tuple[bytes, bool]] = []
        self.req_trailers: list[tuple[bytes, bytes]] | None = None
        self.ended = False
        self._opened = False  # HEADERS sent
        self._headers: list[tuple[bytes, bytes]] = []
        self.resp_chunked = False
        self.held = False
        self.unacked = 0

    # -- the exchange writes HTTP/1.1 -----------------------------------------------------------

    def start(self, exchange: Any, head: bytes, method: bytes, upgrade: bool) -> None:
        self.exchange = exchange
        self.requests += 1
        self.parser.expect(method, upgrade)
        self.send(head)

    def send(self, data: bytes) -> None:
        if self.closed:
            return
        p = self.request
        try:
            p.set_data(data)
            while True:
                ev = p.next()
                if ev == http1.NEED_DATA:
                    break
                if ev == http1.HEAD:
                    head = p.head
                    assert head is not None  # HEAD: the parser has one
                    self.req_chunked = head.chunked
                    if head.chunked:
                        self.dechunk = _Dechunker()
                    headers = [
                        (b":method", head.method),
                        (b":scheme", b"http"),
                        (b":path", head.target),
                        (b":authority", head.host or self.host.address.encode()),
                    ]
                    headers += [(n, v) for n, v in head.headers if n not in CONNECTION_SPECIFIC]
                    # A request whose end comes in this same buffer may end the stream with its HEADERS.
                    self._headers = headers
                elif ev == http1.BODY:
                    chunk = data[p.start : p.end]
                    payload = self.dechunk.feed(chunk) if self.req_chunked else chunk
                    self._open(False)
                    if payload:
                        self.pending.append((payload, False))
                elif ev == http1.END:
                    if self.req_chunked and self.dechunk.trailers:
                        self.req_trailers = self.dechunk.trailers
                    if not self._opened and not self.req_trailers:
                        self._open(True)
                    else:
                        self._open(False)
                        self.pending.append((b"", True))
        except (http1.HttpParseError, h2codec.ProtocolError) as exc:
            log.debug("cannot send request over http2", stream=self.sid, error=repr(exc))
            self.abort()
            return
        self.send_pending()

    def _open(self, end: bool) -> None:
        if self._opened:
            return
        self._opened = True
        # The stream's id is taken when its HEADERS go out, not before: ids must be used in order, and
        # another stream may open on this connection between this request's head and its body.
        self.sid = self.conn.h2.get_next_available_stream_id()
        self.conn.streams[self.sid] = self
        self.conn.h2.send_headers(self.sid, self._headers, end_stream=end)
        if end:
            self.ended = True

    def send_pending(self) -> None:
        h = self.conn.h2
        if not self.closed and send_windowed(h, self.sid, self.pending) and not self.ended:
            self.ended = True
            if self.req_trailers:
                h.send_headers(self.sid, self.req_trailers, end_stream=True)
            else:
                h.end_stream(self.sid)
        self.conn.flush()

    # -- the stream's response, as HTTP/1.1 to the exchange ------------------------------------

    def response_headers(self, headers: list[tuple[bytes, bytes]], ended: bool) -> None:
        status = b"200"
        lines = []
        length = None
        for name, value in headers:
            if name == b":status":
                status = value
            elif not name.startswith(b":") and name not in CONNECTION_SPECIFIC:
                lines.append(name + b": " + value + b"\r\n")
                if name == b"content-length":
                    length = value
        if ended and length is None:
            lines.append(b"content-length: 0\r\n")
        elif not ended and length is None:
            lines.append(b"transfer-encoding: chunked\r\n")
            self.resp_chunked = True
        self.feed(b"HTTP/1.1 " + status + b" \r\n" + b"".join(lines) + b"\r\n")

    def response_data(self, data: bytes) -> None:
        if data:
            self.feed(b"%x\r\n%s\r\n" % (len(data), data) if self.resp_chunked else data)

    def response_trailers(self, headers: list[tuple[bytes, bytes]]) -> None:
        if self.resp_chunked:
            lines = b"".join(n + b": " + v + b"\r\n" for n, v in headers if not n.startswith(b":"))
            self.feed(b"0\r\n" + lines + b"\r\n")
            self.resp_chunked = False  # ended

    def response_end(self) -> None:
        self.conn.streams.pop(self.sid, None)  # over: nothing left to reset when the exchange lets go
        if self.resp_chunked:
            self.feed(b"0\r\n\r\n")
            self.resp_chunked = False

    def feed(self, data: bytes) -> None:
        if self.exchange is not None or self.discarding:
            UpstreamConnection.data_received(self, data)

    def hold(self, on: bool) -> None:
        """Backpressure from the client side: stop (or resume) acknowledging this stream's data."""
        self.held = on
        if not on and self.unacked and not self.closed:
            try:
                self.conn.h2.acknowledge_received_data(self.unacked, self.sid)
            except h2codec.StreamClosedError:
                pass
            self.unacked = 0
            self.conn.flush()

    def reset(self, code: int) -> None:
        """The stream (or its connection) ended abnormally."""
        log.debug("upstream http2 stream reset", stream=self.sid, code=code)
        self.closed = True
        if self.unacked:  # held back for a slow client: the connection's window gets it back
            self.conn.h2.acknowledge_received_data(self.unacked, self.sid)
            self.unacked = 0
        ex = self.exchange
        if ex is not None:
            self.exchange = None
            ex.on_upstream_reset(self)

    # -- what the exchange calls when it is done --------------------------------------------------

    def release(self) -> None:
        self.exchange = None
        self.conn.streams.pop(self.sid, None)

    def discard_response(self) -> None:
        self.exchange = None
        self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.sid in self.conn.streams:
                self.conn.streams.pop(self.sid, None)
                try:
                    self.conn.h2.reset_stream(self.sid, h2codec.ErrorCodes.CANCEL)
                except h2codec.StreamClosedError:
                    pass
                self.conn.flush()

    def abort(self) -> None:
        self.close()

    def flush(self) -> None:
        self.conn.flush()
