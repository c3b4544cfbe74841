"""App probes through the sidecar: ``/app-health/<container>/<kind>`` on 15020 (Istio's probe rewrite).

The injector moves each HTTP or TCP probe of the app into ``ISTIO_KUBE_APP_PROBERS`` and points the
kubelet at 15020; here the sidecar runs the original probe against the app over the pod's loopback
(127.0.0.1 is not captured, so neither the inbound listener nor mTLS is in the way) and answers with its
outcome: the app's own status code for HTTP probes (the kubelet counts 200-399 as success), 200 or 503
for TCP ones.
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
    kind: str  # "http" or "tcp"
    port: int
    timeout: float
    host: str = "127.0.0.1"
    target: str = "/"
    scheme: str = "HTTP"
    headers: tuple[tuple[str, str], ...] = ()


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
        else:
            raise ProberError(f"{where}: needs httpGet or tcpSocket")
    return out


async def run(prober: Prober) -> tuple[int, bytes]:
    """Probe the app once; (status to answer the kubelet with, a short body saying why)."""
    try:
        return await asyncio.wait_for(_run(prober), prober.timeout)
    except TimeoutError:
        return 503, f"probe timed out after {prober.timeout:g}s\n".encode()
    except OSError as exc:
        return 503, f"cannot reach the app on port {prober.port}: {exc.strerror or exc}\n".encode()


async def _run(prober: Prober) -> tuple[int, bytes]:
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
