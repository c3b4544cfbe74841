"""Checks on the Kubernetes kinds, limited to the fields the mesh reads.

The API server has validated these objects already (when they come from a cluster); the files source has
not, so the fields that translation relies on are checked here too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from controller.validation.schema import Issues, integer, port_number, string

TRANSPORTS = ("TCP", "UDP", "SCTP")


def _spec(raw: Mapping[str, Any], out: Issues) -> Mapping[str, Any]:
    spec = raw.get("spec")
    if spec is None:
        return {}
    if not isinstance(spec, Mapping):
        out.error("spec", "must be an object")
        return {}
    return spec


def _check_service(raw: Mapping[str, Any], out: Issues) -> None:
    spec = _spec(raw, out)
    ports = spec.get("ports") or []
    if not isinstance(ports, list):
        out.error("spec.ports", "must be a list")
        return
    seen: set[tuple[int, str]] = set()
    for i, port in enumerate(ports):
        path = f"spec.ports[{i}]"
        if not isinstance(port, Mapping):
            out.error(path, "must be an object")
            continue
        if port.get("port") is None:
            out.error(f"{path}.port", "is required")
        else:
            port_number()(port["port"], f"{path}.port", out)
        if port.get("protocol") is not None:
            string(enum=TRANSPORTS)(port["protocol"], f"{path}.protocol", out)
        target = port.get("targetPort")
        if target is not None and not isinstance(target, str):
            port_number()(target, f"{path}.targetPort", out)
        key = (port.get("port"), port.get("protocol") or "TCP")
        if key in seen:
            out.error(f"{path}.port", f"duplicate port {key[0]}/{key[1]}")
        seen.add(key)  # type: ignore[arg-type]


def _check_endpoint_slice(raw: Mapping[str, Any], out: Issues) -> None:
    for i, port in enumerate(raw.get("ports") or []):
        if isinstance(port, Mapping) and port.get("port") is not None:
            port_number()(port["port"], f"ports[{i}].port", out)
    for i, ep in enumerate(raw.get("endpoints") or []):
        if not isinstance(ep, Mapping) or not isinstance(ep.get("addresses"), list) or not ep["addresses"]:
            out.error(f"endpoints[{i}].addresses", "is required (at least one address)")


def _check_pod(raw: Mapping[str, Any], out: Issues) -> None:
    spec = _spec(raw, out)
    for c, container in enumerate(spec.get("containers") or []):
        for p, port in enumerate((container or {}).get("ports") or []):
            if port.get("containerPort") is not None:
                integer(minimum=1, maximum=65535)(
                    port["containerPort"], f"spec.containers[{c}].ports[{p}].containerPort", out
                )


KUBE_CHECKS: dict[str, Callable[[Mapping[str, Any], Issues], None]] = {
    "Service": _check_service,
    "EndpointSlice": _check_endpoint_slice,
    "Pod": _check_pod,
}
