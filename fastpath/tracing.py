"""Distributed tracing in the sidecar: trace context (W3C and B3), head sampling, and spans.

Per request, when tracing is configured, the proxy looks for trace context in the request head (one
search of the head's bytes, without splitting it into headers), honours the sampling decision it carries,
or rolls the configured percentage when there is none. A request that is not sampled costs that search
and, at the first hop, a ``traceparent`` with the "not sampled" flag so that the next hops keep the
decision. A sampled request gets a span (client on outbound, server on inbound) whose id becomes the
parent id the next hop sees; the span is finished when the exchange completes and handed to the exporter
(``fastpath.otlp``), which ships batches off the request path.
"""

from __future__ import annotations

import itertools
import os
import random
import re
import time
from dataclasses import dataclass, field
from typing import Any

from fastpath.stats import UNKNOWN, Identity

# OTLP's span kinds.
KIND_SERVER = 2
KIND_CLIENT = 3

_TRACEPARENT = b"\ntraceparent:"
_B3_SINGLE = b"\nb3:"
_B3_MULTI = b"\nx-b3-"


@dataclass(slots=True)
class LocalNode:
    """Who this proxy is, for span attributes and the exporter's resource (set once at start-up)."""

    node_id: str = ""
    identity: Identity = field(default_factory=Identity)

    @property
    def service_name(self) -> str:
        """Istio's service name for spans: ``<canonical service>.<namespace>``."""
        me = self.identity
        if me.canonical_service == UNKNOWN:
            return "mizzen-proxy"
        return f"{me.canonical_service}.{me.namespace}"


NODE = LocalNode()


def set_local_node(node_id: str, identity: Identity) -> None:
    NODE.node_id = node_id
    NODE.identity = identity


class Incoming:
    """Trace context found on a request. ``sampled`` is None when the caller left the decision to us."""

    __slots__ = ("b3_multi", "b3_single", "parent_id", "sampled", "trace_id", "w3c")

    def __init__(self, trace_id: int, parent_id: int, sampled: bool | None) -> None:
        self.trace_id = trace_id
        self.parent_id = parent_id
        self.sampled = sampled
        self.w3c = False
        self.b3_single = False
        self.b3_multi = False


def _value(low: bytes, at: int, skip: int) -> bytes:
    end = low.find(b"\r", at + skip)
    return low[at + skip : end].strip(b" \t")


def _hex(text: bytes, lengths: tuple[int, ...]) -> int:
    if len(text) not in lengths:
        raise ValueError
    value = int(text, 16)
    if not value:
        raise ValueError
    return value


def _b3_sampled(flag: bytes) -> bool | None:
    if flag in (b"1", b"true", b"d"):
        return True
    if flag in (b"0", b"false"):
        return False
    return None


def parse_traceparent(value: bytes) -> Incoming | None:
    """W3C ``version-traceid-parentid-flags``; None when malformed (then a new trace starts)."""
    parts = value.split(b"-")
    if len(parts) < 4 or len(parts[0]) != 2 or parts[0] == b"ff" or len(parts[3]) != 2:
        return None
    if parts[0] == b"00" and len(parts) != 4:
        return None
    try:
        ctx = Incoming(_hex(parts[1], (32,)), _hex(parts[2], (16,)), bool(int(parts[3], 16) & 1))
    except ValueError:
        return None
    ctx.w3c = True
    return ctx


def parse_b3_single(value: bytes) -> Incoming | None:
    """``b3: {traceid}-{spanid}[-{sampled}[-{parentspanid}]]``, or ``b3: {sampled}`` alone."""
    parts = value.split(b"-")
    if len(parts) == 1:
        sampled = _b3_sampled(parts[0])
        if sampled is not False:
            return None  # a lone "1"/"d" asks for a trace we have to start: same as no context
        ctx = Incoming(0, 0, False)
    else:
        try:
            ctx = Incoming(
                _hex(parts[0], (16, 32)),
                _hex(parts[1], (16,)),
                _b3_sampled(parts[2]) if len(parts) > 2 else None,
            )
        except ValueError:
            return None
    ctx.b3_single = True
    return ctx


