"""Where each kind the mesh reads lives in the Kubernetes API: group, served versions, plural, scope.

Both sources use this table: the kube source to build URLs and pick the version a cluster serves, the
files source to tell a ``networking.istio.io`` VirtualService from an unrelated kind of the same name
(a Knative ``serving.knative.dev`` Service is not a Service).
"""

from __future__ import annotations

from dataclasses import dataclass

from controller.informer.store import (
    DEFAULT_INDEXERS,
    SERVICE_NAME_INDEX,
    IndexFunc,
    object_key,
    service_name_index,
)

from .base import KINDS

__all__ = ["KINDS", "KIND_INFO", "KindInfo", "indexers_for", "info_for", "object_key", "split_api_version"]


@dataclass(frozen=True, slots=True)
class KindInfo:
    """One kind's coordinates in the API."""

    kind: str
    group: str  # "" for the core group
    versions: tuple[str, ...]  # the versions we understand, most preferred first
    plural: str
    namespaced: bool = True

    def api_version(self, version: str) -> str:
        """``apiVersion`` as objects spell it: ``v1`` for the core group, else ``group/version``."""
        return f"{self.group}/{version}" if self.group else version


_ISTIO_NETWORKING = ("v1", "v1beta1", "v1alpha3")
_ISTIO_SECURITY = ("v1", "v1beta1")

KIND_INFO: dict[str, KindInfo] = {
    info.kind: info
    for info in (
        KindInfo("Namespace", "", ("v1",), "namespaces", namespaced=False),
        KindInfo("Pod", "", ("v1",), "pods"),
        KindInfo("Service", "", ("v1",), "services"),
        KindInfo("EndpointSlice", "discovery.k8s.io", ("v1",), "endpointslices"),
        KindInfo("VirtualService", "networking.istio.io", _ISTIO_NETWORKING, "virtualservices"),
        KindInfo("DestinationRule", "networking.istio.io", _ISTIO_NETWORKING, "destinationrules"),
        KindInfo("Gateway", "networking.istio.io", _ISTIO_NETWORKING, "gateways"),
        KindInfo("ServiceEntry", "networking.istio.io", _ISTIO_NETWORKING, "serviceentries"),
        KindInfo("Sidecar", "networking.istio.io", _ISTIO_NETWORKING, "sidecars"),
        KindInfo("PeerAuthentication", "security.istio.io", _ISTIO_SECURITY, "peerauthentications"),
        KindInfo("AuthorizationPolicy", "security.istio.io", _ISTIO_SECURITY, "authorizationpolicies"),
        KindInfo("Telemetry", "telemetry.istio.io", ("v1", "v1alpha1"), "telemetries"),
        KindInfo("Secret", "", ("v1",), "secrets"),
    )
}
assert tuple(KIND_INFO) == KINDS, "the kinds table and base.KINDS must list the same kinds"


def split_api_version(api_version: str) -> tuple[str, str]:
    """``("networking.istio.io", "v1")`` from ``networking.istio.io/v1``; ``("", "v1")`` from ``v1``."""
    group, _, version = api_version.rpartition("/")
    return group, version


def info_for(kind: str) -> KindInfo:
    """The table entry for one of ``KINDS``; a clear error for anything else."""
    try:
        return KIND_INFO[kind]
    except KeyError:
        raise ValueError(f"unknown kind {kind!r}; the mesh reads {', '.join(KINDS)}") from None


def indexers_for(kind: str) -> dict[str, IndexFunc]:
    """The store indexes a kind gets: namespace and labels for all, the owning Service for EndpointSlices."""
    indexers = dict(DEFAULT_INDEXERS)
    if kind == "EndpointSlice":
        indexers[SERVICE_NAME_INDEX] = service_name_index
    return indexers
