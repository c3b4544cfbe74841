"""Rewriting app probes through the sidecar's 15020 (Istio's ``/app-health/<container>/<kind>``).

Under capture and mTLS the kubelet's plaintext probes would reach the inbound listener instead of the app;
rewritten, the kubelet asks the sidecar on 15020 and the sidecar probes the app over the pod's loopback.
The original probes travel to the sidecar as JSON in the ``ISTIO_KUBE_APP_PROBERS`` env var (Istio's
name and shape): ``{"/app-health/web/readyz": {"httpGet": {...}, "timeoutSeconds": 1}}``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

METRICS_PORT = 15020
PROBERS_ENV = "ISTIO_KUBE_APP_PROBERS"
REWRITE_ANNOTATION = "sidecar.istio.io/rewriteAppHTTPProbers"
_KINDS = (("readinessProbe", "readyz"), ("livenessProbe", "livez"), ("startupProbe", "startupz"))
_SIDECAR_PORTS = frozenset({15000, 15020, 15021, 15090})


def app_health_path(container: str, kind: str) -> str:
    return f"/app-health/{container}/{kind}"


def _resolve_port(port: Any, container: Mapping[str, Any]) -> int | None:
    """A probe's port as a number: named ports are looked up in the container's own ports."""
    if isinstance(port, int) and not isinstance(port, bool):
        return port
    if isinstance(port, str):
        if port.isdigit():
            return int(port)
        for declared in container.get("ports") or ():
            if isinstance(declared, Mapping) and declared.get("name") == port:
                number = declared.get("containerPort")
                return number if isinstance(number, int) else None
    return None


def _prober(probe: Mapping[str, Any], container: Mapping[str, Any]) -> dict[str, Any] | None:
    """What the sidecar must check for one probe, or None when the probe stays as it is."""
    timeout = probe.get("timeoutSeconds", 1)
    if isinstance(probe.get("httpGet"), Mapping):
        get = dict(probe["httpGet"])
        port = _resolve_port(get.get("port"), container)
        if port is None or port in _SIDECAR_PORTS:
            return None
        get["port"] = port
        get.setdefault("path", "/")
        get["scheme"] = str(get.get("scheme") or "HTTP").upper()
        return {"httpGet": get, "timeoutSeconds": timeout}
    if isinstance(probe.get("tcpSocket"), Mapping):
        sock = dict(probe["tcpSocket"])
        port = _resolve_port(sock.get("port"), container)
        if port is None or port in _SIDECAR_PORTS:
            return None
        sock["port"] = port
        return {"tcpSocket": sock, "timeoutSeconds": timeout}
    if isinstance(probe.get("grpc"), Mapping):
        grpc = dict(probe["grpc"])
        port = grpc.get("port")  # a number: Kubernetes has no named ports for gRPC probes
        if not isinstance(port, int) or isinstance(port, bool) or port in _SIDECAR_PORTS:
            return None
        out: dict[str, Any] = {"port": port}
        if grpc.get("service"):
            out["service"] = str(grpc["service"])
        return {"grpc": out, "timeoutSeconds": timeout}
    return None  # exec probes run inside the container and need no network


def rewrite(containers: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The containers with their HTTP, TCP and gRPC probes pointed at 15020, and the probers to hand the
    proxy."""
    probers: dict[str, Any] = {}
    out = []
    for container in containers:
        container = copy.deepcopy(container)
        name = str(container.get("name", ""))
        for field, kind in _KINDS:
            probe = container.get(field)
            if not isinstance(probe, Mapping):
                continue
            prober = _prober(probe, container)
            if prober is None:
                continue
            path = app_health_path(name, kind)
            probers[path] = prober
            rewritten = {k: v for k, v in probe.items() if k not in ("httpGet", "tcpSocket", "grpc")}
            rewritten["httpGet"] = {"path": path, "port": METRICS_PORT, "scheme": "HTTP"}
            container[field] = rewritten
        out.append(container)
    return out, probers
