"""The HTTP/1.1 codec, every case over both implementations (the Cython module and its twin)."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest
from support.impls import ids, implementations

IMPLS = implementations("fastpath.http1_py", "fastpath._http1")


@pytest.fixture(params=IMPLS, ids=ids(IMPLS))
def h(request: pytest.FixtureRequest) -> ModuleType:
    return request.param  # type: ignore[no-any-return]


def body_of(data: bytes, events: list[Any], h: ModuleType) -> bytes:
    return b"".join(data[e.start : e.end] for e in events if type(e) is h.Body)


def test_simple_get(h: ModuleType) -> None:
    p = h.RequestParser()
    data = b"GET /a?b=1 HTTP/1.1\r\nHost: Example.COM\r\nX-Thing:  padded \t\r\n\r\n"
    events = p.feed(data)
    head = events[0]
    assert events[1:] == [h.MESSAGE_END]
    assert (head.method, head.target, head.version, head.host) == (b"GET", b"/a?b=1", "1.1", b"Example.COM")
    assert head.headers == [(b"host", b"Example.COM"), (b"x-thing", b"padded")]
    assert head.keep_alive and not head.upgrade and not head.chunked and head.content_length is None
    assert head.raw == data and not head.hop_by_hop and head.request_id is None
    assert head.get(b"x-thing") == b"padded" and head.get(b"missing", b"d") == b"d"


def test_a_client_certificate_header_is_noticed_in_any_case(h: ModuleType) -> None:
    # What lets a connection manager remove the header without splitting every request's headers.
    p = h.RequestParser()
    plain, claimed, other = p.feed(
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-Client-Cert: URI=spiffe://x/ns/a/sa/b\r\n\r\n"
        b"GET / HTTP/1.1\r\nHost: a\r\nx-forwarded-client-certs: no\r\n\r\n"
    )[::2]
    assert not plain.client_cert_header and claimed.client_cert_header and not other.client_cert_header
    assert claimed.get(b"x-forwarded-client-cert") == b"URI=spiffe://x/ns/a/sa/b"


def test_pipelined_requests_with_bodies(h: ModuleType) -> None:
    p = h.RequestParser()
    data = (
        b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
        b"PUT /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n0\r\nT: v\r\n\r\n"
        b"GET /c HTTP/1.1\r\nHost: x\r\nX-Request-Id: rid\r\n\r\n"
    )
    events = p.feed(data)
    kinds = [type(e).__name__ for e in events]
    assert kinds == [
        "RequestHead",
        "Body",
        "MessageEnd",
        "RequestHead",
        "Body",
        "MessageEnd",
        "RequestHead",
        "MessageEnd",
    ]
    assert data[events[1].start : events[1].end] == b"hello"
    # Chunked bodies are forwarded with their framing (validated), trailers included.
    assert data[events[4].start : events[4].end] == b"3;ext=1\r\nabc\r\n0\r\nT: v\r\n\r\n"
    assert events[3].chunked and events[3].content_length is None
    assert events[6].request_id == b"rid"


@pytest.mark.parametrize("step", [1, 2, 3, 7, 64])
def test_any_split_gives_the_same_messages(h: ModuleType, step: int) -> None:
    data = (
        b"\r\nPOST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\nConnection: keep-alive\r\n\r\n"
        b"hello world"
        b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    whole = h.RequestParser().feed(data)
    p = h.RequestParser()
    heads, body = [], b""
    for i in range(0, len(data), step):
        piece = data[i : i + step]
        for e in p.feed(piece):
            if isinstance(e, h.RequestHead):
                heads.append(e)
            elif type(e) is h.Body:
                body += piece[e.start : e.end]
    assert [(x.method, x.target, x.headers, x.raw) for x in heads] == [
        (x.method, x.target, x.headers, x.raw) for x in whole if isinstance(x, h.RequestHead)
    ]
    assert heads[0].raw.startswith(b"POST /upload")  # the empty line before it is not part of the head
    assert body == b"hello world5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"


def test_pull_stops_between_pipelined_requests(h: ModuleType) -> None:
    p = h.RequestParser()
    p.set_data(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\nBROKEN\r\n")
    assert p.next() == h.HEAD and p.head.target == b"/1"
    assert p.next() == h.END
    assert p.next() == h.HEAD and p.head.target == b"/2"  # parsed only now
    assert p.next() == h.END
    with pytest.raises(h.HttpParseError) as err:  # the garbage is found only after both requests
        p.next()
    assert (err.value.status, err.value.reason) == (400, "bad_start_line")
    with pytest.raises(h.HttpParseError):  # and from then on, always
        p.set_data(b"GET / HTTP/1.1\r\n")


def test_http10_and_connection_tokens(h: ModuleType) -> None:
    [head, _] = h.RequestParser().feed(b"GET / HTTP/1.0\r\n\r\n")
    assert head.version == "1.0" and not head.keep_alive and head.host is None
    [head, _] = h.RequestParser().feed(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
    assert head.keep_alive and head.hop_by_hop
    [head, _] = h.RequestParser().feed(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: a, close\r\n\r\n")
    assert not head.keep_alive


def test_expect_continue_and_upgrade(h: ModuleType) -> None:
    events = h.RequestParser().feed(
        b"PUT /x HTTP/1.1\r\nHost: x\r\nExpect: 100-Continue\r\nContent-Length: 2\r\n\r\n"
    )
    assert events[0].expect_continue and len(events) == 1  # waiting for the body
    p = h.RequestParser()
    data = b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nraw frames"
    events = p.feed(data)
    assert events[0].upgrade and events[1] is h.MESSAGE_END and type(events[2]) is h.Tunnel
    assert data[events[2].start :] == b"raw frames" and p.tunnel
    assert p.feed(b"more") == [h.Tunnel(0, 4)]
    events = h.RequestParser().feed(b"CONNECT db:5432 HTTP/1.1\r\nHost: db:5432\r\n\r\nx")
    assert (
        events[0].upgrade
        and events[1] is h.MESSAGE_END
        and events[2] == h.Tunnel(len(events[0].raw), len(events[0].raw) + 1)
    )


def response_events(h: ModuleType, data: bytes, *sent: tuple[bytes, bool]) -> list[Any]:
    p = h.ResponseParser()
    for method, upgrade in sent:
        p.expect(method, upgrade)
    return p.feed(data)  # type: ignore[no-any-return]


def test_responses_framing(h: ModuleType) -> None:
    events = response_events(h, b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc", (b"GET", False))
    assert events[0].status == 200 and events[0].reason == b"OK" and events[-1] is h.MESSAGE_END
    # HEAD, 204 and 304 have no body whatever their headers say.
    for sent, status in (((b"HEAD", False), 200), ((b"GET", False), 204), ((b"GET", False), 304)):
        events = response_events(h, b"HTTP/1.1 %d X\r\nContent-Length: 10\r\n\r\n" % status, sent)
        assert events[1:] == [h.MESSAGE_END]
    # Interim 1xx then the final response.
    events = response_events(
        h, b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n", (b"PUT", False)
    )
    assert [e.status for e in events if isinstance(e, h.ResponseHead)] == [100, 201]
    assert events[0].interim and not events[2].interim
    # No length: until the upstream closes, and the connection is not reusable.
    p = h.ResponseParser()
    p.expect(b"GET")
    events = p.feed(b"HTTP/1.1 200 OK\r\n\r\nstream")
    assert not events[0].keep_alive and type(events[1]) is h.Body
    assert p.feed_eof() == [h.MESSAGE_END]
    # 101 to an upgrade request switches to a tunnel; no reason phrase at all is tolerated.
    events = response_events(h, b"HTTP/1.1 101\r\nUpgrade: websocket\r\n\r\nws", (b"GET", True))
    assert events[0].upgrade and events[0].reason == b"" and type(events[2]) is h.Tunnel


@pytest.mark.parametrize(
    ("data", "status", "reason"),
    [
        (
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
            "content_length_with_transfer_encoding",
        ),
        (
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            400,
            "conflicting_content_length",
        ),
        (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\n", 400, "bad_content_length"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400, "bad_content_length"),
        (
            b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            400,
            "bad_transfer_encoding",
        ),
        (b"GET / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400, "bad_transfer_encoding"),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400, "bad_chunk_size"),
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + b"f" * 17 + b"\r\n",
            400,
            "chunk_size_overflow",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab",
            400,
            "bad_chunk_framing",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nbad trailer\r\n",
            400,
            "bad_trailer",
        ),
        (b"GET / HTTP/1.1\r\nHost: x\r\nA: b\r\n  folded\r\n\r\n", 400, "obs_fold"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nA: b\x00c\r\n\r\n", 400, "bad_header_value"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nA: b\rc\r\n\r\n", 400, "bad_header_value"),
        (b"GET / HTTP/1.1\nHost: x\n\n", 400, "bad_line_ending"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n", 400, "bad_header_name"),
        (b"GET / HTTP/1.1\r\nHost: x\r\n: v\r\n\r\n", 400, "bad_header_name"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nnocolon\r\n\r\n", 400, "bad_header_line"),
        (b"GET / HTTP/1.1\r\n\r\n", 400, "missing_host"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "duplicate_host"),
        (b"G(T / HTTP/1.1\r\nHost: x\r\n\r\n", 400, "bad_method"),
        (b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n", 400, "bad_version"),
        (b"GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n", 400, "bad_target"),
        (b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n", 400, "bad_start_line"),
        (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505, "unsupported_version"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nA: " + b"v" * 61440 + b"\r\n\r\n", 431, "head_too_large"),
        (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"A: b\r\n" * 100 + b"\r\n", 431, "too_many_headers"),
        (b"GET /" + b"a" * 61440 + b" HTTP/1.1\r\n", 414, "start_line_too_long"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_bad_requests(h: ModuleType, data: bytes, status: int, reason: str) -> None:
    p = h.RequestParser()
    with pytest.raises(h.HttpParseError) as err:
        p.feed(data)
    assert (err.value.status, err.value.reason) == (status, reason)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"HTTP/1.1 20 OK\r\n\r\n", "bad_status"),
        (b"HTTP/1.1 600 OK\r\n\r\n", "bad_status"),
        (b"HTTP/1.1 200OK\r\n\r\n", "bad_status"),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "content_length_with_transfer_encoding",
        ),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "gzip_until_close_ok"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", "bad_transfer_encoding"),
        (b"HTTP/1.1 101 Switching\r\n\r\n", "unexpected_switching_protocols"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\n\r\n", "unsolicited_response"),
        (b"HTTP/3 200 OK\r\n\r\n", "bad_version"),
    ],
)
def test_bad_responses_are_502(h: ModuleType, data: bytes, reason: str) -> None:
    p = h.ResponseParser()
    p.expect(b"GET")
    if reason.endswith("_ok"):  # a coding other than chunked last: the body runs until close
        events = p.feed(data)
        assert not events[0].chunked and not events[0].keep_alive
        return
    with pytest.raises(h.HttpParseError) as err:
        p.feed(data)
    assert (err.value.status, err.value.reason) == (502, reason)


def test_cut_message_is_an_error_and_a_clean_close_is_not(h: ModuleType) -> None:
    p = h.RequestParser()
    p.feed(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nab")
    with pytest.raises(h.HttpParseError) as err:
        p.feed_eof()
    assert err.value.reason == "incomplete_message"
    p = h.RequestParser()
    p.feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert p.idle and p.feed_eof() == []


def test_forwarding_heads(h: ModuleType) -> None:
    [head, _] = h.RequestParser().feed(b"GET /x HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n")
    assert head.for_upstream() is head.raw  # nothing to change: the bytes as received
    assert head.for_upstream(b"x-request-id: 1\r\n") == (
        b"GET /x HTTP/1.1\r\nHost: x\r\nAccept: */*\r\nx-request-id: 1\r\n\r\n"
    )
    [head, _] = h.RequestParser().feed(
        b"GET /x HTTP/1.0\r\nHost: x\r\nConnection: keep-alive, X-Secret\r\nX-Secret: s\r\nKeep-Alive: 5\r\n"
        b"TE: trailers\r\nProxy-Connection: x\r\n\r\n"
    )
    # Lines that stay are forwarded byte for byte; the hop-by-hop ones and those Connection names go.
    assert head.for_upstream(b"a: b\r\n") == b"GET /x HTTP/1.1\r\nHost: x\r\nTE: trailers\r\na: b\r\n\r\n"
    [head, _] = h.RequestParser().feed(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    )
    assert head.for_upstream() == (
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nconnection: upgrade\r\n\r\n"
    )
    p = h.ResponseParser()
    p.expect(b"GET")
    [head, _, _] = p.feed(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
    assert head.for_downstream(b"x: y\r\n", b"keep-alive") == (
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nconnection: keep-alive\r\nx: y\r\n\r\n"
    )
    p = h.ResponseParser()
    p.expect(b"GET")
    [head, _, _] = p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert head.for_downstream() is head.raw


def test_serializers_refuse_injection(h: ModuleType) -> None:
    assert h.serialize_request_head(b"GET", b"/", [(b"host", b"x")]) == b"GET / HTTP/1.1\r\nhost: x\r\n\r\n"
    assert (
        h.serialize_response_head(503, b"Service Unavailable", [])
        == b"HTTP/1.1 503 Service Unavailable\r\n\r\n"
    )
    for bad in ([(b"a", b"b\r\nc: d")], [(b"a b", b"c")], [(b"a", b"\x00")]):
        with pytest.raises(ValueError):
            h.serialize_headers(bad)
    with pytest.raises(ValueError):
        h.serialize_request_head(b"GET", b"/ HTTP/1.1\r\nX: y", [])


def test_request_ids_are_uuid4(h: ModuleType) -> None:
    import uuid

    ids = {h.request_id() for _ in range(1000)}
    assert len(ids) == 1000
    for rid in list(ids)[:50]:
        u = uuid.UUID(rid.decode())
        assert u.version == 4 and u.variant == uuid.RFC_4122 and str(u).encode() == rid
