"""A tiny app that calls another service and forwards the trace headers it received, as instrumented apps
do (Istio asks apps to propagate them): ``python traceapp.py PORT NAME BACKEND_URL``; prints "ready".

``GET /call`` calls BACKEND_URL with the incoming trace headers and answers JSON: its name, the headers it
received, and the backend's answer.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TRACE_HEADERS = (
    "traceparent",
    "tracestate",
    "x-request-id",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "b3",
)


def main() -> None:
    port, name, backend = int(sys.argv[1]), sys.argv[2], sys.argv[3]

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            received = {k.lower(): v for k, v in self.headers.items()}
            forward = {k: received[k] for k in TRACE_HEADERS if k in received}
            request = urllib.request.Request(backend + self.path, headers=forward)
            status = 200
            try:
                with urllib.request.urlopen(request, timeout=10) as resp:
                    answer = json.loads(resp.read())
            except urllib.error.HTTPError as exc:  # the backend answered an error: that is the answer
                answer = {"status": exc.code}
            except Exception as exc:  # the backend could not be reached
                answer, status = {"error": repr(exc)}, 502
            body = json.dumps({"name": name, "headers": received, "backend": answer}).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
