"""Differential fuzzing of the HTTP/1.1 codec: the Cython module and its twin agree on every input.

Inputs are built from pieces of real HTTP (so the parsers get deep) mixed with arbitrary bytes, cut
at arbitrary points, with small limits sometimes so the limits are reached. For every piece both
parsers must give the same events, or fail with the same status and reason at the same piece; and
neither may raise anything but ``HttpParseError``. Runs a bounded number of examples in CI.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

if os.environ.get("MIZZEN_NO_EXTENSIONS") == "1":
    pytest.skip("differential fuzzing needs the compiled codec", allow_module_level=True)

from fastpath import _http1 as fast
from fastpath import http1_py as slow

REQUEST_LINES = [
    b"GET / HTTP/1.1",
    b"POST /p?q=1 HTTP/1.1",
    b"HEAD / HTTP/1.0",
    b"CONNECT h:1 HTTP/1.1",
    b"PUT /x HTTP/1.0",
    b"\r\nDELETE /d HTTP/1.1",
    b"OPTIONS * HTTP/1.1",
]
STATUS_LINES = [
    b"HTTP/1.1 200 OK",
    b"HTTP/1.0 204 No Content",
    b"HTTP/1.1 100 Continue",
    b"HTTP/1.1 101",
    b"HTTP/1.1 304 Not Modified",
    b"HTTP/1.1 502 ",
]
HEADERS = [
    b"Host: x",
    b"host: y:80",
    b"Content-Length: 5, 5",
    b"Transfer-Encoding: gzip",
    b"Connection: close",
    b"Connection: keep-alive",
    b"Connection: upgrade",
    b"Upgrade: ws",
    b"Expect: 100-continue",
    b"X-Request-Id: abc",
    b"TE: trailers",
    b"Keep-Alive: 1",
    b"A:  b ",
    b"Proxy-Connection: x",
    b"Accept: */*",
]
NOISE = [
    b" ",
    b"\t",
    b":",
    b"\n",
    b"\r",
    b"\x00",
    b"\x7f",
    b"\xff",
    b"1",
    b";",
    b"HTTP/2.0",
    b"\r\n",
    b"f",
    b"HTTP/1.x",
    b"HTTP/1.",
    b"fffffffffffffffff",
    b"\r\n\r\n",
    b"0\r\n",
]


@st.composite
def message(draw: st.DrawFn, first_lines: list[bytes]) -> bytes:
    """A well-formed message (start line, headers, framing, body), then perhaps damaged."""
    lines = [draw(st.sampled_from(first_lines))]
    if draw(st.integers(0, 4)):
        lines.append(draw(st.sampled_from([b"Host: x", b"host: y:80"])))
    lines += draw(st.lists(st.sampled_from(HEADERS), max_size=4))
    framing = draw(st.sampled_from(["none", "length", "chunked", "both"]))
    body = draw(st.binary(max_size=12))
    payload = b""
    if framing in ("length", "both"):
        lines.append(b"Content-Length: %d" % len(body))
        payload = body
    if framing in ("chunked", "both"):
        lines.append(b"Transfer-Encoding: chunked")
        sizes = draw(st.lists(st.integers(1, 6), max_size=3))
        chunks, rest = [], body
        for n in sizes:
            part, rest = rest[:n], rest[n:]
            if part:
                ext = draw(st.sampled_from([b"", b";x=y", b" ;a"]))
                chunks.append(b"%x%s\r\n%s\r\n" % (len(part), ext, part))
        trailer = draw(st.sampled_from([b"", b"T: v\r\n"]))
        payload = b"".join(chunks) + b"0\r\n" + trailer + b"\r\n"
    data = b"\r\n".join(lines) + b"\r\n\r\n" + payload
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(0, len(data)))
        op = draw(st.integers(0, 2))
        if op == 0:
            data = data[:at] + draw(st.sampled_from(NOISE)) + data[at:]
        elif op == 1:
            data = data[:at] + data[at + draw(st.integers(1, 4)) :]
        else:
            data = data[:at] + draw(st.binary(min_size=1, max_size=3)) + data[at + 1 :]
    return data


def messages(first_lines: list[bytes]) -> st.SearchStrategy[bytes]:
    return st.lists(message(first_lines), min_size=1, max_size=3).map(b"".join)


requests = messages(REQUEST_LINES)
responses = messages(STATUS_LINES)


def normal(e: Any) -> Any:
    name = type(e).__name__
    if name in ("RequestHead", "ResponseHead"):
        fields = [
            "version",
            "content_length",
            "chunked",
            "keep_alive",
            "upgrade",
            "raw",
            "hop_by_hop",
            "headers",
        ]
        if name == "RequestHead":
            fields += ["method", "target", "host", "expect_continue", "request_id", "client_cert_header"]
        else:
            fields += ["status", "reason", "interim"]
        return (name, *(getattr(e, f) for f in fields))
    if name in ("Body", "Tunnel"):
        return (name, e.start, e.end)
    return name


def run(parser: Any, pieces: list[bytes], eof: bool) -> list[Any]:
    out: list[Any] = []
    try:
        for piece in pieces:
            out.append([normal(e) for e in parser.feed(piece)])
        if eof:
            out.append([normal(e) for e in parser.feed_eof()])
    except fast.HttpParseError as exc:  # the same class for both: the twin defines it
        out.append(("error", exc.status, exc.reason))
    return out


def cut(data: bytes, points: list[int]) -> list[bytes]:
    marks = sorted({p % (len(data) + 1) for p in points})
    pieces, last = [], 0
    for m in marks:
        pieces.append(data[last:m])
        last = m
    pieces.append(data[last:])
    return pieces


limits = st.sampled_from([(60 * 1024, None), (64, None), (128, 24)])


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=requests, points=st.lists(st.integers(0, 400), max_size=6), eof=st.booleans(), lim=limits)
def test_request_parsers_agree(
    data: bytes, points: list[int], eof: bool, lim: tuple[int, int | None]
) -> None:
    pieces = cut(data, points)
    assert run(fast.RequestParser(*lim), pieces, eof) == run(slow.RequestParser(*lim), pieces, eof)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=responses,
    points=st.lists(st.integers(0, 400), max_size=6),
    eof=st.booleans(),
    sent=st.lists(
        st.tuples(st.sampled_from([b"GET", b"HEAD", b"CONNECT", b"POST"]), st.booleans()), max_size=3
    ),
    lim=limits,
)
def test_response_parsers_agree(
    data: bytes, points: list[int], eof: bool, sent: list[tuple[bytes, bool]], lim: tuple[int, int | None]
) -> None:
    pieces = cut(data, points)
    a, b = fast.ResponseParser(*lim), slow.ResponseParser(*lim)
    for method, upgrade in sent:
        a.expect(method, upgrade)
        b.expect(method, upgrade)
    assert run(a, pieces, eof) == run(b, pieces, eof)


@settings(max_examples=300, deadline=None)
@given(data=requests)
def test_forwarded_heads_agree(data: bytes) -> None:
    """What the proxy sends on is the same from both, and parses again to the same request."""
    try:
        heads = [e for e in slow.RequestParser().feed(data) if isinstance(e, slow.RequestHead)]
    except slow.HttpParseError:
        return
    fast_heads = [e for e in fast.RequestParser().feed(data) if isinstance(e, fast.RequestHead)]
    for a, b in zip(heads, fast_heads, strict=True):
        # The proxy names the host itself when an HTTP/1.0 request did not.
        extra = b"x-request-id: 1\r\n" + (b"host: h\r\n" if a.host is None else b"")
        out = a.for_upstream(extra)
        assert out == b.for_upstream(extra)
        [again, *_] = slow.RequestParser().feed(out)
        assert (again.method, again.target, again.version) == (a.method, a.target, "1.1")


@settings(max_examples=300, deadline=None)
@given(data=responses, connection=st.sampled_from([None, b"close", b"keep-alive"]))
def test_forwarded_response_heads_agree(data: bytes, connection: bytes | None) -> None:
    a, b = slow.ResponseParser(), fast.ResponseParser()
    for p in (a, b):
        p.expect(b"GET", True)
        p.expect(b"GET", False)
    try:
        heads = [e for e in a.feed(data) if isinstance(e, slow.ResponseHead)]
    except slow.HttpParseError:
        return
    fast_heads = [e for e in b.feed(data) if isinstance(e, fast.ResponseHead)]
    for x, y in zip(heads, fast_heads, strict=True):
        assert x.for_downstream(b"x-extra: 1\r\n", connection) == y.for_downstream(
            b"x-extra: 1\r\n", connection
        )