def extract(raw: bytes) -> Incoming | None:
    """The trace context of a request head (its raw bytes): ``traceparent`` first, then B3 single, then
    B3 multi. Header names are matched case-insensitively; the head is searched, not split."""
    low = raw.lower()
    ctx: Incoming | None = None
    at = low.find(_TRACEPARENT)
    if at >= 0:
        ctx = parse_traceparent(_value(low, at, len(_TRACEPARENT)))
    if ctx is None:
        at = low.find(_B3_SINGLE)
        if at >= 0:
            ctx = parse_b3_single(_value(low, at, len(_B3_SINGLE)))
    multi = low.find(_B3_MULTI) >= 0
    if ctx is None and multi:
        ctx = _b3_multi(low)
    if ctx is not None and multi and not ctx.b3_multi:
        ctx.b3_multi = _b3_multi(low) is not None  # both styles came in: both are kept up to date
    return ctx


def _b3_multi(low: bytes) -> Incoming | None:
    def header(name: bytes) -> bytes | None:
        at = low.find(b"\n" + name + b":")
        return None if at < 0 else _value(low, at, len(name) + 2)

    trace, span = header(b"x-b3-traceid"), header(b"x-b3-spanid")
    flags, sampled_text = header(b"x-b3-flags"), header(b"x-b3-sampled")
    sampled = True if flags == b"1" else (_b3_sampled(sampled_text) if sampled_text is not None else None)
    if trace is None or span is None:
        if sampled is False:
            ctx = Incoming(0, 0, False)  # "do not sample" without ids: the decision still holds
            ctx.b3_multi = True
            return ctx
        return None
    try:
        ctx = Incoming(_hex(trace, (16, 32)), _hex(span, (16,)), sampled)
    except ValueError:
        return None
    ctx.b3_multi = True
    return ctx


class CustomTag:
    """Envoy's custom tag: a literal, a request header, or an environment variable (read at compile)."""

    __slots__ = ("default", "header", "name", "value")

    def __init__(self, name: str, value: str | None = None, header: bytes | None = None, default: str = ""):
        self.name = name
        self.value = value
        self.header = header
        self.default = default


class TraceConfig:
    """One HttpConnectionManager's tracing: sampling, tags, and where finished spans go."""

    def __init__(
        self,
        *,
        random_percent: float = 100.0,
        overall_percent: float = 100.0,
        custom_tags: tuple[CustomTag, ...] = (),
        max_path_tag_length: int = 256,
        exporter: Any = None,
        service_name: str = "",
    ) -> None:
        self.random_percent = random_percent
        self.overall_percent = overall_percent
        # One roll decides: sampled when it falls under both percentages (Envoy applies both).
        self.percent = random_percent * overall_percent / 100.0
        self.custom_tags = custom_tags
        self.max_path_tag_length = max_path_tag_length
        self.exporter = exporter  # None: context is propagated and decided, but no span is reported
        self.service_name = service_name


class Span:
    """A sampled request's span, and the trace context it hands the next hop."""

    __slots__ = (
        "attributes",
        "config",
        "end_ns",
        "extra",
        "kind",
        "name",
        "parent_id",
        "replace",
        "sampled",
        "span_id",
        "start_ns",
        "status_error",
        "trace_id",
        "tracestate",
    )

    def __init__(self, trace_id: int, span_id: int, parent_id: int, kind: int, config: TraceConfig) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.parent_id = parent_id
        self.kind = kind
        self.config = config
        self.sampled = True
        self.extra = b""  # header lines appended to the upstream request
        self.replace: dict[bytes, bytes] | None = None  # headers overwritten in the upstream request
        self.name = ""
        self.start_ns = 0
        self.end_ns = 0
        self.attributes: dict[str, Any] = {}
        self.status_error = False
        self.tracestate = ""

    @property
    def trace_id_hex(self) -> str:
        return f"{self.trace_id:032x}"


class Unsampled:
    """A request not sampled at its first hop: only the context that carries the decision onwards."""

    __slots__ = ("extra",)
    replace = None
    sampled = False

    def __init__(self, extra: bytes) -> None:
        self.extra = extra  # b"traceparent: 00-<trace id>-<parent id>-00\r\n"

    @property
    def trace_id_hex(self) -> str:
        return self.extra[16:48].decode()


# Any trace header, case-insensitively, without IGNORECASE (which would make the search several times
# slower): a literal newline first, so only the head's line starts are tried.
_ANY_CONTEXT = re.compile(rb"\n(?:[Tt][Rr][Aa][Cc][Ee][Pp][Aa][Rr][Ee][Nn][Tt]|[Bb]3:|[Xx]-[Bb]3-)")
# Envoy's x-envoy-force-trace: the request is traced whatever the sampling percentage says (a caller's
# explicit decision still stands), and its x-request-id comes back in the response.
_FORCE_TRACE = re.compile(rb"\nx-envoy-force-trace:", re.IGNORECASE)


