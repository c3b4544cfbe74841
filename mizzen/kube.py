"""The CLI's access to a cluster: a client from the kubeconfig (kubernetes-asyncio under
``controller.informer.kubeclient``), where each kind lives in the API, and server-side apply."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from controller.informer.kubeclient import KubeClient
from controller.informer.listwatch import ApiError, TransportError

FIELD_MANAGER = "mizzen"

__all__ = ["FIELD_MANAGER", "ApiError", "KubeClient", "Resource", "TransportError", "connect", "resource_of"]


@dataclass(frozen=True, slots=True)
class Resource:
    api_version: str
    plural: str
    namespaced: bool

    def collection(self, namespace: str | None) -> str:
        base = f"/api/{self.api_version}" if "/" not in self.api_version else f"/apis/{self.api_version}"
        if self.namespaced:
            return f"{base}/namespaces/{namespace or 'default'}/{self.plural}"
        return f"{base}/{self.plural}"

    def path(self, name: str, namespace: str | None) -> str:
        return f"{self.collection(namespace)}/{name}"


# The kinds an install writes or the CLI reads (a fixed set: no discovery round trips needed).
_RESOURCES = {
    ("v1", "Namespace"): Resource("v1", "namespaces", False),
    ("v1", "ServiceAccount"): Resource("v1", "serviceaccounts", True),
    ("v1", "ConfigMap"): Resource("v1", "configmaps", True),
    ("v1", "Secret"): Resource("v1", "secrets", True),
    ("v1", "Service"): Resource("v1", "services", True),
    ("v1", "Pod"): Resource("v1", "pods", True),
    ("apps/v1", "Deployment"): Resource("apps/v1", "deployments", True),
    ("apps/v1", "DaemonSet"): Resource("apps/v1", "daemonsets", True),
    ("policy/v1", "PodDisruptionBudget"): Resource("policy/v1", "poddisruptionbudgets", True),
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): Resource(
        "rbac.authorization.k8s.io/v1", "clusterroles", False
    ),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): Resource(
        "rbac.authorization.k8s.io/v1", "clusterrolebindings", False
    ),
    ("rbac.authorization.k8s.io/v1", "Role"): Resource("rbac.authorization.k8s.io/v1", "roles", True),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): Resource(
        "rbac.authorization.k8s.io/v1", "rolebindings", True
    ),
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition"): Resource(
        "apiextensions.k8s.io/v1", "customresourcedefinitions", False
    ),
    ("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration"): Resource(
        "admissionregistration.k8s.io/v1", "mutatingwebhookconfigurations", False
    ),
    ("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration"): Resource(
        "admissionregistration.k8s.io/v1", "validatingwebhookconfigurations", False
    ),
    ("cert-manager.io/v1", "Issuer"): Resource("cert-manager.io/v1", "issuers", True),
    ("cert-manager.io/v1", "Certificate"): Resource("cert-manager.io/v1", "certificates", True),
}


def resource_of(obj: dict[str, Any]) -> Resource:
    key = (str(obj.get("apiVersion")), str(obj.get("kind")))
    try:
        return _RESOURCES[key]
    except KeyError:
        raise ValueError(f"{key[1]} ({key[0]}) is not a kind the installer knows") from None


async def connect(kubeconfig: str | None, context: str | None) -> KubeClient:
    """A client for the kubeconfig (``$KUBECONFIG``, ``~/.kube/config``, or in-cluster)."""
    return await KubeClient.connect(kubeconfig, context)


async def apply(client: KubeClient, obj: dict[str, Any], *, force: bool = True) -> dict[str, Any]:
    """Server-side apply of one object as the ``mizzen`` field manager (created or updated)."""
    resource = resource_of(obj)
    meta = obj["metadata"]
    path = resource.path(meta["name"], meta.get("namespace"))
    query = [("fieldManager", FIELD_MANAGER)] + ([("force", "true")] if force else [])
    # JSON is YAML: the apply content type takes either.
    body = orjson.loads(orjson.dumps(obj))
    result = await client.request(
        "PATCH", path, query=query, body=body, content_type="application/apply-patch+yaml"
    )
    return result  # type: ignore[no-any-return]
