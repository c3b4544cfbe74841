"""The HTTP/2 codec (fastpath.h2codec) frame by frame: what it answers to each frame, well-formed or not.

Frames are built with hyperframe and header blocks with hpack (python-hyper's, independent of ours), and
what the codec sends back is parsed the same way. Every case runs over the compiled module and its twin.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import hpack
import pytest
from hyperframe import frame as hf
from support.impls import both

MODS = both("fastpath.h2codec")
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
GET = [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b":authority", b"a")]
POST = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/up"), (b":authority", b"a")]


@pytest.fixture(params=MODS, ids=["compiled" if str(m.__file__).endswith(".so") else "python" for m in MODS])
def h(request: pytest.FixtureRequest) -> ModuleType:
    return request.param  # type: ignore[no-any-return]


def frames(data: bytes) -> list[Any]:
    out = []
    while data:
        f, length = hf.Frame.parse_frame_header(memoryview(data[:9]))
        f.parse_body(memoryview(data[9 : 9 + length]))
        out.append(f)
        data = data[9 + length :]
    return out


def settings(**values: int) -> bytes:
    f = hf.SettingsFrame(0)
    for name, value in values.items():
        f.settings[getattr(hf.SettingsFrame, name)] = value
    return f.serialize()


class Peer:
    """A hand-driven client (or server) facing the codec."""

    def __init__(self, h: ModuleType, codec_is_client: bool = False) -> None:
        self.conn = h.Connection(client_side=codec_is_client)
        self.h = h
        self.enc = hpack.Encoder()
        self.conn.initiate_connection()
        first = self.conn.data_to_send()
        if codec_is_client:
            assert first.startswith(PREFACE)
            first = first[len(PREFACE) :]
            self.events = self.conn.receive_data(settings())
        else:
            self.events = self.conn.receive_data(PREFACE + settings())
        assert [type(e).__name__ for e in self.events] == ["RemoteSettingsChanged"]
        assert isinstance(frames(first)[0], hf.SettingsFrame)
        self.conn.receive_data(hf.SettingsFrame(0, flags=["ACK"]).serialize())
        self.conn.data_to_send()

    def headers(self, sid: int, headers: list[tuple[bytes, bytes]], *flags: str, **kw: Any) -> bytes:
        return hf.HeadersFrame(sid, self.enc.encode(headers), flags=["END_HEADERS", *flags], **kw).serialize()

    def send(self, data: bytes) -> list[str]:
        self.events = self.conn.receive_data(data)
        return [type(e).__name__ for e in self.events]

    def sent(self) -> list[Any]:
        return frames(self.conn.data_to_send())

    def connection_error(self, data: bytes, code: int) -> None:
        with pytest.raises(self.h.ProtocolError) as info:
            self.conn.receive_data(data)
        assert info.value.error_code == code
        goaway = self.sent()[-1]
        assert isinstance(goaway, hf.GoAwayFrame) and goaway.error_code == code
        assert self.conn.receive_data(self.headers(99, GET)) == []  # nothing more is read

    def stream_error(self, data: bytes, sid: int, code: int) -> list[str]:
        kinds = self.send(data)
        assert "RequestReceived" not in kinds and "DataReceived" not in kinds
        rst = [f for f in self.sent() if isinstance(f, hf.RstStreamFrame)]
        assert [(f.stream_id, f.error_code) for f in rst] == [(sid, code)]
        return kinds


def test_request_and_response(h: ModuleType) -> None:
    p = Peer(h)
    assert p.send(p.headers(1, GET, "END_STREAM")) == ["RequestReceived", "StreamEnded"]
    req = p.events[0]
    assert req.stream_id == 1 and req.headers == GET and req.stream_ended is p.events[1]
    p.conn.send_headers(1, [(b":status", b"200"), (b"content-type", b"text/plain")])
    p.conn.send_data(1, b"hello")
    p.conn.send_headers(1, [(b"grpc-status", b"0")], end_stream=True)
    out = p.sent()
    dec = hpack.Decoder()
    assert [type(f).__name__ for f in out] == ["HeadersFrame", "DataFrame", "HeadersFrame"]
    assert dec.decode(out[0].data, raw=True) == [(b":status", b"200"), (b"content-type", b"text/plain")]
    assert out[1].data == b"hello" and "END_STREAM" in out[2].flags
    assert dec.decode(out[2].data, raw=True) == [(b"grpc-status", b"0")]
    assert 1 not in p.conn.streams
    with pytest.raises(h.StreamClosedError):
        p.conn.send_data(1, b"late")


def test_padding_priority_continuation(h: ModuleType) -> None:
    p = Peer(h)
    block = p.enc.encode([*POST, (b"x-long", b"v" * 100)])
    first = hf.HeadersFrame(
        1, block[:20], flags=["PADDED", "PRIORITY"], pad_length=7, depends_on=0, stream_weight=16
    )
    rest = hf.ContinuationFrame(1, block[20:], flags=["END_HEADERS"])
    assert p.send(first.serialize() + rest.serialize()) == ["RequestReceived"]
    assert p.events[0].headers[-1] == (b"x-long", b"v" * 100)
    data = hf.DataFrame(1, b"abc", flags=["PADDED", "END_STREAM"], pad_length=10).serialize()
    assert p.send(data) == ["DataReceived", "StreamEnded"]
    assert p.events[0].data == b"abc" and p.events[0].flow_controlled_length == 14


@pytest.mark.parametrize(
    "headers",
    [
        [*GET, (b"X-Upper", b"1")],
        [*GET, (b"connection", b"keep-alive")],
        [*GET, (b"transfer-encoding", b"chunked")],
        [*GET, (b"te", b"gzip")],
        [*GET, (b"x-a", b"b\r\nc")],
        [*GET, (b"x-a", b" padded")],
        [*GET, (b"x-a", b"nul\x00")],
        [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"a")],  # no :path
        [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b""), (b":authority", b"a")],
        [
            (b":method", b"GET"),
            (b"x-a", b"1"),
            (b":scheme", b"http"),
            (b":path", b"/"),
        ],  # pseudo after regular
        [*GET, (b":status", b"200")],
        [*GET, (b":method", b"GET")],
        [(b":method", b"CONNECT"), (b":scheme", b"http"), (b":path", b"/"), (b":authority", b"a")],
        [*GET, (b"content-length", b"x1")],
        [*GET, (b"content-length", b"3")],  # with END_STREAM and no body
        [*GET, (b"bad name", b"1")],
    ],
)
def test_malformed_requests_are_reset_not_delivered(
    h: ModuleType, headers: list[tuple[bytes, bytes]]
) -> None:
    p = Peer(h)
    p.stream_error(p.headers(1, headers, "END_STREAM"), 1, 1)  # PROTOCOL_ERROR
    assert p.send(p.headers(3, GET, "END_STREAM")) == [
        "RequestReceived",
        "StreamEnded",
    ]  # the connection lives on


def test_content_length_checked_against_data(h: ModuleType) -> None:
    p = Peer(h)
    p.send(p.headers(1, [*POST, (b"content-length", b"4")]))
    p.stream_error(hf.DataFrame(1, b"hello").serialize(), 1, 1)
    p.send(p.headers(3, [*POST, (b"content-length", b"4")]))
    p.send(hf.DataFrame(3, b"hel").serialize())
    kinds = p.stream_error(hf.DataFrame(3, b"", flags=["END_STREAM"]).serialize(), 3, 1)
    assert kinds == ["StreamReset"]  # the application had the request: it learns of the reset
    assert p.send(p.headers(5, [*POST, (b"content-length", b"2")])) == ["RequestReceived"]
    assert p.send(hf.DataFrame(5, b"ok", flags=["END_STREAM"]).serialize()) == ["DataReceived", "StreamEnded"]


def test_trailers_must_end_the_stream_and_carry_no_pseudo_headers(h: ModuleType) -> None:
    p = Peer(h)
    p.send(p.headers(1, POST))
    p.stream_error(p.headers(1, [(b"grpc-status", b"0")]), 1, 1)
    p.send(p.headers(3, POST))
    p.stream_error(p.headers(3, [(b":path", b"/")], "END_STREAM"), 3, 1)
    p.send(p.headers(5, POST))
    assert p.send(p.headers(5, [(b"x-t", b"1")], "END_STREAM")) == ["TrailersReceived", "StreamEnded"]


def test_connection_errors(h: ModuleType) -> None:
    p = Peer(h)
    p.connection_error(hf.DataFrame(7, b"x").serialize(), 1)  # DATA on an idle stream
    p = Peer(h)
    p.connection_error(
        hf.PushPromiseFrame(1, promised_stream_id=2, data=b"", flags=["END_HEADERS"]).serialize(), 1
    )
    p = Peer(h)
    p.connection_error(b"\x00\x00\x08\x06\x00\x00\x00\x00\x01" + b"12345678", 1)  # PING on a stream
    p = Peer(h)
    p.connection_error(
        b"\x00\x40\x01\x00\x00\x00\x00\x00\x00" + b"\x00" * 0x4001, 6
    )  # over SETTINGS_MAX_FRAME_SIZE
    p = Peer(h)
    p.connection_error(
        b"\x00\x00\x05\x04\x00\x00\x00\x00\x00" + b"\x00" * 5, 6
    )  # SETTINGS not a multiple of 6
    p = Peer(h)
    p.connection_error(settings(MAX_FRAME_SIZE=100), 1)
    p = Peer(h)
    p.connection_error(settings(INITIAL_WINDOW_SIZE=1 << 31), 3)
    p = Peer(h)
    p.connection_error(
        hf.WindowUpdateFrame(0, window_increment=(1 << 31) - 1).serialize(), 3
    )  # window overflow
    p = Peer(h)
    interleaved = (
        hf.HeadersFrame(1, p.enc.encode(POST)[:3]).serialize() + hf.PingFrame(0, b"12345678").serialize()
    )
    p.connection_error(interleaved, 1)  # a frame inside a header block
    p = Peer(h)
    p.connection_error(hf.HeadersFrame(1, b"\xbe", flags=["END_HEADERS"]).serialize(), 9)  # HPACK: bad index
    p = Peer(h)
    p.connection_error(hf.HeadersFrame(2, p.enc.encode(GET), flags=["END_HEADERS"]).serialize(), 1)  # even id
    p = Peer(h)
    p.send(p.headers(5, GET, "END_STREAM"))
    p.sent()
    p.connection_error(hf.RstStreamFrame(7, error_code=8).serialize(), 1)  # RST_STREAM on an idle stream


def test_bad_preface_and_first_frame(h: ModuleType) -> None:
    c = h.Connection(client_side=False)
    c.initiate_connection()
    with pytest.raises(h.ProtocolError):
        c.receive_data(b"GET / HTTP/1.1\r\n\r\n")
    c = h.Connection(client_side=False)
    with pytest.raises(h.ProtocolError):
        c.receive_data(PREFACE + hf.PingFrame(0, b"12345678").serialize())
    assert isinstance(frames(c.data_to_send())[-1], hf.GoAwayFrame)
    c = h.Connection(client_side=False)
    assert c.receive_data(PREFACE[:10]) == [] and c.receive_data(PREFACE[10:]) == []  # the preface in pieces


def test_ping_is_answered(h: ModuleType) -> None:
    p = Peer(h)
    assert p.send(hf.PingFrame(0, b"abcdefgh").serialize()) == ["PingReceived"]
    (ack,) = p.sent()
    assert isinstance(ack, hf.PingFrame) and "ACK" in ack.flags and ack.opaque_data == b"abcdefgh"


def test_stream_states(h: ModuleType) -> None:
    p = Peer(h)
    p.send(p.headers(1, GET, "END_STREAM"))
    p.stream_error(hf.DataFrame(1, b"x").serialize(), 1, 5)  # DATA after END_STREAM: STREAM_CLOSED
    p.send(p.headers(3, POST))
    p.conn.reset_stream(3, h.ErrorCodes.CANCEL)
    p.sent()
    assert p.send(hf.DataFrame(3, b"late").serialize()) == []  # after our reset: ignored
    assert p.sent() == []
    p.send(p.headers(5, POST))
    assert p.send(hf.RstStreamFrame(5, error_code=8).serialize()) == ["StreamReset"]
    assert p.events[0].error_code == h.ErrorCodes.CANCEL and p.events[0].remote_reset
    assert p.send(hf.WindowUpdateFrame(5, window_increment=10).serialize()) == []  # closed stream: ignored
    assert p.send(hf.PriorityFrame(9, depends_on=0).serialize()) == []  # PRIORITY on an idle stream is fine
    p.stream_error(hf.PriorityFrame(11, depends_on=11).serialize(), 11, 1)  # a stream depending on itself


def test_max_concurrent_streams_refuses(h: ModuleType) -> None:
    p = Peer(h)
    p.conn.update_settings({h.SettingCodes.MAX_CONCURRENT_STREAMS: 2})
    p.sent()
    assert p.send(hf.SettingsFrame(0, flags=["ACK"]).serialize()) == ["SettingsAcknowledged"]
    p.send(p.headers(1, POST) + p.headers(3, POST))
    p.stream_error(p.headers(5, POST), 5, 7)  # REFUSED_STREAM
    p.send(hf.DataFrame(1, b"", flags=["END_STREAM"]).serialize())
    p.conn.send_headers(1, [(b":status", b"204")], end_stream=True)
    assert p.send(p.headers(7, POST)) == ["RequestReceived"]  # room again


def test_flow_control_inbound(h: ModuleType) -> None:
    p = Peer(h)
    p.send(p.headers(1, POST) + p.headers(3, POST))
    p.send(hf.DataFrame(1, b"x" * 16384).serialize() * 3)
    p.connection_error(
        hf.DataFrame(3, b"x" * 16384).serialize(), 3
    )  # 65536 bytes: over the connection's window
    p = Peer(h)
    p.conn.update_settings({h.SettingCodes.INITIAL_WINDOW_SIZE: 1000})
    p.send(hf.SettingsFrame(0, flags=["ACK"]).serialize())
    p.send(p.headers(1, POST))
    p.sent()
    p.stream_error(hf.DataFrame(1, b"x" * 1001).serialize(), 1, 3)  # over the stream's window
    # The application never saw those bytes: the codec counts them as consumed for the connection.
    assert p.conn.recv_window + p.conn.processed == 65535


def test_window_updates_are_batched(h: ModuleType) -> None:
    p = Peer(h)
    p.send(p.headers(1, POST))
    p.send(hf.DataFrame(1, b"x" * 10000).serialize())
    p.conn.acknowledge_received_data(10000, 1)
    assert p.sent() == []  # under a quarter of the window: no WINDOW_UPDATE yet
    p.send(hf.DataFrame(1, b"x" * 10000).serialize())
    p.conn.acknowledge_received_data(10000, 1)
    updates = sorted((f.stream_id, f.window_increment) for f in p.sent())
    assert updates == [(0, 20000), (1, 20000)]


def test_settings_initial_window_moves_open_streams(h: ModuleType) -> None:
    p = Peer(h)
    p.send(p.headers(1, POST))
    assert p.conn.local_flow_control_window(1) == 65535
    p.send(settings(INITIAL_WINDOW_SIZE=1000))
    assert p.conn.local_flow_control_window(1) == 1000
    with pytest.raises(h.FlowControlError):
        p.conn.send_headers(1, [(b":status", b"200")]) or p.conn.send_data(1, b"x" * 1001)
    p.conn.send_data(1, b"x" * 1000)
    assert p.conn.local_flow_control_window(1) == 0
    p.send(hf.WindowUpdateFrame(1, window_increment=500).serialize())
    assert type(p.events[0]).__name__ == "WindowUpdated" and p.conn.local_flow_control_window(1) == 500
    p.stream_error(hf.WindowUpdateFrame(1, window_increment=(1 << 31) - 1).serialize(), 1, 3)


def test_our_settings_apply_when_acknowledged(h: ModuleType) -> None:
    p = Peer(h)
    p.conn.update_settings({h.SettingCodes.INITIAL_WINDOW_SIZE: 100})
    p.send(p.headers(1, POST))
    p.send(hf.DataFrame(1, b"x" * 1000).serialize())  # before the ACK the old window (65535) holds
    p.send(hf.SettingsFrame(0, flags=["ACK"]).serialize())
    p.stream_error(hf.DataFrame(1, b"x").serialize(), 1, 3)  # now 100 - 1000 < 0: overrun


def test_sending_splits_frames(h: ModuleType) -> None:
    p = Peer(h)
    p.send(
        settings(MAX_FRAME_SIZE=16384, INITIAL_WINDOW_SIZE=1 << 20)
        + hf.WindowUpdateFrame(0, window_increment=1 << 20).serialize()
    )
    p.send(p.headers(1, GET, "END_STREAM"))
    p.sent()
    big = [(b":status", b"200")] + [(b"x-h%d" % i, b"v" * 1000) for i in range(40)]
    p.conn.send_headers(1, big)
    p.conn.send_data(1, b"y" * 40000, end_stream=True)
    out = p.sent()
    kinds = [type(f).__name__ for f in out]
    assert kinds[0] == "HeadersFrame" and "ContinuationFrame" in kinds
    assert all(len(f.data) <= 16384 for f in out if hasattr(f, "data"))
    block = b"".join(f.data for f in out if type(f).__name__ in ("HeadersFrame", "ContinuationFrame"))
    assert hpack.Decoder().decode(block, raw=True) == big
    data = [f for f in out if isinstance(f, hf.DataFrame)]
    assert b"".join(f.data for f in data) == b"y" * 40000 and "END_STREAM" in data[-1].flags


def test_client_side(h: ModuleType) -> None:
    p = Peer(h, codec_is_client=True)
    sid = p.conn.get_next_available_stream_id()
    assert sid == 1
    p.conn.send_headers(
        sid,
        [(b":method", b"HEAD"), (b":scheme", b"http"), (b":path", b"/"), (b":authority", b"a")],
        end_stream=True,
    )
    assert p.conn.get_next_available_stream_id() == 3
    (req,) = p.sent()
    assert isinstance(req, hf.HeadersFrame) and "END_STREAM" in req.flags
    # A HEAD response has a content-length and no body; a 1xx comes before the final response.
    assert p.send(p.headers(1, [(b":status", b"100")])) == ["InformationalResponseReceived"]
    assert p.send(p.headers(1, [(b":status", b"200"), (b"content-length", b"10")], "END_STREAM")) == [
        "ResponseReceived",
        "StreamEnded",
    ]
    p.conn.send_headers(3, POST)
    p.stream_error(p.headers(3, [(b":method", b"GET")]), 3, 1)  # a request's pseudo-header in a response
    assert p.events and type(p.events[0]).__name__ == "StreamReset"  # the application learns of it
    p.send(settings(MAX_CONCURRENT_STREAMS=1))
    p.conn.send_headers(5, POST)
    with pytest.raises(h.TooManyStreamsError):
        p.conn.send_headers(7, POST)
    # GOAWAY: streams above the last one processed are refused (and may be retried elsewhere).
    kinds = p.send(hf.GoAwayFrame(0, last_stream_id=3, error_code=0).serialize())
    assert kinds == ["ConnectionTerminated", "StreamReset"] and p.events[1].stream_id == 5
    assert p.events[1].error_code == h.ErrorCodes.REFUSED_STREAM
    with pytest.raises(h.ProtocolError):
        p.conn.send_headers(p.conn.get_next_available_stream_id(), POST)


def test_client_refuses_push_and_server_streams(h: ModuleType) -> None:
    p = Peer(h, codec_is_client=True)
    p.connection_error(p.headers(2, [(b":status", b"200")]), 1)
    p = Peer(h, codec_is_client=True)
    p.connection_error(settings(ENABLE_PUSH=1), 1)


def test_goaway_on_drain(h: ModuleType) -> None:
    p = Peer(h)
    p.send(p.headers(1, GET, "END_STREAM"))
    p.conn.close_connection()
    (goaway,) = p.sent()
    assert isinstance(goaway, hf.GoAwayFrame) and goaway.last_stream_id == 1 and goaway.error_code == 0
    p.stream_error(p.headers(3, GET, "END_STREAM"), 3, 7)  # after our GOAWAY: refused
    p.conn.send_headers(1, [(b":status", b"200")], end_stream=True)  # stream 1 still finishes
