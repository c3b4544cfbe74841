"""The demo app: ``GET /`` answers with this instance's name and version; ``GET /call?url=...`` fetches
another URL (through the sidecar, when meshed) and returns what it said. Standard library only."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NAME = os.environ.get("DEMO_NAME", "demo")
VERSION = os.environ.get("DEMO_VERSION", "v1")
POD = os.environ.get("POD_NAME", "")


class Handler(BaseHTTPRequestHandler):
    def _reply(self, status: int, body: dict[str, object]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        if url.path in ("/healthz", "/ready"):
            self._reply(200, {"ok": True})
            return
        if url.path == "/call":
            target = urllib.parse.parse_qs(url.query).get("url", [""])[0]
            try:
                with urllib.request.urlopen(target, timeout=5) as response:
                    self._reply(
                        200, {"from": NAME, "status": response.status, "body": json.loads(response.read())}
                    )
            except (urllib.error.URLError, ValueError, OSError) as exc:
                self._reply(502, {"from": NAME, "error": str(exc)})
            return
        self._reply(
            200,
            {
                "name": NAME,
                "version": VERSION,
                "pod": POD,
                "path": url.path,
                "headers": {k.lower(): v for k, v in self.headers.items() if k.lower().startswith("x-")},
            },
        )

    def log_message(self, format: str, *args: object) -> None:
        pass


if __name__ == "__main__":
    ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("PORT", "8080"))), Handler).serve_forever()
