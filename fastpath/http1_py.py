"""HTTP/1.1 codec, pure-Python twin of ``fastpath._http1``.

Readable first: this module is the specification the Cython module is checked against
(``tests/unit/test_http1*.py`` run every case over both, and the fuzz test asserts they agree on
every input). Both take the same bytes, give the same events and raise the same errors.

The parser is bytes in, events out (no callbacks), in two equivalent forms:

- pull, what the proxy uses: ``set_data(data)``, then ``next()`` until it returns ``NEED_DATA``. Each
  call parses only as far as the next event, so a connection can stop between two pipelined requests.
  ``HEAD``: ``parser.head`` is the new head; ``BODY`` / ``TUNNEL``: ``data[parser.start:parser.end]``;
  ``END``: the message is complete, the next bytes belong to the next message.
- ``feed(data)``, for tests and tools: every event of ``data`` as objects (a head, ``Body(start, end)``,
  ``MESSAGE_END``, ``Tunnel(start, end)``).

Body spans of chunked messages include the chunk framing (validated), so a body is forwarded as is. Only
the head being read is ever kept between calls (bounded by the head limit); body bytes are never copied.
Heads keep their ``raw`` bytes: when nothing hop-by-hop needs removing, a head is forwarded as received
plus the proxy's own header lines (``for_upstream`` / ``for_downstream``), without re-serializing it.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Final

__all__ = [
    "BODY",
    "DEFAULT_MAX_HEADER_BYTES",
    "END",
    "HEAD",
    "MAX_CHUNK_LINE_BYTES",
    "MAX_HEADERS",
    "MESSAGE_END",
    "NEED_DATA",
    "TUNNEL",
    "Body",
    "HttpParseError",
    "MessageEnd",
    "RequestHead",
    "RequestParser",
    "ResponseHead",
    "ResponseParser",
    "Tunnel",
    "request_id",
    "serialize_headers",
    "serialize_request_head",
    "serialize_response_head",
]

DEFAULT_MAX_HEADER_BYTES: Final = 60 * 1024
# Envoy's max_headers_count default: more header fields than this is a 431.
MAX_HEADERS: Final = 100
# A chunk-size line (size, extensions, CR) longer than this is an attack, not a client.
MAX_CHUNK_LINE_BYTES: Final = 4096
_MAX_INT63_DIV16: Final = 0x07FFFFFFFFFFFFFF  # a chunk size must stay below 2**63

_TOKEN: Final = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_TOKEN_BYTES: Final = bytes(sorted(_TOKEN))
# field-value / reason-phrase / chunk-ext bytes: HTAB, SP, VCHAR, obs-text. Everything else (NUL, CR,
# LF, other controls, DEL) is refused: that is what keeps CR/LF injection and smuggling out.
_VALUE_BYTES: Final = bytes([9, *range(0x20, 0x7F), *range(0x80, 0x100)])
_VALUE: Final = frozenset(_VALUE_BYTES)
# request-target: visible ASCII and obs-text (raw UTF-8 paths are common), no SP or controls.
_TARGET_BYTES: Final = bytes([*range(0x21, 0x7F), *range(0x80, 0x100)])
_HEX: Final = {c: int(chr(c), 16) for c in b"0123456789abcdefABCDEF"}
_OWS: Final = b" \t"

# Parser states. The Cython module uses the same numbers.
_HEAD: Final = 0
_BODY_LENGTH: Final = 1
_CHUNK_SIZE_START: Final = 2
_CHUNK_SIZE: Final = 3
_CHUNK_SIZE_WS: Final = 4
_CHUNK_EXT: Final = 5
_CHUNK_SIZE_LF: Final = 6
_CHUNK_DATA: Final = 7
_CHUNK_DATA_CR: Final = 8
_CHUNK_DATA_LF: Final = 9
_TRAILER_START: Final = 10
_TRAILER_NAME: Final = 11
_TRAILER_VALUE: Final = 12
_TRAILER_LF: Final = 13
_TRAILER_END_LF: Final = 14
_BODY_UNTIL_CLOSE: Final = 15
_TUNNEL: Final = 16
_ERROR: Final = 17
_CLOSED: Final = 18

_CHUNK_LINE_STATES: Final = frozenset((_CHUNK_SIZE_START, _CHUNK_SIZE, _CHUNK_SIZE_WS, _CHUNK_EXT))

# What next() returns. The Cython module uses the same numbers.
NEED_DATA: Final = 0
HEAD: Final = 1
BODY: Final = 2
END: Final = 3
TUNNEL: Final = 4

# Headers that describe one hop, never forwarded as received (RFC 9110 7.6.1); a head carrying any of
# them is rebuilt rather than forwarded raw. Transfer-Encoding is not among them: bodies are forwarded
# with their framing, so it stays true on the next hop.
HOP_BY_HOP: Final = frozenset((b"connection", b"keep-alive", b"proxy-connection", b"te", b"upgrade"))


class HttpParseError(Exception):
    """The peer sent bytes that are not acceptable HTTP/1.x; answer ``status`` and close.

    ``status`` is what the proxy answers: 400, 414, 431 or 505 for a request; 502 for a response
    (the upstream broke the protocol, Envoy's UPE). ``reason`` is a stable machine-readable name of
    the fault (e.g. ``"conflicting_content_length"``), the same from both implementations.
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason

    def __reduce__(self) -> tuple[type[HttpParseError], tuple[int, str]]:
        return (HttpParseError, (self.status, self.reason))


class MessageEnd:
    """Marks the end of a message; the one instance is ``MESSAGE_END`` (compare with ``is``)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MESSAGE_END"


MESSAGE_END: Final = MessageEnd()


class Body:
    """Body bytes ``data[start:end]`` of the buffer passed to the ``feed`` call that returned this."""

    __slots__ = ("end", "start")

    def __init__(self, start: int, end: int) -> None:
        self.start = start
        self.end = end

    def __repr__(self) -> str:
        return f"Body({self.start}, {self.end})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Body)
            and type(other) is type(self)
            and (self.start, self.end) == (other.start, other.end)
        )

    __hash__ = None  # type: ignore[assignment]


class Tunnel(Body):
    """Opaque bytes ``data[start:end]`` after the switch to a tunnel (CONNECT, upgrade)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Tunnel({self.start}, {self.end})"


class _Head:
    __slots__ = (
        "chunked",
        "content_length",
        "headers",
        "hop_by_hop",
        "keep_alive",
        "raw",
        "upgrade",
        "version",
    )

    headers: list[tuple[bytes, bytes]]
    version: str
    content_length: int | None
    chunked: bool
    keep_alive: bool
    upgrade: bool
    raw: bytes  # the head as received, start line to the blank line (leading empty lines excluded)
    hop_by_hop: bool  # carries a header in HOP_BY_HOP, so it cannot be forwarded raw

    def get(self, name: bytes, default: bytes | None = None) -> bytes | None:
        """The first value of header ``name`` (lower-case, as the names are stored), else ``default``."""
        for key, value in self.headers:
            if key == name:
                return value
        return default

    def get_all(self, name: bytes) -> list[bytes]:
        """Every value of header ``name`` (lower-case), in order."""
        return [value for key, value in self.headers if key == name]

    def _forward(self, first: bytes, keep_upgrade: bool, tail: bytes) -> bytes:
        """``first`` (a new start line), then the header lines as received (byte for byte) except the
        hop-by-hop ones and those the Connection header names, then ``tail``."""
        drop = set(HOP_BY_HOP)
        for token in _codings(self.get_all(b"connection")):
            drop.add(token)
        if keep_upgrade:
            drop.discard(b"upgrade")
        raw = self.raw
        out = [first]
        pos = raw.index(b"\n") + 1
        end = len(raw) - 2  # the blank line
        while pos < end:
            lf = raw.index(b"\n", pos)
            colon = raw.index(b":", pos, lf)
            name = raw[pos:colon].lower()
            trailers = name == b"te" and raw[colon + 1 : lf].strip(b" \t\r").lower() == b"trailers"
            if name in drop and not trailers:
                pos = lf + 1
                continue
            out.append(raw[pos : lf + 1])
            pos = lf + 1
        out.append(tail)
        return b"".join(out)


class RequestHead(_Head):
    """A parsed request head. Header names are lower-cased; values have their OWS stripped.

    ``upgrade`` means the bytes after this request (after its body, or at once for CONNECT) are a
    tunnel; ``keep_alive`` applies HTTP/1.0 and 1.1 defaults and ``Connection`` tokens.
    """

    __slots__ = (
        "client_cert_header",
        "expect_continue",
        "host",
        "method",
        "request_id",
        "target",
        "trace_context",
    )

    method: bytes
    target: bytes
    host: bytes | None
    expect_continue: bool
    request_id: bytes | None  # x-request-id, read while parsing: the proxy adds one when absent
    trace_context: (
        bool  # a traceparent, b3, x-b3-* or x-envoy-force-trace header is present (fastpath.tracing)
    )
    # An x-forwarded-client-cert is present: a connection manager that does not set the header removes
    # it (Envoy's default SANITIZE), so that a client cannot claim a certificate it never presented.
    client_cert_header: bool

    def for_upstream(self, extra: bytes = b"") -> bytes:
        """The head to send upstream: HTTP/1.1, hop-by-hop headers removed, ``extra`` header lines
        (each ending in CRLF) appended. Forwarded raw when nothing needs removing."""
        if self.version == "1.1" and not self.hop_by_hop:
            return self.raw[:-2] + extra + b"\r\n" if extra else self.raw
        upgrade = self.upgrade and self.method != b"CONNECT"
        tail = (b"connection: upgrade\r\n" if upgrade else b"") + extra + b"\r\n"
        return self._forward(b"%s %s HTTP/1.1\r\n" % (self.method, self.target), upgrade, tail)

    def __repr__(self) -> str:
        return (
            f"<RequestHead {self.method!r} {self.target!r} HTTP/{self.version} {len(self.headers)} headers>"
        )


class ResponseHead(_Head):
    """A parsed response head. ``interim`` for 1xx other than 101 (another head follows)."""

    __slots__ = ("reason", "status")

    status: int
    reason: bytes

    @property
    def interim(self) -> bool:
        return 100 <= self.status < 200 and self.status != 101

    def for_downstream(self, extra: bytes = b"", connection: bytes | None = None) -> bytes:
        """The head to send downstream: HTTP/1.1, hop-by-hop headers removed, ``extra`` header lines
        appended, and ``connection: <connection>`` when given (close, keep-alive for HTTP/1.0 clients)."""
        if self.version == "1.1" and not self.hop_by_hop and connection is None:
            return self.raw[:-2] + extra + b"\r\n" if extra else self.raw
        switching = self.status == 101
        tail = b"connection: upgrade\r\n" if switching else b""
        if connection is not None and not switching:
            tail = b"connection: " + connection + b"\r\n"
        first = b"HTTP/1.1" + self.raw[8 : self.raw.index(b"\n") + 1]
        return self._forward(first, switching, tail + extra + b"\r\n")

    def __repr__(self) -> str:
        return f"<ResponseHead HTTP/{self.version} {self.status} {len(self.headers)} headers>"


def _is_token(data: bytes) -> bool:
    return bool(data) and not data.translate(None, _TOKEN_BYTES)


def _parse_content_length(values: list[bytes], error: int) -> int:
    """One length from every Content-Length value; equal duplicates and lists are tolerated (RFC 9110)."""
    length = -1
    for value in values:
        for item in value.split(b","):
            item = item.strip(_OWS)
            if not item or not item.isdigit() or len(item) > 19:
                raise HttpParseError(error, "bad_content_length")
            n = int(item)
            if n > 0x7FFFFFFFFFFFFFFF:
                raise HttpParseError(error, "bad_content_length")
            if length >= 0 and n != length:
                raise HttpParseError(error, "conflicting_content_length")
            length = n
    return length


def _codings(values: list[bytes]) -> list[bytes]:
    return [item.strip(_OWS).lower() for value in values for item in value.split(b",")]


class _Parser:
    """What requests and responses share: the head line reader and the body state machine."""

    _is_request: bool = True
    _error_status: int = 400

    def __init__(
        self, max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES, max_start_line_bytes: int | None = None
    ) -> None:
        if max_header_bytes < 16:
            raise ValueError("max_header_bytes must be at least 16")
        self.max_header_bytes = max_header_bytes
        # Defaults to the head limit: never stricter on long URLs than Envoy's 60 KiB.
        self.max_start_line_bytes = max_header_bytes if max_start_line_bytes is None else max_start_line_bytes
        self.head: _Head | None = None  # the head of the last HEAD event
        self.start = 0  # the span of the last BODY or TUNNEL event
        self.end = 0
        self._state = _HEAD
        self._error: HttpParseError | None = None
        self._data: bytes = b""
        self._pos = 0
        self._queue: deque[tuple[int, int, int, _Head | None]] = deque()
        self._pending = b""  # an incomplete head line, at most max_header_bytes
        self._raw: list[bytes] = []  # the lines of the head being read
        self._head_bytes = 0  # bytes of the current head consumed so far (lines already parsed)
        self._start: tuple[bytes, ...] | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._remaining = 0  # body bytes left (length) or chunk bytes left
        self._chunk_line = 0
        self._trailer_bytes = 0
        self._upgrade_after = False  # enter the tunnel at the end of this message

    @property
    def tunnel(self) -> bool:
        """True once the connection has switched to opaque bytes."""
        return self._state == _TUNNEL

    @property
    def idle(self) -> bool:
        """True between messages: nothing of a next message has arrived yet."""
        return self._state == _HEAD and not self._pending and self._start is None

    def _fail(self, status: int, reason: str) -> HttpParseError:
        self._state = _ERROR
        self._error = HttpParseError(status, reason)
        return self._error

    # -- pull ------------------------------------------------------------------------------------

    def set_data(self, data: bytes) -> None:
        """Hand the parser the next bytes of the stream; ``next()`` then walks through their events.
        Any events of the previous data not yet pulled are dropped."""
        if self._state == _ERROR:
            assert self._error is not None
            raise self._error
        self._data = bytes(data) if not isinstance(data, bytes) else data
        self._pos = 0
        self._queue.clear()

    def next(self) -> int:
        """The next event of the current data: NEED_DATA, HEAD, BODY, END or TUNNEL.

        Raises ``HttpParseError`` at the first byte that is not acceptable, and from then on always."""
        if self._queue:
            return self._pop()
        if self._state == _ERROR:
            assert self._error is not None
            raise self._error
        data, end = self._data, len(self._data)
        try:
            while self._pos < end:
                state = self._state
                if state == _HEAD:
                    self._pos = self._feed_head(data, self._pos, end)
                elif state == _TUNNEL:
                    self._queue.append((TUNNEL, self._pos, end, None))
                    self._pos = end
                else:
                    self._pos = self._feed_body(data, self._pos, end)
                if self._queue:
                    return self._pop()
        except HttpParseError as exc:
            self._state = _ERROR
            self._error = exc
            raise
        return NEED_DATA

    def _pop(self) -> int:
        code, self.start, self.end, head = self._queue.popleft()
        if head is not None:
            self.head = head
        return code

    def finish(self) -> bool:
        """The peer closed its side. True when that completes a read-until-close body (an END);
        False when between messages or in a tunnel; ``HttpParseError`` when it cut a message."""
        if self._state == _ERROR:
            assert self._error is not None
            raise self._error
        state = self._state
        if state == _BODY_UNTIL_CLOSE:
            self._state = _CLOSED
            return True
        if state in (_TUNNEL, _CLOSED) or (state == _HEAD and not self._pending and self._start is None):
            self._state = _CLOSED
            return False
        raise self._fail(self._error_status, "incomplete_message")

    # -- the event-list form -----------------------------------------------------------------------

    def feed(self, data: bytes | bytearray | memoryview) -> list[object]:
        """Parse ``data``; return the events it completes. Raises ``HttpParseError`` (then always)."""
        self.set_data(bytes(data))
        events: list[object] = []
        while (code := self.next()) != NEED_DATA:
            if code == HEAD:
                events.append(self.head)
            elif code == BODY:
                events.append(Body(self.start, self.end))
            elif code == TUNNEL:
                events.append(Tunnel(self.start, self.end))
            else:
                events.append(MESSAGE_END)
        return events

    def feed_eof(self) -> list[object]:
        """The peer closed its side: finish a read-until-close body, or fail on a cut message."""
        return [MESSAGE_END] if self.finish() else []

    # -- head ---------------------------------------------------------------------------------------

    def _feed_head(self, data: bytes, pos: int, end: int) -> int:
        """Consume at most one head line; return the new position."""
        lf = data.find(b"\n", pos, end)
        if lf < 0:
            self._check_line_limits(len(self._pending) + end - pos + 1)
            self._pending += data[pos:end]
            return end
        if self._pending:
            line = self._pending + data[pos : lf + 1]
            self._pending = b""
        else:
            line = data[pos : lf + 1]
        self._head_line(line)
        return lf + 1

    def _check_line_limits(self, line_bytes: int) -> None:
        """Limits on a line of ``line_bytes`` (LF included), checked before its content is looked at."""
        if self._start is None and line_bytes > self.max_start_line_bytes + 2:
            raise HttpParseError(414 if self._is_request else 502, "start_line_too_long")
        if self._head_bytes + line_bytes > self.max_header_bytes:
            raise HttpParseError(431 if self._is_request else 502, "head_too_large")

    def _head_line(self, line: bytes) -> None:
        """Consume one complete line (ending in LF)."""
        self._check_line_limits(len(line))
        if len(line) < 2 or line[-2] != 0x0D:
            raise HttpParseError(self._error_status, "bad_line_ending")
        content = line[:-2]
        if self._start is None:
            if not content and self._is_request:
                return  # RFC 9112 2.2: tolerate empty lines before a request-line (not counted)
            self._head_bytes += len(line)
            self._raw.append(line)
            self._start = self._parse_start_line(content)
            return
        self._head_bytes += len(line)
        self._raw.append(line)
        if not content:
            self._finish_head()
            return
        if content[0] in (0x20, 0x09):
            raise HttpParseError(self._error_status, "obs_fold")
        colon = content.find(b":")
        if colon < 0:
            raise HttpParseError(self._error_status, "bad_header_line")
        name = content[:colon]
        if not _is_token(name):
            raise HttpParseError(self._error_status, "bad_header_name")
        value = content[colon + 1 :].strip(_OWS)
        if value.translate(None, _VALUE_BYTES):
            raise HttpParseError(self._error_status, "bad_header_value")
        self._headers.append((name.lower(), value))
        if len(self._headers) > MAX_HEADERS:
            raise HttpParseError(431 if self._is_request else 502, "too_many_headers")

    def _parse_start_line(self, line: bytes) -> tuple[bytes, ...]:
        raise NotImplementedError

    def _finish_head(self) -> None:
        raise NotImplementedError

    def _new_head(self, head: _Head) -> None:
        head.headers = self._headers
        head.raw = b"".join(self._raw)
        head.hop_by_hop = any(name in HOP_BY_HOP for name, _ in self._headers)
        self._start = None
        self._headers = []
        self._raw = []
        self._head_bytes = 0

    def _framing(self, head: _Head) -> None:
        """Content-Length and Transfer-Encoding, checked the same way for both directions."""
        status = self._error_status
        cl_values = head.get_all(b"content-length")
        te_values = head.get_all(b"transfer-encoding")
        head.content_length = _parse_content_length(cl_values, status) if cl_values else None
        head.chunked = False
        if te_values:
            if head.version == "1.0":
                raise HttpParseError(status, "bad_transfer_encoding")  # RFC 9112 6.1: faulty framing
            codings = _codings(te_values)
            if self._is_request:
                if codings != [b"chunked"]:
                    raise HttpParseError(status, "bad_transfer_encoding")
            elif b"chunked" in codings[:-1] or not all(_is_token(c) for c in codings):
                raise HttpParseError(status, "bad_transfer_encoding")
            if head.content_length is not None:
                raise HttpParseError(status, "content_length_with_transfer_encoding")
            head.chunked = codings[-1] == b"chunked"

    def _connection(self, head: _Head) -> bool:
        """Sets ``keep_alive`` from the version and the Connection tokens; True if ``upgrade`` is one."""
        close = keep_alive = upgrade = False
        for token in _codings(head.get_all(b"connection")):
            if token == b"close":
                close = True
            elif token == b"keep-alive":
                keep_alive = True
            elif token == b"upgrade":
                upgrade = True
        head.keep_alive = not close and (head.version == "1.1" or keep_alive)
        return upgrade

    def _start_body(self, head: _Head, has_body: bool, tunnel: bool) -> None:
        """Queue the head and move to the body state that its framing calls for."""
        self._queue.append((HEAD, 0, 0, head))
        if tunnel:
            self._upgrade_after = True  # END first, so every message ends the same way
            self._end_message()
        elif not has_body:
            self._end_message()
        elif head.chunked:
            self._state = _CHUNK_SIZE_START
            self._chunk_line = 0
            self._remaining = 0
        elif head.content_length is not None:
            if head.content_length == 0:
                self._end_message()
            else:
                self._state = _BODY_LENGTH
                self._remaining = head.content_length
        elif self._is_request:
            self._end_message()
        else:
            self._state = _BODY_UNTIL_CLOSE

    def _end_message(self) -> None:
        self._queue.append((END, 0, 0, None))
        self._state = _TUNNEL if self._upgrade_after else _HEAD
        self._upgrade_after = False

    # -- body ---------------------------------------------------------------------------------------

    def _feed_body(self, data: bytes, pos: int, end: int) -> int:
        """Run the body state machine from ``pos``; one BODY span covers everything it consumed."""
        start = pos
        state = self._state
        status = self._error_status
        while pos < end:
            if state == _BODY_LENGTH or state == _CHUNK_DATA:
                take = min(self._remaining, end - pos)
                pos += take
                self._remaining -= take
                if self._remaining:
                    continue
                if state == _BODY_LENGTH:
                    self._queue.append((BODY, start, pos, None))
                    self._end_message()
                    return pos
                state = _CHUNK_DATA_CR
                continue
            if state == _BODY_UNTIL_CLOSE:
                pos = end
                continue
            c = data[pos]
            pos += 1
            if state in _CHUNK_LINE_STATES:
                self._chunk_line += 1
                if self._chunk_line > MAX_CHUNK_LINE_BYTES:
                    raise HttpParseError(status, "chunk_line_too_long")
            if state == _CHUNK_SIZE_START:
                if c not in _HEX:
                    raise HttpParseError(status, "bad_chunk_size")
                self._remaining = _HEX[c]
                state = _CHUNK_SIZE
            elif state == _CHUNK_SIZE:
                if c in _HEX:
                    if self._remaining > _MAX_INT63_DIV16:
                        raise HttpParseError(status, "chunk_size_overflow")
                    self._remaining = self._remaining * 16 + _HEX[c]
                elif c == 0x0D:
                    state = _CHUNK_SIZE_LF
                elif c == 0x3B:
                    state = _CHUNK_EXT
                elif c in (0x20, 0x09):
                    state = _CHUNK_SIZE_WS
                else:
                    raise HttpParseError(status, "bad_chunk_size")
            elif state == _CHUNK_SIZE_WS:
                if c == 0x3B:
                    state = _CHUNK_EXT
                elif c not in (0x20, 0x09):
                    raise HttpParseError(status, "bad_chunk_size")
            elif state == _CHUNK_EXT:
                if c == 0x0D:
                    state = _CHUNK_SIZE_LF
                elif c not in _VALUE:
                    raise HttpParseError(status, "bad_chunk_extension")
            elif state == _CHUNK_SIZE_LF:
                if c != 0x0A:
                    raise HttpParseError(status, "bad_chunk_framing")
                self._chunk_line = 0
                if self._remaining:
                    state = _CHUNK_DATA
                else:
                    state = _TRAILER_START
                    self._trailer_bytes = 0
            elif state == _CHUNK_DATA_CR:
                if c != 0x0D:
                    raise HttpParseError(status, "bad_chunk_framing")
                state = _CHUNK_DATA_LF
            elif state == _CHUNK_DATA_LF:
                if c != 0x0A:
                    raise HttpParseError(status, "bad_chunk_framing")
                state = _CHUNK_SIZE_START
            else:
                # Trailer section: validated byte by byte and forwarded raw, never buffered.
                self._trailer_bytes += 1
                if self._trailer_bytes > self.max_header_bytes:
                    raise HttpParseError(431 if self._is_request else 502, "trailers_too_large")
                if state == _TRAILER_START:
                    if c == 0x0D:
                        state = _TRAILER_END_LF
                    elif c in (0x20, 0x09):
                        raise HttpParseError(status, "obs_fold")
                    elif c in _TOKEN:
                        state = _TRAILER_NAME
                    else:
                        raise HttpParseError(status, "bad_trailer")
                elif state == _TRAILER_NAME:
                    if c == 0x3A:
                        state = _TRAILER_VALUE
                    elif c not in _TOKEN:
                        raise HttpParseError(status, "bad_trailer")
                elif state == _TRAILER_VALUE:
                    if c == 0x0D:
                        state = _TRAILER_LF
                    elif c not in _VALUE:
                        raise HttpParseError(status, "bad_trailer")
                elif state == _TRAILER_LF:
                    if c != 0x0A:
                        raise HttpParseError(status, "bad_trailer")
                    state = _TRAILER_START
                else:  # _TRAILER_END_LF
                    if c != 0x0A:
                        raise HttpParseError(status, "bad_chunk_framing")
                    self._queue.append((BODY, start, pos, None))
                    self._end_message()
                    return pos
        self._state = state
        if pos > start:
            self._queue.append((BODY, start, pos, None))
        return pos


class RequestParser(_Parser):
    """Parses the requests a client sends on one connection (pipelining included).

    Errors carry 400 (malformed), 414 (request line over ``max_start_line_bytes``), 431 (head or
    trailers over ``max_header_bytes``) or 505 (an HTTP version other than 1.0/1.1).
    """

    _is_request = True
    _error_status = 400
    head: RequestHead | None

    def _parse_start_line(self, line: bytes) -> tuple[bytes, ...]:
        sp1 = line.find(b" ")
        if sp1 <= 0:
            raise HttpParseError(400, "bad_start_line")
        method = line[:sp1]
        if not _is_token(method):
            raise HttpParseError(400, "bad_method")
        sp2 = line.find(b" ", sp1 + 1)
        if sp2 < 0 or sp2 == sp1 + 1:
            raise HttpParseError(400, "bad_start_line")
        target = line[sp1 + 1 : sp2]
        if target.translate(None, _TARGET_BYTES):
            raise HttpParseError(400, "bad_target")
        return (method, target, _parse_version(line[sp2 + 1 :], 400, 505))

    def _finish_head(self) -> None:
        assert self._start is not None
        method, target, version = self._start
        head = RequestHead()
        head.method = method
        head.target = target
        head.version = version.decode()
        self._new_head(head)
        hosts = head.get_all(b"host")
        if len(hosts) > 1:
            raise HttpParseError(400, "duplicate_host")
        if not hosts and head.version == "1.1":
            raise HttpParseError(400, "missing_host")  # RFC 9112 3.2
        head.host = hosts[0] if hosts else None
        head.request_id = head.get(b"x-request-id")
        head.trace_context = any(
            name in (b"traceparent", b"b3", b"x-envoy-force-trace") or name.startswith(b"x-b3-")
            for name, _ in head.headers
        )
        head.client_cert_header = head.get(b"x-forwarded-client-cert") is not None
        self._framing(head)
        upgrade = self._connection(head)
        expect = head.get(b"expect")
        head.expect_continue = (
            expect is not None and head.version == "1.1" and expect.lower() == b"100-continue"
        )
        connect = method == b"CONNECT"
        head.upgrade = connect or (upgrade and head.get(b"upgrade") is not None)
        # An upgrade takes effect after this request's body; CONNECT has none (RFC 9110 9.3.6).
        self._upgrade_after = head.upgrade
        self._start_body(head, not connect, connect)


class ResponseParser(_Parser):
    """Parses the responses an upstream sends on one connection.

    Framing depends on the request, so call ``expect(method, upgrade)`` once per request sent, in
    order: HEAD responses, 1xx, 204 and 304 have no body; 2xx to CONNECT and 101 to an upgrade
    request switch to a tunnel. Every error carries 502 (what the proxy answers downstream).
    """

    _is_request = False
    _error_status = 502
    head: ResponseHead | None

    def __init__(
        self, max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES, max_start_line_bytes: int | None = None
    ) -> None:
        super().__init__(max_header_bytes, max_start_line_bytes)
        self._expected: deque[tuple[bytes, bool]] = deque()

    def expect(self, method: bytes, upgrade: bool = False) -> None:
        """Record that a request with ``method`` was sent (``upgrade``: it asked to switch protocols)."""
        self._expected.append((method, upgrade))

    def _parse_start_line(self, line: bytes) -> tuple[bytes, ...]:
        sp1 = line.find(b" ")
        if sp1 < 0:
            raise HttpParseError(502, "bad_start_line")
        version = _parse_version(line[:sp1], 502, 502)
        code = line[sp1 + 1 : sp1 + 4]
        if len(code) != 3 or not code.isdigit() or not (b"100" <= code <= b"599"):
            raise HttpParseError(502, "bad_status")
        rest = line[sp1 + 4 :]
        if rest:
            # The reason phrase may be empty, and some servers drop the SP before it too.
            if rest[0] != 0x20:
                raise HttpParseError(502, "bad_status")
            rest = rest[1:]
            if rest.translate(None, _VALUE_BYTES):
                raise HttpParseError(502, "bad_start_line")
        return (version, code, rest)

    def _finish_head(self) -> None:
        assert self._start is not None
        version, code, reason = self._start
        head = ResponseHead()
        head.status = status = int(code)
        head.reason = reason
        head.version = version.decode()
        self._new_head(head)
        self._framing(head)
        self._connection(head)
        head.upgrade = False
        if status < 200 and status != 101:
            self._start_body(head, False, False)  # interim: the final response follows
            return
        if not self._expected:
            raise HttpParseError(502, "unsolicited_response")
        method, upgrade_requested = self._expected.popleft()
        if status == 101:
            if not upgrade_requested:
                raise HttpParseError(502, "unexpected_switching_protocols")
            head.upgrade = True
        elif method == b"CONNECT" and status < 300:
            head.upgrade = True
        has_body = method != b"HEAD" and status not in (204, 304)
        if has_body and not head.upgrade and not head.chunked and head.content_length is None:
            head.keep_alive = False  # the body runs until the upstream closes
        self._start_body(head, has_body, head.upgrade)


def _parse_version(version: bytes, malformed: int, unsupported: int) -> bytes:
    """``HTTP/1.0`` or ``HTTP/1.1`` → b"1.0" / b"1.1"; any other well-formed version is unsupported."""
    if len(version) != 8 or version[:5] != b"HTTP/" or version[6] != 0x2E:
        raise HttpParseError(malformed, "bad_version")
    major, minor = version[5], version[7]
    if not (0x30 <= major <= 0x39 and 0x30 <= minor <= 0x39):
        raise HttpParseError(malformed, "bad_version")
    if major != 0x31 or minor > 0x31:
        raise HttpParseError(unsupported, "unsupported_version")
    return version[5:]


# -- serializing --------------------------------------------------------------------------------


def _check_headers(headers: Iterable[tuple[bytes, bytes]], out: list[bytes]) -> None:
    for name, value in headers:
        if not _is_token(name):
            raise ValueError(f"invalid header name {name!r}")
        if value.translate(None, _VALUE_BYTES):
            raise ValueError(f"invalid header value for {name!r}: CR, LF, NUL and controls are refused")
        out += (name, b": ", value, b"\r\n")


def serialize_headers(headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """Header lines for ``extra`` arguments. ``ValueError`` on anything that could inject."""
    out: list[bytes] = []
    _check_headers(headers, out)
    return b"".join(out)


def serialize_request_head(
    method: bytes, target: bytes, headers: Sequence[tuple[bytes, bytes]] | Iterable[tuple[bytes, bytes]]
) -> bytes:
    """``METHOD target HTTP/1.1`` + headers + blank line. ``ValueError`` on anything that could inject."""
    if not _is_token(method):
        raise ValueError(f"invalid method {method!r}")
    if not target or target.translate(None, _TARGET_BYTES):
        raise ValueError(f"invalid request target {target!r}")
    out = [method, b" ", target, b" HTTP/1.1\r\n"]
    _check_headers(headers, out)
    out.append(b"\r\n")
    return b"".join(out)


def serialize_response_head(
    status: int, reason: bytes, headers: Sequence[tuple[bytes, bytes]] | Iterable[tuple[bytes, bytes]]
) -> bytes:
    """``HTTP/1.1 status reason`` + headers + blank line. ``ValueError`` on anything that could inject."""
    if not 100 <= status <= 599:
        raise ValueError(f"invalid status {status!r}")
    if reason.translate(None, _VALUE_BYTES):
        raise ValueError(f"invalid reason phrase {reason!r}")
    out = [b"HTTP/1.1 %d " % status, reason, b"\r\n"]
    _check_headers(headers, out)
    out.append(b"\r\n")
    return b"".join(out)


def request_id() -> bytes:
    """A random UUID (version 4) as text, as Envoy generates for x-request-id (unique, not secret)."""
    n = random.getrandbits(128)
    n = (n & ~(0xF000 << 64)) | (0x4000 << 64)  # version 4
    n = (n & ~(0xC000 << 48)) | (0x8000 << 48)  # RFC 4122 variant
    h = b"%032x" % n
    return h[:8] + b"-" + h[8:12] + b"-" + h[12:16] + b"-" + h[16:20] + b"-" + h[20:]
