"""App probes through the sidecar: ``/app-health/<container>/<kind>`` on 15020 (Istio's probe rewrite).

The injector moves each HTTP, TCP or gRPC probe of the app into ``ISTIO_KUBE_APP_PROBERS`` and points the
kubelet at 15020; here the sidecar runs the original probe against the app over the pod's loopback
(127.0.0.1 is not captured, so neither the inbound listener nor mTLS is in the way) and answers with its
outcome: the app's own status code for HTTP probes (the kubelet counts 200-399 as success), 200 or 503
for TCP ones and for gRPC ones (``grpc.health.v1.Health/Check``: 200 only when the app says SERVING, as the
kubelet's own gRPC probe decides).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

ENV = "ISTIO_KUBE_APP_PROBERS"


class ProberError(ValueError):
    """``ISTIO_KUBE_APP_PROBERS`` cannot be used; names the probe path and field."""


@dataclass(frozen=True, slots=True)
class Prober:
    path: str  # /app-health/<container>/<kind>
    kind: str  # "http", "tcp" or "grpc"
    port: int
    timeout: float
    host: str = "127.0.0.1"
    target: str = "/"
    scheme: str = "HTTP"
    headers: tuple[tuple[str, str], ...] = ()
    service: str = ""  # gRPC: the service asked about ("" is the server as a whole)


def _port(value: Any, where: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 65536:
        return value
    raise ProberError(f"{where}.port: must be a port number (got {value!r})")


def parse(text: str | None) -> dict[str, Prober]:
    """The probers from the env var's JSON; empty when unset."""
    if not text:
        return {}
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ProberError(f"{ENV}: not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ProberError(f"{ENV}: must be an object of /app-health/... paths")
    out: dict[str, Prober] = {}
    for path, spec in data.items():
        where = f"{ENV}[{path!r}]"
        if not isinstance(path, str) or not path.startswith("/app-health/"):
            raise ProberError(f"{where}: the key must be an /app-health/<container>/<kind> path")
        if not isinstance(spec, Mapping):
            raise ProberError(f"{where}: must be an object")
        timeout = float(spec.get("timeoutSeconds") or 1)
        if isinstance(spec.get("httpGet"), Mapping):
            get = spec["httpGet"]
            scheme = str(get.get("scheme") or "HTTP").upper()
            if scheme not in ("HTTP", "HTTPS"):
                raise ProberError(f"{where}.httpGet.scheme: must be HTTP or HTTPS (got {scheme!r})")
            headers = tuple(
                (str(h.get("name")), str(h.get("value", "")))
                for h in get.get("httpHeaders") or ()
                if isinstance(h, Mapping) and h.get("name")
            )
            target = str(get.get("path") or "/")
            out[path] = Prober(
                path,
                "http",
                _port(get.get("port"), f"{where}.httpGet"),
                timeout,
                host=str(get.get("host") or "127.0.0.1"),
                target=target if target.startswith("/") else "/" + target,
                scheme=scheme,
                headers=headers,
            )
        elif isinstance(spec.get("tcpSocket"), Mapping):
            sock = spec["tcpSocket"]
            out[path] = Prober(
                path,
                "tcp",
                _port(sock.get("port"), f"{where}.tcpSocket"),
                timeout,
                str(sock.get("host") or "127.0.0.1"),
            )
        elif isinstance(spec.get("grpc"), Mapping):
            g = spec["grpc"]
            out[path] = Prober(
                path,
                "grpc",
                _port(g.get("port"), f"{where}.grpc"),
                timeout,
                service=str(g.get("service") or ""),
            )
        else:
            raise ProberError(f"{where}: needs httpGet, tcpSocket or grpc")
    return out


async def run(prober: Prober) -> tuple[int, bytes]:
    """Probe the app once; (status to answer the kubelet with, a short body saying why)."""
    try:
        return await asyncio.wait_for(_run(prober), prober.timeout)
    except TimeoutError:
        return 503, f"probe timed out after {prober.timeout:g}s\n".encode()
    except OSError as exc:
        return 503, f"cannot reach the app on port {prober.port}: {exc.strerror or exc}\n".encode()


# grpc.health.v1 by hand (two one-field messages): no generated code for so little.
_HEALTH_CHECK = "/grpc.health.v1.Health/Check"
_STATUS = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}


def _health_request(service: str) -> bytes:
    data = service.encode()
    if not data:
        return b""
    length, prefix = len(data), bytearray()
    while length >= 0x80:
        prefix.append(length & 0x7F | 0x80)
        length >>= 7
    prefix.append(length)
    return b"\x0a" + bytes(prefix) + data


def _health_status(reply: bytes) -> int:
    """The ``status`` of a HealthCheckResponse (field 1, varint); 0 when absent."""
    if len(reply) >= 2 and reply[0] == 0x08:
        return reply[1] & 0x7F
    return 0


async def _grpc_check(prober: Prober) -> tuple[int, bytes]:
    import grpc  # the certificate client has it loaded already in a meshed sidecar

    async with grpc.aio.insecure_channel(f"{prober.host}:{prober.port}") as channel:
        check = channel.unary_unary(_HEALTH_CHECK)
        try:
            reply = await check(_health_request(prober.service), timeout=prober.timeout)
        except grpc.aio.AioRpcError as exc:
            return 503, f"health check failed: {exc.code().name}: {exc.details()}\n".encode()
    status = _health_status(reply)
    name = _STATUS.get(status, str(status))
    return (200 if status == 1 else 503), f"{name}\n".encode()


async def _run(prober: Prober) -> tuple[int, bytes]:
    if prober.kind == "grpc":
        return await _grpc_check(prober)
    if prober.kind == "tcp":
        _, writer = await asyncio.open_connection(prober.host, prober.port)
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return 200, b"ok\n"
    context = None
    if prober.scheme == "HTTPS":
        # The kubelet does not verify the app's certificate either.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    reader, writer = await asyncio.open_connection(prober.host, prober.port, ssl=context)
    try:
        names = {name.lower() for name, _ in prober.headers}
        lines = [f"GET {prober.target} HTTP/1.1"]
        if "host" not in names:
            lines.append(f"Host: {prober.host}:{prober.port}")
        if "user-agent" not in names:
            lines.append("User-Agent: kube-probe/mizzen")
        lines += [f"{name}: {value}" for name, value in prober.headers]
        lines += ["Accept: */*", "Connection: close", "", ""]
        writer.write("\r\n".join(lines).encode("latin-1"))
        status_line = await reader.readline()
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    parts = status_line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        return 503, b"the app did not answer with HTTP\n"
    code = int(parts[1])
    return code, f"app answered {code}\n".encode()
