"""Mizzen's HTTP/2 codec (RFC 9113): bytes in, events out; calls in, bytes to send out.

``Connection`` keeps one connection's state: the preface and SETTINGS exchange, stream states, flow
control windows both ways, HPACK (``fastpath.h2hpack``) and the validation of what the peer sends. Its
API is the subset of python-hyper's ``H2Connection`` that the sidecar uses (``fastpath.http2`` serves
clients with it, ``fastpath.upstream_h2`` talks to upstreams), with headers as ``(bytes, bytes)`` pairs;
events and errors are in ``fastpath.h2events`` and re-exported here.

Errors follow the RFC's two kinds. A stream error (a malformed request or response, a stream's flow
control overrun, a frame on a stream that has ended) resets that stream with RST_STREAM and, when the
application knew the stream, reports ``StreamReset``; a malformed message never reaches the application.
A connection error queues GOAWAY with its code and raises ``ProtocolError`` from ``receive_data``; the
caller sends what is queued and closes. No I/O here: the caller writes ``data_to_send()``.

Compiled in Cython's pure-Python mode (``h2codec.pxd``); this file is also the twin.
"""

from __future__ import annotations

import struct

from fastpath.h2events import (
    ChangedSetting,
    ConnectionTerminated,
    DataReceived,
    ErrorCodes,
    FlowControlError,
    FrameTooLargeError,
    InformationalResponseReceived,
    NoAvailableStreamIDError,
    PingAckReceived,
    PingReceived,
    ProtocolError,
    RemoteSettingsChanged,
    RequestReceived,
    ResponseReceived,
    SettingCodes,
    SettingsAcknowledged,
    StreamClosedError,
    StreamEnded,
    StreamReset,
    TooManyStreamsError,
    TrailersReceived,
    WindowUpdated,
    error_code,
    setting_code,
)
from fastpath.h2hpack import Decoder, Encoder, HPACKError, OversizedHeaderList
from fastpath.h2valid import (
    Malformed,
    check_request,
    check_response,
    check_trailers,
    content_length,
    outbound,
)

__all__ = [
    "ChangedSetting",
    "Connection",
    "ConnectionTerminated",
    "DataReceived",
    "ErrorCodes",
    "FlowControlError",
    "FrameTooLargeError",
    "InformationalResponseReceived",
    "NoAvailableStreamIDError",
    "PingAckReceived",
    "PingReceived",
    "ProtocolError",
    "RemoteSettingsChanged",
    "RequestReceived",
    "ResponseReceived",
    "SettingCodes",
    "SettingsAcknowledged",
    "StreamClosedError",
    "StreamEnded",
    "StreamReset",
    "TooManyStreamsError",
    "TrailersReceived",
    "WindowUpdated",
]

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types and flags (RFC 9113 6).
DATA = 0x0
HEADERS = 0x1
PRIORITY = 0x2
RST_STREAM = 0x3
SETTINGS = 0x4
PUSH_PROMISE = 0x5
PING = 0x6
GOAWAY = 0x7
WINDOW_UPDATE = 0x8
CONTINUATION = 0x9
FLAG_END_STREAM = 0x1
FLAG_ACK = 0x1
FLAG_END_HEADERS = 0x4
FLAG_PADDED = 0x8
FLAG_PRIORITY = 0x20

MAX_WINDOW = (1 << 31) - 1
DEFAULT_WINDOW = 65535
DEFAULT_MAX_FRAME = 16384
MAX_HEADER_LIST = 1 << 16  # our SETTINGS_MAX_HEADER_LIST_SIZE
MAX_HEADER_BLOCK = 1 << 18  # compressed bytes buffered for one header block (HEADERS + CONTINUATIONs)
CLOSED_REMEMBERED = 1024  # recently closed streams whose late frames are told apart from idle streams

# How a stream closed, for late frames: after our RST_STREAM they are ignored (the peer may have sent
# them before it saw the reset); after the peer's END_STREAM or RST_STREAM they are its error.
RESET_LOCAL = 1
RESET_REMOTE = 2
ENDED = 3

_FRAME_HEAD = struct.Struct(">HBBBL")  # 24-bit length as 16 + 8 bits, type, flags, stream id
_U32 = struct.Struct(">L")
_SETTING = struct.Struct(">HL")

