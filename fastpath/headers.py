"""Header work off the fast path: heads rebuilt when a route rewrites, removes or overwrites something,
local replies, and request IDs.

The fast path forwards a head as received plus appended lines (``for_upstream``/``for_downstream`` in
the codec); only requests whose route changes the head come here.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from fastpath.http1 import request_id  # noqa: F401 - the codec makes them (C when compiled)
from fastpath.http1_py import HOP_BY_HOP

_REASONS = {
    200: b"OK",
    201: b"Created",
    204: b"No Content",
    301: b"Moved Permanently",
    302: b"Found",
    303: b"See Other",
    304: b"Not Modified",
    307: b"Temporary Redirect",
    308: b"Permanent Redirect",
    400: b"Bad Request",
    401: b"Unauthorized",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    413: b"Payload Too Large",
    414: b"URI Too Long",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    501: b"Not Implemented",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
    505: b"HTTP Version Not Supported",
}


def reason(status: int) -> bytes:
    return _REASONS.get(status, b"Unknown")


def http_date(now: float | None = None) -> bytes:
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now)).encode()


def local_reply(
    status: int,
    body: bytes = b"",
    *,
    close: bool = False,
    extra: bytes = b"",
    content_type: bytes = b"text/plain",
    head_only: bool = False,
) -> bytes:
    """A response the proxy makes itself (errors, direct responses, redirects)."""
    out = [b"HTTP/1.1 %d " % status, reason(status), b"\r\n"]
    if body or (status not in (204, 304) and status >= 200):
        out += (b"content-length: %d\r\n" % len(body),)
        if body:
            out += (b"content-type: ", content_type, b"\r\n")
    out += (b"date: ", http_date(), b"\r\nserver: envoy\r\n", extra)
    if close:
        out.append(b"connection: close\r\n")
    out.append(b"\r\n")
    if body and not head_only:
        out.append(body)
    return b"".join(out)


def _dropped(headers: Iterable[tuple[bytes, bytes]], keep_upgrade: bool) -> set[bytes]:
    drop = set(HOP_BY_HOP)
    for name, value in headers:
        if name == b"connection":
            drop.update(t.strip().lower() for t in value.split(b","))
    if keep_upgrade:
        drop.discard(b"upgrade")
    return drop


def rebuild_request(
    head: object,
    target: bytes,
    host: bytes | None,
    remove: frozenset[bytes],
    set_headers: dict[bytes, bytes],
    extra: bytes,
) -> bytes:
    """A request head for upstream with the route's changes: a new target or Host, headers removed or
    overwritten, ``extra`` lines appended; hop-by-hop headers dropped as always."""
    method: bytes = head.method  # type: ignore[attr-defined]
    headers: list[tuple[bytes, bytes]] = head.headers  # type: ignore[attr-defined]
    upgrade = bool(head.upgrade) and method != b"CONNECT"  # type: ignore[attr-defined]
    drop = _dropped(headers, upgrade) | remove | set(set_headers)
    out = [method, b" ", target, b" HTTP/1.1\r\n"]
    if host is not None:
        out += (b"host: ", host, b"\r\n")
        drop.add(b"host")
    for name, value in headers:
        if name in drop and not (name == b"te" and value.lower() == b"trailers"):
            continue
        out += (name, b": ", value, b"\r\n")
    for name, value in set_headers.items():
        out += (name, b": ", value, b"\r\n")
    if upgrade:
        out.append(b"connection: upgrade\r\n")
    out += (extra, b"\r\n")
    return b"".join(out)


def rebuild_response(
    head: object,
    remove: frozenset[bytes],
    set_headers: dict[bytes, bytes],
    extra: bytes,
    connection: bytes | None,
) -> bytes:
    status: int = head.status  # type: ignore[attr-defined]
    headers: list[tuple[bytes, bytes]] = head.headers  # type: ignore[attr-defined]
    drop = _dropped(headers, status == 101) | remove | set(set_headers)
    out = [b"HTTP/1.1 %d " % status, head.reason, b"\r\n"]  # type: ignore[attr-defined]
    for name, value in headers:
        if name in drop:
            continue
        out += (name, b": ", value, b"\r\n")
    for name, value in set_headers.items():
        out += (name, b": ", value, b"\r\n")
    if status == 101:
        out.append(b"connection: upgrade\r\n")
    elif connection is not None:
        out += (b"connection: ", connection, b"\r\n")
    out += (extra, b"\r\n")
    return b"".join(out)


def lines(pairs: Iterable[tuple[bytes, bytes]]) -> bytes:
    return b"".join(name + b": " + value + b"\r\n" for name, value in pairs)