def _not_sampled_traceparent(raw: bytes, at: int) -> bool:
    """Whether the traceparent found at ``at`` is a well-formed version-00 one saying "not sampled"."""
    end = raw.find(b"\r", at)
    value = raw[at:end].lstrip(b" \t:").rstrip(b" \t")
    return (
        len(value) == 55
        and value[:3] == b"00-"
        and value[35:36] == b"-"
        and value[52:53] == b"-"
        and value[54:55] in b"02468aAcCeE"
    )


# Ids for the not-sampled context a first hop sends on: unique (a random per-process prefix and a
# counter) rather than random, since nothing is recorded under them; cheaper than drawing 24 random bytes.
_ID_PREFIX = b"%016x" % (random.getrandbits(64) | 1)
_ID_SALT = random.getrandbits(64) | 1
_unsampled_ids = itertools.count(random.getrandbits(48))
_UNSAMPLED = b"traceparent: 00-" + _ID_PREFIX + b"%016x-%016x-00\r\n"


def start(ex: Any, config: TraceConfig, rand: Any = random.random) -> Span | Unsampled | None:
    """The tracing decision for one request, made when its head arrives; sets ``ex.trace``.

    The common cases are kept short, since every request of a traced HCM comes here: no trace context
    (one search of the head) and not sampled by our roll, or a caller's "not sampled" ``traceparent``
    (the same search), which passes on untouched."""
    head = ex.head
    # The parser noted whether any trace header came (one flag, no search of the head without one).
    found = _ANY_CONTEXT.search(head.raw) if head.trace_context else None
    raw = head.raw
    forced = head.trace_context and _FORCE_TRACE.search(raw) is not None
    if forced and ex.request_id is not None and not ex.conn.request_id_in_response:
        ex.response_extra += b"x-request-id: " + ex.request_id + b"\r\n"
    if found is None:
        ctx = None
    elif found.end() - found.start() == 12 and _not_sampled_traceparent(raw, found.end()):
        return None  # the caller's "not sampled": its headers carry that decision on unchanged
    else:
        ctx = extract(raw)
    if ctx is None or ctx.sampled is None:
        if not forced and config.percent < 100.0 and rand() * 100.0 >= config.percent:
            if ctx is not None:
                return None  # B3 ids without a decision, not sampled here: passed on as they came
            n = next(_unsampled_ids)
            state: Span | Unsampled = Unsampled(_UNSAMPLED % (n, n ^ _ID_SALT))
            ex.trace = state
            return state
    elif not ctx.sampled:
        return None  # the caller decided: its headers carry that decision on unchanged
    kind = KIND_CLIENT if ex.conn.reporter == "source" else KIND_SERVER
    span_id = random.getrandbits(64) or 1
    if ctx is None or not ctx.trace_id:
        span = Span(random.getrandbits(128) or 1, span_id, 0, kind, config)
        span.extra = b"traceparent: 00-%032x-%016x-01\r\n" % (span.trace_id, span_id)
    else:
        span = Span(ctx.trace_id, span_id, ctx.parent_id, kind, config)
        span.replace = _continued(ctx, span)
        state_value = ex.head.get(b"tracestate") if ctx.w3c else None
        if state_value is not None:
            span.tracestate = state_value.decode("latin-1")
    ex.trace = span
    return span


def _continued(ctx: Incoming, span: Span) -> dict[bytes, bytes]:
    """The caller's trace headers rewritten so the next hop's parent is this span (in each style used)."""
    out: dict[bytes, bytes] = {}
    tid = b"%032x" % span.trace_id if ctx.w3c or span.trace_id >> 64 else b"%016x" % span.trace_id
    sid = b"%016x" % span.span_id
    # W3C always: every tracer that reads B3 in the mesh also reads traceparent, not the reverse.
    out[b"traceparent"] = b"00-%032x-%s-01" % (span.trace_id, sid)
    if ctx.b3_single:
        out[b"b3"] = tid + b"-" + sid + b"-1-" + b"%016x" % ctx.parent_id
    if ctx.b3_multi:
        out[b"x-b3-traceid"] = tid
        out[b"x-b3-spanid"] = sid
        out[b"x-b3-parentspanid"] = b"%016x" % ctx.parent_id
        out[b"x-b3-sampled"] = b"1"
    return out


