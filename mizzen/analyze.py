"""``mizzen analyze``: what ``istioctl analyze`` catches, offline on files or against a cluster.

Each finding has Istio's analyzer code where one exists, so search results and habits carry over:
IST0101 ReferencedResourceNotFound (a subset no DestinationRule defines, a host nothing provides, a
gateway that does not exist), IST0103 PodMissingProxy, IST0106 SchemaValidationError (the controller's
own validation), IST0118 PortNameIsNotUnderNamingConvention.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from controller.model.protocol import MeshProtocol, parse_protocol
from controller.model.snapshot import MeshState
from controller.sources.kinds import KINDS, object_key
from controller.validation import validate
from controller.validation.analyze import analyze as cross_check

Obj = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Finding:
    level: str  # Error, Warning, Info (istioctl's spelling)
    code: str
    object: str
    message: str

    def format(self) -> str:
        return f"{self.level} [{self.code}] ({self.object}) {self.message}"

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def _who(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    namespace = meta.get("namespace")
    return f"{obj.get('kind')} {namespace + '/' if namespace else ''}{meta.get('name')}"


def _port_has_protocol(port: Mapping[str, Any]) -> bool:
    if port.get("appProtocol"):
        return True
    name = str(port.get("name") or "")
    # Istio's convention: <protocol>[-<suffix>] (grpc-web is itself a protocol name).
    candidates = (name, name.split("-", 1)[0], "-".join(name.split("-")[:2]))
    return any(parse_protocol(c) is not MeshProtocol.UNKNOWN for c in candidates if c)


def _pod_has_proxy(pod: Mapping[str, Any]) -> bool:
    spec = pod.get("spec") or {}
    names = [c.get("name") for c in [*(spec.get("containers") or ()), *(spec.get("initContainers") or ())]]
    return "istio-proxy" in names


def analyze_objects(objects: Iterable[Obj]) -> list[Finding]:
    """Every finding for a set of objects (a folder of manifests, or what a cluster holds)."""
    objects = list(objects)
    findings: list[Finding] = []
    by_kind: dict[str, list[Obj]] = {kind: [] for kind in KINDS}
    for obj in objects:
        kind = obj.get("kind")
        if kind in by_kind:
            by_kind[str(kind)].append(obj)
        for issue in validate(obj) if kind in by_kind else ():
            level = "Error" if issue.severity == "error" else "Warning"
            findings.append(Finding(level, "IST0106", _who(obj), issue.format("").removeprefix(": ")))
    state = MeshState()
    snapshot = state.load(by_kind).snapshot
    for key, issues in sorted(cross_check(snapshot).items(), key=lambda kv: str(kv[0])):
        for issue in issues:
            findings.append(Finding("Warning", "IST0101", str(key), issue.format("").removeprefix(": ")))
    gateways = {object_key(g) for g in by_kind["Gateway"]}
    for vs in by_kind["VirtualService"]:
        namespace = (vs.get("metadata") or {}).get("namespace") or "default"
        for i, gw in enumerate((vs.get("spec") or {}).get("gateways") or ()):
            if gw == "mesh":
                continue
            ref = gw if "/" in gw else f"{namespace}/{gw}"
            if ref not in gateways:
                findings.append(
                    Finding(
                        "Error", "IST0101", _who(vs), f"gateways[{i}]: referenced gateway not found: {ref}"
                    )
                )
    for svc in by_kind["Service"]:
        for i, port in enumerate((svc.get("spec") or {}).get("ports") or ()):
            if not _port_has_protocol(port):
                findings.append(
                    Finding(
                        "Info",
                        "IST0118",
                        _who(svc),
                        f"ports[{i}] ({port.get('name') or port.get('port')}): the port name has no protocol "
                        "prefix and no appProtocol is set, so the protocol is sniffed (server-first "
                        "protocols stall); name it e.g. http-web or tcp-db, or set appProtocol",
                    )
                )
    enabled = {
        (ns.get("metadata") or {}).get("name")
        for ns in by_kind["Namespace"]
        if ((ns.get("metadata") or {}).get("labels") or {}).get("istio-injection") == "enabled"
    }
    for pod in by_kind["Pod"]:
        meta = pod.get("metadata") or {}
        opted_out = (meta.get("labels") or {}).get("sidecar.istio.io/inject") == "false"
        host_network = (pod.get("spec") or {}).get("hostNetwork")
        if (
            meta.get("namespace") in enabled
            and not opted_out
            and not host_network
            and not _pod_has_proxy(pod)
        ):
            findings.append(
                Finding(
                    "Warning",
                    "IST0103",
                    _who(pod),
                    "the pod has no sidecar although its namespace is labelled istio-injection=enabled "
                    "(created before the label or the webhook? restart it)",
                )
            )
    order = {"Error": 0, "Warning": 1, "Info": 2}
    return sorted(findings, key=lambda f: (order[f.level], f.object, f.code, f.message))
