"""What the four Bookinfo services share: a small threaded HTTP/1.1 server (keep-alive), JSON answers, an
access log line per request on stderr, and calls to other services that forward the headers a mesh needs.

Standard library only: the services run as plain processes in a local pod, and in the demo image on
Kubernetes. A service's own code stays a page long.
"""

from __future__ import annotations

import http.client
import json
import os
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# What the app must copy from the request it serves onto the requests it makes: the user (header routing
# matches it) and the trace context (the sidecars cannot join spans across the app on their own).
FORWARDED = (
    "end-user",
    "user-agent",
    "x-request-id",
    "traceparent",
    "tracestate",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "x-ot-span-context",
    "cookie",
)

Answer = tuple[int, Any]  # (status, JSON-able body) or (status, str) for HTML
Route = Callable[["Request"], Answer]


class Request:
    def __init__(self, handler: BaseHTTPRequestHandler) -> None:
        url = urllib.parse.urlsplit(handler.path)
        self.method = handler.command
        self.path = url.path
        self.query = {k: v[0] for k, v in urllib.parse.parse_qs(url.query).items()}
        self.headers = {k.lower(): v for k, v in handler.headers.items()}

    def forwarded(self, **extra: str) -> dict[str, str]:
        out = {k: v for k, v in self.headers.items() if k in FORWARDED}
        out.update({k: v for k, v in extra.items() if v})
        return out


_pool = threading.local()


def call(url: str, headers: Mapping[str, str], timeout: float) -> tuple[int, Any, str]:
    """GET ``url`` (through the pod's sidecar when meshed) on a kept-alive connection of this thread:
    (status, parsed JSON or None, error text). Status 0 when no answer came."""
    parts = urllib.parse.urlsplit(url)
    key = (parts.hostname, parts.port or 80, timeout)
    conns: dict[Any, http.client.HTTPConnection] = getattr(_pool, "conns", None) or {}
    _pool.conns = conns
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    for attempt in (1, 2):
        conn = conns.get(key)
        fresh = conn is None
        if conn is None:
            conn = conns[key] = http.client.HTTPConnection(key[0] or "", key[1], timeout=timeout)
        try:
            conn.request("GET", target, headers=dict(headers))
            response = conn.getresponse()
            body = response.read()
            if response.getheader("connection", "").lower() == "close":
                conns.pop(key, None).close()  # type: ignore[union-attr]
            try:
                return response.status, json.loads(body or b"null"), ""
            except ValueError:
                return response.status, None, body.decode(errors="replace")[:200]
        except (OSError, http.client.HTTPException) as exc:
            conns.pop(key, None)
            conn.close()
            # A kept-alive connection the other side closed meanwhile: once more on a new one.
            if fresh or attempt == 2 or isinstance(exc, TimeoutError):
                return 0, None, f"{type(exc).__name__}: {exc}"
    return 0, None, "unreachable"


def serve(name: str, routes: Mapping[str, Route], port: int | None = None) -> None:
    """Serve ``routes`` (path prefix -> handler; the longest prefix wins) until killed."""
    ordered = sorted(routes.items(), key=lambda kv: -len(kv[0]))

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = name

        def do_GET(self) -> None:
            start = time.monotonic()
            request = Request(self)
            route = next((fn for prefix, fn in ordered if request.path.startswith(prefix)), None)
            try:
                status, body = route(request) if route else (404, {"error": f"no route for {request.path}"})
            except Exception as exc:  # a bug answers 500 and is logged; the server goes on
                status, body = 500, {"error": f"{type(exc).__name__}: {exc}"}
            if isinstance(body, str):
                data, kind = body.encode(), "text/html; charset=utf-8"
            else:
                data, kind = json.dumps(body).encode(), "application/json"
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            ms = (time.monotonic() - start) * 1000
            h = request.headers
            sys.stderr.write(
                f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {name} "
                f"{request.method} {self.path} {status} {ms:.1f}ms "
                f"host={h.get('host', '-')} request_id={h.get('x-request-id', '-')} "
                f"user={h.get('end-user', '-')}\n"
            )
            sys.stderr.flush()

        def log_message(self, format: str, *args: Any) -> None:
            pass  # one line per request is written above

    server = ThreadingHTTPServer(("0.0.0.0", port or int(os.environ.get("PORT", "9080"))), Handler)
    server.daemon_threads = True
    sys.stderr.write(f"{name} listening on {server.server_address[1]}\n")
    sys.stderr.flush()
    server.serve_forever()


def health(_: Request) -> Answer:
    return 200, {"status": "ok"}
