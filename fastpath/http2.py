"""HTTP/2 from clients (h2c with prior knowledge: gRPC, h2c clients), on our codec (``fastpath.h2codec``).

Each HTTP/2 stream becomes an ``H2Stream``: a ``DownstreamConnection`` whose bytes are the stream's request
written as HTTP/1.1 (chunked when it has no length, trailers included) and whose written bytes are read back
as an HTTP/1.1 response and sent as HEADERS, DATA and trailing HEADERS frames. So every HTTP/2 request goes
through the same router, filters, retries, timeouts, circuit breakers and telemetry as an HTTP/1.1 one, and
reaches HTTP/1.1 or HTTP/2 upstreams alike (``fastpath.upstream_h2``). HTTP/1.1 is the internal form because
it is what the hot path is built and measured for; the translation costs microseconds per stream, next to
the codec's own framing cost.

Flow control is end to end: a stream's received data is acknowledged to the client only while its upstream
takes it, and response data waits for the client's window.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from fastpath import h2codec, http1
from fastpath.http_conn import DownstreamConnection
from fastpath.outbox import OUTBOX
from mizzen import logs

if TYPE_CHECKING:
    from fastpath.proxy import Proxy

log = logs.get("proxy")

# Headers that belong to one HTTP/1.1 connection and must not appear in HTTP/2 (RFC 9113 8.2.2).
CONNECTION_SPECIFIC = frozenset(
    (b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade", b"host")
)
MAX_CONCURRENT_STREAMS = 1000
INITIAL_WINDOW = 1 << 20


def send_windowed(h2: Any, sid: int, pending: list[tuple[bytes, bool]]) -> bool:
    """Send a stream's queued DATA (``(bytes, end)`` entries, the end as its own ``(b"", True)``) as far
    as the stream's and the connection's windows allow, in frames the peer accepts. True when the end
    came up (it is taken off the queue; the caller ends the stream, with trailers or without)."""
    while pending:
        data, end = pending[0]
        if not data:
            pending.pop(0)
            if end:
                return True
            continue
        window = min(h2.local_flow_control_window(sid), h2.max_outbound_frame_size)
        if window <= 0:
            return False
        h2.send_data(sid, data[:window])
        if len(data) > window:
            pending[0] = (data[window:], end)
        else:
            pending.pop(0)
    return False


def take_over(conn: DownstreamConnection, data: bytes) -> None:
    """Replace an HTTP/1.1 connection manager that received the HTTP/2 preface."""
    h2conn = H2Connection(conn.proxy, conn.hcm, conn.reporter, conn.original_dst)
    transport = conn.transport
    conn.closing = True  # the HTTP/1.1 manager is done with this transport
    conn.proxy.http_connections.discard(conn)
    if conn.timer is not None:
        conn.timer.cancel()
    assert transport is not None  # the preface arrived on it
    transport.set_protocol(h2conn)  # type: ignore[arg-type]  # an asyncio protocol in all but name
    h2conn.connection_made(transport)
    h2conn.data_received(data)


class H2Connection:
    """The protocol of one client connection speaking HTTP/2."""

    def __init__(self, proxy: Proxy, hcm: Any, reporter: str, original_dst: tuple[str, int] | None) -> None:
        self.proxy = proxy
        self.hcm = hcm
        self.reporter = reporter
        self.original_dst = original_dst
        self.transport: asyncio.Transport | None = None
        self.h2 = h2codec.Connection(client_side=False)
        self.streams: dict[int, H2Stream] = {}
        self.queued = False  # in the outbox, to be flushed when the current read is handled
        self.closing = False
        self.draining = False
        self.write_paused = False
        self.remote = ""
        self.local = ""
        self.tls: Any = None
        self.peer_principal = ""

    # -- asyncio protocol -----------------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        # What the streams tell the router, filters and logs about the client (as DownstreamConnection).
        peer = transport.get_extra_info("peername")
        sock = transport.get_extra_info("sockname")
        self.remote = f"{peer[0]}:{peer[1]}" if peer else ""
        self.local = f"{sock[0]}:{sock[1]}" if sock else ""
        self.tls = transport.get_extra_info("tls_layer")
        self.peer_principal = self.tls.principal if self.tls is not None else ""
        # Drained and counted with the HTTP/1.1 connections (the proxy calls the same few methods).
        self.proxy.http_connections.add(self)  # type: ignore[arg-type]
        self.h2.initiate_connection()
        self.h2.update_settings(
            {
                h2codec.SettingCodes.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS,
                h2codec.SettingCodes.INITIAL_WINDOW_SIZE: INITIAL_WINDOW,
            }
        )
        self.h2.increment_flow_control_window(INITIAL_WINDOW * 4)  # the connection-level window
        self.flush()

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except h2codec.ProtocolError as exc:
            log.debug("http2 protocol error", error=str(exc))
            self.proxy.stats.downstream_protocol_error(self.reporter)
            self.close()  # after the GOAWAY the codec queued
            return
        # What every stream (and its upstream) writes while these frames are handled goes out together:
        # one syscall per socket for the read, not one per stream.
        batch = OUTBOX.begin()
        try:
            for ev in events:
                self._event(ev)
            self.flush()
        finally:
            if batch:
                OUTBOX.end()

    def _event(self, ev: Any) -> None:
        if isinstance(ev, h2codec.RequestReceived):
            self._request(ev.stream_id, ev.headers, ev.stream_ended is not None)
        elif isinstance(ev, h2codec.DataReceived):
            stream = self.streams.get(ev.stream_id)
            if stream is None:
                self.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                return
            stream.request_data(ev.data, ev.flow_controlled_length)
        elif isinstance(ev, h2codec.TrailersReceived):
            stream = self.streams.get(ev.stream_id)
            if stream is not None:
                stream.request_trailers(ev.headers)
        elif isinstance(ev, h2codec.StreamEnded):
            stream = self.streams.get(ev.stream_id)
            if stream is not None:
                stream.request_end()
        elif isinstance(ev, h2codec.StreamReset):
            stream = self.streams.pop(ev.stream_id, None)
            if stream is not None:
                stream.reset_by_client()
        elif isinstance(ev, h2codec.WindowUpdated):
            targets = list(self.streams.values()) if ev.stream_id == 0 else [self.streams.get(ev.stream_id)]
            for stream in targets:
                if stream is not None:
                    stream.send_pending()
        elif isinstance(ev, h2codec.RemoteSettingsChanged):
            for stream in list(self.streams.values()):  # a new initial window, without WINDOW_UPDATEs
                stream.send_pending()
        elif isinstance(ev, h2codec.ConnectionTerminated):
            self.close()

    def _request(self, sid: int, headers: list[tuple[bytes, bytes]], ended: bool) -> None:
        if self.draining:
            self.h2.reset_stream(sid, h2codec.ErrorCodes.REFUSED_STREAM)
            return
        stream = H2Stream(self, sid)
        self.streams[sid] = stream
        stream.start(headers, ended)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closing = True
        self.proxy.http_connections.discard(self)
        for stream in list(self.streams.values()):
            stream.reset_by_client()
        self.streams.clear()

    def eof_received(self) -> bool:
        return False

    def pause_writing(self) -> None:
        self.write_paused = True
        for stream in self.streams.values():
            stream.pause_writing()

    def resume_writing(self) -> None:
        self.write_paused = False
        for stream in list(self.streams.values()):
            stream.resume_writing()

    # -- for streams ----------------------------------------------------------------------------

    def flush(self) -> None:
        if OUTBOX.active:  # sent when the read being handled is done
            if not self.queued:
                self.queued = True
                OUTBOX.dirty.append(self)
            return
        self.queued = False
        out = self.h2.data_to_send()
        t = self.transport
        if out and t is not None and not t.is_closing():
            t.write(out)

    def stream_done(self, stream: H2Stream) -> None:
        self.streams.pop(stream.sid, None)
        if self.draining and not self.streams:
            self.close()

    def drain(self) -> None:
        """Stop taking streams (GOAWAY); close once those in flight are done."""
        self.draining = True
        self.h2.close_connection()
        self.flush()
        if not self.streams:
            self.close()

    def close(self) -> None:
        self.closing = True
        t = self.transport
        if t is not None and not t.is_closing():
            out = self.h2.data_to_send()  # a GOAWAY or resets still queued go out first
            if out:
                t.write(out)
            t.close()

    @property
    def exchange(self) -> Any:
        return None  # the proxy's drain asks every connection; streams are not HTTP/1.1 exchanges


def _h1_head(headers: list[tuple[bytes, bytes]], body: bool) -> tuple[bytes, bytes, bool]:
    """The request head as HTTP/1.1 bytes, its method, and whether the body (if any) goes chunked."""
    method = path = authority = b""
    lines: list[bytes] = []
    cookies: list[bytes] = []
    chunked = body
    for name, value in headers:
        if name.startswith(b":"):
            if name == b":method":
                method = value
            elif name == b":path":
                path = value
            elif name == b":authority":
                authority = value
            continue
        if name in CONNECTION_SPECIFIC:
            continue
        if name == b"cookie":
            cookies.append(value)  # HTTP/2 may split cookies; HTTP/1.1 wants one header
            continue
        if name == b"content-length":
            chunked = False
        lines += (name, b": ", value, b"\r\n")
    if cookies:
        lines += (b"cookie: ", b"; ".join(cookies), b"\r\n")
    if chunked:
        lines.append(b"transfer-encoding: chunked\r\n")
    head = b"".join([method, b" ", path or b"/", b" HTTP/1.1\r\nhost: ", authority, b"\r\n", *lines, b"\r\n"])
    return head, method, chunked


class H2Stream(DownstreamConnection):
    """One HTTP/2 stream, presented to the HTTP/1.1 connection manager."""

    def __init__(self, conn: H2Connection, sid: int) -> None:
        super().__init__(conn.proxy, conn.hcm, conn.reporter, conn.original_dst)
        self.http2 = True
        self.h2conn = conn
        self.sid = sid
        self.transport = None  # no socket of its own: frames go through h2conn
        self.remote = conn.remote
        self.local = conn.local
        self.tls = conn.tls
        self.peer_principal = conn.peer_principal
        self.chunked = False
        self.ended = False
        self.unacked = 0  # received bytes not yet acknowledged to the client (flow control)
        self.response = http1.ResponseParser()
        self.pending: list[tuple[bytes, bool]] = []  # response data waiting for the client's window
        self.pending_trailers: list[tuple[bytes, bytes]] | None = None
        self.resp_head: Any = None
        self.resp_started = False
        self.resp_ended = False
        self.dechunk = _Dechunker()
        self.held: Any = None  # the upstream (or its transport) held back by our backpressure
        self.finishing = False  # the exchange is done, the last data still going out

    # -- request (client -> stream) -------------------------------------------------------------

    def start(self, headers: list[tuple[bytes, bytes]], ended: bool) -> None:
        head, method, self.chunked = _h1_head(headers, not ended)
        self.response.expect(method)
        self.requests = 0
        self.ended = ended
        self.feed(head)

    def feed(self, data: bytes) -> None:
        """Bytes of the HTTP/1.1 form of the request, to the connection manager."""
        DownstreamConnection.data_received(self, data)

    def request_data(self, data: bytes, flow: int) -> None:
        if self.chunked:
            if data:
                self.feed(b"%x\r\n%s\r\n" % (len(data), data))
        else:
            self.feed(data)
        if self.paused:
            self.unacked += flow  # the client's window closes until the upstream takes more
        else:
            self.h2conn.h2.acknowledge_received_data(flow, self.sid)

    def request_trailers(self, headers: list[tuple[bytes, bytes]]) -> None:
        if self.chunked:
            lines = b"".join(n + b": " + v + b"\r\n" for n, v in headers if not n.startswith(b":"))
            self.feed(b"0\r\n" + lines + b"\r\n")
            self.ended = True

    def request_end(self) -> None:
        if self.chunked and not self.ended:
            self.feed(b"0\r\n\r\n")
        self.ended = True

    def reset_by_client(self) -> None:
        self.resp_ended = True
        if self.unacked:  # held back by our backpressure: the connection's window gets it back
            self.h2conn.h2.acknowledge_received_data(self.unacked, self.sid)
            self.unacked = 0
        ex = self.exchange
        if ex is not None and not ex.done:
            ex.abort("DC")

    # -- response (connection manager -> stream) ------------------------------------------------

    def write(self, data: bytes) -> None:
        """The HTTP/1.1 response the connection manager produced, as HTTP/2 frames."""
        if self.resp_ended:
            return
        parser = self.response
        try:
            parser.set_data(data)
            while True:
                ev = parser.next()
                if ev == http1.NEED_DATA:
                    break
                if ev == http1.HEAD:
                    head = parser.head
                    assert head is not None  # HEAD: the parser has one
                    if head.status < 200:
                        continue  # interim responses are not relayed over HTTP/2
                    self.resp_head = head
                elif ev == http1.BODY:
                    chunk = data[parser.start : parser.end]
                    payload = self.dechunk.feed(chunk) if self.resp_head.chunked else chunk
                    if payload:
                        self._send_head(False)
                        self.pending.append((payload, False))
                elif ev == http1.END:
                    if self.dechunk.trailers:
                        self.pending_trailers = self.dechunk.trailers
                    self._finish_response()
        except http1.HttpParseError as exc:
            log.debug("http2 stream: bad response to relay", stream=self.sid, error=str(exc))
            self._reset(h2codec.ErrorCodes.INTERNAL_ERROR)
            return
        self.send_pending()

    def _send_head(self, end: bool) -> None:
        if self.resp_started:
            return
        self.resp_started = True
        head = self.resp_head
        headers = [(b":status", b"%d" % head.status)]
        for name, value in head.headers:
            if name not in CONNECTION_SPECIFIC:
                headers.append((name, value))
        ex = self.exchange
        if ex is not None and end:
            self._note_grpc(head.headers)
        self.h2conn.h2.send_headers(self.sid, headers, end_stream=end)

    def _finish_response(self) -> None:
        if not self.resp_started and not self.pending and self.pending_trailers is None:
            self._send_head(True)  # a head-only response (or gRPC trailers-only) in one frame
            self._close_stream()
            return
        self._send_head(False)
        self.pending.append((b"", True))

    def send_pending(self) -> None:
        """Send queued response data as the client's window allows."""
        conn = self.h2conn.h2
        if not self.resp_ended and send_windowed(conn, self.sid, self.pending):
            if self.pending_trailers is not None:
                self._note_grpc(self.pending_trailers)
                conn.send_headers(self.sid, self.pending_trailers, end_stream=True)
            else:
                conn.end_stream(self.sid)
            self._close_stream()
        self.h2conn.flush()
        # Backpressure: while the client's window holds data back, the upstream waits too.
        if self.pending and self.held is None:
            self._hold_upstream()
        elif not self.pending and self.held is not None:
            self._release_upstream()

    def _hold_upstream(self) -> None:
        ex = self.exchange
        up = ex.upstream if ex is not None else None
        if up is None:
            return
        hold = getattr(up, "hold", None)
        if hold is not None:  # an HTTP/2 upstream stream: stop acknowledging its data (its window closes)
            hold(True)
            self.held = up
        elif up.transport is not None:  # an HTTP/1.1 upstream of its own: stop reading it
            up.transport.pause_reading()
            self.held = up.transport

    def _release_upstream(self) -> None:
        held, self.held = self.held, None
        hold = getattr(held, "hold", None)
        if hold is not None:
            hold(False)
        elif held is not None and not held.is_closing():
            held.resume_reading()

    def _note_grpc(self, headers: list[tuple[bytes, bytes]]) -> None:
        ex = self.exchange
        if ex is None:
            return
        for name, value in headers:
            if name == b"grpc-status" and value.isdigit():
                ex.grpc_status = int(value)

    def _close_stream(self) -> None:
        self.resp_ended = True
        if self.finishing:
            self.close()

    def _reset(self, code: int) -> None:
        log.debug("http2 stream reset", stream=self.sid, code=code, response_started=self.resp_started)
        if not self.resp_ended:
            self.resp_ended = True
            try:
                self.h2conn.h2.reset_stream(self.sid, code)
            except h2codec.StreamClosedError:
                pass
            self.h2conn.flush()

    # -- the connection manager's hooks ---------------------------------------------------------

    def flush(self) -> None:
        self.h2conn.flush()

    def write_eof(self) -> None:
        if not self.resp_ended:
            self._finish_response()
            self.send_pending()

    def pause_reading(self, why: int = 1) -> None:
        self.paused |= why

    def resume_reading(self, why: int = 1) -> None:
        if not self.paused & why:
            return
        self.paused &= ~why
        if not self.paused and self.unacked:
            self.h2conn.h2.acknowledge_received_data(self.unacked, self.sid)
            self.unacked = 0
            self.h2conn.flush()

    def pause_writing(self) -> None:
        self._hold_upstream()

    def resume_writing(self) -> None:
        if not self.pending:
            self._release_upstream()

    def close(self) -> None:
        """The exchange is over: end the stream (reset it if the response did not finish)."""
        self.closing = True
        if self.held is not None:
            self._release_upstream()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if not self.resp_ended:
            self._reset(h2codec.ErrorCodes.INTERNAL_ERROR if self.resp_started else h2codec.ErrorCodes.CANCEL)
        self.h2conn.stream_done(self)

    def exchange_done(self, ex: Any) -> None:
        if self.exchange is ex:
            self.exchange = None
        self.stats.http_done(self.reporter, ex)
        for access_log in self.access_logs:
            from fastpath.http_conn import _Record

            access_log.log(_Record(ex, self))
        if not self.resp_ended and ex.response_complete:
            self.send_pending()
            if not self.resp_ended:
                self.finishing = True  # the rest waits for the client's window; send_pending ends it
                return
        self.close()

    def tunnel_open(self) -> None:
        self._reset(h2codec.ErrorCodes.PROTOCOL_ERROR)  # no upgrades over HTTP/2


