"""Span export over OTLP (protobuf over HTTP, or gRPC), batched on the event loop, off the request path.

Finished spans go into a bounded queue (a span that finds it full is dropped and counted); a timer on the
loop sends what is queued every flush interval, or sooner once a batch is full, one request at a time.
The collector is reached through the cluster the config names (Envoy's ``http_service.http_uri.cluster``),
so it is found by the same endpoints as any other destination; the proxy's own connections are not
captured (UID 1337).

The OTLP messages come from the ``opentelemetry`` protos that ``xds-protos`` ships (an older edition:
``instrumentation_library_spans`` where current OTLP says ``scope_spans``). The two are the same on the
wire (same field numbers and types), so collectors of either edition read what we send.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from fastpath import http1
from fastpath.tracing import NODE, local_attributes
from mizzen import logs

if TYPE_CHECKING:
    from fastpath.tracing import Span

log = logs.get("tracing")

MAX_QUEUE = 2048  # spans waiting for export; beyond it new spans are dropped (and counted)
MAX_BATCH = 512  # spans per export request
FLUSH_INTERVAL = 1.0  # seconds between exports while spans are waiting

STATUS_ERROR = 2  # OTLP's Status.code STATUS_CODE_ERROR


class HttpTarget:
    """Where an exporter sends: the cluster that reaches the collector, and the request to make."""

    def __init__(
        self, uri: str, cluster: str, timeout: float = 5.0, headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        parts = urlsplit(uri)
        if parts.scheme not in ("http", ""):
            raise ValueError(f"{uri!r}: only http:// collectors (TLS to the collector is not supported)")
        self.uri = uri
        self.cluster = cluster
        self.timeout = timeout
        self.authority = parts.netloc or cluster
        self.path = parts.path or "/v1/traces"
        self.headers = headers

    @property
    def key(self) -> tuple[Any, ...]:
        return (self.uri, self.cluster, self.timeout, self.headers)


class GrpcTarget:
    """OTLP over gRPC (Envoy's ``grpc_service.envoy_grpc``): ``TraceService/Export`` to a cluster's host."""

    path = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

    def __init__(
        self,
        cluster: str,
        timeout: float = 5.0,
        headers: tuple[tuple[str, str], ...] = (),
        authority: str = "",
    ) -> None:
        self.cluster = cluster
        self.timeout = timeout
        self.headers = headers
        self.authority = authority
        self.uri = f"grpc://{authority or cluster}"

    @property
    def key(self) -> tuple[Any, ...]:
        return ("grpc", self.cluster, self.timeout, self.headers, self.authority)


class SpanExporter:
    """One collector's queue and sender. Shared by every HCM config that names the same collector, so a
    config update neither loses queued spans nor opens a second sender."""

    def __init__(self, target: HttpTarget | GrpcTarget) -> None:
        self.target = target
        self._channels: dict[tuple[str, int], Any] = {}  # gRPC: one channel per collector address
        self.queue: collections.deque[Span] = collections.deque()
        self.timer: asyncio.TimerHandle | None = None
        self.sending: asyncio.Task[None] | None = None
        self.clusters: Any = None  # the proxy's ClusterManager, seen with the first span
        self.stats: Any = None  # the proxy's Stats: counters under tracing.opentelemetry.*
        self.sent = 0
        self.dropped = 0
        self.failed_batches = 0

    def add(self, span: Span, conn: Any) -> None:
        """Queue a finished span (called on the loop when its exchange completes)."""
        if self.clusters is None:
            self.clusters = conn.clusters
            self.stats = conn.stats
        if len(self.queue) >= MAX_QUEUE:
            self.dropped += 1
            self._count("spans_dropped")
            return
        self.queue.append(span)
        if len(self.queue) >= MAX_BATCH and self.sending is None:
            self._cancel_timer()
            self._start_send()
        elif self.timer is None and self.sending is None:
            self.timer = asyncio.get_running_loop().call_later(FLUSH_INTERVAL, self._on_timer)

    def _count(self, name: str, n: int = 1) -> None:
        if self.stats is not None:
            self.stats.named["tracing.opentelemetry." + name] += n

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _on_timer(self) -> None:
        self.timer = None
        if self.queue and self.sending is None:
            self._count("timer_flushed")
            self._start_send()

    def _start_send(self) -> None:
        batch = [self.queue.popleft() for _ in range(min(MAX_BATCH, len(self.queue)))]
        self.sending = asyncio.get_running_loop().create_task(self._send(batch))

    async def _send(self, batch: list[Span]) -> None:
        try:
            body = encode(batch, NODE.service_name).SerializeToString()
            await self._post(body)
            self.sent += len(batch)
            self._count("spans_sent", len(batch))
            self._count("http_reports_success")
        except (TimeoutError, OSError, ExportError, http1.HttpParseError) as exc:
            self.failed_batches += 1
            self._count("http_reports_failed")
            self._count("spans_dropped", len(batch))
            self.dropped += len(batch)
            log.warning("span export failed", collector=self.target.uri, spans=len(batch), error=str(exc))
        finally:
            self.sending = None
            if len(self.queue) >= MAX_BATCH:
                self._start_send()
            elif self.queue and self.timer is None:
                self.timer = asyncio.get_running_loop().call_later(FLUSH_INTERVAL, self._on_timer)

    async def _post(self, body: bytes) -> None:
        target = self.target
        address = self._address()
        if isinstance(target, GrpcTarget):
            # grpcio's blocking call, on a worker thread: the loop only waits for its answer.
            await asyncio.get_running_loop().run_in_executor(None, self._grpc_export, address, body)
            self._count("grpc_reports_sent")
            return
        head = [
            f"POST {target.path} HTTP/1.1",
            f"host: {target.authority}",
            "content-type: application/x-protobuf",
            f"content-length: {len(body)}",
            "connection: close",
            "user-agent: mizzen-proxy",
            *(f"{k}: {v}" for k, v in target.headers),
        ]
        data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
        async with asyncio.timeout(target.timeout):
            reader, writer = await asyncio.open_connection(*address)
            try:
                writer.write(data)
                status = await _read_status(reader)
            finally:
                writer.close()
        self._count("http_reports_sent")
        if not 200 <= status < 300:
            raise ExportError(f"collector answered {status}")

    def _grpc_export(self, address: tuple[str, int], body: bytes) -> None:
        import grpc

        target = self.target
        assert isinstance(target, GrpcTarget)
        channel = self._channels.get(address)
        if channel is None:
            options = [("grpc.default_authority", target.authority)] if target.authority else []
            host = f"[{address[0]}]" if ":" in address[0] else address[0]
            channel = self._channels[address] = grpc.insecure_channel(f"{host}:{address[1]}", options=options)
        call = channel.unary_unary(target.path, request_serializer=_identity, response_deserializer=_identity)
        try:
            call(body, timeout=target.timeout, metadata=list(target.headers) or None)
        except grpc.RpcError as exc:
            raise ExportError(f"collector answered {exc.code().name}: {exc.details()}") from None

    def _address(self) -> tuple[str, int]:
        clusters = self.clusters
        cluster = clusters.get(self.target.cluster) if clusters is not None else None
        if cluster is None:
            raise ExportError(f"no cluster {self.target.cluster!r} to reach the collector")
        host = cluster.pick(None)
        if host is None:
            raise ExportError(f"cluster {self.target.cluster!r} has no healthy endpoint")
        return host.address, host.port

    async def close(self) -> None:
        """Send what is queued (best effort), e.g. when the proxy drains."""
        self._cancel_timer()
        if self.sending is not None:
            await asyncio.gather(self.sending, return_exceptions=True)
        while self.queue:
            self._start_send()
            assert self.sending is not None
            await asyncio.gather(self.sending, return_exceptions=True)


class ExportError(Exception):
    pass


async def _read_status(reader: asyncio.StreamReader) -> int:
    parser = http1.ResponseParser(64 * 1024)
    parser.expect(b"POST")
    while True:
        chunk = await reader.read(65536)
        if not chunk:
            raise ExportError("the collector closed the connection without answering")
        for event in parser.feed(chunk):
            if isinstance(event, http1.ResponseHead) and not event.interim:
                return int(event.status)


_EXPORTERS: dict[tuple[Any, ...], SpanExporter] = {}


def _identity(data: bytes) -> bytes:
    return data


def exporter_for(target: HttpTarget | GrpcTarget) -> SpanExporter:
    """The process's exporter for a collector (made once, shared by every config naming it)."""
    found = _EXPORTERS.get(target.key)
    if found is None:
        found = _EXPORTERS[target.key] = SpanExporter(target)
    return found


def exporters() -> list[SpanExporter]:
    return list(_EXPORTERS.values())


def _attribute(key: str, value: Any) -> common_pb2.KeyValue:
    kv = common_pb2.KeyValue(key=key)
    kv.value.string_value = value if isinstance(value, str) else str(value)
    return kv


_local: list[Any] = []  # [(the attributes, their encoding as a Span's repeated attributes field)]


def _local_encoded() -> bytes:
    """This proxy's own span attributes, encoded once (as they are until its identity changes)."""
    attrs = local_attributes()
    if not _local or _local[0][0] != attrs:
        holder = trace_pb2.Span()
        for k, v in attrs.items():
            kv = holder.attributes.add()
            kv.key = k
            kv.value.string_value = v
        _local[:] = [(attrs, holder.SerializeToString())]
    return _local[0][1]  # type: ignore[no-any-return]


def encode(spans: list[Span], service_name: str) -> trace_service_pb2.ExportTraceServiceRequest:
    """An OTLP export request: one resource (this proxy's service), the spans grouped under it."""
    request = trace_service_pb2.ExportTraceServiceRequest()
    local = _local_encoded()
    by_service: dict[str, list[Span]] = {}
    for span in spans:
        by_service.setdefault(span.config.service_name or service_name, []).append(span)
    for name, group in by_service.items():
        rs = request.resource_spans.add()
        rs.resource.attributes.append(_attribute("service.name", name))
        lib = rs.instrumentation_library_spans.add()
        lib.instrumentation_library.name = "mizzen-proxy"
        for s in group:
            out = lib.spans.add()
            out.trace_id = s.trace_id.to_bytes(16, "big")
            out.span_id = s.span_id.to_bytes(8, "big")
            if s.parent_id:
                out.parent_span_id = s.parent_id.to_bytes(8, "big")
            if s.tracestate:
                out.trace_state = s.tracestate
            out.name = s.name
            out.kind = s.kind  # type: ignore[assignment]
            out.start_time_unix_nano = s.start_ns
            out.end_time_unix_nano = s.end_ns
            out.MergeFromString(local)  # repeated fields concatenate: the shared attributes, pre-encoded
            attributes = out.attributes
            for k, v in s.attributes.items():
                kv = attributes.add()  # built in place: a message per attribute would cost twice
                kv.key = k
                kv.value.string_value = v
            if s.status_error:
                out.status.code = STATUS_ERROR  # type: ignore[assignment]
    return request


def decode(body: bytes) -> list[dict[str, Any]]:
    """An OTLP export request read back into plain dicts (for tests and ``mizzen`` tooling)."""
    request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
    out = []
    for rs in request.resource_spans:
        resource = {kv.key: kv.value.string_value for kv in rs.resource.attributes}
        for lib in rs.instrumentation_library_spans:
            for s in lib.spans:
                out.append(
                    {
                        "service": resource.get("service.name", ""),
                        "trace_id": s.trace_id.hex(),
                        "span_id": s.span_id.hex(),
                        "parent_span_id": s.parent_span_id.hex(),
                        "name": s.name,
                        "kind": int(s.kind),
                        "start": s.start_time_unix_nano,
                        "end": s.end_time_unix_nano,
                        "attributes": _attributes(s.attributes),
                        "error": int(s.status.code) == STATUS_ERROR,
                        "trace_state": s.trace_state,
                    }
                )
    return out


def _attributes(kvs: Any) -> Mapping[str, str]:
    return {kv.key: kv.value.string_value for kv in kvs}
