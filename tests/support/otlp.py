"""An OTLP/HTTP trace receiver for tests: a real HTTP server on a free port that decodes every export
request it gets (protobuf, ``POST /v1/traces``) into plain span dicts."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from fastpath.otlp import decode


class OtlpReceiver:
    """Collects spans; ``status`` is what it answers (set 503 to play a failing collector)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.spans: list[dict[str, Any]] = []
        self.requests: list[dict[str, str]] = []
        self.status = 200
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with receiver._lock:
                    receiver.requests.append(
                        {"path": self.path, "content-type": self.headers.get("content-type", "")}
                    )
                    if receiver.status == 200:
                        receiver.spans.extend(decode(body))
                self.send_response(receiver.status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def wait_for(
        self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 15.0
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                spans = list(self.spans)
            if predicate(spans):
                return spans
            time.sleep(0.05)
        with self._lock:
            raise AssertionError(f"spans never matched; got {self.spans}")

    def clear(self) -> None:
        with self._lock:
            self.spans.clear()
            self.requests.clear()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class OtlpGrpcReceiver(OtlpReceiver):
    """The same receiver over OTLP/gRPC (``TraceService/Export``), on a free port."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        from concurrent import futures

        import grpc

        self.spans = []
        self.requests = []
        self.status = 200
        self.metadata: list[dict[str, str]] = []
        self._lock = threading.Lock()
        receiver = self

        def export(body: bytes, context: Any) -> bytes:
            with receiver._lock:
                receiver.metadata.append({k: v for k, v in context.invocation_metadata()})
                if receiver.status != 200:
                    context.abort(grpc.StatusCode.UNAVAILABLE, "collector says no")
                receiver.spans.extend(decode(body))
            return b""

        handler = grpc.method_handlers_generic_handler(
            "opentelemetry.proto.collector.trace.v1.TraceService",
            {
                "Export": grpc.unary_unary_rpc_method_handler(
                    export, request_deserializer=lambda b: b, response_serializer=lambda b: b
                )
            },
        )
        self.grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        self.grpc_server.add_generic_rpc_handlers((handler,))
        self.port = self.grpc_server.add_insecure_port(f"{host}:{port}")
        self.grpc_server.start()

    def stop(self) -> None:
        self.grpc_server.stop(0)
