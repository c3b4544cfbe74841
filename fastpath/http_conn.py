"""The HTTP connection manager: one downstream HTTP/1.1 connection and the exchanges on it.

Requests are taken one at a time: when a request is complete but its response is not, parsing stops
(reading pauses) and pipelined bytes wait until the response is done, so responses leave in order and
a client cannot make the proxy buffer without bound. Timers cost nothing per request: one timer per
connection is armed at the earliest deadline and only re-armed when it fires or when a new deadline
comes earlier than it.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, cast

from fastpath import headers, http1
from fastpath.config.hcm import HcmConfig
from fastpath.exchange import Exchange
from fastpath.outbox import OUTBOX, Outbox
from fastpath.routing import RouteTable

if TYPE_CHECKING:
    from fastpath.proxy import Proxy

NEED_DATA = http1.NEED_DATA
HEAD = http1.HEAD
BODY = http1.BODY
END = http1.END

# Why reading is paused (bits): the upstream is being connected, an upstream's buffer is full, or a
# pipelined request waits for the response in front of it.
PAUSE_CONNECT = 1
PAUSE_BACKPRESSURE = 2
PAUSE_PIPELINE = 4


class DownstreamConnection:
    __slots__ = (
        "access_logs",
        "backlog",
        "closing",
        "clusters",
        "data",
        "draining",
        "driving",
        "exchange",
        "filters",
        "generate_request_id",
        "hcm",
        "head_deadline",
        "http2",
        "idle_deadline",
        "idle_timeout",
        "local",
        "loop",
        "original_dst",
        "out",
        "outbox",
        "parser",
        "paused",
        "peer_principal",
        "proxy",
        "remote",
        "reporter",
        "request_id_in_response",
        "requests",
        "server_name",
        "stats",
        "stream_idle_timeout",
        "suspended",
        "timer",
        "timer_at",
        "tls",
        "tracer",
        "transport",
    )

    def __init__(
        self, proxy: Proxy, hcm: HcmConfig, reporter: str, original_dst: tuple[str, int] | None
    ) -> None:
        self.proxy = proxy
        self.hcm = hcm
        self.reporter = reporter
        self.original_dst = original_dst
        self.loop = proxy.loop
        self.transport: asyncio.Transport | None = None
        self.parser = http1.RequestParser(hcm.max_header_bytes)
        self.data = b""
        self.exchange: Exchange | None = None
        self.backlog: list[bytes] = []
        self.suspended = False
        self.driving = False
        self.closing = False
        self.draining = False
        self.paused = 0
        self.requests = 0
        self.remote = ""
        self.local = ""
        self.tls: Any = None  # the TLS layer under this connection (fastpath.tls), if terminated here
        self.peer_principal = ""  # the peer's SPIFFE ID once mutual TLS is done
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = 0.0
        self.idle_deadline = 0.0
        self.head_deadline = 0.0
        self.outbox: Outbox = OUTBOX
        self.out: list[bytes] = []
        self.http2 = False  # an HTTP/2 stream (fastpath.http2), not an HTTP/1.1 connection
        # The HCM settings read on every request, copied out of the (Python) config object.
        self.filters = hcm.filters
        self.stream_idle_timeout = hcm.stream_idle_timeout
        self.idle_timeout = hcm.idle_timeout
        self.generate_request_id = hcm.generate_request_id
        self.request_id_in_response = hcm.always_set_request_id_in_response
        self.server_name = hcm.server_name
        self.access_logs = hcm.access_logs
        self.tracer = hcm.tracer
        self.stats = proxy.stats
        self.clusters = proxy.clusters

    # -- asyncio protocol -----------------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        sock = transport.get_extra_info("sockname")
        self.remote = f"{peer[0]}:{peer[1]}" if peer else ""
        self.local = f"{sock[0]}:{sock[1]}" if sock else ""
        tls = transport.get_extra_info("tls_layer")
        if tls is not None:
            self.tls = tls
            self.peer_principal = tls.principal
        self.proxy.http_connections.add(self)
        if self.hcm.idle_timeout:
            self.idle_deadline = time.monotonic() + self.hcm.idle_timeout
            self.watch(self.idle_deadline)

    def data_received(self, data: bytes) -> None:
        if self.requests == 0 and data[:3] == b"PRI" and not self.http2:
            # HTTP/2 with prior knowledge (gRPC, h2c clients): the connection switches to the h2 manager.
            from fastpath import http2

            http2.take_over(self, data)
            return
        ex = self.exchange
        if self.suspended or (ex is not None and ex.request_complete and not ex.tunnel):
            # The next request (pipelined) while this one's response is being made: it waits.
            self.backlog.append(data)
            self.pause_reading(PAUSE_PIPELINE)
            return
        if self.closing:
            return
        self.data = data
        batch = self.outbox.begin()
        try:
            self.parser.set_data(data)
            self._drive()
        except http1.HttpParseError as exc:
            self._protocol_error(exc)
        finally:
            if batch:
                self.outbox.end()

    def _drive(self) -> None:
        """Walk the parser's events until it needs data, or a request waits for its response."""
        parser = self.parser
        self.driving = True
        try:
            while not self.closing:
                ev = parser.next()
                if ev == NEED_DATA:
                    if self.exchange is None and not parser.idle and not self.head_deadline:
                        self.head_deadline = time.monotonic() + self.hcm.request_headers_timeout
                        self.watch(self.head_deadline)
                    return
                ex = self.exchange
                if ev == HEAD:
                    self.head_deadline = 0.0
                    self.requests += 1
                    ex = self.exchange = Exchange(self, parser.head)
                    ex.begin()
                elif ev == BODY:
                    if ex is not None and not ex.done:
                        ex.request_data(self.data, parser.start, parser.end)
                elif ev == END:
                    if ex is not None:
                        ex.request_end()
                        if self.exchange is ex and not ex.tunnel:
                            # Its response is still to come: the next request waits for it (reading
                            # pauses only if a next request actually arrives, see data_received).
                            self.suspended = True
                            return
                else:  # TUNNEL
                    if ex is not None:
                        ex.on_tunnel_data(self.data, parser.start, parser.end, upstream=False)
        except http1.HttpParseError as exc:
            self._protocol_error(exc)
        finally:
            self.driving = False

    def _protocol_error(self, exc: http1.HttpParseError) -> None:
        """Malformed or oversized input: 400/414/431/505 and close (no smuggling past us)."""
        ex = self.exchange
        if ex is not None and not ex.done:
            if ex.response_started:
                ex.abort("DPE")
                self.close()
                return
            ex.keep_alive = False
            ex.local_reply(exc.status, b"", "DPE", f"http1.codec_error{{{exc.reason}}}")
        else:
            self.proxy.stats.downstream_protocol_error(self.reporter)
            self.write(headers.local_reply(exc.status, b"", close=True))
        self.close()

    def eof_received(self) -> bool:
        try:
            self.parser.finish()
        except http1.HttpParseError:
            if self.exchange is not None:
                self.exchange.abort("DC")
            return False
        ex = self.exchange
        if ex is not None and not ex.done:
            if ex.tunnel:
                ex.on_tunnel_eof(upstream=False)
                return True
            ex.keep_alive = False  # answer, then close
            return True
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closing = True
        self.proxy.http_connections.discard(self)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        ex = self.exchange
        if ex is not None and not ex.done:
            ex.abort("DC")

    def pause_writing(self) -> None:
        # The client reads slower than the upstream sends: stop reading from the upstream.
        ex = self.exchange
        if ex is not None and ex.upstream is not None and ex.upstream.transport is not None:
            ex.upstream.transport.pause_reading()

    def resume_writing(self) -> None:
        ex = self.exchange
        if ex is not None and ex.upstream is not None and ex.upstream.transport is not None:
            ex.upstream.transport.resume_reading()

    # -- for exchanges --------------------------------------------------------------------------

    def route_table(self) -> RouteTable | None:
        hcm = self.hcm
        if hcm.route_table is not None:
            return hcm.route_table
        return self.proxy.config.routes.get(hcm.rds_name or "")

    def write(self, data: bytes) -> None:
        if self.outbox.active:
            if not self.out:
                self.outbox.dirty.append(self)
            self.out.append(data)
            return
        t = self.transport
        if t is not None and not self.closing:
            t.write(data)

    def flush(self) -> None:
        out = self.out
        if not out:
            return
        t = self.transport
        if t is not None and not (self.closing and t.is_closing()):
            if len(out) == 1:
                t.write(out[0])
            else:
                t.writelines(out)  # the transport keeps the buffers, not the list: it can be reused
        out.clear()

    def write_eof(self) -> None:
        self.flush()
        t = self.transport
        if t is not None and not t.is_closing() and t.can_write_eof():
            t.write_eof()

    def pause_reading(self, why: int = PAUSE_CONNECT) -> None:
        if not self.paused and self.transport is not None and not self.closing:
            self.transport.pause_reading()
        self.paused |= why

    def resume_reading(self, why: int = PAUSE_CONNECT) -> None:
        if not self.paused & why:
            return
        self.paused &= ~why
        if not self.paused and self.transport is not None and not self.closing:
            self.transport.resume_reading()

    def exchange_done(self, ex: Exchange) -> None:
        """An exchange finished: count it, log it, then go on with the next request or close."""
        if self.exchange is ex:
            self.exchange = None
        self.stats.http_done(self.reporter, ex)
        for log in self.access_logs:
            log.log(_Record(ex, self))
        if not ex.keep_alive or self.draining or self.closing:
            self.close()
            return
        if self.idle_timeout:
            self.idle_deadline = time.monotonic() + self.idle_timeout
            self.watch(self.idle_deadline)
        if self.driving:
            return  # answered while its own head was being read: the loop in _drive goes on
        if self.suspended:
            self.suspended = False
            self._drive()
        while self.backlog and not self.suspended and not self.closing:
            data = self.backlog.pop(0)
            self.data = data
            try:
                self.parser.set_data(data)
            except http1.HttpParseError as exc:
                self._protocol_error(exc)
                return
            self._drive()
        if not self.suspended:
            self.resume_reading(PAUSE_PIPELINE)

    def tunnel_open(self) -> None:
        """The upstream accepted an upgrade: from now on the client's bytes go through as they are."""
        if self.suspended:
            self.suspended = False
            self._drive()
        while self.backlog and not self.closing:
            data = self.backlog.pop(0)
            self.data = data
            self.parser.set_data(data)
            self._drive()
        self.resume_reading(PAUSE_PIPELINE)

    def close(self) -> None:
        self.closing = True
        self.flush()
        t = self.transport
        if t is not None and not t.is_closing():
            t.close()  # after what is already written

    def drain(self) -> None:
        """Stop taking requests: close now if idle, else after the response in flight."""
        self.draining = True
        if self.exchange is None:
            self.close()

    # -- timers ---------------------------------------------------------------------------------

    def watch(self, deadline: float) -> None:
        """Make sure the timer fires no later than ``deadline`` (a time.monotonic() value)."""
        if self.timer is not None:
            if self.timer_at <= deadline:
                return
            self.timer.cancel()
        self.timer_at = deadline
        self.timer = self.loop.call_later(max(0.0, deadline - time.monotonic()), self._on_timer)

    def _on_timer(self) -> None:
        self.timer = None
        now = time.monotonic()
        nxt: list[float] = []
        ex = self.exchange
        if ex is not None:
            d = ex.on_timer(now)
            if d:
                nxt.append(d)
        if self.head_deadline:
            if now >= self.head_deadline and self.exchange is None and not self.parser.idle:
                self.head_deadline = 0.0
                self.proxy.stats.downstream_protocol_error(self.reporter)
                self.write(headers.local_reply(408, b"request header read timeout", close=True))
                self.close()
                return
            if self.head_deadline > now:
                nxt.append(self.head_deadline)
        if self.idle_deadline and self.exchange is None and self.parser.idle:
            if now >= self.idle_deadline:
                self.close()
                return
            nxt.append(self.idle_deadline)
        if nxt and not self.closing:
            self.watch(min(nxt))


