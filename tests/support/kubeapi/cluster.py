"""What a cluster's controllers would do around the API test server, for install tests: the resource types
an install writes, CRDs becoming served (and Established), workloads becoming ready."""

from __future__ import annotations

from typing import Any

from .resources import CORE, ResourceDef
from .server import KubeApiServer

INSTALL = (
    *CORE,
    ResourceDef("", ("v1",), "serviceaccounts", "ServiceAccount", builtin=True),
    ResourceDef("apps", ("v1",), "daemonsets", "DaemonSet", builtin=True),
    ResourceDef("policy", ("v1",), "poddisruptionbudgets", "PodDisruptionBudget", builtin=True),
    ResourceDef("coordination.k8s.io", ("v1",), "leases", "Lease", builtin=True),
    ResourceDef(
        "rbac.authorization.k8s.io", ("v1",), "clusterroles", "ClusterRole", namespaced=False, builtin=True
    ),
    ResourceDef(
        "rbac.authorization.k8s.io",
        ("v1",),
        "clusterrolebindings",
        "ClusterRoleBinding",
        namespaced=False,
        builtin=True,
    ),
    ResourceDef("rbac.authorization.k8s.io", ("v1",), "roles", "Role", builtin=True),
    ResourceDef("rbac.authorization.k8s.io", ("v1",), "rolebindings", "RoleBinding", builtin=True),
    ResourceDef(
        "apiextensions.k8s.io",
        ("v1",),
        "customresourcedefinitions",
        "CustomResourceDefinition",
        namespaced=False,
        builtin=True,
    ),
    ResourceDef(
        "admissionregistration.k8s.io",
        ("v1",),
        "mutatingwebhookconfigurations",
        "MutatingWebhookConfiguration",
        namespaced=False,
        builtin=True,
    ),
    ResourceDef(
        "admissionregistration.k8s.io",
        ("v1",),
        "validatingwebhookconfigurations",
        "ValidatingWebhookConfiguration",
        namespaced=False,
        builtin=True,
    ),
)


def serve_crds(api: KubeApiServer) -> None:
    """Applied CRDs start being served, and are marked Established (the apiextensions controller)."""

    def on_write(resource: ResourceDef, obj: dict[str, Any]) -> None:
        if resource.kind != "CustomResourceDefinition":
            return
        spec = obj["spec"]
        versions = tuple(v["name"] for v in spec["versions"] if v.get("served"))
        storage = next(v["name"] for v in spec["versions"] if v.get("storage"))
        ordered = (storage, *[v for v in versions if v != storage])
        api.register(
            ResourceDef(
                spec["group"],
                ordered,
                spec["names"]["plural"],
                spec["names"]["kind"],
                namespaced=spec["scope"] == "Namespaced",
                short_names=tuple(spec["names"].get("shortNames") or ()),
            )
        )
        live = api.get("CustomResourceDefinition", obj["metadata"]["name"], None)
        assert live is not None
        established = {"type": "Established", "status": "True", "reason": "InitialNamesAccepted"}
        api.storage.put(
            resource.group_resource,
            ("", obj["metadata"]["name"]),
            {**live, "status": {"conditions": [established]}},
        )

    api.on_write.append(on_write)


def make_ready(api: KubeApiServer, kind: str, name: str, namespace: str, nodes: int = 2) -> None:
    """A Deployment's or DaemonSet's status as its controller reports it once every pod is ready."""
    obj = api.get(kind, name, namespace)
    assert obj is not None, f"no {kind} {namespace}/{name}"
    generation = obj["metadata"].get("generation", 1)
    if kind == "Deployment":
        n = obj["spec"].get("replicas", 1)
        status = {
            "observedGeneration": generation,
            "replicas": n,
            "updatedReplicas": n,
            "readyReplicas": n,
            "availableReplicas": n,
        }
    else:
        status = {
            "observedGeneration": generation,
            "desiredNumberScheduled": nodes,
            "numberReady": nodes,
            "updatedNumberScheduled": nodes,
            "numberAvailable": nodes,
        }
    group = "apps"
    plural = "deployments" if kind == "Deployment" else "daemonsets"
    api.storage.put(f"{plural}.{group}", (namespace, name), {**obj, "status": status})
