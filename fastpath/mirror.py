"""Request mirroring (Envoy's shadowing, Istio's ``mirror``/``mirrors``): fire and forget.

A mirrored request is a copy of the upstream request -- rewrites and header changes applied, ``-shadow``
appended to its Host -- sent to another cluster once the original request is complete; the copy's response
is read and dropped. Nothing of it reaches the client or waits for it: the copy has its own connections
(pooled per host, apart from the main pool and its circuit breakers), and a copy that cannot be made (no
such cluster, no healthy host, a body over the buffer limit, too many copies in flight) is dropped with a
counter bumped on the mirror cluster.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from typing import TYPE_CHECKING, Any

from fastpath import http1
from mizzen import logs

if TYPE_CHECKING:
    from fastpath.clusters import Cluster, Host
    from fastpath.exchange import Exchange

log = logs.get("proxy")

BODY_LIMIT = 1024 * 1024  # a copy's body is buffered until the request ends; beyond this it is dropped
RESPONSE_TIMEOUT = 30.0  # a mirror target that never answers does not hold a connection longer
IDLE_KEEP = 8  # idle copy connections kept per host

_HOST = re.compile(rb"\r\nhost:[ \t]*([^\r\n]*)", re.IGNORECASE)

# Copy connections by host, apart from the main pool: idle ones ready for reuse, and how many are open.
_idle: dict[Host, list[_CopyConnection]] = {}
_open: dict[Cluster, int] = {}


def start(ex: Exchange, policies: tuple[Any, ...]) -> None:
    """Begin a copy of ``ex``'s request for each mirror policy whose fraction comes up."""
    for policy in policies:
        if policy.numerator < policy.denominator and random.randrange(policy.denominator) >= policy.numerator:
            continue
        cluster = ex.conn.clusters.get(policy.cluster)
        if cluster is None or cluster.original_dst:
            continue
        copy = _Copy(cluster, _shadow_head(ex.upstream_head, policy.host_suffix), ex.head.method)
        # Body that came in before routing (a filter held the request) is where the copy starts.
        for chunk in ex.body or ex.pending_body or ():
            copy.feed(chunk)
        if ex.request_complete:
            copy.end()
        else:
            if ex.taps is None:
                ex.taps = []
            ex.taps.append(copy)


def _shadow_head(head: bytes, suffix: bool) -> bytes:
    if not suffix:
        return head
    m = _HOST.search(head)
    if m is None:
        return head
    host = m.group(1)
    name, colon, port = host.rpartition(b":")
    if colon and port.isdigit() and not host.endswith(b"]"):
        shadow = name + b"-shadow:" + port  # Envoy puts the suffix on the host name, before the port
    else:
        shadow = host + b"-shadow"
    return head[: m.start(1)] + shadow + head[m.end(1) :]


class _Copy:
    """One mirrored request: buffers the body, sends when the original request is complete."""

    __slots__ = ("body", "cluster", "dropped", "head", "method", "size")

    def __init__(self, cluster: Cluster, head: bytes, method: bytes) -> None:
        self.cluster = cluster
        self.head = head
        self.method = method
        self.body: list[bytes] = []
        self.size = 0
        self.dropped = False

    def feed(self, chunk: bytes) -> None:
        if self.dropped:
            return
        self.size += len(chunk)
        if self.size > BODY_LIMIT:
            self.dropped = True
            self.body = []
            self.cluster.bump("upstream_rq_shadow_dropped")
            return
        self.body.append(chunk)

    def end(self) -> None:
        if self.dropped:
            return
        cluster = self.cluster
        if cluster.removed:
            return
        host = cluster.pick(None)
        if host is None:
            cluster.bump("upstream_rq_shadow_dropped")
            return
        data = b"".join([self.head, *self.body])
        idle = _idle.get(host)
        while idle:
            conn = idle.pop()
            if conn.usable():
                conn.send(data, self.method)
                return
            conn.close()
        if _open.get(cluster, 0) >= cluster.max_connections:
            cluster.bump("upstream_rq_shadow_dropped")
            return
        _open[cluster] = _open.get(cluster, 0) + 1
        conn = _CopyConnection(host)
        asyncio.get_running_loop().create_task(conn.open(data, self.method))


class _CopyConnection(asyncio.Protocol):
    """A connection carrying mirrored requests, one at a time; responses are parsed only to find their end."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.cluster = host.cluster
        self.transport: asyncio.Transport | None = None
        self.parser = http1.ResponseParser()
        self.busy = False
        self.closed = False
        self.keep_alive = True
        self.timer: asyncio.TimerHandle | None = None
        self.idle_since = 0.0

    async def open(self, data: bytes, method: bytes) -> None:
        cfg = self.cluster.config
        loop = asyncio.get_running_loop()
        local = (cfg.source_address, 0) if cfg.source_address else None
        try:
            await asyncio.wait_for(
                loop.create_connection(lambda: self, self.host.address, self.host.port, local_addr=local),
                cfg.connect_timeout,
            )
        except (OSError, TimeoutError) as exc:
            self.closed = True
            self._forget()
            self.cluster.bump("upstream_rq_shadow_failed")
            log.debug(
                "mirror connect failed", cluster=self.cluster.name, host=self.host.label, error=str(exc)
            )
            return
        self.send(data, method)

    def usable(self) -> bool:
        limit = self.cluster.config.idle_timeout
        fresh = not limit or time.monotonic() - self.idle_since <= limit
        return not self.closed and self.keep_alive and fresh and self.transport is not None

    def send(self, data: bytes, method: bytes) -> None:
        assert self.transport is not None
        self.busy = True
        self.parser.expect(method, False)
        self.transport.write(data)
        self.cluster.bump("upstream_rq_shadow")
        self.timer = asyncio.get_running_loop().call_later(RESPONSE_TIMEOUT, self.close)

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if not self.busy:
            self.close()  # bytes nobody asked for
            return
        parser = self.parser
        try:
            parser.set_data(data)
            while True:
                ev = parser.next()
                if ev == http1.NEED_DATA:
                    return
                if ev == http1.HEAD:
                    head = parser.head
                    assert head is not None
                    self.keep_alive = bool(head.keep_alive)
                    if head.interim:
                        continue
                    if head.status >= 500:
                        self.cluster.bump("upstream_rq_shadow_5xx")
                elif ev == http1.END:
                    self._done()
                    return
        except http1.HttpParseError:
            self.close()

    def eof_received(self) -> bool:
        try:
            if self.busy and self.parser.finish():
                self.keep_alive = False
                self._done()
        except http1.HttpParseError:
            pass
        return False

    def _done(self) -> None:
        self.busy = False
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if not self.keep_alive or self.cluster.removed:
            self.close()
            return
        idle = _idle.setdefault(self.host, [])
        if len(idle) >= IDLE_KEEP:
            self.close()
            return
        self.idle_since = time.monotonic()
        idle.append(self)

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self.closed:
            self.closed = True
            self._forget()

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
        if not self.closed:
            self.closed = True
            self._forget()

    def _forget(self) -> None:
        cluster = self.cluster
        left = _open.get(cluster, 1) - 1
        if left > 0:
            _open[cluster] = left
        else:
            _open.pop(cluster, None)
        idle = _idle.get(self.host)
        if idle is not None:
            if self in idle:
                idle.remove(self)
            if not idle:
                del _idle[self.host]
