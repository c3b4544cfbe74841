"""A client that runs inside a pod and makes the requests a test asks for, reporting what came back.

``python meshclient.py SPEC`` where SPEC is JSON: ``{"kind": "http", "url": ..., "n": 1, "method": "GET",
"headers": {...}, "body": "..."}`` makes n HTTP/1.1 requests (one connection, keep-alive, reconnecting when
the server closes it) and prints a JSON list of ``{"status", "headers", "body", "ms"}``;
``{"kind": "tcp", "host": ..., "port": ..., "send": "...", "n": 1}`` connects n times, sends, half-closes and
reads to the end; ``{"kind": "tls", ...}`` does the same over TLS with ``"sni"``, presenting the client
certificate in the PEM files ``"cert"`` and ``"key"`` when given (the server's certificate is not
checked: the test wants to see where the connection went, which the server says).
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import sys
import time
from typing import Any
from urllib.parse import urlsplit


def http_requests(spec: dict[str, Any]) -> list[dict[str, Any]]:
    url = urlsplit(spec["url"])
    target = url.path or "/"
    if url.query:
        target += "?" + url.query
    out: list[dict[str, Any]] = []
    conn: http.client.HTTPConnection | None = None
    body = spec.get("body")
    for _ in range(int(spec.get("n", 1))):
        if conn is None:
            conn = http.client.HTTPConnection(
                url.hostname, url.port or 80, timeout=float(spec.get("timeout", 15))
            )
        start = time.monotonic()
        try:
            conn.request(
                spec.get("method", "GET"),
                target,
                body=body.encode() if isinstance(body, str) else None,
                headers=spec.get("headers") or {},
            )
            resp = conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            out.append({"status": 0, "error": f"{type(exc).__name__}: {exc}", "headers": {}, "body": ""})
            conn.close()
            conn = None
            continue
        out.append(
            {
                "status": resp.status,
                "headers": [[k.lower(), v] for k, v in resp.getheaders()],
                "body": data.decode("utf-8", "replace"),
                "ms": round((time.monotonic() - start) * 1000, 1),
            }
        )
        if resp.will_close or spec.get("fresh"):
            conn.close()
            conn = None
    if conn is not None:
        conn.close()
    return out


def stream(spec: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for _ in range(int(spec.get("n", 1))):
        try:
            raw = socket.create_connection(
                (spec["host"], int(spec["port"])), timeout=float(spec.get("timeout", 10))
            )
            sock: socket.socket = raw
            if spec["kind"] == "tls":
                ctx = ssl.create_default_context()
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
                if spec.get("cert"):
                    ctx.load_cert_chain(spec["cert"], spec["key"])
                sock = ctx.wrap_socket(raw, server_hostname=spec.get("sni"))
            sock.sendall(spec.get("send", "hello").encode())
            if spec["kind"] == "tcp":
                sock.shutdown(socket.SHUT_WR)
            chunks = []
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                chunks.append(data)
            sock.close()
            out.append({"ok": True, "data": b"".join(chunks).decode("utf-8", "replace")})
        except (OSError, ssl.SSLError) as exc:
            out.append({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
    return out


def main() -> None:
    spec = json.loads(sys.argv[1])
    result = http_requests(spec) if spec.get("kind", "http") == "http" else stream(spec)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
