"""Live tap: a line per finished request (and TCP connection), for whoever is watching, filtered in the
sidecar.

Nothing is recorded while no one taps: the request path pays one check (``SESSIONS`` is empty). A session
says what it wants (destination, path prefix, method), how many events a second at most and for how long;
it ends at its deadline, or when its watcher goes away, and leaves nothing behind.

Two ways in: the admin port's ``/tap`` (a chunked stream of JSON lines, on 127.0.0.1 like Envoy's admin),
and the tap channel to the controller (:class:`TapChannel`), which relays ``mizzen tap`` and the
dashboard's tap view from the controller's API.
"""

from __future__ import annotations

import asyncio
import itertools
import queue
import random
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson

from fastpath import tracing
from mizzen import logs

log = logs.get("tap")

MAX_RATE = 1000.0  # events per second a session may ask for
DEFAULT_RATE = 100.0
MAX_DURATION = 3600.0  # seconds
DEFAULT_DURATION = 300.0
QUEUE_LIMIT = 1024  # events waiting for a slow watcher; beyond it they are dropped (and counted)

SESSIONS: list[TapSession] = []  # the one check the request path makes: ``if tap.SESSIONS``

_ids = itertools.count(1)


class TapError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class TapFilter:
    """What a session wants to see; empty fields match everything."""

    to: str = ""  # destination: a service name or host (outbound), or the request's authority
    path: str = ""  # path prefix
    method: str = ""

    def matches(self, ex: Any) -> bool:
        head = ex.head
        if self.method and head.method.decode("latin-1").upper() != self.method:
            return False
        if self.path and not head.target.decode("latin-1").startswith(self.path):
            return False
        if self.to:
            return _host_matches(self.to, _destination_host(ex)) or _host_matches(
                self.to, (head.host or b"").decode("latin-1")
            )
        return True

    def matches_connection(self, destination: str) -> bool:
        """A TCP connection (no method or path): only a destination filter can take it."""
        if self.path or self.method:
            return False
        return not self.to or _host_matches(self.to, destination)


def _host_matches(want: str, host: str) -> bool:
    host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return bool(host) and (host == want or host.startswith(want + "."))


def _destination_host(ex: Any) -> str:
    cluster = ex.cluster.name if ex.cluster is not None else ""
    parts = cluster.split("|")
    return parts[3] if len(parts) == 4 else ""


def parse_params(params: dict[str, str]) -> tuple[TapFilter, float, float]:
    """A session's filter, rate and duration from query parameters (or a controller's request)."""
    try:
        rate = float(params.get("rate") or DEFAULT_RATE)
        duration = float(params.get("duration") or DEFAULT_DURATION)
    except ValueError:
        raise TapError("rate and duration are numbers") from None
    if not 0 < rate <= MAX_RATE:
        raise TapError(f"rate must be in (0, {MAX_RATE:g}] events per second")
    if not 0 < duration <= MAX_DURATION:
        raise TapError(f"duration must be in (0, {MAX_DURATION:g}] seconds")
    path = params.get("path") or ""
    if path and not path.startswith("/"):
        raise TapError("path is a prefix starting with /")
    return TapFilter(params.get("to") or "", path, (params.get("method") or "").upper()), rate, duration


class TapSession:
    """One watcher's view: filter, rate limit (a token bucket), deadline, and the queue of its events."""

    def __init__(self, flt: TapFilter, rate: float, duration: float, name: str = "") -> None:
        self.id = next(_ids)
        self.name = name
        self.filter = flt
        self.rate = rate
        self.tokens = rate
        self.refilled = time.monotonic()
        self.deadline = self.refilled + duration
        self.queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.seen = 0
        self.dropped = 0
        self.timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        SESSIONS.append(self)
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(self.deadline - time.monotonic(), self.end)

    def end(self) -> None:
        """Stop recording now (deadline, watcher gone, proxy draining); the watcher gets an end marker."""
        if self in SESSIONS:
            SESSIONS.remove(self)
            self.queue.put_nowait(None)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def admit(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.rate, self.tokens + (now - self.refilled) * self.rate)
        self.refilled = now
        if self.tokens < 1.0 or self.queue.qsize() >= QUEUE_LIMIT:
            self.dropped += 1
            return False
        self.tokens -= 1.0
        return True

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """The session's events until it ends; ending the iteration early ends the session."""
        try:
            while True:
                event = await self.queue.get()
                if event is None:
                    return
                yield event
        finally:
            self.end()


