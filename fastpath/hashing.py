"""Consistent-hash keys of requests (a route's hash policies) and of hosts (the ring and Maglev pickers).

Hashes are 64-bit and stable across processes and restarts (BLAKE2b, never Python's salted ``hash()``), so
every sidecar maps the same key to the same host of the same endpoint set, as Envoy's xxHash does.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus

from fastpath import routing

if TYPE_CHECKING:
    from fastpath.exchange import Exchange

MASK = (1 << 64) - 1


def hash64(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def request_hash(ex: Exchange, policies: tuple[Any, ...]) -> int | None:
    """The request's hash from the route's policies, combined in order as Envoy does (rotate, xor); a
    terminal policy that produced a hash ends the list. None when no policy applies: any host will do."""
    out: int | None = None
    for policy in policies:
        h = _one(ex, policy)
        if h is None:
            continue
        out = h if out is None else (((out << 1) | (out >> 63)) & MASK) ^ h
        if policy.terminal:
            break
    return out


def _one(ex: Exchange, policy: Any) -> int | None:
    kind = policy.kind
    head = ex.head
    if kind == routing.HASH_HEADER:
        value = _header(head, policy.name)
        return hash64(value) if value is not None else None
    if kind == routing.HASH_SOURCE_IP:
        remote = ex.conn.remote
        if not remote:
            return None
        return hash64(remote.rsplit(":", 1)[0].encode())
    if kind == routing.HASH_QUERY:
        param = query_value(head.target, policy.name)
        return hash64(param.encode()) if param is not None else None
    if kind == routing.HASH_COOKIE:
        found = cookie_value(head, policy.name)
        if found is not None:
            return hash64(found)
        if policy.ttl is None:
            return None
        # No cookie yet: make one, tell the client to keep it, and hash it as if it had been sent.
        made = b"%016x" % hash64(b"%s|%f|%d" % (ex.conn.remote.encode(), ex.start, id(ex)))
        cookie = b"set-cookie: " + policy.name.encode() + b'="' + made + b'"'
        if policy.ttl:
            cookie += b"; Max-Age=%d" % int(policy.ttl)
        if policy.cookie_path:
            cookie += b"; Path=" + policy.cookie_path.encode()
        ex.response_extra += cookie + b"; HttpOnly\r\n"
        return hash64(made)
    return None


def _header(head: Any, name: str) -> bytes | None:
    if name == ":authority" or name == "host":
        return head.host  # type: ignore[no-any-return]
    if name == ":path":
        return head.target  # type: ignore[no-any-return]
    if name == ":method":
        return head.method  # type: ignore[no-any-return]
    return head.get(name.encode())  # type: ignore[no-any-return]


def query_value(target: bytes, name: str) -> str | None:
    q = target.find(b"?")
    if q < 0:
        return None
    for part in target[q + 1 :].decode("utf-8", "surrogateescape").split("&"):
        key, sep, value = part.partition("=")
        if unquote_plus(key) == name:
            return unquote_plus(value) if sep else ""
    return None


def cookie_value(head: Any, name: str) -> bytes | None:
    want = name.encode()
    for key, value in head.headers:
        if key != b"cookie":
            continue
        for part in value.split(b";"):
            k, sep, v = part.strip().partition(b"=")
            if sep and k == want:
                v = v.strip()
                if len(v) >= 2 and v[:1] == b'"' and v[-1:] == b'"':
                    v = v[1:-1]
                return v  # type: ignore[no-any-return]
    return None
