"""A deliberately simple HTTP/1.1 client over a raw socket, for what http.client will not send:
pipelined requests, malformed requests, slow heads, and exact control over the connection."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field


@dataclass
class Response:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


class Conn:
    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 5.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        if not chunk:
            return False
        self.buf += chunk
        return True

    def read_response(self, head_request: bool = False) -> Response:
        while b"\r\n\r\n" not in self.buf:
            if not self._fill():
                raise ConnectionError(f"closed before a response head; got {self.buf!r}")
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            key = k.strip().lower()
            headers[key] = headers[key] + "," + v.strip() if key in headers else v.strip()
        resp = Response(status, headers)
        if head_request or status in (204, 304) or 100 <= status < 200:
            return resp
        if "content-length" in headers:
            n = int(headers["content-length"])
            while len(self.buf) < n:
                if not self._fill():
                    raise ConnectionError("closed inside the body")
            resp.body, self.buf = self.buf[:n], self.buf[n:]
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                while b"\r\n" not in self.buf:
                    self._fill()
                size_line, _, self.buf = self.buf.partition(b"\r\n")
                size = int(size_line.split(b";")[0], 16)
                while len(self.buf) < size + 2:
                    self._fill()
                body += self.buf[:size]
                self.buf = self.buf[size + 2 :]
                if size == 0:
                    break
            resp.body = body
        else:
            while self._fill():
                pass
            resp.body, self.buf = self.buf, b""
        return resp

    def closed_by_peer(self, wait: float = 2.0) -> bool:
        """True if the peer closes the connection (EOF) within ``wait`` seconds."""
        self.sock.settimeout(wait)
        try:
            end = time.monotonic() + wait
            while time.monotonic() < end:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
        return False

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Conn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def get(
    port: int,
    path: str = "/",
    host: str = "svc",
    headers: dict[str, str] | None = None,
    method: str = "GET",
    body: bytes = b"",
) -> Response:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Connection: close"]
    for k, v in (headers or {}).items():
        lines.append(f"{k}: {v}")
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    with Conn(port) as c:
        c.send(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        return c.read_response(head_request=method == "HEAD")