def offer(ex: Any) -> None:
    """A finished exchange, seen by each session whose filter it matches (called only when tapping)."""
    event: dict[str, Any] | None = None
    for session in list(SESSIONS):
        if not session.filter.matches(ex):
            continue
        session.seen += 1
        if not session.admit():
            continue
        if event is None:
            event = describe(ex)
        session.queue.put_nowait(event)


def describe(ex: Any) -> dict[str, Any]:
    """One request as a tap line: when, who called whom, what, how it ended, and its trace."""
    head = ex.head
    conn = ex.conn
    outbound = conn.reporter == "source"
    me = tracing.NODE.identity
    upstream = ex.host.label if ex.host is not None else ""
    return {
        "time": ex.start_wall,
        "proxy": tracing.NODE.node_id,
        "workload": me.workload,
        "namespace": me.namespace,
        "direction": "outbound" if outbound else "inbound",
        "source": me.workload if outbound else (conn.remote.rsplit(":", 1)[0] if conn.remote else ""),
        "source_principal": "" if outbound else getattr(conn, "peer_principal", ""),
        "destination": (_destination_host(ex) or upstream) if outbound else me.workload,
        "upstream": upstream,
        "authority": (head.host or b"").decode("latin-1"),
        "method": head.method.decode("latin-1"),
        "path": head.target.decode("latin-1"),
        "status": ex.status,
        "latency_ms": round((time.monotonic() - ex.start) * 1000.0, 3),
        "flags": ex.flags,
        "bytes_received": ex.bytes_received,
        "bytes_sent": ex.bytes_sent,
        "trace_id": tracing.trace_id_of(ex),
        "request_id": ex.request_id.decode("latin-1") if ex.request_id is not None else "",
    }


def offer_connection(session: Any) -> None:
    """A finished TCP connection (fastpath.tcp_proxy.TcpSession), for sessions that may see it."""
    info = session.info
    parts = str(info.get("cluster") or "").split("|")
    destination = parts[3] if len(parts) == 4 else ""
    event: dict[str, Any] | None = None
    for watcher in list(SESSIONS):
        if not watcher.filter.matches_connection(destination or str(info.get("upstream") or "")):
            continue
        watcher.seen += 1
        if not watcher.admit():
            continue
        if event is None:
            outbound = info.get("reporter") == "source"
            me = tracing.NODE.identity
            peer = str(info.get("peer") or "")
            event = {
                "time": session.start_wall,
                "proxy": tracing.NODE.node_id,
                "workload": me.workload,
                "namespace": me.namespace,
                "direction": "outbound" if outbound else "inbound",
                "source": me.workload if outbound else peer.rsplit(":", 1)[0],
                "source_principal": "" if outbound else str(info.get("principal") or ""),
                "destination": (destination or str(info.get("upstream") or "")) if outbound else me.workload,
                "upstream": str(info.get("upstream") or ""),
                "authority": "",
                "method": "TCP",  # a connection, not a request: no path, status 0 (as Envoy logs one)
                "path": "",
                "status": 0,
                "latency_ms": round(session.duration * 1000.0, 3),
                "flags": session.response_flags,
                "bytes_received": session.bytes_received,
                "bytes_sent": session.bytes_sent,
                "trace_id": "",
                "request_id": "",
            }
        watcher.queue.put_nowait(event)


def active() -> list[dict[str, Any]]:
    """The sessions running now (for /server_info and tests: a closed watcher leaves none)."""
    now = time.monotonic()
    return [
        {
            "id": s.id,
            "name": s.name,
            "filter": {"to": s.filter.to, "path": s.filter.path, "method": s.filter.method},
            "seen": s.seen,
            "dropped": s.dropped,
            "remaining_s": round(max(0.0, s.deadline - now), 1),
        }
        for s in SESSIONS
    ]


def end_all() -> None:
    for session in list(SESSIONS):
        session.end()


# --- admin: /tap -----------------------------------------------------------------------------------------


