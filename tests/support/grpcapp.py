"""A gRPC test server in its own process (grpcio, raw-bytes handlers, so no generated code).

Service ``mizzen.test.Echo``:
- ``Who`` (unary): ``<name>:<request>``; request metadata ``fail-until`` = K with ``key`` = X makes the first
  K calls with that key end UNAVAILABLE; ``status`` = N ends the call with that code and message "asked".
- ``Count`` (server streaming): as many messages as the request's number, ``<name>:<i>``.
- ``Join`` (client streaming): the messages joined with ","; ``Chat`` (bidirectional): each message
  upper-cased.
And ``grpc.health.v1.Health/Check``: SERVING for "" and ``mizzen.test.Echo``, NOT_SERVING for "down",
NOT_FOUND for anything else.

Run as ``python grpcapp.py PORT NAME [HOST]`` (HOST 127.0.0.1 unless given); prints "ready" once serving.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__)


def serve(port: int, name: str, host: str = "127.0.0.1") -> None:
    from concurrent import futures

    import grpc

    failures: dict[str, int] = {}

    def who(request: bytes, context: Any) -> bytes:
        md = dict(context.invocation_metadata())
        if "fail-until" in md:
            key = md.get("key", "")
            failures[key] = failures.get(key, 0) + 1
            if failures[key] <= int(md["fail-until"]):
                context.abort(grpc.StatusCode.UNAVAILABLE, f"failing {failures[key]}")
        if "status" in md:
            context.abort(
                grpc.StatusCode(  # type: ignore[call-arg]
                    next(c for c in grpc.StatusCode if c.value[0] == int(md["status"]))
                ),
                "asked",
            )
        context.set_trailing_metadata((("served-by", name),))
        return name.encode() + b":" + request

    def count(request: bytes, context: Any) -> Any:
        for i in range(int(request)):
            yield f"{name}:{i}".encode()

    def join(requests: Any, context: Any) -> bytes:
        return b",".join(requests)

    def chat(requests: Any, context: Any) -> Any:
        for message in requests:
            yield message.upper()

    def health(request: bytes, context: Any) -> bytes:
        # grpc.health.v1: HealthCheckRequest{service = 1}, HealthCheckResponse{status = 1}.
        service = request[2 : 2 + request[1]].decode() if request[:1] == b"\x0a" else ""
        if service in ("", "mizzen.test.Echo"):
            return b"\x08\x01"  # SERVING
        if service == "down":
            return b"\x08\x02"  # NOT_SERVING
        context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {service!r}")
        return b""

    handler = grpc.method_handlers_generic_handler(
        "mizzen.test.Echo",
        {
            "Who": grpc.unary_unary_rpc_method_handler(who),
            "Count": grpc.unary_stream_rpc_method_handler(count),
            "Join": grpc.stream_unary_rpc_method_handler(join),
            "Chat": grpc.stream_stream_rpc_method_handler(chat),
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    health_handler = grpc.method_handlers_generic_handler(
        "grpc.health.v1.Health", {"Check": grpc.unary_unary_rpc_method_handler(health)}
    )
    server.add_generic_rpc_handlers((handler, health_handler))
    server.add_insecure_port(f"{host}:{port}")
    server.start()
    print("ready", flush=True)
    server.wait_for_termination()


class GrpcApp:
    def __init__(self, name: str) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE), str(self.port), name], stdout=subprocess.PIPE
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == b"ready"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.02)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


if __name__ == "__main__":
    serve(int(sys.argv[1]), sys.argv[2], *sys.argv[3:4])