_E_PROTOCOL = 0x1
_E_INTERNAL = 0x2
_E_FLOW = 0x3
_E_STREAM_CLOSED = 0x5
_E_FRAME_SIZE = 0x6
_E_REFUSED = 0x7
_E_COMPRESSION = 0x9
_E_CALM = 0xB


class _StreamError(Exception):
    """Raised inside frame handling; ``receive_data`` resets the stream and goes on."""

    def __init__(self, stream_id: int, code: int, reason: str) -> None:
        super().__init__(reason)
        self.stream_id = stream_id
        self.code = code


def _connection_error(code: int, reason: str) -> ProtocolError:
    exc = (
        FlowControlError(reason)
        if code == _E_FLOW
        else FrameTooLargeError(reason)
        if code == _E_FRAME_SIZE
        else ProtocolError(reason)
    )
    exc.error_code = error_code(code)
    return exc


def _frame(ftype: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    n = len(payload)
    return _FRAME_HEAD.pack(n >> 8, n & 0xFF, ftype, flags, stream_id) + payload


class Stream:
    """One stream's state: which sides are open, its windows, and what its message must still satisfy."""

    def __init__(self, stream_id: int, send_window: int, recv_window: int) -> None:
        self.stream_id = stream_id
        self.local_open = True  # we have not sent END_STREAM
        self.remote_open = True  # the peer has not sent END_STREAM
        self.send_window = send_window
        self.recv_window = recv_window
        self.processed = 0  # received bytes the application consumed, not yet given back in WINDOW_UPDATE
        self.headers_received = False  # the request, or the final response
        self.known = False  # the application knows the stream (it opened it, or had RequestReceived)
        self.head_request = False  # a HEAD request's response has a content-length but no body
        self.expected = -1  # content-length of the message being received
        self.received = 0


class Connection:
    """One HTTP/2 connection, client or server side (the subset of h2's H2Connection the sidecar uses)."""

    def __init__(self, client_side: bool) -> None:
        self.client_side = client_side
        self.streams: dict[int, Stream] = {}
        self.closed: dict[int, int] = {}  # stream id -> RESET_LOCAL / RESET_REMOTE / ENDED
        self.out: list[bytes] = []
        self.inbuf = b""
        self.preface_pending = not client_side  # a server first reads the client's preface
        self.settings_first = True  # the peer's first frame must be SETTINGS
        self.dead = False  # after a connection error: nothing more is read
        self.decoder = Decoder(max_header_list_size=MAX_HEADER_LIST)
        self.encoder = Encoder()
        # A header block in progress (HEADERS without END_HEADERS, then CONTINUATION).
        self.block_stream = 0
        self.block_flags = 0
        self.block_error = ""
        self.block_parts: list[bytes] = []
        self.block_size = 0
        # Our settings in force (acknowledged) and those sent, not yet acknowledged.
        self.local_initial_window = DEFAULT_WINDOW
        self.local_max_streams = MAX_WINDOW  # unlimited until the peer acknowledges a limit
        self.local_max_frame = DEFAULT_MAX_FRAME
        self.local_settings: dict[int, int] = {}
        self.pending_settings: list[dict[int, int]] = []
        # The peer's settings.
        self.remote_settings: dict[int, int] = {}
        self.remote_initial_window = DEFAULT_WINDOW
        self.remote_max_streams = MAX_WINDOW
        self.max_outbound_frame_size = DEFAULT_MAX_FRAME
        # Connection windows: what we may send, what the peer may send.
        self.send_window = DEFAULT_WINDOW
        self.recv_window = DEFAULT_WINDOW
        self.recv_max = DEFAULT_WINDOW
        self.processed = 0
        self.highest_inbound = 0  # the peer's highest stream id
        self.next_stream_id = 1 if client_side else 2
        self.goaway_sent = False
        self.goaway_received = False

    # -- setup and settings ---------------------------------------------------------------------

    def initiate_connection(self) -> None:
        """Queue the preface (client) and our first SETTINGS."""
        if self.client_side:
            self.out.append(PREFACE)
            self.update_settings(
                {SettingCodes.ENABLE_PUSH: 0, SettingCodes.MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST}
            )
        else:
            self.update_settings(
                {SettingCodes.MAX_CONCURRENT_STREAMS: 100, SettingCodes.MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST}
            )

    def update_settings(self, new_settings: dict[int, int]) -> None:
        """Send SETTINGS; they apply when the peer acknowledges them."""
        payload = b"".join([_SETTING.pack(int(code), value) for code, value in new_settings.items()])
        self.pending_settings.append({int(code): value for code, value in new_settings.items()})
        self.out.append(_frame(SETTINGS, 0, 0, payload))

    def _settings_acked(self, events: list[object]) -> None:
        if not self.pending_settings:
            raise _connection_error(_E_PROTOCOL, "SETTINGS ACK without SETTINGS")
        applied = self.pending_settings.pop(0)
        changed = {}
        for code, value in applied.items():
            changed[setting_code(code)] = ChangedSetting(
                setting_code(code), self.local_settings.get(code), value
            )
            self.local_settings[code] = value
            if code == SettingCodes.INITIAL_WINDOW_SIZE:
                delta = value - self.local_initial_window
                self.local_initial_window = value
                for stream in self.streams.values():
                    stream.recv_window += delta
            elif code == SettingCodes.MAX_CONCURRENT_STREAMS:
                self.local_max_streams = value
            elif code == SettingCodes.MAX_FRAME_SIZE:
                self.local_max_frame = value
            elif code == SettingCodes.MAX_HEADER_LIST_SIZE:
                self.decoder.max_header_list_size = value
            elif code == SettingCodes.HEADER_TABLE_SIZE:
                self.decoder.set_max_allowed(value)
        events.append(SettingsAcknowledged(changed))

    def _remote_settings(self, payload: bytes, events: list[object]) -> None:
        if len(payload) % 6:
            raise _connection_error(_E_FRAME_SIZE, f"SETTINGS of {len(payload)} bytes (not a multiple of 6)")
        changed = {}
        for offset in range(0, len(payload), 6):
            code, value = _SETTING.unpack_from(payload, offset)
            if code == SettingCodes.HEADER_TABLE_SIZE:
                self.encoder.set_max_table_size(value)
            elif code == SettingCodes.ENABLE_PUSH:
                if value > 1 or (value == 1 and self.client_side):
                    raise _connection_error(_E_PROTOCOL, f"SETTINGS_ENABLE_PUSH {value}")
            elif code == SettingCodes.MAX_CONCURRENT_STREAMS:
                self.remote_max_streams = value
            elif code == SettingCodes.INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise _connection_error(_E_FLOW, f"SETTINGS_INITIAL_WINDOW_SIZE {value} over 2^31-1")
                delta = value - self.remote_initial_window
                self.remote_initial_window = value
                for stream in self.streams.values():  # RFC 9113 6.9.2: open streams' windows move too
                    stream.send_window += delta
                    if stream.send_window > MAX_WINDOW:
                        raise _connection_error(_E_FLOW, f"stream {stream.stream_id} window over 2^31-1")
            elif code == SettingCodes.MAX_FRAME_SIZE:
                if not DEFAULT_MAX_FRAME <= value <= 0xFFFFFF:
                    raise _connection_error(_E_PROTOCOL, f"SETTINGS_MAX_FRAME_SIZE {value} out of range")
                self.max_outbound_frame_size = value
            elif code == SettingCodes.ENABLE_CONNECT_PROTOCOL:
                if value > 1:
                    raise _connection_error(_E_PROTOCOL, f"SETTINGS_ENABLE_CONNECT_PROTOCOL {value}")
            changed[setting_code(code)] = ChangedSetting(
                setting_code(code), self.remote_settings.get(code), value
            )
            self.remote_settings[code] = value
        self.out.append(_frame(SETTINGS, FLAG_ACK, 0, b""))
        events.append(RemoteSettingsChanged(changed))

    # -- receiving ------------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[object]:
        """The events in ``data``. A connection error queues GOAWAY and raises ``ProtocolError``."""
        events: list[object] = []
        if self.dead:
            return events
        if type(data) is not bytes:
            data = bytes(data)
        buf = self.inbuf + data if self.inbuf else data
        pos = 0
        try:
            if self.preface_pending:
                if len(buf) < 24:
                    if not PREFACE.startswith(buf):
                        raise _connection_error(_E_PROTOCOL, "invalid HTTP/2 client preface")
                    self.inbuf = buf
                    return events
                if buf[:24] != PREFACE:
                    raise _connection_error(_E_PROTOCOL, "invalid HTTP/2 client preface")
                self.preface_pending = False
                pos = 24
            end = len(buf)
            while end - pos >= 9:
                length = (buf[pos] << 16) | (buf[pos + 1] << 8) | buf[pos + 2]
                if length > self.local_max_frame:
                    raise _connection_error(
                        _E_FRAME_SIZE, f"frame of {length} bytes over {self.local_max_frame}"
                    )
                if end - pos - 9 < length:
                    break
                ftype = buf[pos + 3]
                flags = buf[pos + 4]
                sid = (
                    ((buf[pos + 5] & 0x7F) << 24) | (buf[pos + 6] << 16) | (buf[pos + 7] << 8) | buf[pos + 8]
                )
                start = pos + 9
                pos = start + length
                try:
                    self._on_frame(ftype, flags, sid, buf[start:pos], events)
                except _StreamError as exc:
                    self._stream_error(exc.stream_id, exc.code, events)
        except ProtocolError as exc:
            self.dead = True
            self._goaway(int(exc.error_code), str(exc).encode())
            raise
        except HPACKError as exc:
            self.dead = True
            self._goaway(_E_COMPRESSION, str(exc).encode())
            raise _connection_error(_E_COMPRESSION, f"header block: {exc}") from exc
        self.inbuf = buf[pos:] if pos < len(buf) else b""
        return events

    def _on_frame(self, ftype: int, flags: int, sid: int, payload: bytes, events: list[object]) -> None:
        if self.block_stream and ftype != CONTINUATION:
            raise _connection_error(_E_PROTOCOL, f"frame type {ftype} inside a header block")
        if self.settings_first:
            if ftype != SETTINGS or flags & FLAG_ACK:
                raise _connection_error(_E_PROTOCOL, "the first frame is not SETTINGS")
            self.settings_first = False
        if ftype == DATA:
            self._data(flags, sid, payload, events)
        elif ftype == HEADERS:
            self._headers(flags, sid, payload, events)
        elif ftype == CONTINUATION:
            self._continuation(flags, sid, payload, events)
        elif ftype == WINDOW_UPDATE:
            self._window_update(sid, payload, events)
        elif ftype == SETTINGS:
            if sid:
                raise _connection_error(_E_PROTOCOL, "SETTINGS on a stream")
            if flags & FLAG_ACK:
                if payload:
                    raise _connection_error(_E_FRAME_SIZE, "SETTINGS ACK with a payload")
                self._settings_acked(events)
            else:
                self._remote_settings(payload, events)
        elif ftype == RST_STREAM:
            self._rst_stream(sid, payload, events)
        elif ftype == PING:
            if sid:
                raise _connection_error(_E_PROTOCOL, "PING on a stream")
            if len(payload) != 8:
                raise _connection_error(_E_FRAME_SIZE, f"PING of {len(payload)} bytes")
            if flags & FLAG_ACK:
                events.append(PingAckReceived(payload))
            else:
                self.out.append(_frame(PING, FLAG_ACK, 0, payload))
                events.append(PingReceived(payload))
        elif ftype == GOAWAY:
            self._goaway_received(sid, payload, events)
        elif ftype == PRIORITY:
            if not sid:
                raise _connection_error(_E_PROTOCOL, "PRIORITY on stream 0")
            if len(payload) != 5:
                raise _StreamError(sid, _E_FRAME_SIZE, f"PRIORITY of {len(payload)} bytes")
            if _U32.unpack_from(payload)[0] & MAX_WINDOW == sid:
                raise _StreamError(sid, _E_PROTOCOL, "stream depends on itself")
        elif ftype == PUSH_PROMISE:
            raise _connection_error(_E_PROTOCOL, "PUSH_PROMISE (push is disabled)")
        # Unknown frame types are ignored (RFC 9113 4.1).

    def _idle(self, sid: int) -> bool:
        """A stream id not used yet (by either side)."""
        if (sid & 1) == (1 if self.client_side else 0):  # ours
            return sid >= self.next_stream_id
        return sid > self.highest_inbound

    def _late(self, sid: int, what: str) -> None:
        """A frame for a stream that is no longer open: ignored after our reset, else the peer's error."""
        if self.closed.get(sid, RESET_LOCAL) != RESET_LOCAL:
            raise _StreamError(sid, _E_STREAM_CLOSED, f"{what} on closed stream {sid}")

    def _data(self, flags: int, sid: int, payload: bytes, events: list[object]) -> None:
        if not sid:
            raise _connection_error(_E_PROTOCOL, "DATA on stream 0")
        flow = len(payload)
        data = payload
        if flags & FLAG_PADDED:
            if not flow or payload[0] >= flow:
                raise _connection_error(_E_PROTOCOL, "DATA padding longer than the frame")
            data = payload[1 : flow - payload[0]]
        self.recv_window -= flow
        if self.recv_window < 0:
            raise _connection_error(_E_FLOW, "DATA over the connection window")
        stream = self.streams.get(sid)
        if stream is None or not stream.remote_open or not stream.headers_received:
            self._consumed(flow)  # the application never sees it: its share of the window comes back now
            if stream is None:
                if self._idle(sid):
                    raise _connection_error(_E_PROTOCOL, f"DATA on idle stream {sid}")
                self._late(sid, "DATA")
                return
            if not stream.remote_open:
                raise _StreamError(sid, _E_STREAM_CLOSED, f"DATA after END_STREAM on stream {sid}")
            raise _StreamError(sid, _E_PROTOCOL, f"DATA before HEADERS on stream {sid}")
        stream.recv_window -= flow
        if stream.recv_window < 0:
            self._consumed(flow)
            raise _StreamError(sid, _E_FLOW, f"DATA over stream {sid}'s window")
        stream.received += len(data)
        ended = None
        if stream.expected >= 0 and (
            stream.received > stream.expected
            or (flags & FLAG_END_STREAM and stream.received != stream.expected)
        ):
            self._consumed(flow)
            raise _StreamError(sid, _E_PROTOCOL, f"stream {sid}: body length differs from content-length")
        if flags & FLAG_END_STREAM:
            ended = StreamEnded(sid)
        events.append(DataReceived(sid, data, flow, ended))
        if ended is not None:
            events.append(ended)
            self._remote_end(stream)

    def _headers(self, flags: int, sid: int, payload: bytes, events: list[object]) -> None:
        if not sid:
            raise _connection_error(_E_PROTOCOL, "HEADERS on stream 0")
        start = 0
        end = len(payload)
        error = ""
        if flags & FLAG_PADDED:
            if not end:
                raise _connection_error(_E_FRAME_SIZE, "padded HEADERS without a pad length")
            end -= payload[0]
            start = 1
        if flags & FLAG_PRIORITY:
            if start + 5 > end:
                raise _connection_error(_E_FRAME_SIZE, "HEADERS too short for its priority")
            if _U32.unpack_from(payload, start)[0] & MAX_WINDOW == sid:
                error = "stream depends on itself"
            start += 5
        if start > end:
            raise _connection_error(_E_PROTOCOL, "HEADERS padding longer than the frame")
        fragment = payload[start:end] if start or end != len(payload) else payload
        if flags & FLAG_END_HEADERS:
            self._header_block(sid, flags, fragment, error, events)
        else:
            self.block_stream = sid
            self.block_flags = flags
            self.block_error = error
            self.block_parts = [fragment]
            self.block_size = len(fragment)

    def _continuation(self, flags: int, sid: int, payload: bytes, events: list[object]) -> None:
        if not self.block_stream or sid != self.block_stream:
            raise _connection_error(_E_PROTOCOL, f"CONTINUATION on stream {sid} outside its header block")
        self.block_parts.append(payload)
        self.block_size += len(payload)
        if self.block_size > MAX_HEADER_BLOCK:
            raise _connection_error(_E_CALM, f"header block over {MAX_HEADER_BLOCK} bytes")
        if flags & FLAG_END_HEADERS:
            block = b"".join(self.block_parts)
            self.block_stream = 0
            self.block_parts = []
            self._header_block(sid, self.block_flags, block, self.block_error, events)

    def _header_block(self, sid: int, flags: int, block: bytes, error: str, events: list[object]) -> None:
        # Decoded whatever becomes of the stream: the peer's encoder table moved on with it.
        try:
            headers = self.decoder.decode(block)
        except OversizedHeaderList as exc:
            headers = []
            error = str(exc)
        end_stream = flags & FLAG_END_STREAM
        stream = self.streams.get(sid)
        if stream is None:
            if self.client_side or (sid & 1) == 0:  # a server opens no streams (push is off)
                if self._idle(sid) or (sid & 1) == 0:
                    raise _connection_error(
                        _E_PROTOCOL, f"HEADERS on stream {sid}, which the peer may not open"
                    )
                self._late(sid, "HEADERS")
                return
            if sid <= self.highest_inbound:
                self._late(sid, "HEADERS")
                return
            self.highest_inbound = sid
            if self.goaway_sent or len(self.streams) >= self.local_max_streams:
                raise _StreamError(sid, _E_REFUSED, f"stream {sid} refused")
            stream = Stream(sid, self.remote_initial_window, self.local_initial_window)
            self.streams[sid] = stream
            if error:
                raise _StreamError(sid, _E_PROTOCOL, error)
            try:
                stream.expected = check_request(headers)
            except Malformed as exc:
                raise _StreamError(sid, _E_PROTOCOL, f"malformed request on stream {sid}: {exc}") from None
            stream.headers_received = True
            stream.known = True
            ended = StreamEnded(sid) if end_stream else None
            if ended is not None and stream.expected > 0:
                raise _StreamError(sid, _E_PROTOCOL, f"stream {sid}: body length differs from content-length")
            events.append(RequestReceived(sid, headers, ended))
            if ended is not None:
                events.append(ended)
                self._remote_end(stream)
            return
        if not stream.remote_open:
            raise _StreamError(sid, _E_STREAM_CLOSED, f"HEADERS after END_STREAM on stream {sid}")
        if error:
            raise _StreamError(sid, _E_PROTOCOL, error)
        ended = StreamEnded(sid) if end_stream else None
        try:
            if stream.headers_received:  # trailers
                if ended is None:
                    raise Malformed("trailers without END_STREAM")
                check_trailers(headers)
                if stream.expected >= 0 and stream.received != stream.expected:
                    raise Malformed("body length differs from content-length")
                events.append(TrailersReceived(sid, headers, ended))
            else:  # a response (client side)
                status = check_response(headers)
                if status < 200:
                    if ended is not None:
                        raise Malformed("an informational response ends the stream")
                    events.append(InformationalResponseReceived(sid, headers))
                    return
                stream.headers_received = True
                expected = -1
                if not stream.head_request and status != 304:
                    expected = content_length(headers)
                stream.expected = expected
                if ended is not None and expected > 0:
                    raise Malformed("body length differs from content-length")
                events.append(ResponseReceived(sid, headers, ended))
        except Malformed as exc:
            raise _StreamError(sid, _E_PROTOCOL, f"malformed message on stream {sid}: {exc}") from None
        if ended is not None:
            events.append(ended)
            self._remote_end(stream)

    def _window_update(self, sid: int, payload: bytes, events: list[object]) -> None:
        if len(payload) != 4:
            raise _connection_error(_E_FRAME_SIZE, f"WINDOW_UPDATE of {len(payload)} bytes")
        delta = _U32.unpack_from(payload)[0] & MAX_WINDOW
        if not sid:
            if not delta:
                raise _connection_error(_E_PROTOCOL, "WINDOW_UPDATE of 0 on the connection")
            self.send_window += delta
            if self.send_window > MAX_WINDOW:
                raise _connection_error(_E_FLOW, "connection window over 2^31-1")
            events.append(WindowUpdated(0, delta))
            return
        stream = self.streams.get(sid)
        if stream is None:
            if self._idle(sid):
                raise _connection_error(_E_PROTOCOL, f"WINDOW_UPDATE on idle stream {sid}")
            return  # a closed stream's window no longer matters
        if not delta:
            raise _StreamError(sid, _E_PROTOCOL, f"WINDOW_UPDATE of 0 on stream {sid}")
        stream.send_window += delta
        if stream.send_window > MAX_WINDOW:
            raise _StreamError(sid, _E_FLOW, f"stream {sid} window over 2^31-1")
        events.append(WindowUpdated(sid, delta))

    def _rst_stream(self, sid: int, payload: bytes, events: list[object]) -> None:
        if not sid:
            raise _connection_error(_E_PROTOCOL, "RST_STREAM on stream 0")
        if len(payload) != 4:
            raise _connection_error(_E_FRAME_SIZE, f"RST_STREAM of {len(payload)} bytes")
        stream = self.streams.get(sid)
        if stream is None:
            if self._idle(sid):
                raise _connection_error(_E_PROTOCOL, f"RST_STREAM on idle stream {sid}")
            return
        code = _U32.unpack_from(payload)[0]
        self._close(stream, RESET_REMOTE)
        if stream.known:
            events.append(StreamReset(sid, error_code(code), True))

    def _goaway_received(self, sid: int, payload: bytes, events: list[object]) -> None:
        if sid:
            raise _connection_error(_E_PROTOCOL, "GOAWAY on a stream")
        if len(payload) < 8:
            raise _connection_error(_E_FRAME_SIZE, f"GOAWAY of {len(payload)} bytes")
        last = _U32.unpack_from(payload)[0] & MAX_WINDOW
        code = _U32.unpack_from(payload, 4)[0]
        self.goaway_received = True
        events.append(ConnectionTerminated(error_code(code), last, payload[8:]))
        # Our streams above ``last`` were not processed: they are refused (and may be retried).
        mine = 1 if self.client_side else 0
        for stream in list(self.streams.values()):
            if stream.stream_id > last and (stream.stream_id & 1) == mine:
                self._close(stream, RESET_REMOTE)
                events.append(StreamReset(stream.stream_id, ErrorCodes.REFUSED_STREAM, True))

    def _stream_error(self, sid: int, code: int, events: list[object]) -> None:
        self.out.append(_frame(RST_STREAM, 0, sid, _U32.pack(code)))
        stream = self.streams.get(sid)
        if stream is None:
            self._remember(sid, RESET_LOCAL)
            return
        self._close(stream, RESET_LOCAL)
        if stream.known:
            events.append(StreamReset(sid, error_code(code), False))

    # -- stream bookkeeping ---------------------------------------------------------------------

    def _remote_end(self, stream: Stream) -> None:
        stream.remote_open = False
        if not stream.local_open:
            self._close(stream, ENDED)

    def _local_end(self, stream: Stream) -> None:
        stream.local_open = False
        if not stream.remote_open:
            self._close(stream, ENDED)

    def _close(self, stream: Stream, how: int) -> None:
        stream.local_open = stream.remote_open = False
        if self.streams.pop(stream.stream_id, None) is not None:
            self._remember(stream.stream_id, how)

    def _remember(self, sid: int, how: int) -> None:
        closed = self.closed
        closed[sid] = how
        if len(closed) > CLOSED_REMEMBERED:
            del closed[next(iter(closed))]

    def _open_stream(self, sid: int) -> Stream:
        stream = self.streams.get(sid)
        if stream is None:
            raise StreamClosedError(sid)
        return stream

    # -- flow control ---------------------------------------------------------------------------

    def _consumed(self, n: int) -> None:
        """``n`` received bytes are done with at the connection level: reopen the window in batches."""
        self.processed += n
        if self.processed >= self.recv_max >> 2:
            self.out.append(_frame(WINDOW_UPDATE, 0, 0, _U32.pack(self.processed)))
            self.recv_window += self.processed
            self.processed = 0

    def acknowledge_received_data(self, acknowledged_size: int, stream_id: int) -> None:
        """The application consumed ``acknowledged_size`` bytes of ``stream_id``'s data."""
        if acknowledged_size < 0:
            raise ValueError(f"acknowledged_size {acknowledged_size} is negative")
        self._consumed(acknowledged_size)
        stream = self.streams.get(stream_id)
        if stream is not None and stream.remote_open:  # an ended stream needs no more window
            stream.processed += acknowledged_size
            if stream.processed >= self.local_initial_window >> 2:
                self.out.append(_frame(WINDOW_UPDATE, 0, stream_id, _U32.pack(stream.processed)))
                stream.recv_window += stream.processed
                stream.processed = 0

    def increment_flow_control_window(self, increment: int, stream_id: int | None = None) -> None:
        """Open the peer's window by ``increment``: the connection's, or a stream's."""
        if not 1 <= increment <= MAX_WINDOW:
            raise ValueError(f"window increment {increment} out of 1..2^31-1")
        if stream_id:
            stream = self._open_stream(stream_id)
            stream.recv_window += increment
        else:
            stream_id = 0
            self.recv_window += increment
            self.recv_max += increment
        self.out.append(_frame(WINDOW_UPDATE, 0, stream_id, _U32.pack(increment)))

    def local_flow_control_window(self, stream_id: int) -> int:
        """How many bytes of DATA may be sent on ``stream_id`` now."""
        stream = self._open_stream(stream_id)
        return min(self.send_window, stream.send_window)

    # -- sending --------------------------------------------------------------------------------

    def get_next_available_stream_id(self) -> int:
        if self.next_stream_id > MAX_WINDOW:
            raise NoAvailableStreamIDError("every stream id of this connection is used")
        return self.next_stream_id

    def send_headers(
        self, stream_id: int, headers: list[tuple[bytes, bytes]], end_stream: bool = False
    ) -> None:
        """A request (client: opens the stream), a response, or trailers (with ``end_stream``)."""
        stream = self.streams.get(stream_id)
        if stream is None:
            if not self.client_side or (stream_id & 1) == 0 or stream_id < self.next_stream_id:
                raise StreamClosedError(stream_id)
            if self.goaway_received:
                raise TooManyStreamsError("the server sent GOAWAY: no new streams")
            if len(self.streams) >= self.remote_max_streams:
                raise TooManyStreamsError(f"the server allows {self.remote_max_streams} concurrent streams")
            stream = Stream(stream_id, self.remote_initial_window, self.local_initial_window)
            stream.known = True
            for name, value in headers:
                if name[:1] != b":":
                    break
                if name == b":method":
                    stream.head_request = value == b"HEAD"
            self.streams[stream_id] = stream
            self.next_stream_id = stream_id + 2
        elif not stream.local_open:
            raise StreamClosedError(stream_id)
        block = self.encoder.encode(outbound(headers))
        flags = FLAG_END_STREAM if end_stream else 0
        limit = self.max_outbound_frame_size
        if len(block) <= limit:
            self.out.append(_frame(HEADERS, flags | FLAG_END_HEADERS, stream_id, block))
        else:
            self.out.append(_frame(HEADERS, flags, stream_id, block[:limit]))
            pos = limit
            while pos < len(block):
                piece = block[pos : pos + limit]
                pos += limit
                self.out.append(
                    _frame(CONTINUATION, FLAG_END_HEADERS if pos >= len(block) else 0, stream_id, piece)
                )
        if end_stream:
            self._local_end(stream)

    def send_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        """DATA within the flow control windows (in frames of at most ``max_outbound_frame_size``)."""
        stream = self._open_stream(stream_id)
        if not stream.local_open:
            raise StreamClosedError(stream_id)
        n = len(data)
        if n > self.send_window or n > stream.send_window:
            raise FlowControlError(f"{n} bytes over the window of stream {stream_id}")
        self.send_window -= n
        stream.send_window -= n
        limit = self.max_outbound_frame_size
        flags = FLAG_END_STREAM if end_stream else 0
        if n <= limit:
            self.out.append(_FRAME_HEAD.pack(n >> 8, n & 0xFF, DATA, flags, stream_id))
            if n:
                self.out.append(data)
        else:
            view = memoryview(data)
            for pos in range(0, n, limit):
                piece = view[pos : pos + limit]
                last = flags if pos + limit >= n else 0
                self.out.append(_FRAME_HEAD.pack(len(piece) >> 8, len(piece) & 0xFF, DATA, last, stream_id))
                self.out.append(bytes(piece))
        if end_stream:
            self._local_end(stream)

    def end_stream(self, stream_id: int) -> None:
        self.send_data(stream_id, b"", True)

    def reset_stream(self, stream_id: int, error_code: int = 0) -> None:
        stream = self._open_stream(stream_id)
        self.out.append(_frame(RST_STREAM, 0, stream_id, _U32.pack(int(error_code))))
        self._close(stream, RESET_LOCAL)

    def close_connection(self, error_code: int = 0, additional_data: bytes = b"") -> None:
        """GOAWAY: no new streams; those up to the last one received may finish."""
        self._goaway(int(error_code), additional_data)

    def _goaway(self, code: int, debug: bytes) -> None:
        self.goaway_sent = True
        self.out.append(_frame(GOAWAY, 0, 0, _U32.pack(self.highest_inbound) + _U32.pack(code) + debug))

    def ping(self, opaque_data: bytes) -> None:
        if len(opaque_data) != 8:
            raise ValueError("PING carries 8 bytes")
        self.out.append(_frame(PING, 0, 0, opaque_data))

    def data_to_send(self) -> bytes:
        """Everything queued to send, once."""
        out = self.out
        if not out:
            return b""
        self.out = []
        return out[0] if len(out) == 1 else b"".join(out)
