"""Where the CA's key and certificate live, and where its root is published.

Kubernetes: a plug-in CA from the Secret ``cacerts`` (Istio's), else the self-signed CA from the Secret
``istio-ca-secret``, made on first start (both in the controller's namespace); the root goes to a
ConfigMap ``istio-ca-root-cert`` (key ``root-cert.pem``) in every namespace, kept there by a
reconcile loop. Local mode: the same files in a directory (``--ca-dir``), the root written beside them
as ``root-cert.pem`` for the node to hand to pods.
"""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

from controller.ca.authority import CA_CERT, CA_KEY, CERT_CHAIN, ROOT_CERT, CaMaterial
from mizzen import logs

log = logs.get("ca.store")

PLUGIN_SECRET = "cacerts"
SELF_SIGNED_SECRET = "istio-ca-secret"
ROOT_CONFIGMAP = "istio-ca-root-cert"
ROOT_KEY = "root-cert.pem"


def load_dir(directory: Path, trust_domain: str) -> CaMaterial:
    """The CA in ``directory`` (plug-in or persisted), else a new self-signed one saved there."""
    if (directory / CA_CERT).exists() or (directory / CA_KEY).exists():
        material = CaMaterial.load_dir(directory)
        log.info("CA loaded", directory=str(directory), plugged_in=bool(material.chain))
        return material
    material = CaMaterial.self_signed(trust_domain)
    material.save_dir(directory)
    log.info("self-signed CA created", directory=str(directory))
    return material


def _secret_files(secret: dict[str, Any]) -> dict[str, bytes]:
    data = secret.get("data") or {}
    return {k: base64.b64decode(v) for k, v in data.items() if k in (CA_CERT, CA_KEY, ROOT_CERT, CERT_CHAIN)}


async def load_kube(client: Any, namespace: str, trust_domain: str) -> CaMaterial:
    """The CA from the cluster: ``cacerts`` (plug-in), else ``istio-ca-secret``, else a new one persisted
    there (a create that loses a race to another controller replica reads the winner's)."""
    from controller.informer.kubeclient import ApiError

    base = f"/api/v1/namespaces/{namespace}/secrets"
    for name in (PLUGIN_SECRET, SELF_SIGNED_SECRET):
        try:
            secret = await client.request("GET", f"{base}/{name}")
        except ApiError as exc:
            if exc.code == 404:
                continue
            raise
        log.info("CA loaded", secret=f"{namespace}/{name}")
        return CaMaterial.from_files(_secret_files(secret), f"Secret {namespace}/{name}")
    material = CaMaterial.self_signed(trust_domain)
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": SELF_SIGNED_SECRET, "namespace": namespace},
        "type": "istio.io/ca-root",
        "data": {k: base64.b64encode(v).decode() for k, v in material.files().items()},
    }
    try:
        await client.request("POST", base, body=body)
    except ApiError as exc:
        if exc.code != 409:
            raise
        secret = await client.request("GET", f"{base}/{SELF_SIGNED_SECRET}")
        return CaMaterial.from_files(_secret_files(secret), f"Secret {namespace}/{SELF_SIGNED_SECRET}")
    log.info("self-signed CA created", secret=f"{namespace}/{SELF_SIGNED_SECRET}")
    return material


class RootPublisher:
    """Keeps ConfigMap ``istio-ca-root-cert`` with the root in every namespace (Istio's namespace
    controller does the same)."""

    def __init__(self, client: Any, root: bytes, *, interval: float = 60.0) -> None:
        self.client = client
        self.root = root.decode()
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        while True:
            try:
                await self.publish_all()
            except Exception as exc:  # the API being away must not stop the CA
                log.warning("publishing the root failed", error=str(exc))
            await asyncio.sleep(self.interval)

    async def publish_all(self) -> int:
        """Create or correct the ConfigMap in each namespace; returns how many were written."""
        namespaces = await self.client.request("GET", "/api/v1/namespaces")
        written = 0
        for ns in (namespaces or {}).get("items") or ():
            name = (ns.get("metadata") or {}).get("name")
            if name and await self.publish(name):
                written += 1
        return written

    async def publish(self, namespace: str) -> bool:
        from controller.informer.kubeclient import ApiError

        path = f"/api/v1/namespaces/{namespace}/configmaps"
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": ROOT_CONFIGMAP,
                "namespace": namespace,
                "labels": {"istio.io/config": "true"},
            },
            "data": {ROOT_KEY: self.root},
        }
        try:
            current = await self.client.request("GET", f"{path}/{ROOT_CONFIGMAP}")
        except ApiError as exc:
            if exc.code != 404:
                raise
            await self.client.request("POST", path, body=body)
            return True
        if (current.get("data") or {}).get(ROOT_KEY) == self.root:
            return False
        body["metadata"]["resourceVersion"] = (current.get("metadata") or {}).get("resourceVersion")
        await self.client.request("PUT", f"{path}/{ROOT_CONFIGMAP}", body=body)
        return True