class _Record:
    """An exchange as the access log formatter sees it."""

    __slots__ = ("conn", "ex")

    def __init__(self, ex: Exchange, conn: DownstreamConnection) -> None:
        self.ex = ex
        self.conn = conn

    def __getattr__(self, name: str) -> Any:
        ex = self.ex
        if name == "start_time":
            return ex.start_wall
        if name == "response_code":
            return ex.status
        if name == "response_flags":
            return ex.flags
        if name == "response_code_details":
            return ex.details
        if name == "bytes_received":
            return ex.bytes_received
        if name == "bytes_sent":
            return ex.bytes_sent
        if name == "duration_ms":
            return ex.duration_ms
        if name == "upstream_host":
            return ex.host.label if ex.host is not None else None
        if name == "upstream_cluster":
            return ex.cluster.name if ex.cluster is not None else None
        if name == "upstream_local_address":
            return None
        if name == "downstream_local_address":
            return self.conn.local
        if name == "downstream_remote_address":
            return self.conn.remote
        if name == "route_name":
            return ex.route.name if ex.route is not None else None
        if name == "protocol":
            return "HTTP/2" if self.conn.http2 else "HTTP/" + ex.head.version
        if name == "upstream_service_time":
            return ex.upstream_time
        if name == "grpc_status":
            return ex.grpc_status
        raise AttributeError(name)

    def request_header(self, name: str) -> str | None:
        return self.ex.request_header(name)

    def response_header(self, name: str) -> str | None:
        return self.ex.response_header(name)
