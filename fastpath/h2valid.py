"""What makes an HTTP/2 message well-formed (RFC 9113 8.1-8.3), for ``fastpath.h2codec``.

Received header lists are checked here before the application sees them: field names lower-case and made
of token characters, pseudo-header fields first and only those of the message's kind, no
connection-specific fields, TE only "trailers", values without CR, LF or NUL and without surrounding
whitespace, a numeric content-length. A failure raises ``Malformed``: the codec resets that stream.
Headers sent are made fit for HTTP/2 by ``outbound``.

Compiled in Cython's pure-Python mode (``h2valid.pxd``); this file is also the twin.
"""

from __future__ import annotations


class Malformed(Exception):
    """A malformed message: a stream error of type PROTOCOL_ERROR."""


# RFC 9113 8.2.2: fields that belong to one HTTP/1.1 connection.
CONNECTION_SPECIFIC = frozenset(
    (b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade")
)
# tchar (RFC 9110 5.6.2) less the upper-case letters.
_TOKEN = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz"
_REQUEST_PSEUDO = {b":method": 1, b":scheme": 2, b":authority": 4, b":path": 8}
_GOOD_NAMES: set[bytes] = set()  # names already found valid (headers repeat)
_GOOD_NAMES_MAX = 4096


def _check_name(name: bytes) -> None:
    if name in _GOOD_NAMES:
        return
    if not name or name.translate(None, _TOKEN):
        raise Malformed(f"invalid field name {name!r}")
    if name in CONNECTION_SPECIFIC:
        raise Malformed(f"connection-specific field {name.decode()}")
    if len(_GOOD_NAMES) < _GOOD_NAMES_MAX:
        _GOOD_NAMES.add(name)


def _check_value(name: bytes, value: bytes) -> None:
    if b"\r" in value or b"\n" in value or b"\x00" in value:
        raise Malformed(f"field {name.decode()} has CR, LF or NUL in its value")
    if value and (value[0] == 32 or value[0] == 9 or value[-1] == 32 or value[-1] == 9):
        raise Malformed(f"field {name.decode()} has whitespace around its value")


def _regular(name: bytes, value: bytes, length: int) -> int:
    """Check one regular field; returns the content-length seen so far (-1: none)."""
    _check_name(name)
    _check_value(name, value)
    if name == b"te":
        if value != b"trailers":
            raise Malformed(f"te {value!r} (only 'trailers' is allowed)")
    elif name == b"content-length":
        if not value.isdigit():
            raise Malformed(f"content-length {value!r}")
        n = int(value)
        if length >= 0 and n != length:
            raise Malformed("content-length given twice with different values")
        return n
    return length


def check_request(headers: list[tuple[bytes, bytes]]) -> int:
    """Check a request's header list; returns its content-length, -1 when it has none."""
    seen = 0
    method = b""
    length = -1
    regular = False
    empty_path = False
    for name, value in headers:
        if name[:1] == b":":
            bit = _REQUEST_PSEUDO.get(name, 0)
            if not bit:
                raise Malformed(f"pseudo-header {name.decode(errors='replace')} in a request")
            if regular:
                raise Malformed(f"pseudo-header {name.decode()} after a regular field")
            if seen & bit:
                raise Malformed(f"pseudo-header {name.decode()} given twice")
            seen |= bit
            _check_value(name, value)
            if bit == 1:
                method = value
            elif bit == 8:
                empty_path = not value
            continue
        regular = True
        length = _regular(name, value, length)
    if not seen & 1:
        raise Malformed("no :method")
    if method == b"CONNECT":
        if seen != 5:
            raise Malformed("CONNECT needs :authority and no :scheme or :path")
    elif seen & 10 != 10 or empty_path:
        raise Malformed("no :scheme, or no (or an empty) :path")
    return length


def check_response(headers: list[tuple[bytes, bytes]]) -> int:
    """Check a response's header list; returns its status."""
    status = -1
    regular = False
    length = -1
    for name, value in headers:
        if name[:1] == b":":
            if name != b":status":
                raise Malformed(f"pseudo-header {name.decode(errors='replace')} in a response")
            if regular or status >= 0:
                raise Malformed(":status given twice or after a regular field")
            if len(value) != 3 or not value.isdigit():
                raise Malformed(f":status {value!r}")
            status = int(value)
            continue
        regular = True
        length = _regular(name, value, length)
    if status < 0:
        raise Malformed("no :status")
    if status == 101:
        raise Malformed("101 Switching Protocols (not in HTTP/2)")
    return status


def check_trailers(headers: list[tuple[bytes, bytes]]) -> None:
    for name, value in headers:
        if name[:1] == b":":
            raise Malformed(f"pseudo-header {name.decode(errors='replace')} in trailers")
        _regular(name, value, -1)


def content_length(headers: list[tuple[bytes, bytes]]) -> int:
    """The content-length of a checked header list, -1 when it has none."""
    for name, value in headers:
        if name == b"content-length":
            return int(value)
    return -1


_OUTBOUND_SPECIAL = CONNECTION_SPECIFIC | {b"te"}


def outbound(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """``headers`` fit to send: connection-specific fields dropped, TE kept only as "trailers"."""
    for name, _ in headers:
        if name in _OUTBOUND_SPECIAL:
            break
    else:
        return headers  # the usual case: nothing to change, no copy
    out = []
    for name, value in headers:
        if name == b"te":
            if b"trailers" in value.lower():
                out.append((name, b"trailers"))
        elif name not in CONNECTION_SPECIFIC:
            out.append((name, value))
    return out