async def admin_stream(params: dict[str, str]) -> AsyncIterator[bytes]:
    """``GET /tap?to=&path=&method=&rate=&duration=``: JSON lines until the duration is over."""
    flt, rate, duration = parse_params(params)
    session = TapSession(flt, rate, duration, name="admin")
    session.start()
    yield orjson.dumps({"tap": session.id, "filter": params}) + b"\n"
    async for event in session.events():
        yield orjson.dumps(event) + b"\n"


# --- the channel to the controller ------------------------------------------------------------------------

TAP_METHOD = "/mizzen.tap.v1.Tap/Connect"


class TapChannel:
    """The proxy's end of the controller's tap relay: a gRPC stream (JSON messages) to the controller's xDS
    port, opened at start and kept open. The controller sends ``start``/``stop`` for sessions; the proxy
    sends their events. It runs on its own thread with blocking gRPC; sessions live on the proxy's loop.
    """

    def __init__(self, target: str, node: dict[str, Any], loop: asyncio.AbstractEventLoop) -> None:
        self.target = target
        self.node = node
        self.loop = loop
        self.outbox: queue.Queue[bytes | None] = queue.Queue(maxsize=QUEUE_LIMIT * 4)
        self.sessions: dict[str, TapSession] = {}  # the controller's session id -> ours (loop thread only)
        self.connected = False
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._call: Any = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="tap", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        call = self._call
        if call is not None:
            call.cancel()
        self.outbox.put(None)

    def _run(self) -> None:
        import grpc

        attempt = 0
        while not self._stopping.is_set():
            try:
                with grpc.insecure_channel(
                    self.target, options=[("grpc.keepalive_time_ms", 30000)]
                ) as channel:
                    rpc = channel.stream_stream(
                        TAP_METHOD, request_serializer=_identity, response_deserializer=_identity
                    )
                    self._call = rpc(self._requests())
                    for message in self._call:
                        if not self.connected:
                            self.connected = True
                            attempt = 0
                        self.loop.call_soon_threadsafe(self._command, orjson.loads(message))
            except grpc.RpcError as exc:
                if not self._stopping.is_set():
                    log.debug("tap channel closed", controller=self.target, code=str(exc.code()))
            except Exception as exc:  # never take the proxy down for a tap
                log.warning("tap channel error", controller=self.target, error=repr(exc))
            self.connected = False
            self._call = None
            self.loop.call_soon_threadsafe(self._end_sessions)
            attempt += 1
            self._stopping.wait(random.uniform(0.5, min(30.0, 0.5 * 2 ** min(attempt, 6))))

    def _requests(self) -> Any:
        while not self.outbox.empty():  # what was meant for the last stream is stale now
            self.outbox.get_nowait()
        yield orjson.dumps({"hello": self.node})
        while True:
            item = self.outbox.get()
            if item is None:
                return
            yield item

    def _send(self, message: dict[str, Any]) -> None:
        try:
            self.outbox.put_nowait(orjson.dumps(message))
        except queue.Full:
            pass  # the controller is slower than the taps: events are dropped, never buffered without end

    # -- on the proxy's loop --
    def _command(self, message: dict[str, Any]) -> None:
        if "start" in message:
            spec = message["start"]
            sid = str(spec.get("id"))
            try:
                flt, rate, duration = parse_params({k: str(v) for k, v in (spec.get("params") or {}).items()})
            except TapError as exc:
                self._send({"id": sid, "error": str(exc)})
                return
            session = TapSession(flt, rate, duration, name=f"controller:{sid}")
            session.start()
            self.sessions[sid] = session
            self.loop.create_task(self._forward(sid, session))
        elif "stop" in message:
            stopped = self.sessions.pop(str(message["stop"]), None)
            if stopped is not None:
                stopped.end()

    async def _forward(self, sid: str, session: TapSession) -> None:
        async for event in session.events():
            self._send({"id": sid, "event": event})
        self.sessions.pop(sid, session)
        self._send({"id": sid, "end": True})

    def _end_sessions(self) -> None:
        for session in list(self.sessions.values()):
            session.end()
        self.sessions.clear()


def _identity(data: bytes) -> bytes:
    return data
