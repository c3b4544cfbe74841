"""One request and its response through the sidecar: filters, then the router.

The router picks the route's cluster (or a weighted split), a host by the cluster's load balancer, and a
pooled connection; sends the head and body; and relays the response. Around that: circuit breakers
(max requests and retries per cluster; connections and pending requests in the pool), timeouts (the
route's, per try, connect), retries with jittered backoff (the body is kept only while a retry is still
possible), outlier reports, and Envoy's response flags for everything that goes wrong.
"""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING, Any

from fastpath import filters, hashing, headers, mirror, tap, tracing
from fastpath import upstream as pool
from fastpath.clusters import Cluster, Host
from fastpath.routing import Route, RouteAction

if TYPE_CHECKING:
    from fastpath.http_conn import DownstreamConnection
    from fastpath.upstream import UpstreamConnection

RETRY_BUFFER_LIMIT = 1024 * 1024  # Envoy's per-request buffer limit: beyond it, no retries

_UPSTREAM_RESET = b"upstream connect error or disconnect/reset before headers. reset reason: "


class Exchange:
    """A request/response pair. Created by the connection when a request head arrives."""

    __slots__ = (
        "action",
        "activity",
        "attempt",
        "body",
        "body_size",
        "bytes_received",
        "bytes_sent",
        "chain",
        "cluster",
        "conn",
        "connecting",
        "deadline",
        "details",
        "done",
        "filter_index",
        "filter_state",
        "flags",
        "grpc_status",
        "hash_key",
        "head",
        "host",
        "idle_check",
        "idle_seen",
        "in_flight",
        "keep_alive",
        "pending_body",
        "request_complete",
        "request_id",
        "response_complete",
        "response_extra",
        "response_head",
        "response_started",
        "retries_left",
        "retry_timer",
        "route",
        "start",
        "status",
        "taps",
        "trace",
        "try_deadline",
        "tunnel",
        "tunnel_eofs",
        "upstream",
        "upstream_head",
        "upstream_start",
        "upstream_time",
        "waiting_on",
    )

    def __init__(self, conn: DownstreamConnection, head: Any) -> None:
        self.conn = conn
        self.head = head
        self.start = time.monotonic()
        self.route: Route | None = None
        self.action: RouteAction | None = None
        self.cluster: Cluster | None = None
        self.host: Host | None = None
        self.upstream: UpstreamConnection | None = None
        self.connecting: Any = None
        self.waiting_on: Host | None = None
        self.in_flight = False  # this attempt counts against host/cluster active requests
        self.upstream_head = b""
        self.request_id: bytes | None = head.request_id
        self.attempt = 0
        self.retries_left = 0
        self.retry_timer: Any = None
        self.body: list[bytes] | None = None  # kept for retries
        self.body_size = 0
        self.pending_body: list[bytes] | None = None  # arrived before the upstream connection
        self.request_complete = False
        self.response_started = False
        self.response_complete = False
        self.response_head: Any = None
        self.tunnel = False
        self.tunnel_eofs = 0  # bits: 1 the client, 2 the upstream has finished sending
        self.done = False
        self.keep_alive = head.keep_alive
        self.status = 0
        self.grpc_status: int | None = None
        self.flags = "-"
        self.details = "via_upstream"
        self.bytes_received = 0
        self.bytes_sent = 0
        self.deadline = 0.0
        self.try_deadline = 0.0
        self.upstream_start = 0.0
        self.upstream_time: int | None = None
        self.filter_index = 0
        self.filter_state: dict[str, Any] | None = None  # made by the filters that need it
        self.chain = conn.filters  # the route may add passive filters it configures (begin)
        self.response_extra = b""  # header lines filters add to the response (CORS, hash cookies)
        self.hash_key: int | None = None  # consistent-hash key of the request, when the route hashes
        self.taps: list[Any] | None = None  # request copies fed the body as it arrives (mirrors)
        self.trace: Any = None  # this request's trace decision and span (fastpath.tracing), when traced
        # Stream idle timeout without a clock read per event: events bump ``activity``; the timer
        # checks it every stream_idle_timeout and fires when it has not moved.
        self.activity = 0
        self.idle_seen = 0
        self.idle_check = 0.0
        idle = conn.stream_idle_timeout
        if idle:
            self.idle_check = self.start + idle
            conn.watch(self.idle_check)

    # -- request side ---------------------------------------------------------------------------

    def begin(self) -> None:
        """Route the request, run the filters, hand it to the router."""
        conn = self.conn
        head = self.head
        connect = False
        if head.upgrade:
            connect = head.method == b"CONNECT"
            # CONNECT names an authority; a path (HTTP/2's CONNECT arrives as "/") cannot be tunnelled.
            allowed = self._connect_allowed() if connect else self._upgrade_allowed()
            if not allowed:
                self.local_reply(403, b"", "DPE" if connect else "-", "upgrade_failed")
                return
        table = conn.route_table()
        vh = table.vhost(head.host or b"") if table is not None else None
        if vh is None:
            route = None
        elif connect:
            route = vh.select_connect(head.method, head.target, head.host or b"", head.headers)
        else:
            route = vh.select(
                head.method, head.target, head.host or b"", head.headers if vh.needs_headers else []
            )
        if route is None:
            self.local_reply(404, b"", "NR", "route_not_found")
            return
        self.route = route
        if route.typed_per_filter_config:
            self.chain = conn.hcm.chain_for(route)
        if self.request_id is None and conn.generate_request_id:
            # Sidecars treat requests as internal (use_remote_address false): an incoming ID is kept.
            self.request_id = headers.request_id()
        if route.direct is not None:
            self.local_reply(route.direct.status, route.direct.body, "-", "direct_response")
            return
        if route.redirect is not None:
            self._redirect(route)
            return
        self.filter_index = 0
        tracer = conn.tracer
        if tracer is not None:  # the span covers the filters and the upstream (fastpath.filters.tracing)
            tracing.start(self, tracer.config)
        self.resume()

    def _connect_allowed(self) -> bool:
        return bool(self.conn.hcm.connect) and not self.head.target.startswith(b"/")

    def _upgrade_allowed(self) -> bool:
        if self.head.get(b"upgrade", b"").lower() != b"websocket":
            return False
        return bool(self.conn.hcm.websocket)

    def resume(self) -> None:
        """Run the filters from where they stopped, then the router."""
        chain = self.chain
        while self.filter_index < len(chain):
            f = chain[self.filter_index]
            self.filter_index += 1
            if f.on_request(self) == filters.STOP:
                return
            if self.done:
                return
        self._route()

    def _route(self) -> None:
        route = self.route
        assert route is not None and route.action is not None
        action = self.action = route.action
        weighted = action.weighted
        if weighted is None:
            name = action.cluster
        else:
            i = weighted.index(random.randrange(weighted.total))
            name = weighted.names[i]
            if weighted.variants is not None:
                # This destination's own header changes ride on its variant of the route.
                route = self.route = weighted.variants[i]
        cluster = self.conn.clusters.get(name)
        if cluster is None:
            self.local_reply(503, b"", "NC", "cluster_not_found")
            return
        self.cluster = cluster
        if cluster.active_requests >= cluster.max_requests:
            cluster.bump("upstream_rq_pending_overflow")
            self.local_reply(503, _UPSTREAM_RESET + b"overflow", "UO", "overflow")
            return
        retry = action.retry
        if retry is not None and retry.num_retries > 0:
            self.retries_left = retry.num_retries
            # Body that arrived while a filter held the request is the start of what a retry replays.
            self.body = self.pending_body or []
            self.body_size = sum(len(c) for c in self.body)
            self.pending_body = None
        if action.hash_policies:
            self.hash_key = hashing.request_hash(self, action.hash_policies)
        self.upstream_head = self._build_upstream_head()
        if action.mirrors:
            mirror.start(self, action.mirrors)
        if action.timeout and self.request_complete:
            self.deadline = time.monotonic() + action.timeout
            self.conn.watch(self.deadline)
        self._attempt(None)

    def _build_upstream_head(self) -> bytes:
        head = self.head
        route = self.route
        action = self.action
        assert route is not None and action is not None
        extra: list[bytes] = []
        if head.request_id is None and self.request_id is not None:
            extra += (b"x-request-id: ", self.request_id, b"\r\n")
        if route.include_attempt_count:
            extra.append(b"x-envoy-attempt-count: %d\r\n" % (self.attempt + 1))
        set_headers: dict[bytes, bytes] = {}
        for name, value, append in route.request_headers_to_add:
            if append:
                extra += (name, b": ", value, b"\r\n")
            else:
                set_headers[name] = value
        trace = self.trace
        if trace is not None:  # the trace context the next hop continues (fastpath.tracing)
            extra.append(trace.extra)
            if trace.replace is not None:
                set_headers.update(trace.replace)
        host = head.host
        if action.host_rewrite is not None:
            host = action.host_rewrite
        target = head.target
        if action.prefix_rewrite is not None or action.regex_rewrite is not None:
            target = self._rewrite_target(route, action, target)
        extra_bytes = b"".join(extra)
        remove = route.request_headers_to_remove
        state = self.filter_state
        if state is not None and "xfcc" in state:
            # x-forwarded-client-cert, from the HCM's forward_client_cert_details (fastpath.filters.xfcc)
            xfcc = state["xfcc"]
            if xfcc:
                set_headers[b"x-forwarded-client-cert"] = xfcc
            else:
                remove = remove | {b"x-forwarded-client-cert"}
        elif head.client_cert_header and self.conn.hcm.sanitize_client_cert:
            remove = remove | {b"x-forwarded-client-cert"}
        if (
            not set_headers
            and not remove
            and target is head.target
            and host is head.host
            and head.host is not None
        ):
            return head.for_upstream(extra_bytes)  # type: ignore[no-any-return]
        if host is None:
            # HTTP/1.0 without Host: name the upstream, as Envoy does.
            host = self.cluster.name.rsplit("|", 1)[-1].encode() if self.cluster else b"localhost"
        return headers.rebuild_request(head, target, host, remove, set_headers, extra_bytes)

    @staticmethod
    def _rewrite_target(route: Route, action: RouteAction, target: bytes) -> bytes:
        q = target.find(b"?")
        path, query = (target, b"") if q < 0 else (target[:q], target[q:])
        if action.regex_rewrite is not None:
            pattern, subst = action.regex_rewrite
            text = path.decode("utf-8", "surrogateescape")
            return pattern.sub(subst, text).encode("utf-8", "surrogateescape") + query
        assert action.prefix_rewrite is not None
        if route.kind == 0:  # prefix: replace the matched prefix
            return action.prefix_rewrite + target[len(route.path) :]
        return action.prefix_rewrite + query  # path, regex, separated prefix: replace the path

    def _attempt(self, previous: Host | None) -> None:
        cluster = self.cluster
        assert cluster is not None
        self.retry_timer = None
        conn = self.conn
        if cluster.original_dst:
            dst = conn.original_dst
            if dst is None:
                self.local_reply(503, b"no healthy upstream", "UH", "no_healthy_upstream")
                return
            host = cluster.original_dst_host(dst[0], dst[1])
        else:
            exclude = (
                previous if self.action and self.action.retry and self.action.retry.previous_hosts else None
            )
            key = self.hash_key
            host = cluster.pick(exclude) if key is None else cluster.pick_hash(key, exclude)
            if host is None:
                self.local_reply(503, b"no healthy upstream", "UH", "no_healthy_upstream")
                return
        self.host = host
        self.in_flight = True
        host.active_requests += 1
        cluster.active_requests += 1
        self.attempt += 1
        pool.acquire(host, self)

    def on_pool_ready(self, upstream: UpstreamConnection) -> None:
        if self.done:
            upstream.release()
            return
        self.upstream = upstream
        head = self.head
        self.upstream_start = time.monotonic()
        upstream.start(self, self.upstream_head, head.method, head.upgrade)
        if self.body:
            upstream.send(b"".join(self.body))
        elif self.pending_body:
            upstream.send(b"".join(self.pending_body))
        self.pending_body = None
        if self.conn.paused:
            self.conn.resume_reading()  # PAUSE_CONNECT: the body may flow now
        if self.request_complete:
            self._arm_try_timeout()

    def _arm_try_timeout(self) -> None:
        retry = self.action.retry if self.action else None
        if retry is not None and retry.per_try_timeout:
            self.try_deadline = time.monotonic() + retry.per_try_timeout
            self.conn.watch(self.try_deadline)

    def request_data(self, data: bytes, start: int, end: int) -> None:
        self.activity += 1
        chunk = data if start == 0 and end == len(data) else data[start:end]
        self.bytes_received += end - start
        if self.taps is not None:
            for tap in self.taps:
                tap.feed(chunk)
        if self.tunnel:
            if self.upstream is not None:
                self.upstream.send(chunk)
            return
        if self.body is not None:
            self.body_size += end - start
            if self.body_size > RETRY_BUFFER_LIMIT:
                if self.upstream is None and not self.done:
                    self.pending_body = [*(self.pending_body or ()), *self.body]
                self.body = None  # too big to replay: no more retries
                self.retries_left = 0
            else:
                self.body.append(chunk)
        if self.upstream is not None:
            self.upstream.send(chunk)
            return
        if self.body is None:
            if self.pending_body is None:
                self.pending_body = []
            self.pending_body.append(chunk)
        # No upstream connection yet: the rest of the body waits in the socket until there is one.
        self.conn.pause_reading()

    def request_end(self) -> None:
        self.request_complete = True
        if self.taps is not None:
            for tap in self.taps:
                tap.end()
        action = self.action
        if action is not None and action.timeout and not self.deadline:
            self.deadline = time.monotonic() + action.timeout
            self.conn.watch(self.deadline)
        if self.upstream is not None:
            self._arm_try_timeout()

    # -- response side --------------------------------------------------------------------------

    def on_response_head(self, upstream: UpstreamConnection, head: Any) -> None:
        status = head.status
        if head.interim:
            if status == 100 and self.head.expect_continue and not self.response_started:
                self.conn.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            return
        cluster = self.cluster
        host = self.host
        assert cluster is not None and host is not None
        if cluster.outlier:
            cluster.report(host, status)
        upstream.keep_alive = head.keep_alive
        retry = self.action.retry if self.action else None
        if (
            retry is not None
            and retry.num_retries
            and not self.response_started
            and (status >= 400 or retry.grpc_statuses)
        ):
            grpc = head.get(b"grpc-status") if retry.grpc_statuses else None
            if retry.retriable_response(status, int(grpc) if grpc and grpc.isdigit() else None):
                if self._retry(upstream_discard=upstream):
                    return
                self.flags = "URX"  # retriable, but no retry left (or the retry breaker said no)
        self.try_deadline = 0.0
        self.status = status
        self.response_head = head
        self.upstream_time = int((time.monotonic() - self.upstream_start) * 1000)
        for f in self.chain:
            f.on_response(self)
        if self.done:
            return
        self.response_started = True
        if head.upgrade:
            self.tunnel = True
        if not head.keep_alive and not head.upgrade and head.content_length is None and not head.chunked:
            self.keep_alive = False  # the body runs until the upstream closes: so must the downstream
        self.conn.write(self._downstream_head(head))
        if self.tunnel:
            self.conn.tunnel_open()

    def _downstream_head(self, head: Any) -> bytes:
        route = self.route
        conn = self.conn
        extra = b"x-envoy-upstream-service-time: %d\r\n" % self.upstream_time
        if conn.request_id_in_response and self.request_id is not None and head.get(b"x-request-id") is None:
            extra += b"x-request-id: " + self.request_id + b"\r\n"
        if self.response_extra:
            extra += self.response_extra
        set_headers: dict[bytes, bytes] = {}
        remove: frozenset[bytes] = frozenset()
        if route is not None:
            for name, value, append in route.response_headers_to_add:
                if append:
                    extra += name + b": " + value + b"\r\n"
                else:
                    set_headers[name] = value
            remove = route.response_headers_to_remove
        if conn.server_name:
            set_headers[b"server"] = conn.server_name
        connection = self._connection_token()
        if set_headers or remove:
            return headers.rebuild_response(head, remove, set_headers, extra, connection)
        return head.for_downstream(extra, connection)  # type: ignore[no-any-return]

    def _connection_token(self) -> bytes | None:
        if self.tunnel:
            return None
        if not self.keep_alive or self.conn.draining:
            self.keep_alive = False
            return b"close"
        if self.head.version == "1.0":
            return b"keep-alive"
        return None

    def on_response_data(self, data: bytes, start: int, end: int) -> None:
        self.activity += 1
        self.bytes_sent += end - start
        self.conn.write(data if start == 0 and end == len(data) else data[start:end])

    def on_tunnel_data(self, data: bytes, start: int, end: int, upstream: bool) -> None:
        self.activity += 1
        chunk = data if start == 0 and end == len(data) else data[start:end]
        if upstream:
            self.bytes_sent += end - start
            self.conn.write(chunk)
        elif self.upstream is not None:
            self.bytes_received += end - start
            self.upstream.send(chunk)

    def on_tunnel_eof(self, upstream: bool) -> None:
        """Half-close across a tunnel (WebSocket, CONNECT); once both sides are done, it is over."""
        self.tunnel_eofs |= 2 if upstream else 1
        if upstream:
            self.conn.write_eof()
        elif self.upstream is not None and self.upstream.transport is not None:
            self.upstream.flush()
            if self.upstream.transport.can_write_eof():
                self.upstream.transport.write_eof()
        if self.tunnel_eofs == 3:
            up = self.upstream
            self.upstream = None
            if up is not None:
                up.exchange = None
                up.close()
            self._end_attempt()
            self.keep_alive = False
            self.finish()

    def on_response_end(self, upstream: UpstreamConnection) -> None:
        if self.tunnel:
            return  # a 101's end: the tunnel lasts until one side closes
        self.response_complete = True
        self._end_attempt()
        if self.request_complete and upstream.keep_alive:
            upstream.release()
        else:
            upstream.exchange = None
            upstream.close()
        self.upstream = None
        self.finish()

    # -- failures -------------------------------------------------------------------------------

    def on_pool_failure(self, flag: str, why: str) -> None:
        self.connecting = None
        self._end_attempt()
        if flag == "UO":
            self.local_reply(503, _UPSTREAM_RESET + b"overflow", "UO", "overflow")
        else:
            self.local_reply(503, b"no healthy upstream", flag, why)

    def on_connect_failure(self, host: Host, reason: str, detail: str) -> None:
        self.connecting = None
        if self.done:
            self._end_attempt()
            return
        cluster = self.cluster
        if cluster is not None and cluster.outlier:
            cluster.report(host, 503, local_origin=True)
        retry = self.action.retry if self.action else None
        if retry is not None and retry.retries_connect_failure and self._retry():
            return
        self._end_attempt()
        flags = "UF,URX" if retry is not None and retry.retries_connect_failure and self.attempt > 1 else "UF"
        self.local_reply(
            503,
            _UPSTREAM_RESET
            + b"remote "
            + reason.encode()
            + b", transport failure reason: "
            + detail.encode(),
            flags,
            "upstream_reset_before_response_started{" + reason.replace(" ", "_") + "}",
        )

    def on_upstream_reset(self, upstream: UpstreamConnection) -> None:
        """The upstream connection closed while this exchange used it."""
        self.upstream = None
        if self.done:
            return
        if self.tunnel:
            self._end_attempt()
            self.conn.close()
            self.finish()
            return
        if not self.response_started:
            cluster, host = self.cluster, self.host
            if cluster is not None and host is not None and cluster.outlier:
                cluster.report(host, 503, local_origin=True)
            retry = self.action.retry if self.action else None
            if retry is not None and retry.retries_reset and self._retry():
                return
            self._end_attempt()
            self.local_reply(
                503,
                _UPSTREAM_RESET + b"connection termination",
                "UC",
                "upstream_reset_before_response_started{connection_termination}",
            )
            return
        # The response was under way: all we can do is cut the downstream too.
        self._end_attempt()
        self.flags = "UC"
        self.keep_alive = False
        self.conn.close()
        self.finish()

    def on_upstream_protocol_error(self, upstream: UpstreamConnection, exc: Exception) -> None:
        self.upstream = None
        upstream.exchange = None
        self._end_attempt()
        if self.response_started:
            self.flags = "UPE"
            self.keep_alive = False
            self.conn.close()
            self.finish()
            return
        self.local_reply(
            502, b"upstream sent an invalid HTTP response", "UPE", f"upstream_protocol_error{{{exc}}}"
        )

    def on_timer(self, now: float) -> float:
        """Called by the connection's timer; acts on expired deadlines, returns the next one (0: none)."""
        if self.done:
            return 0.0
        if self.try_deadline and now >= self.try_deadline:
            self.try_deadline = 0.0
            if not self.response_started:
                self._drop_upstream()
                retry = self.action.retry if self.action else None
                if retry is not None and retry.retriable_response(504, None) and self._retry():
                    return self.deadline
                if not self.done:
                    self.local_reply(504, b"upstream request timeout", "UT", "upstream_per_try_timeout")
                    return 0.0
        if self.deadline and now >= self.deadline:
            self.deadline = 0.0
            self._drop_upstream()
            if self.retry_timer is not None:
                self.retry_timer.cancel()
                self.retry_timer = None
            if self.response_started:
                self.flags = "UT"
                self.keep_alive = False
                self.conn.close()
                self.finish()
            else:
                self.local_reply(504, b"upstream request timeout", "UT", "upstream_response_timeout")
            return 0.0
        if self.idle_check and now >= self.idle_check:
            if self.activity == self.idle_seen:
                self.idle_check = 0.0
                self._drop_upstream()
                if self.response_started:
                    self.flags = "SI"
                    self.keep_alive = False
                    self.conn.close()
                    self.finish()
                elif self.request_complete:
                    self.local_reply(504, b"stream timeout", "SI", "stream_idle_timeout")
                else:
                    self.local_reply(408, b"stream timeout", "SI", "stream_idle_timeout")
                return 0.0
            self.idle_seen = self.activity
            self.idle_check = now + self.conn.stream_idle_timeout
        nxt = [d for d in (self.deadline, self.try_deadline, self.idle_check) if d]
        return min(nxt) if nxt else 0.0

    def _drop_upstream(self) -> None:
        """Abandon the current attempt's connection (it cannot be reused mid-response)."""
        up = self.upstream
        self.upstream = None
        if up is not None:
            up.exchange = None
            up.close()
        if self.connecting is not None:
            self.connecting.cancel()
            self.connecting = None
        if self.waiting_on is not None:
            pool.cancel_wait(self.waiting_on, self)
            self.waiting_on = None
        self._end_attempt()

    def _retry(self, upstream_discard: UpstreamConnection | None = None) -> bool:
        """Schedule another attempt if the policy, the breaker and the body allow it."""
        cluster = self.cluster
        retry = self.action.retry if self.action else None
        if retry is None or not self.retries_left or self.body is None or self.response_started:
            return False
        if cluster is None or cluster.active_retries >= cluster.max_retries:
            if cluster is not None:
                cluster.bump("upstream_rq_retry_overflow")
            return False
        self.retries_left -= 1
        cluster.active_retries += 1
        cluster.bump("upstream_rq_retry")
        previous = self.host
        if upstream_discard is not None:
            self.upstream = None
            upstream_discard.discard_response()
        else:
            self._drop_upstream()
        self._end_attempt()
        n = self.attempt
        # Fully jittered exponential backoff: uniform in [0, (2^n - 1) * base], capped (Envoy's).
        delay = random.uniform(0, min(retry.base_interval * ((1 << n) - 1), retry.max_interval))
        if self.route is not None and self.route.include_attempt_count:
            self.upstream_head = self._build_upstream_head()
        loop = self.conn.loop
        self.retry_timer = loop.call_later(delay, self._retry_now, previous)
        return True

    def _retry_now(self, previous: Host | None) -> None:
        if self.cluster is not None:
            self.cluster.active_retries -= 1
        if not self.done:
            self._attempt(previous)

    def _end_attempt(self) -> None:
        if self.in_flight:
            self.in_flight = False
            host, cluster = self.host, self.cluster
            if host is not None:
                host.active_requests -= 1
            if cluster is not None:
                cluster.active_requests -= 1

    # -- endings --------------------------------------------------------------------------------

    def _redirect(self, route: Route) -> None:
        r = route.redirect
        assert r is not None
        head = self.head
        host = head.host or b""
        scheme = b"https" if r.https else b"http"
        hostname, _, port = host.partition(b":")
        if r.host is not None:
            hostname, _, port = r.host.partition(b":")  # host_redirect replaces the whole authority
        if r.port is not None:
            port = b"%d" % r.port
        elif r.https is not None:
            port = b""  # a scheme change drops the port (Envoy)
        target = head.target
        q = target.find(b"?")
        path, query = (target, b"") if q < 0 else (target[:q], target[q:])
        if r.path is not None:
            path = r.path
        elif r.prefix is not None and route.kind == 0:
            path = r.prefix + path[len(route.path) :]
        if r.strip_query:
            query = b""
        location = scheme + b"://" + hostname + (b":" + port if port else b"") + path + query
        self.local_reply(r.status, b"", "-", "redirect", extra=b"location: " + location + b"\r\n")

    def local_reply(self, status: int, body: bytes, flags: str, details: str, extra: bytes = b"") -> None:
        """Answer the request from the proxy (an error, a direct response, a redirect)."""
        if self.done:
            return
        self._drop_upstream()
        if self.response_started:
            self.flags = flags
            self.keep_alive = False
            self.conn.close()
            self.finish()
            return
        self.status = status
        self.flags = flags
        self.details = details
        if not self.request_complete:
            self.keep_alive = False  # the rest of the request is still coming: do not try to read past it
        close = not self.keep_alive or self.conn.draining
        if close:
            self.keep_alive = False
        if self.request_id is not None and self.conn.request_id_in_response:
            extra += b"x-request-id: " + self.request_id + b"\r\n"
        if self.response_extra:
            extra += self.response_extra
        data = headers.local_reply(
            status, body, close=close, extra=extra, head_only=self.head.method == b"HEAD"
        )
        self.bytes_sent += len(body)
        self.response_started = True
        self.response_complete = True
        self.conn.write(data)
        self.finish()

    def finish(self) -> None:
        """The exchange is over (answered, or cut): account for it and free the connection."""
        if self.done:
            return
        self.done = True
        if self.retry_timer is not None:
            self.retry_timer.cancel()
            self.retry_timer = None
        if self.waiting_on is not None:
            pool.cancel_wait(self.waiting_on, self)
            self.waiting_on = None
        if self.connecting is not None:
            self.connecting.cancel()
            self.connecting = None
        self._end_attempt()
        for f in self.chain:
            f.on_complete(self)
        trace = self.trace
        if trace is not None and trace.sampled:
            tracing.finish(self, trace)
        if tap.SESSIONS:  # someone is tapping (mizzen tap): nothing is recorded otherwise
            tap.offer(self)
        self.conn.exchange_done(self)

    def abort(self, flags: str = "DC") -> None:
        """The downstream went away before the exchange finished."""
        if self.done:
            return
        self.flags = flags
        self.keep_alive = False
        self._drop_upstream()
        self.finish()

    # -- for access logs ------------------------------------------------------------------------

    @property
    def start_wall(self) -> float:
        """Wall-clock start, for logs: derived, so that requests do not pay for a second clock read."""
        return time.time() - (time.monotonic() - self.start)

    @property
    def duration_ms(self) -> int:
        return int((time.monotonic() - self.start) * 1000)

    def request_header(self, name: str) -> str | None:
        head = self.head
        if name == "method":
            return head.method.decode()  # type: ignore[no-any-return]
        if name == "path":
            return head.target.decode("utf-8", "replace")  # type: ignore[no-any-return]
        if name == "authority":
            return head.host.decode("utf-8", "replace") if head.host else None
        if name == "scheme":
            return "http"
        if name == "x-request-id" and self.request_id is not None:
            return self.request_id.decode()
        value = head.get(name.encode())
        return value.decode("utf-8", "replace") if value is not None else None

    def response_header(self, name: str) -> str | None:
        if name == "status":
            return str(self.status)
        if name == "x-envoy-upstream-service-time":
            return str(self.upstream_time) if self.upstream_time is not None else None
        if self.response_head is None:
            return None
        value = self.response_head.get(name.encode())
        return value.decode("utf-8", "replace") if value is not None else None
