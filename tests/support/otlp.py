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
