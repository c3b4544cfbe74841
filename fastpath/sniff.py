"""What the first bytes of a connection say: TLS (with its SNI and ALPN) or not, HTTP/1.x, HTTP/2 or neither.

Envoy's tls_inspector and http_inspector listener filters, as pure functions over the bytes seen so
far: each answers "need more", or a verdict. Nothing here consumes the bytes: the connection's chosen
protocol gets them all.
"""

from __future__ import annotations

from typing import NamedTuple

NEED_MORE = 0
DONE = 1

MAX_CLIENT_HELLO = 16 * 1024 + 5  # one TLS record: a ClientHello longer than that is not parsed further
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_HTTP1_METHODS = (
    b"GET ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"HEAD ",
    b"OPTIONS ",
    b"PATCH ",
    b"CONNECT ",
    b"TRACE ",
)


class TlsHello(NamedTuple):
    state: int  # NEED_MORE or DONE
    tls: bool
    sni: str = ""
    alpn: tuple[str, ...] = ()


def inspect_tls(data: bytes) -> TlsHello:
    """A TLS ClientHello (handshake record, type 1) with its server name and ALPN protocols, or not TLS."""
    if not data:
        return TlsHello(NEED_MORE, False)
    if data[0] != 0x16 or (len(data) > 1 and data[1] != 3) or (len(data) > 2 and data[2] > 4):
        return TlsHello(DONE, False)
    if len(data) < 5:
        return TlsHello(NEED_MORE, False)
    record_len = int.from_bytes(data[3:5], "big")
    if record_len == 0 or record_len > 16384 + 2048:
        return TlsHello(DONE, False)
    end = 5 + record_len
    if len(data) < end:
        return TlsHello(NEED_MORE, False) if len(data) < MAX_CLIENT_HELLO else TlsHello(DONE, True)
    body = data[5:end]
    if len(body) < 4 or body[0] != 1:
        return TlsHello(DONE, False)  # a handshake record, but not a ClientHello
    try:
        return _client_hello(body)
    except (IndexError, ValueError):
        return TlsHello(DONE, True)  # looks like TLS, unreadable beyond that (split over records, or odd)


def _client_hello(body: bytes) -> TlsHello:
    length = int.from_bytes(body[1:4], "big")
    hello = body[4 : 4 + length]
    pos = 2 + 32  # client_version, random
    pos += 1 + hello[pos]  # session_id
    pos += 2 + int.from_bytes(hello[pos : pos + 2], "big")  # cipher_suites
    pos += 1 + hello[pos]  # compression_methods
    if pos + 2 > len(hello):
        return TlsHello(DONE, True)
    ext_end = pos + 2 + int.from_bytes(hello[pos : pos + 2], "big")
    pos += 2
    sni = ""
    alpn: list[str] = []
    while pos + 4 <= min(ext_end, len(hello)):
        ext_type = int.from_bytes(hello[pos : pos + 2], "big")
        ext_len = int.from_bytes(hello[pos + 2 : pos + 4], "big")
        ext = hello[pos + 4 : pos + 4 + ext_len]
        if len(ext) != ext_len:
            raise ValueError("extension runs past the hello")
        if ext_type == 0 and len(ext) >= 5:  # server_name: list of (type, name)
            i = 2
            while i + 3 <= len(ext):
                name_type, name_len = ext[i], int.from_bytes(ext[i + 1 : i + 3], "big")
                if name_type == 0:
                    sni = ext[i + 3 : i + 3 + name_len].decode("ascii", "replace").lower()
                    break
                i += 3 + name_len
        elif ext_type == 16 and len(ext) >= 2:  # application_layer_protocol_negotiation
            i = 2
            while i < len(ext):
                n = ext[i]
                alpn.append(ext[i + 1 : i + 1 + n].decode("ascii", "replace"))
                i += 1 + n
        pos += 4 + ext_len
    return TlsHello(DONE, True, sni, tuple(alpn))


def inspect_http(data: bytes) -> tuple[int, str]:
    """(state, protocol): "h2c" for the HTTP/2 prior-knowledge preface, "http/1.1" for an HTTP/1.x
    request line, "" for anything else."""
    if data.startswith(H2_PREFACE):
        return DONE, "h2c"
    if H2_PREFACE.startswith(data[: len(H2_PREFACE)]) and len(data) < len(H2_PREFACE):
        return NEED_MORE, ""
    for method in _HTTP1_METHODS:
        n = min(len(method), len(data))
        if data[:n] == method[:n]:
            if n < len(method):
                return NEED_MORE, ""
            # The request line's version, when it has arrived, must say HTTP/1.
            lf = data.find(b"\n")
            if lf < 0:
                return (NEED_MORE, "") if len(data) < 8192 else (DONE, "")
            line = data[:lf].rstrip(b"\r")
            return DONE, "http/1.1" if line.endswith((b" HTTP/1.1", b" HTTP/1.0")) else ""
    return DONE, ""