def finish(ex: Any, span: Span) -> None:
    """Close a sampled request's span with what the exchange knows now, and hand it to the exporter."""
    config = span.config
    exporter = config.exporter
    if exporter is None:
        return
    end = time.time_ns()
    span.end_ns = end
    span.start_ns = end - int((time.monotonic() - ex.start) * 1e9)
    head = ex.head
    conn = ex.conn
    cluster = ex.cluster.name if ex.cluster is not None else ""
    host = (head.host or b"").decode("latin-1")
    path = head.target.decode("latin-1")
    if span.kind == KIND_CLIENT:
        parts = cluster.split("|")
        span.name = f"{parts[3]}:{parts[1]}/*" if len(parts) == 4 else f"{host}{path.split('?', 1)[0]}"
    else:
        port = conn.local.rsplit(":", 1)[-1] if conn.local else ""
        me = NODE.identity
        span.name = (
            f"{me.canonical_service}.{me.namespace}.svc.cluster.local:{port}/*"
            if me.canonical_service != UNKNOWN
            else f"{host}{path.split('?', 1)[0]}"
        )
    me = NODE.identity
    status = ex.status
    attrs = span.attributes
    # This proxy's own attributes (node_id, istio.*) are the same on every span: the exporter adds them
    # (local_attributes), encoded once.
    attrs["guid:x-request-id"] = ex.request_id.decode("latin-1") if ex.request_id is not None else ""
    attrs["http.url"] = f"http://{host}{path}"[: config.max_path_tag_length]
    attrs["http.method"] = head.method.decode("latin-1")
    attrs["http.protocol"] = "HTTP/" + head.version
    attrs["http.status_code"] = str(status)
    attrs["response_flags"] = ex.flags
    attrs["request_size"] = str(ex.bytes_received)
    attrs["response_size"] = str(ex.bytes_sent)
    attrs["upstream_cluster"] = cluster or "-"
    attrs["upstream_cluster.name"] = cluster or "-"
    attrs["downstream_cluster"] = "-"
    agent = head.get(b"user-agent")
    attrs["user_agent"] = agent.decode("latin-1") if agent is not None else "-"
    if ex.host is not None:
        attrs["upstream_address"] = ex.host.label
    if span.kind == KIND_CLIENT:
        attrs["peer.address"] = ex.host.label if ex.host is not None else "-"
    else:
        attrs["peer.address"] = conn.remote.rsplit(":", 1)[0] if conn.remote else "-"
        principal = getattr(conn, "peer_principal", "")
        if principal:
            attrs["peer.principal"] = principal
    if ex.grpc_status is not None:
        attrs["grpc.status_code"] = str(ex.grpc_status)
    for tag in config.custom_tags:
        if tag.header is not None:
            value = head.get(tag.header)
            attrs[tag.name] = value.decode("latin-1") if value is not None else tag.default
        else:
            attrs[tag.name] = tag.value if tag.value is not None else tag.default
    if status >= 500 or status == 0 or (span.kind == KIND_SERVER and ex.flags not in ("-", "")):
        span.status_error = True
        attrs["error"] = "true"
    exporter.add(span, conn)


def local_attributes() -> dict[str, str]:
    """The attributes every span of this proxy carries (Istio's node and workload tags)."""
    me = NODE.identity
    return {
        "node_id": NODE.node_id,
        "zone": "",
        "component": "proxy",
        "istio.canonical_service": me.canonical_service,
        "istio.canonical_revision": me.canonical_revision,
        "istio.namespace": me.namespace,
        "istio.cluster_id": me.cluster,
        "istio.mesh_id": "cluster.local",
    }


def environment_tag(name: str, variable: str, default: str) -> CustomTag:
    """A custom tag from this process's environment, read once (Envoy reads it at config time too)."""
    return CustomTag(name, os.environ.get(variable, default), None, default)


def trace_id_of(ex: Any) -> str:
    """The trace id of a request for display (tap): ours when we decided, else the caller's, else ""."""
    trace = getattr(ex, "trace", None)
    if trace is not None:
        return trace.trace_id_hex  # type: ignore[no-any-return]
    ctx = extract(ex.head.raw)
    return f"{ctx.trace_id:032x}" if ctx is not None and ctx.trace_id else ""
