"""A Kubernetes API server for tests, speaking the real wire protocol for any registered resource.

async with running(CORE + istio_crds()) as api:
    api.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}})
    kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
"""

from . import status
from .resources import CORE, DEPLOYMENTS, ENDPOINT_SLICES, NAMESPACES, PODS, SERVICES, ResourceDef, istio_crds
from .server import KubeApiServer, RequestRecord, running

__all__ = [
    "CORE",
    "DEPLOYMENTS",
    "ENDPOINT_SLICES",
    "NAMESPACES",
    "PODS",
    "SERVICES",
    "KubeApiServer",
    "RequestRecord",
    "ResourceDef",
    "istio_crds",
    "running",
    "status",
]
