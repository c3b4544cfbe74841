"""Fault injection (Envoy's ``envoy.filters.http.fault``, Istio's VirtualService ``fault``).

A delay holds the request for a fixed time before it goes on; an abort answers it with an HTTP status, or
for gRPC requests with a gRPC status (a trailers-only response). Each comes up for a fraction of requests.
The route's config (``typed_per_filter_config``) replaces the filter's own, as in Envoy. With an empty
filter config the filter is passive: only routes that configure a fault run it.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from envoy.extensions.filters.http.fault.v3 import fault_pb2
from google.protobuf import any_pb2

from fastpath import filters, routing
from fastpath.config.errors import Resource, join
from fastpath.config.matchers import compile_header_matcher
from fastpath.config.routes import fraction, seconds

if TYPE_CHECKING:
    from fastpath.exchange import Exchange

TYPE_URL = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"

# The runtime keys only name overrides of the config's values; mizzen-proxy has no runtime layer, so the
# configured values always apply, which is what Envoy does when the keys are not set in its runtime.
_FIELDS = {
    "delay",
    "abort",
    "headers",
    "max_active_faults",
    "delay_percent_runtime",
    "abort_percent_runtime",
    "delay_duration_runtime",
    "abort_http_status_runtime",
    "max_active_faults_runtime",
    "abort_grpc_status_runtime",
    "disable_downstream_cluster_stats",
}

# gRPC status -> HTTP status (gRPC's own mapping, as Envoy applies it to non-gRPC requests).
_GRPC_TO_HTTP = {
    0: 200,
    1: 499,
    2: 500,
    3: 400,
    4: 504,
    5: 404,
    6: 409,
    7: 403,
    8: 429,
    9: 400,
    10: 409,
    11: 400,
    12: 501,
    13: 500,
    14: 503,
    15: 500,
    16: 401,
}


class FaultConfig:
    """One compiled HTTPFault: what to inject, how often, and on which requests."""

    __slots__ = (
        "abort_denominator",
        "abort_grpc",
        "abort_http",
        "abort_numerator",
        "delay",
        "delay_denominator",
        "delay_numerator",
        "headers",
        "max_active",
    )

    def __init__(self) -> None:
        self.delay = 0.0
        self.delay_numerator = 0
        self.delay_denominator = 100
        self.abort_http = 0
        self.abort_grpc: int | None = None
        self.abort_numerator = 0
        self.abort_denominator = 100
        self.headers: tuple[Any, ...] = ()
        self.max_active: int | None = None

    @property
    def empty(self) -> bool:
        return not self.delay and not self.abort_http and self.abort_grpc is None


def compile_fault(res: Resource, path: str, config: any_pb2.Any) -> FaultConfig:
    msg = fault_pb2.HTTPFault()
    if not config.Unpack(msg):
        raise res.error(path, f"expected HTTPFault, got {config.type_url}")
    res.reject_unsupported(msg, path, _FIELDS)
    out = FaultConfig()
    if msg.HasField("delay"):
        d = msg.delay
        dpath = join(path, "delay")
        res.reject_unsupported(d, dpath, {"fixed_delay", "percentage"})
        if not d.HasField("fixed_delay"):
            raise res.error(
                join(dpath, "fixed_delay"), "required (header-controlled delays are not supported)"
            )
        out.delay = seconds(d.fixed_delay)
        if out.delay <= 0:
            raise res.error(join(dpath, "fixed_delay"), "must be greater than 0")
        out.delay_numerator, out.delay_denominator = fraction(res, join(dpath, "percentage"), d.percentage)
    if msg.HasField("abort"):
        a = msg.abort
        apath = join(path, "abort")
        res.reject_unsupported(a, apath, {"http_status", "grpc_status", "percentage"})
        which = a.WhichOneof("error_type")
        if which == "http_status":
            if not 200 <= a.http_status < 600:
                raise res.error(
                    join(apath, "http_status"), f"{a.http_status} is not an HTTP status (200-599)"
                )
            out.abort_http = a.http_status
        elif which == "grpc_status":
            out.abort_grpc = a.grpc_status
        else:
            raise res.error(apath, "http_status or grpc_status is required")
        out.abort_numerator, out.abort_denominator = fraction(res, join(apath, "percentage"), a.percentage)
    out.headers = tuple(
        compile_header_matcher(res, f"{path}.headers[{i}]", h)[1] for i, h in enumerate(msg.headers)
    )
    if msg.HasField("max_active_faults"):
        out.max_active = msg.max_active_faults.value
    return out


def _chance(numerator: int, denominator: int) -> bool:
    return numerator >= denominator or (numerator > 0 and random.randrange(denominator) < numerator)


class FaultFilter(filters.HttpFilter):
    name = "envoy.filters.http.fault"

    def __init__(self, config: FaultConfig) -> None:
        self.config = config
        self.passive = config.empty
        self.active = 0  # faults in progress (max_active_faults)

    def on_request(self, exchange: Exchange) -> int:
        route = exchange.route
        cfg = route.typed_per_filter_config.get(self.name, self.config) if route is not None else self.config
        if cfg.empty:
            return filters.CONTINUE
        if cfg.headers:
            head = exchange.head
            values = routing.header_map(head.method, head.target, head.host or b"", head.headers)
            if not all(test(values) for test in cfg.headers):
                return filters.CONTINUE
        if cfg.max_active is not None and self.active >= cfg.max_active:
            return filters.CONTINUE
        if cfg.delay and _chance(cfg.delay_numerator, cfg.delay_denominator):
            self.active += 1
            exchange.flags = "DI"
            stats = exchange.conn.stats.named
            stats["fault.delays_injected"] += 1
            timer = exchange.conn.loop.call_later(cfg.delay, self._delayed, exchange, cfg)
            state = exchange.filter_state
            if state is None:
                state = exchange.filter_state = {}
            state["fault"] = timer
            return filters.STOP
        return self._abort(exchange, cfg)

    def _delayed(self, exchange: Exchange, cfg: FaultConfig) -> None:
        state = exchange.filter_state
        if state is not None:
            state.pop("fault", None)
        self.active -= 1
        if exchange.done:
            return
        if self._abort(exchange, cfg) == filters.CONTINUE:
            exchange.resume()

    def _abort(self, exchange: Exchange, cfg: FaultConfig) -> int:
        if not (cfg.abort_http or cfg.abort_grpc is not None):
            return filters.CONTINUE
        if not _chance(cfg.abort_numerator, cfg.abort_denominator):
            return filters.CONTINUE
        exchange.conn.stats.named["fault.aborts_injected"] += 1
        flags = "DI,FI" if exchange.flags == "DI" else "FI"
        if cfg.abort_grpc is not None:
            if is_grpc(exchange):
                # A trailers-only gRPC response: HTTP 200 with the status in the head.
                exchange.grpc_status = cfg.abort_grpc
                extra = b"content-type: application/grpc\r\ngrpc-status: %d\r\n" % cfg.abort_grpc
                extra += b"grpc-message: fault filter abort\r\n"
                exchange.local_reply(200, b"", flags, "fault_filter_abort", extra)
                return filters.STOP
            status = _GRPC_TO_HTTP.get(cfg.abort_grpc, 500)
        else:
            status = cfg.abort_http
        exchange.local_reply(status, b"fault filter abort", flags, "fault_filter_abort")
        return filters.STOP

    def on_complete(self, exchange: Exchange) -> None:
        state = exchange.filter_state
        if state is not None:
            timer = state.pop("fault", None)
            if timer is not None:  # the client went away during the delay
                timer.cancel()
                self.active -= 1


def is_grpc(exchange: Exchange) -> bool:
    """A gRPC request: content-type application/grpc (also +proto, +json)."""
    value = exchange.head.get(b"content-type")
    return value is not None and value.lower().startswith(b"application/grpc")


@filters.register(TYPE_URL)
def _factory(res: Resource, path: str, config: any_pb2.Any) -> filters.HttpFilter:
    return FaultFilter(compile_fault(res, path, config))


filters.register_route_config(TYPE_URL)(compile_fault)
