"""A test upstream: an aiohttp server in its own process that tells what it received.

Every response is JSON: the server's name, the request's method, path, headers and body length, and
the peer's address and port (a new port is a new connection). Query parameters change behaviour:
``status=N`` answers N; ``delay=S`` waits S seconds first; ``reset=1`` closes the connection without
answering; ``size=N`` answers N bytes of body instead; ``fail=K&key=X`` answers 503 to the first K
requests carrying key X (retry tests); ``fail_on=NAME,...`` makes the servers so named answer
``fail_status`` (503 by default), so that one of several replicas can misbehave (outlier detection).
``/__count`` answers the number of requests served, ``/__log`` the last ones (method, path, headers);
``/__ws`` is a WebSocket echoing each text message as ``<name>:<message>``.

Run as ``python upstream.py PORT NAME``; prints "ready" once listening.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

HERE = Path(__file__)


def _serve(port: int, name: str, host: str) -> None:
    from aiohttp import web

    served = 0
    failures: dict[str, int] = {}
    recent: deque[dict[str, object]] = deque(maxlen=500)

    async def handle(request: web.Request) -> web.StreamResponse:
        nonlocal served
        if request.path == "/__count":
            return web.Response(text=str(served))
        if request.path == "/__log":
            return web.Response(text=json.dumps(list(recent)), content_type="application/json")
        if request.path == "/__ws":
            # A WebSocket that echoes each text message with the server's name in front.
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            async for msg in ws:
                if msg.type == web.WSMsgType.TEXT:
                    await ws.send_str(f"{name}:{msg.data}")
            return ws
        served += 1
        recent.append(
            {
                "method": request.method,
                "path": request.path_qs,
                "headers": {k.lower(): v for k, v in request.headers.items()},
            }
        )
        q = request.query
        if "delay" in q:
            await asyncio.sleep(float(q["delay"]))
        if q.get("reset"):
            assert request.transport is not None
            request.transport.abort()
            return web.Response(status=500)
        body = await request.read()
        if "fail" in q:
            key = q.get("key", "")
            failures[key] = failures.get(key, 0) + 1
            if failures[key] <= int(q["fail"]):
                return web.Response(status=503, text=f"failing {failures[key]}")
        if name in q.get("fail_on", "").split(","):
            return web.Response(status=int(q.get("fail_status", "503")), text=f"{name} failing")
        status = int(q.get("status", "200"))
        if "size" in q:
            return web.Response(status=status, body=b"x" * int(q["size"]))
        info = {
            "name": name,
            "method": request.method,
            "path": request.path_qs,
            "headers": {k.lower(): v for k, v in request.headers.items()},
            "body_len": len(body),
            "peer": request.remote,
            "peer_port": (request.transport.get_extra_info("peername") or ("", 0))[1]
            if request.transport is not None
            else 0,
        }
        return web.Response(status=status, text=json.dumps(info), content_type="application/json")

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", handle)
    print("ready", flush=True)
    web.run_app(app, host=host, port=port, print=None, access_log=None, handle_signals=True)


class Upstream:
    """Runs the server as a process on a free port; ``stop()`` ends it."""

    def __init__(self, name: str, host: str = "127.0.0.1", port: int = 0) -> None:
        self.name = name
        self.host = host
        if not port:
            with socket.socket() as s:
                s.bind((host, 0))
                port = s.getsockname()[1]
        self.port = port
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE), str(port), name, host], stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        self.proc.stdout.readline()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection((host, port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.02)
        raise AssertionError(f"upstream {name} did not start")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


if __name__ == "__main__":
    _serve(int(sys.argv[1]), sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "127.0.0.1")
