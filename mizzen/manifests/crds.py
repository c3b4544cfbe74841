"""CustomResourceDefinitions for the Istio kinds Mizzen reads, as Istio serves them: same groups, names,
short names, scope and served versions (networking: v1, v1beta1, v1alpha3; security: v1, v1beta1), so
manifests written for Istio apply unchanged and Istio's own CRDs can be replaced in place.

The schemas are structural (every node typed) with ``spec`` and ``status`` kept open
(``x-kubernetes-preserve-unknown-fields``), as Istio's CRDs were before they grew full schemas: field-level
checks are the validation webhook's job (the controller's own validation, with Istio's field paths), so one
place decides what is valid and every refusal names the field the same way.
"""

from __future__ import annotations

from typing import Any

from controller.sources.kinds import KIND_INFO

# The version stored in etcd: Istio's storage versions, so a cluster moving from Istio keeps its objects.
_STORAGE = {
    "networking.istio.io": "v1alpha3",
    "security.istio.io": "v1beta1",
    "telemetry.istio.io": "v1alpha1",
}
_SHORT = {
    "VirtualService": ["vs"],
    "DestinationRule": ["dr"],
    "Gateway": ["gw"],
    "ServiceEntry": ["se"],
    "Sidecar": [],
    "PeerAuthentication": ["pa"],
    "AuthorizationPolicy": ["ap"],
    "Telemetry": ["telemetry"],
}
_COLUMNS: dict[str, list[dict[str, Any]]] = {
    "VirtualService": [
        {"name": "Gateways", "type": "string", "jsonPath": ".spec.gateways"},
        {"name": "Hosts", "type": "string", "jsonPath": ".spec.hosts"},
    ],
    "DestinationRule": [{"name": "Host", "type": "string", "jsonPath": ".spec.host"}],
    "ServiceEntry": [
        {"name": "Hosts", "type": "string", "jsonPath": ".spec.hosts"},
        {"name": "Location", "type": "string", "jsonPath": ".spec.location"},
        {"name": "Resolution", "type": "string", "jsonPath": ".spec.resolution"},
    ],
    "PeerAuthentication": [{"name": "Mode", "type": "string", "jsonPath": ".spec.mtls.mode"}],
    "AuthorizationPolicy": [{"name": "Action", "type": "string", "jsonPath": ".spec.action"}],
}
_AGE = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}

ISTIO_KINDS = tuple(kind for kind, info in KIND_INFO.items() if info.group.endswith(".istio.io"))


def _schema() -> dict[str, Any]:
    open_object = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    return {
        "openAPIV3Schema": {
            "type": "object",
            "properties": {
                "apiVersion": {"type": "string"},
                "kind": {"type": "string"},
                "metadata": {"type": "object"},
                "spec": dict(open_object),
                "status": dict(open_object),
            },
        }
    }


def crd(kind: str, labels: dict[str, str]) -> dict[str, Any]:
    info = KIND_INFO[kind]
    storage = _STORAGE[info.group]
    versions = [
        {
            "name": version,
            "served": True,
            "storage": version == storage,
            "schema": _schema(),
            "subresources": {"status": {}},
            "additionalPrinterColumns": [*_COLUMNS.get(kind, []), _AGE],
        }
        for version in info.versions
    ]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{info.plural}.{info.group}", "labels": dict(labels)},
        "spec": {
            "group": info.group,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": info.plural,
                "singular": kind.lower(),
                "shortNames": _SHORT.get(kind, []),
                "categories": ["istio-io", info.group.split(".")[0] + "-istio-io"],
            },
            "scope": "Namespaced" if info.namespaced else "Cluster",
            "versions": versions,
        },
    }


def crds(labels: dict[str, str]) -> list[dict[str, Any]]:
    return [crd(kind, labels) for kind in ISTIO_KINDS]
