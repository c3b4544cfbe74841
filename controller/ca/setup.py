"""Putting the CA together for mizzen-controller: material, authenticator, the gRPC service, the TLS port's
certificate and the root's publication, for the files (local) or the Kubernetes source."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from controller.ca.authority import DEFAULT_TRUST_DOMAIN, DEFAULT_WORKLOAD_TTL, CertificateAuthority
from controller.ca.service import CertificateService
from controller.ca.store import RootPublisher, load_dir, load_kube
from controller.ca.tokens import LocalTokens, TokenReviewer

# The names istiod's serving certificate carries; sidecars verify the CA/xDS port against them.
SERVING_NAMES = ["istiod.istio-system.svc", "istiod.istio-system.svc.cluster.local", "istiod", "localhost"]


@dataclass
class CaRuntime:
    authority: CertificateAuthority
    service: CertificateService
    serving: tuple[bytes, bytes]  # (chain, key) for the TLS port
    publisher: RootPublisher | None = None
    client: Any = None  # a KubeClient the CA owns (kube mode)

    def server_credentials(self) -> grpc.ServerCredentials:
        chain, key = self.serving
        return grpc.ssl_server_credentials([(key, chain)])

    async def start(self) -> None:
        if self.publisher is not None:
            self.publisher.start()

    async def stop(self) -> None:
        if self.publisher is not None:
            await self.publisher.stop()
        if self.client is not None:
            await self.client.close()


def _runtime(material: Any, authenticator: Any, trust_domain: str, ttl: float) -> CaRuntime:
    authority = CertificateAuthority(material, trust_domain=trust_domain, default_ttl=ttl)
    return CaRuntime(
        authority,
        CertificateService(authority, authenticator),
        authority.serving_certificate(SERVING_NAMES),
    )


def local_ca(
    directory: Path, *, trust_domain: str = DEFAULT_TRUST_DOMAIN, ttl: float = DEFAULT_WORKLOAD_TTL
) -> CaRuntime:
    """Local mode: CA files and the node's token signer in ``directory`` (the root published there)."""
    return _runtime(
        load_dir(directory, trust_domain), LocalTokens.load_or_create(directory), trust_domain, ttl
    )


async def kube_ca(
    kubeconfig: str | None,
    context: str | None,
    *,
    namespace: str = "istio-system",
    trust_domain: str = DEFAULT_TRUST_DOMAIN,
    ttl: float = DEFAULT_WORKLOAD_TTL,
) -> CaRuntime:
    """Kubernetes mode: CA from the cluster's Secrets, TokenReview, the root ConfigMap in every namespace."""
    from controller.informer.kubeclient import KubeClient

    client = await KubeClient.connect(kubeconfig, context)
    material = await load_kube(client, namespace, trust_domain)
    runtime = _runtime(material, TokenReviewer(client), trust_domain, ttl)
    runtime.publisher = RootPublisher(client, material.root)
    runtime.client = client
    return runtime