class _Dechunker:
    """The payload (and trailers) of a chunked body whose framing the codec has already validated."""

    def __init__(self) -> None:
        self.buf = b""
        self.remaining = 0
        self.state = 0  # 0 size line, 1 data, 2 CRLF after data, 3 trailers
        self.trailers: list[tuple[bytes, bytes]] = []

    def feed(self, data: bytes) -> bytes:
        out: list[bytes] = []
        self.buf += data
        buf = self.buf
        pos = 0
        while pos < len(buf):
            if self.state == 1:
                take = min(self.remaining, len(buf) - pos)
                out.append(buf[pos : pos + take])
                pos += take
                self.remaining -= take
                if not self.remaining:
                    self.state = 2
                continue
            lf = buf.find(b"\n", pos)
            if lf < 0:
                break
            line = buf[pos : lf - 1] if lf > pos and buf[lf - 1] == 13 else buf[pos:lf]
            pos = lf + 1
            if self.state == 0:
                size = int(line.split(b";", 1)[0].strip(b" \t"), 16)
                if size:
                    self.remaining, self.state = size, 1
                else:
                    self.state = 3
            elif self.state == 2:
                self.state = 0
            elif line:  # a trailer
                name, _, value = line.partition(b":")
                self.trailers.append((name.strip().lower(), value.strip()))
        self.buf = buf[pos:]
        return b"".join(out)
